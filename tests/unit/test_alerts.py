"""Unit tests of lib.monitor.alerts: episode opening, escalation, hysteresis, reminders, ids."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.domain import Assessment, Features, Reading
from lib.monitor.alerts import (
    CONDITIONS,
    AlertPolicy,
    EpisodeTracker,
    conditions_of,
)
from lib.monitor.documents import elastic_item, kafka_item

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

# (systolic, diastolic) -> (category, anomaly_types, severity), a simplified AHA 2017 verdict
_KINDS = {
    "normal": (118.0, 76.0, "normal", (), "low"),
    "stage1": (134.0, 82.0, "hypertension_stage_1", ("systolic_hypertension",), "moderate"),
    "stage2": (150.0, 92.0, "hypertension_stage_2", ("systolic_hypertension",), "high"),
    "dia2": (128.0, 96.0, "hypertension_stage_2", ("diastolic_hypertension",), "high"),
    "crisis": (
        186.0,
        100.0,
        "hypertensive_crisis",
        ("hypertensive_crisis", "systolic_hypertension"),
        "critical",
    ),
    "both_crit": (
        195.0,
        125.0,
        "hypertensive_crisis",
        ("hypertensive_crisis", "systolic_hypertension", "diastolic_hypertension"),
        "critical",
    ),
    "hypo": (84.0, 52.0, "hypotension", ("hypotension",), "high"),
    "hypo_crit": (70.0, 40.0, "hypotension", ("hypotension",), "critical"),
}

# The episode mechanics (opening, escalation, hysteresis, reminders, ids) are tested with
# urgent pages unconfirmed, as before tiers; tiers and confirmation have their own tests.
IMMEDIATE = AlertPolicy(confirm_readings=1)


def _features(sys: float, dia: float) -> Features:
    return Features(1, sys, dia, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, sys, dia)


def make(
    kind: str,
    i: int,
    *,
    patient: str = "p1",
    risk: float = 0.1,
    minutes: float = 15.0,
    version: str = "",
) -> Assessment:
    sys, dia, category, types, severity = _KINDS[kind]
    reading = Reading(
        observation_id=f"{patient}-obs-{i}",
        patient_id=patient,
        effective_at=T0 + timedelta(minutes=minutes * i),
        systolic=sys,
        diastolic=dia,
        version=version,
    )
    return Assessment(reading, _features(sys, dia), category, types, severity, risk, "aha2017")


def run(kinds: list[str], tracker: EpisodeTracker | None = None, **kw):
    tracker = tracker or EpisodeTracker(IMMEDIATE)
    state = None
    events = []
    for i, kind in enumerate(kinds):
        state, out = tracker.step(state, make(kind, i, **kw))
        events.extend(out)
    return state, events


def test_conditions_detected_per_reading():
    assert conditions_of(make("normal", 0)) == ()
    assert conditions_of(make("stage2", 0)) == ("systolic_hypertension",)
    assert conditions_of(make("crisis", 0)) == ("hypertensive_crisis", "systolic_hypertension")
    assert "combined_critical" in conditions_of(make("both_crit", 0))
    # a crisis becomes combined critical through a high model risk
    assert "combined_critical" not in conditions_of(make("crisis", 0, risk=0.49))
    assert "combined_critical" in conditions_of(make("crisis", 0, risk=0.5))  # critical_risk
    # before tiers, the model's alert threshold made it (critical_risk=None)
    old = AlertPolicy(risk_threshold=0.8, critical_risk=None)
    assert "combined_critical" not in conditions_of(make("crisis", 0, risk=0.79), old)
    assert "combined_critical" in conditions_of(make("crisis", 0, risk=0.8), old)
    assert conditions_of(make("normal", 0, risk=0.85)) == ("high_risk",)
    assert conditions_of(make("hypo", 0)) == ("hypotension",)
    # ESH 2023 has a lower diastolic critical bound (110)
    a = make("crisis", 0)
    esh = Assessment(
        Reading("x", "p", T0, 182.0, 112.0), a.features, a.category, a.anomaly_types,
        a.severity, 0.1, "esh2023",
    )  # fmt: skip
    aha = Assessment(esh.reading, a.features, a.category, a.anomaly_types, a.severity, 0.1,
                     "aha2017")  # fmt: skip
    assert "combined_critical" in conditions_of(esh)
    assert "combined_critical" not in conditions_of(aha)


def test_persistent_crisis_pages_once():
    state, events = run(["crisis"] * 50)
    assert [(e.event, e.condition) for e in events] == [("opened", "hypertensive_crisis")]
    assert events[0].observation_ids == ("p1-obs-0",)
    assert state is not None and "hypertension" in state.episodes


def test_escalation_and_resolution_one_event_each():
    kinds = ["normal", "stage2", "stage2", "crisis", "crisis", "stage2", "normal", "normal"]
    kinds += ["normal", "normal"]
    state, events = run(kinds)
    assert [(e.event, e.condition, e.severity) for e in events] == [
        ("opened", "systolic_hypertension", "high"),
        ("escalated", "hypertensive_crisis", "critical"),
        ("resolved", "hypertensive_crisis", "critical"),
    ]
    opened, escalated, resolved = events
    assert escalated.observation_ids == ("p1-obs-3",)
    assert resolved.observation_ids == ("p1-obs-6", "p1-obs-7", "p1-obs-8")
    assert resolved.opened_at == opened.event_at == T0 + timedelta(minutes=15)
    assert len({e.episode_id for e in events}) == 1
    assert len({e.alert_id for e in events}) == 3
    assert state is None  # nothing open: no memory kept for this patient


def test_stage1_to_stage2_is_a_severity_escalation():
    _, events = run(["stage1", "stage1", "stage2", "stage1"])
    assert [(e.event, e.severity) for e in events] == [
        ("opened", "moderate"),
        ("escalated", "high"),
    ]
    assert events[1].condition == "systolic_hypertension"


def test_flapping_inside_hysteresis_pages_once():
    # never three clear readings in a row: one episode
    kinds = ["stage2", "normal", "normal", "stage2", "normal", "stage2", "normal", "normal"] * 4
    _, events = run(kinds)
    assert [e.event for e in events] == ["opened"]


def test_reopen_after_resolution_is_a_new_episode():
    _, events = run(["stage2", "normal", "normal", "normal", "stage2"])
    assert [e.event for e in events] == ["opened", "resolved", "opened"]
    assert events[0].episode_id != events[2].episode_id
    assert events[0].alert_id != events[2].alert_id


@pytest.mark.parametrize("resolve_after", [1, 2, 5])
def test_resolve_after_is_configurable(resolve_after):
    tracker = EpisodeTracker(AlertPolicy(confirm_readings=1, resolve_after=resolve_after))
    kinds = ["stage2"] + ["normal"] * 6
    _, events = run(kinds, tracker)
    resolved = [e for e in events if e.event == "resolved"]
    assert len(resolved) == 1
    assert len(resolved[0].observation_ids) == resolve_after
    assert resolved[0].event_at == T0 + timedelta(minutes=15 * resolve_after)


def test_reminders_follow_event_time_not_reading_count():
    tracker = EpisodeTracker(AlertPolicy(confirm_readings=1, reminder_every=timedelta(hours=1)))
    # 15-minute spacing: readings 4 and 8 are 1 h and 2 h after the opening
    _, events = run(["crisis"] * 10, tracker)
    assert [e.event for e in events] == ["opened", "reminder", "reminder"]
    assert [e.event_at - T0 for e in events] == [timedelta(0), timedelta(hours=1),
                                                 timedelta(hours=2)]  # fmt: skip
    assert len({e.alert_id for e in events}) == 3
    # no reminder when readings are spaced closer than... the same data with a 3 h interval
    _, quiet = run(
        ["crisis"] * 10,
        EpisodeTracker(AlertPolicy(confirm_readings=1, reminder_every=timedelta(hours=3))),
    )
    assert [e.event for e in quiet] == ["opened"]


def test_combined_critical_escalates_crisis():
    _, events = run(["crisis", "both_crit", "crisis"])
    assert [(e.event, e.condition) for e in events] == [
        ("opened", "hypertensive_crisis"),
        ("escalated", "combined_critical"),
    ]


def test_hypotension_is_its_own_episode_and_escalates_by_severity():
    _, events = run(["hypo", "hypo", "hypo_crit", "hypo_crit", "normal", "normal", "normal"])
    assert [(e.event, e.condition, e.severity) for e in events] == [
        ("opened", "hypotension", "high"),
        ("escalated", "hypotension", "critical"),
        ("resolved", "hypotension", "critical"),
    ]


def test_high_risk_alone_opens_but_is_suppressed_during_acute_episode():
    _, events = run(["normal", "normal"], risk=0.9)
    assert [(e.event, e.condition) for e in events] == [("opened", "high_risk")]
    # crisis with high risk: one page (the acute one, at its highest level), no extra high_risk
    _, events = run(["crisis", "crisis"], risk=0.9)
    assert [(e.event, e.condition) for e in events] == [("opened", "combined_critical")]
    assert events[0].conditions == (
        "hypertensive_crisis", "systolic_hypertension", "combined_critical", "high_risk",
    )  # fmt: skip
    # either acute family suppresses it: a hypotension episode, then high risk alone
    tracker = EpisodeTracker(IMMEDIATE)
    state, events = tracker.step(None, make("hypo", 0))
    assert [(e.event, e.condition) for e in events] == [("opened", "hypotension")]
    state, events = tracker.step(state, make("normal", 1, risk=0.9))
    assert events == [] and state is not None and set(state.episodes) == {"hypotension"}


def test_open_severity_gates_opening_but_not_keeping_open():
    tracker = EpisodeTracker(AlertPolicy(confirm_readings=1, open_severity="high"))
    _, events = run(["stage1", "stage1", "stage2", "stage1", "stage1", "stage1", "normal"], tracker)
    assert [(e.event, e.observation_ids) for e in events] == [("opened", ("p1-obs-2",))]


def test_same_reading_twice_is_ignored():
    tracker = EpisodeTracker(IMMEDIATE)
    state, first = tracker.step(None, make("stage2", 0))
    state, again = tracker.step(state, make("stage2", 0))
    assert len(first) == 1 and again == []
    # a new version of the same observation is a new reading (not a new episode)
    state, amended = tracker.step(state, make("crisis", 0, version="2"))
    assert [e.event for e in amended] == ["escalated"]


def test_late_reading_does_not_count_towards_resolution():
    tracker = EpisodeTracker(IMMEDIATE)
    state = None
    events = []
    # clear readings at t=1,2 then a late clear reading at t=-5 (before the episode) then t=3
    for a in [make("stage2", 0), make("normal", 1), make("normal", 2), make("normal", -5),
              make("normal", 3)]:  # fmt: skip
        state, out = tracker.step(state, a)
        events.extend(out)
    resolved = [e for e in events if e.event == "resolved"]
    assert resolved[0].observation_ids == ("p1-obs-1", "p1-obs-2", "p1-obs-3")


def test_alert_ids_are_deterministic_and_patient_scoped():
    _, a = run(["stage2", "crisis", "normal", "normal", "normal"])
    _, b = run(["stage2", "crisis", "normal", "normal", "normal"])
    _, c = run(["stage2", "crisis", "normal", "normal", "normal"], patient="p2")
    assert [e.alert_id for e in a] == [e.alert_id for e in b]
    assert not {e.alert_id for e in a} & {e.alert_id for e in c}
    assert all(len(e.alert_id) == 32 for e in a)


def test_state_is_picklable_and_resumes_identically():
    kinds = ["stage2", "crisis", "crisis", "normal", "normal", "normal", "hypo", "hypo_crit"]
    tracker = EpisodeTracker(AlertPolicy(confirm_readings=1, reminder_every=timedelta(minutes=30)))
    _, straight = run(kinds, tracker)
    state = None
    resumed = []
    for i, kind in enumerate(kinds):
        state = pickle.loads(pickle.dumps(state))  # a snapshot/restore between every step
        state, out = tracker.step(state, make(kind, i))
        resumed.extend(out)
    assert resumed == straight
    assert len(pickle.dumps(state)) < 1000


def test_doc_and_connector_items():
    _, events = run(["crisis", "normal", "normal", "normal"])
    doc = events[0].to_doc()
    assert set(doc) == {
        "alert_id", "episode_id", "patient_id", "condition", "event", "severity", "opened_at",
        "event_at", "observation_ids", "systolic", "diastolic", "risk_score", "ruleset",
        "conditions", "tier",
    }  # fmt: skip
    assert doc["tier"] == "urgent"  # a crisis, unconfirmed (IMMEDIATE)
    assert doc["event_at"] == "2025-03-01T08:00:00.000Z"
    assert doc["observation_ids"] == ["p1-obs-0"]
    key, value, headers = kafka_item(events[0])
    assert key == b"p1" and orjson.loads(value) == doc
    assert ("alert_id", doc["alert_id"].encode()) in headers
    assert ("tier", b"urgent") in headers and ("event", b"opened") in headers
    assert elastic_item(events[1]) == ("index", events[1].alert_id, events[1].to_doc())
    assert orjson.loads(orjson.dumps(events[1].to_doc()))["event"] == "resolved"


def test_combined_critical_thresholds_come_from_the_rule_set_registry():
    policy = AlertPolicy()
    assert policy.critical_for("aha2017") == (180.0, 120.0)
    assert policy.critical_for("esh2023") == (180.0, 110.0)
    with pytest.raises(ValueError, match="unknown rule set"):
        policy.critical_for("aha1999")  # no silent fallback to another rule set's values
    assert AlertPolicy(critical=(170.0, 100.0)).critical_for("esh2023") == (170.0, 100.0)


def test_policy_validation():
    with pytest.raises(ValueError):
        AlertPolicy(resolve_after=0)
    with pytest.raises(ValueError):
        AlertPolicy(open_severity="extreme")
    with pytest.raises(ValueError):
        AlertPolicy(reminder_every=timedelta(0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=80),
       st.floats(min_value=0.0, max_value=1.0))  # fmt: skip
def test_invariants_on_random_sequences(kinds, risk):
    state, events = run(kinds, risk=risk)
    assert all(e.condition in CONDITIONS for e in events)
    # never more alerts than readings, ids unique, events of an episode in a legal order
    assert len(events) <= 2 * len(kinds)
    assert len({e.alert_id for e in events}) == len(events)
    by_episode: dict[str, list[str]] = {}
    for e in events:
        by_episode.setdefault(e.episode_id, []).append(e.event)
    for seq in by_episode.values():
        assert seq[0] == "opened"
        assert seq.count("opened") == 1 and seq.count("resolved") <= 1
        assert "resolved" not in seq[:-1]
    open_now = {eid for eid, seq in by_episode.items() if seq[-1] != "resolved"}
    assert len(open_now) == (0 if state is None else len(state.episodes))
    # hysteresis: a family reopens only after resolve_after (3) readings without it
    family = {"hypotension": "hypo", "high_risk": "risk"}
    last_open: dict[str, int] = {}
    for e in events:
        if e.event == "opened":
            fam = family.get(e.condition, "hypertension")
            index = int(e.observation_ids[0].rsplit("-", 1)[1])
            if fam in last_open:
                assert index - last_open[fam] >= 4
            last_open[fam] = index


# -- tiers and confirmation (the default policy) ---------------------------------------------


def reading_with_baseline(i: int, sys: float, dia: float, baseline: float, **kw) -> Assessment:
    """A hypotension reading whose window's *other* 5 readings average ``baseline`` systolic."""
    a = make("hypo", i, **kw)
    n = 6
    mean = (baseline * (n - 1) + sys) / n
    f = Features(n, mean, dia, 0.0, 0.0, 0.0, 0.0, 0.0, 1, 0.25, sys, dia)
    r = a.reading
    reading = Reading(r.observation_id, r.patient_id, r.effective_at, sys, dia)
    severity = "critical" if sys < 70 or dia < 40 else "high"
    return Assessment(reading, f, "hypotension", ("hypotension",), severity, 0.1, "aha2017")


