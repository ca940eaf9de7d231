"""Dataflow tests: the episode tracker in a Bytewax flow (TestingSource -> stateful_map -> sink).

The flow below is the shape the monitor uses after its per-patient window:
key by patient, ``op.stateful_map`` with ``EpisodeTracker.step``, flatten the event lists.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from lib.domain import Assessment, Features, Reading
from lib.monitor.alerts import AlertEvent, AlertPolicy, EpisodeTracker

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
_VERDICT = {
    "normal": (116.0, 74.0, "normal", (), "low"),
    "stage2": (152.0, 94.0, "hypertension_stage_2", ("systolic_hypertension",), "high"),
    "crisis": (
        188.0,
        104.0,
        "hypertensive_crisis",
        ("hypertensive_crisis", "systolic_hypertension"),
        "critical",
    ),
    "hypo": (82.0, 50.0, "hypotension", ("hypotension",), "high"),
}

# The episode mechanics (opening, escalation, hysteresis, reminders, ids) are tested with
# urgent pages unconfirmed, as before tiers; tiers and confirmation have their own tests.
IMMEDIATE = AlertPolicy(confirm_readings=1)


def assessment(patient: str, i: int, kind: str, risk: float = 0.2) -> Assessment:
    sys, dia, category, types, severity = _VERDICT[kind]
    reading = Reading(
        f"{patient}-{i}", patient, T0 + timedelta(minutes=10 * i), sys, dia, source=f"t:0:{i}"
    )
    features = Features(1, sys, dia, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, sys, dia)
    return Assessment(reading, features, category, types, severity, risk, "aha2017")


def build_flow(source_items, out: list, tracker: EpisodeTracker | None = None) -> Dataflow:
    tracker = tracker or EpisodeTracker(IMMEDIATE)
    flow = Dataflow("alerts_test")
    assessed = op.input("assessments", flow, TestingSource(source_items))
    keyed = op.key_on("by_patient", assessed, lambda a: a.reading.patient_id)
    batches = op.stateful_map("alert_episodes", keyed, tracker.step)
    # (patient_id, list[AlertEvent])
    events = op.flat_map("flatten", batches, lambda kv: kv[1])
    op.output("alerts_out", events, TestingSink(out))
    return flow


def interleaved() -> list[Assessment]:
    """Three patients, interleaved in event order like the real topic."""
    p_crisis = ["crisis"] * 50
    p_course = ["normal"] * 3 + ["stage2"] * 5 + ["crisis"] * 5 + ["stage2"] * 2 + ["normal"] * 5
    p_normal = ["normal"] * 20
    items = []
    for i in range(50):
        items.append(assessment("crisis-pt", i, p_crisis[i]))
        if i < len(p_course):
            items.append(assessment("course-pt", i, p_course[i]))
        if i < len(p_normal):
            items.append(assessment("calm-pt", i, p_normal[i]))
    return items


def run(items, tracker=None) -> list[AlertEvent]:
    out: list[AlertEvent] = []
    run_main(build_flow(items, out, tracker))
    return out


def test_fifty_crisis_readings_give_one_alert():
    out = run(interleaved())
    crisis = [e for e in out if e.patient_id == "crisis-pt"]
    assert len(crisis) == 1
    assert (crisis[0].event, crisis[0].condition) == ("opened", "hypertensive_crisis")
    assert crisis[0].observation_ids == ("crisis-pt-0",)
    assert not [e for e in out if e.patient_id == "calm-pt"]


def test_escalation_and_resolution_one_event_each():
    out = run(interleaved())
    course = [(e.event, e.condition, e.observation_ids) for e in out if e.patient_id == "course-pt"]
    assert course == [
        ("opened", "systolic_hypertension", ("course-pt-3",)),
        ("escalated", "hypertensive_crisis", ("course-pt-8",)),
        ("resolved", "hypertensive_crisis", ("course-pt-15", "course-pt-16", "course-pt-17")),
    ]


def test_replay_gives_the_same_alert_ids_and_no_duplicates():
    first = run(interleaved())
    second = run(interleaved())
    assert [e.alert_id for e in first] == [e.alert_id for e in second]
    assert len({e.alert_id for e in first}) == len(first) == 4
    # the documents are byte-identical too (no wall clock in the path)
    assert [e.to_doc() for e in first] == [e.to_doc() for e in second]


def test_reminders_inside_the_flow():
    tracker = EpisodeTracker(AlertPolicy(confirm_readings=1, reminder_every=timedelta(hours=2)))
    out = run([assessment("crisis-pt", i, "crisis") for i in range(50)], tracker)
    # 50 readings 10 min apart span 8 h 10 min: opening + reminders at 2, 4, 6, 8 h
    assert [e.event for e in out] == ["opened"] + ["reminder"] * 4


def test_crash_and_resume_with_recovery_adds_no_new_alert(tmp_path):
    """Abort mid-stream, resume from the recovery snapshot: no alert is lost, none is new.

    Bytewax replays from the last snapshot (at-least-once), so an event re-emitted after the
    resume carries the same alert_id: Elasticsearch (_id = alert_id) holds no duplicate.
    """
    items = interleaved()
    expected = {e.alert_id for e in run(items)}
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    cut = 40  # inside the course patient's crisis phase
    # the same ABORT instance: it fires on the first execution only, like a real crash
    source_items = [*items[:cut], TestingSource.ABORT(), *items[cut:]]
    out: list[AlertEvent] = []
    flow = build_flow(source_items, out)
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    first = list(out)
    assert first and len(first) < len(expected)
    out.clear()
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    second = list(out)
    assert second
    ids = [e.alert_id for e in first + second]
    assert set(ids) == expected
    # with a snapshot every epoch nothing before the crash is re-emitted
    assert len(ids) == len(expected)
