"""lib.tools.alert_quality: scoring on small hand-built truths and alerts, each expected figure
derived by hand in the test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lib.domain import TIER_KEYS, Assessment, Features, Reading
from lib.monitor.alerts import AlertEvent, AlertPolicy
from lib.settings import Settings
from lib.tools import alert_quality as aq
from lib.tools import summary

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _iso(minute: float) -> str:
    return (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")


def rec(
    oid: str, patient: str, minute: float, in_event: bool = False, within: bool = False,
    kind: str = "",
) -> dict[str, Any]:  # fmt: skip
    """A truth line of a clean reading, as lib.sim.stream.truth_record writes it."""
    return {
        "observation_id": oid, "patient_id": patient, "fate": "reading", "fault": None,
        "reason": None, "effective_at": _iso(minute), "systolic": 120.0, "diastolic": 80.0,
        "version": "1", "profile": "stage2", "event_within_horizon": within,
        "in_event": in_event, "event_kind": kind,
    }  # fmt: skip


def doc(
    episode: str, patient: str, condition: str, event: str, minute: float, oid: str,
    tier: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """An alert document as bp-alerts holds it (``tier`` only when given)."""
    d = {
        "alert_id": f"{episode}-{event}-{minute}", "episode_id": episode, "patient_id": patient,
        "condition": condition, "event": event, "severity": "high", "opened_at": _iso(minute),
        "event_at": _iso(minute), "observation_ids": [oid], "systolic": 150.0,
        "diastolic": 95.0, "risk_score": 0.1, "ruleset": "aha2025", "conditions": [condition],
    }  # fmt: skip
    if tier is not None:
        d["tier"] = tier
    return d


def scenario_truth() -> list[dict[str, Any]]:
    """Four patients, 18 truth readings, three acute events, 1.5 patient-days.

    p1: 10 readings every 10 min (span 90 min); r1, r2 within the horizon of an event; a crisis
        at r3..r5 (r3's kind names the next event, a hypotension, since one starts within the
        horizon: the event is still a crisis).
    p2: 5 readings every 30 min (span 120 min); r1 within the horizon; hypotension at r2, r3.
    p3: readings at 0 and 1950 min (span 1950 min); a crisis at r1.
    p4: one reading (span 0).
    Total span 90 + 120 + 1950 = 2160 min = 1.5 days.
    """
    p1 = [rec(f"p1-r{i}", "p1", 10 * i) for i in range(10)]
    p1[1] = rec("p1-r1", "p1", 10, within=True, kind="crisis")
    p1[2] = rec("p1-r2", "p1", 20, within=True, kind="crisis")
    p1[3] = rec("p1-r3", "p1", 30, in_event=True, within=True, kind="hypotension")
    p1[4] = rec("p1-r4", "p1", 40, in_event=True, kind="crisis")
    p1[5] = rec("p1-r5", "p1", 50, in_event=True, kind="crisis")
    p2 = [rec(f"p2-r{i}", "p2", 30 * i) for i in range(5)]
    p2[1] = rec("p2-r1", "p2", 30, within=True, kind="hypotension")
    p2[2] = rec("p2-r2", "p2", 60, in_event=True, kind="hypotension")
    p2[3] = rec("p2-r3", "p2", 90, in_event=True, kind="hypotension")
    p3 = [rec("p3-r0", "p3", 0), rec("p3-r1", "p3", 1950, in_event=True, kind="crisis")]
    p4 = [rec("p4-r0", "p4", 500)]
    # lines without truth of their own: a redelivery of p1-r1, a dead letter
    duplicate = {"observation_id": "p1-r1", "patient_id": "p1", "fate": "duplicate",
                 "effective_at": _iso(10), "systolic": 120.0, "diastolic": 80.0}  # fmt: skip
    dead = {"observation_id": "p1-r7-x", "patient_id": "p1", "fate": "dead_letter"}
    return [*p1, duplicate, *p2, dead, *p3, *p4]


def scenario_alerts() -> list[dict[str, Any]]:
    return [
        # p1: a false positive (r0 is neither in an event nor within the horizon), resolved
        # at r2, before the crisis starts: it does not cover the crisis
        doc("e0", "p1", "diastolic_hypertension", "opened", 0, "p1-r0"),
        doc("e0", "p1", "diastolic_hypertension", "resolved", 20, "p1-r2"),
        # p1: a true positive on r4, the crisis's second reading: 1 reading, 10 min after
        doc("e1", "p1", "systolic_hypertension", "opened", 40, "p1-r4"),
        # p2: true (r1 is within the horizon) and open when the hypotension starts: 0, 0 min
        doc("e2", "p2", "hypotension", "opened", 30, "p2-r1"),
        doc("e2", "p2", "hypotension", "resolved", 120, "p2-r4"),
        # p3: nothing, the crisis is missed. p4: a review-tier episode, a false positive
        doc("e4", "p4", "high_risk", "opened", 500, "p4-r0", tier="review"),
    ]


@pytest.fixture
def report() -> aq.Report:
    return aq.evaluate(aq.truth_from_records(scenario_truth()), scenario_alerts())


def test_truth_events_patient_days_and_lines_without_truth():
    truth = aq.truth_from_records(scenario_truth())
    assert sum(len(t) for t in truth.times.values()) == 18  # the duplicate is not a reading
    assert truth.patients == 4
    assert truth.patient_days == pytest.approx(1.5)
    assert [(e.patient_id, e.kind, e.readings) for e in truth.events] == [
        ("p1", "crisis", 3),
        ("p2", "hypotension", 2),
        ("p3", "crisis", 1),
    ]


def test_precision_true_and_false_positives(report):
    urgent = report.score(aq.ALL, aq.URGENT)
    # opened urgent: e0 (false), e1 (in event), e2 (within the horizon); e4 is review
    assert (urgent.opened, urgent.true_opened) == (3, 2)
    assert urgent.precision == pytest.approx(2 / 3)
    assert report.score("diastolic_hypertension").precision == 0.0
    assert report.score("systolic_hypertension").precision == 1.0
    review = report.score(aq.ALL, aq.REVIEW)
    assert (review.opened, review.true_opened, review.precision) == (1, 0, 0.0)


def test_recall_missed_event_and_episode_open_at_the_start(report):
    urgent = report.score(aq.ALL, aq.URGENT)
    # p1's crisis (e1 during it) and p2's hypotension (e2 open at its start); p3's missed
    assert (urgent.covered, urgent.events) == (2, 3)
    assert urgent.recall == pytest.approx(2 / 3)
    assert report.covered_by_kind[aq.URGENT] == {"crisis": 1, "hypotension": 1}
    assert report.events_by_kind == {"crisis": 2, "hypotension": 1}
    # e0 was resolved before the crisis started: the diastolic row covers nothing
    assert report.score("diastolic_hypertension").covered == 0
    assert report.score("hypotension").covered == 1
    assert report.score(aq.ALL, aq.REVIEW).covered == 0


def test_time_to_alert_in_readings_and_minutes(report):
    urgent = report.score(aq.ALL, aq.URGENT)
    # p1: alerted on r4, one reading after the start r3, 10 min; p2: open at the start, 0
    assert sorted(urgent.readings) == [0, 1]
    assert sorted(urgent.minutes) == [0.0, 10.0]
    assert urgent.median_readings == 0.5
    assert urgent.p90_readings == 1  # nearest rank: the 2nd of 2 values
    assert (urgent.median_minutes, urgent.p90_minutes) == (5.0, 10.0)
    systolic = report.score("systolic_hypertension")
    assert (systolic.readings, systolic.minutes) == ((1,), (10.0,))


def test_p90_is_the_nearest_rank():
    # ten values: the 9th smallest (ceil(0.9 * 10)) is the smallest with 90 % at or below it
    readings = (9, 0, 0, 5, 0, 0, 0, 0, 0, 0)
    s = aq.Score("x", aq.URGENT, 0, 0, 10, 10, tuple(map(float, readings)), readings, 1.0)
    assert (s.median_readings, s.p90_readings) == (0, 5)
    assert aq.Score("x", aq.URGENT, 0, 0, 1, 1, (3.0,), (2,), 1.0).p90_minutes == 3.0
    assert aq.Score("x", aq.URGENT, 0, 0, 1, 0, (), (), 1.0).p90_readings is None


def test_burden_per_100_patient_days(report):
    # 1.5 patient-days: 3 urgent episodes -> 200, 1 review -> 66.7, 1 hypotension -> 66.7
    assert report.score(aq.ALL, aq.URGENT).burden == pytest.approx(200.0)
    assert report.score(aq.ALL, aq.REVIEW).burden == pytest.approx(100 / 1.5)
    assert report.score("hypotension").burden == pytest.approx(100 / 1.5)


def test_an_escalation_during_the_event_covers_it_and_a_later_alert_does_not():
    truth = aq.truth_from_records(
        [rec("q-r0", "q", 0), rec("q-r1", "q", 15, in_event=True, kind="crisis"),
         rec("q-r2", "q", 30, in_event=True, kind="crisis"), rec("q-r3", "q", 45)]
    )  # fmt: skip
    late = [doc("e", "q", "hypertensive_crisis", "opened", 45, "q-r3")]
    assert aq.evaluate(truth, late).score().covered == 0  # after the event's last reading
    escalated = [
        doc("e", "q", "systolic_hypertension", "opened", 0, "q-r0", tier="review"),
        doc("e", "q", "hypertensive_crisis", "escalated", 30, "q-r2", tier="urgent"),
    ]
    r = aq.evaluate(truth, escalated)
    # the review episode open at the start covers it for the review tier at once; the
    # urgent escalation on r2 covers it one reading after the start (r1), 15 min later
    assert (r.score().covered, r.score().readings, r.score().minutes) == (1, (1,), (15.0,))
    assert r.score("hypertensive_crisis").covered == 1
    assert r.score(aq.ALL, aq.REVIEW).readings == (0,)
    # the escalation into urgent is the urgent tier's page: counted there, and true (r2)
    assert (r.score().opened, r.score().true_opened) == (1, 1)
    assert r.score(aq.ALL, aq.REVIEW).opened == 1


def test_alert_events_and_documents_score_alike_and_tier_defaults_to_urgent():
    at = T0 + timedelta(minutes=40)
    event = AlertEvent("a1", "e1", "p1", "systolic_hypertension", "opened", "high", at, at,
                       ("p1-r4",), 150.0, 95.0, 0.1, "aha2025")  # fmt: skip
    assert aq.alert_of(event) == aq.alert_of(event.to_doc())
    assert aq.alert_of(event).tier == aq.URGENT
    assert aq.alert_of({**event.to_doc(), "tier": "review"}).tier == aq.REVIEW


def test_home_and_no_data_are_counted_but_not_scored():
    truth = aq.truth_from_records([rec("h-r0", "h", 0), rec("h-r1", "h", 1440)])
    alerts = [
        doc("n", "h", "no_data", "opened", 4320, "h-r1"),
        doc("m", "h", "home_hypertension", "opened", 1440, ""),
    ]
    r = aq.evaluate(truth, alerts)
    assert r.score("no_data").opened == 1 and r.score("no_data").precision is None
    assert r.score("home_hypertension").burden == pytest.approx(100.0)  # 1 in 1 patient-day
    assert r.score(aq.ALL, aq.URGENT).opened == 0  # the all row holds reading alerts only


def test_headline(report):
    assert aq.headline(report) == (
        "precision 0.67 (2/3), recall 0.67 (2/3), burden 200.0 episodes per 100 "
        "patient-days (urgent alerts)"
    )


# -- the policy trade-off: the monitor's own EpisodeTracker, replayed --------------------------
_VERDICT = {
    "normal": (116.0, 74.0, "normal", (), "low"),
    "stage2": (152.0, 94.0, "hypertension_stage_2", ("systolic_hypertension",), "high"),
}


def assessment(patient: str, i: int, kind: str) -> Assessment:
    sys_, dia, category, types, severity = _VERDICT[kind]
    reading = Reading(f"{patient}-r{i}", patient, T0 + timedelta(minutes=10 * i), sys_, dia)
    features = Features(1, sys_, dia, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, sys_, dia)
    return Assessment(reading, features, category, types, severity, 0.0, "aha2025")


def test_trade_off_replays_the_episode_tracker_per_knob_value():
    # stage 2 (severity high) at r1..r2, normal at r3..r4, stage 2 again at r5
    kinds = ["normal", "stage2", "stage2", "normal", "normal", "stage2", "normal"]
    patient = [assessment("p", i, k) for i, k in enumerate(kinds)]
    truth = aq.truth_from_records(
        [rec(f"p-r{i}", "p", 10 * i, in_event=i in (1, 2), kind="crisis") for i in range(7)]
    )
    # every episode urgent at once (the policy before tiers): the urgent row sees them all
    base = AlertPolicy(
        open_severity="high", risk_threshold=1.0, urgent=frozenset(TIER_KEYS), confirm_readings=1
    )
    rows = aq.trade_off(
        truth,
        {"p": patient},
        base,
        {"open_severity": ("high", "critical"), "resolve_after": (1, 3)},
    )
    got = {(r.knob, r.value): (r.report.score().opened, r.report.score().true_opened) for r in rows}
    # high: opens at r1 (true); 2 clear readings then r5: with 3 to resolve, one episode;
    # resolved after 1 clear reading: a second episode at r5 (false). critical: nothing opens
    assert got == {
        ("open_severity", "high"): (1, 1),
        ("open_severity", "critical"): (0, 0),
        ("resolve_after", 1): (2, 1),
        ("resolve_after", 3): (1, 1),
    }
    assert [r.base for r in rows] == [True, False, False, True]
    assert "| open_severity | **high** (base) | 1 | 1.000 | 1.000 |" in aq.format_trade_off(rows)


def test_the_demo_summary_prints_the_headline(report):
    text = summary.render(Settings(), summary.RunOutputs(), None, None, None, aq.headline(report))
    (line,) = [ln for ln in text.splitlines() if ln.startswith("alert quality")]
    assert "precision 0.67 (2/3), recall 0.67 (2/3), burden 200.0" in line
    assert "alert quality" not in summary.render(Settings(), summary.RunOutputs(), None, None)