def steps(assessments: list[Assessment], policy: AlertPolicy | None = None):
    tracker = EpisodeTracker(policy or AlertPolicy())
    state, events = None, []
    for a in assessments:
        state, out = tracker.step(state, a)
        events.extend(out)
    return state, events


def test_a_crisis_pages_on_its_confirming_reading_once():
    _, events = run(["crisis"] * 50, EpisodeTracker(AlertPolicy()))
    assert [(e.event, e.tier) for e in events] == [("opened", "review"), ("escalated", "urgent")]
    assert events[1].observation_ids == ("p1-obs-1",)  # the second reading confirms
    assert events[0].episode_id == events[1].episode_id
    assert events[0].alert_id != events[1].alert_id


def test_an_unconfirmed_crisis_stays_review_and_resolves_as_review():
    _, events = run(
        ["crisis", "stage2", "normal", "normal", "normal"], EpisodeTracker(AlertPolicy())
    )
    assert [(e.event, e.tier) for e in events] == [("opened", "review"), ("resolved", "review")]


def test_combined_critical_pages_at_once_unless_confirmation_is_asked():
    _, events = run(["both_crit", "both_crit"], EpisodeTracker(AlertPolicy()))
    assert [(e.event, e.tier) for e in events] == [("opened", "urgent")]
    _, waited = run(["both_crit", "both_crit"], EpisodeTracker(AlertPolicy(confirm_critical=True)))
    assert [(e.event, e.tier) for e in waited] == [("opened", "review"), ("escalated", "urgent")]


def test_stage2_diastolic_low_and_high_risk_never_page():
    for kinds in (["stage2"] * 6, ["dia2"] * 6, ["normal"] * 6):
        _, events = run(kinds, EpisodeTracker(AlertPolicy()), risk=0.95)
        assert events and {e.tier for e in events} == {"review"}, kinds
    # diastolic-only low (systolic >= 90): review, however far below the baseline
    low_dia = [reading_with_baseline(i, 104.0, 52.0, baseline=150.0) for i in range(6)]
    _, events = steps(low_dia)
    assert [(e.event, e.tier) for e in events] == [("opened", "review")]


def test_systolic_hypotension_confirmed_below_the_patients_baseline():
    # 84 systolic twice, 20 below the baseline: confirmed on the second reading
    _, events = steps([reading_with_baseline(i, 84.0, 58.0, baseline=104.0) for i in range(3)])
    assert [(e.event, e.tier) for e in events] == [("opened", "review"), ("escalated", "urgent")]
    # the same values in a patient whose usual systolic is 89: noise, not a page
    _, events = steps([reading_with_baseline(i, 84.0, 58.0, baseline=89.0) for i in range(6)])
    assert [(e.event, e.tier) for e in events] == [("opened", "review")]
    # a fall of >= 40 mm Hg below the baseline pages at once (ACCP/SCCM)
    _, events = steps([reading_with_baseline(0, 80.0, 55.0, baseline=121.0)])
    assert [(e.event, e.tier) for e in events] == [("opened", "urgent")]
    # a severe-band reading (< 70) pages at once too
    _, events = steps([reading_with_baseline(0, 66.0, 45.0, baseline=90.0)])
    assert [(e.event, e.tier) for e in events] == [("opened", "urgent")]


def test_a_reading_out_of_range_restarts_the_confirmation():
    kinds = ["crisis", "stage2", "crisis", "stage2", "crisis", "crisis"]
    _, events = run(kinds, EpisodeTracker(AlertPolicy()))
    assert [(e.event, e.tier) for e in events] == [("opened", "review"), ("escalated", "urgent")]
    assert events[1].observation_ids == ("p1-obs-5",)


def test_before_tiers_is_reachable_by_settings():
    """BPWATCH_ALERT_URGENT=all and BPWATCH_ALERT_CONFIRM_READINGS=1: the events, ids and
    tiers of the policy before tiers (every episode pages on its first reading)."""
    from lib.domain import TIER_KEYS

    kinds = ["stage2", "crisis", "crisis", "normal", "normal", "normal", "dia2", "normal"]
    old = EpisodeTracker(AlertPolicy(urgent=frozenset(TIER_KEYS), confirm_readings=1))
    _, events = run(kinds, old, risk=0.95)
    assert events and {e.tier for e in events} == {"urgent"}
    assert [e.event for e in events if e.condition != "high_risk"] == [
        "opened", "escalated", "resolved", "opened"
    ]  # fmt: skip


def test_an_episode_snapshotted_before_tiers_resumes_as_urgent():
    from lib.monitor.alerts import _Episode

    ep = _Episode("hypertensive_crisis", "critical", (2, 3), "o1", T0, T0)
    state = ep.__getstate__()
    old = _Episode.__new__(_Episode)
    old.__setstate__(state[:-2])  # the fields a snapshot before tiers holds
    assert (old.tier, old.urgent_run, old.condition) == ("urgent", 0, "hypertensive_crisis")
    assert pickle.loads(pickle.dumps(ep)) == ep
