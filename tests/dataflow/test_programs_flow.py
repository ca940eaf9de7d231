"""Programs and adherence in the production graph (``dataflows.monitor.build`` with
``recording_io``): enrolments read beside the readings, the postpartum program's
``severe_range_bp`` episodes, ``program`` on documents and events, the enrolments' dead
letters, and the ``bp-adherence`` documents.

Enrolments and readings come from two sources, so they are timed (:class:`TimedSource`): the
enrolments first, the readings half a second later, as a sender that enrols a patient before
her device sends anything.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import run_main

from dataflows.monitor import RecordedOutputs, build, recording_io
from lib.domain import Reading
from lib.monitor.alerts import _digest
from lib.settings import Settings
from lib.sim import fhir_writer as obs
from tests.dataflow.test_acks_flow import LowRisk, TimedSource

# Well inside the no-data lookback, so nothing here depends on the wall clock's date
T0 = (datetime.now(UTC) - timedelta(days=2)).replace(hour=12, minute=0, second=0, microsecond=0)
DAY0 = T0.date()
_offsets = iter(range(10**6))


def reading(
    patient: str,
    oid: str,
    at: datetime,
    sys_: float,
    dia: float,
    *,
    offset_min: int = 0,
    status: str | None = None,
    device: str | None = "Omron BP7000",
    version: str = "",
) -> KafkaSourceMessage:
    r = Reading(oid, patient, at, float(sys_), float(dia), version=version)
    value = obs.encode(
        obs.to_fhir(r, "Jane Testpatient", utc_offset_min=offset_min, status=status,
                    device=device)
    )  # fmt: skip
    return KafkaSourceMessage(
        patient.encode(), value, topic="bp.observations", partition=0, offset=next(_offsets),
        timestamp=(1, int(time.time() * 1000)),
    )  # fmt: skip


def enrolment(patient: str | None, body: Any) -> KafkaSourceMessage:
    value = body if isinstance(body, bytes) else orjson.dumps(body)
    return KafkaSourceMessage(
        None if patient is None else patient.encode(), value, topic="bp.enrollments",
        partition=0, offset=next(_offsets), timestamp=(1, int(time.time() * 1000)),
    )  # fmt: skip


def postpartum(patient: str, start: date = DAY0, end: date | None = None) -> KafkaSourceMessage:
    body = {"program": "postpartum", "start": start.isoformat()}
    if end is not None:
        body["end"] = end.isoformat()
    return enrolment(patient, body)


def run(
    readings: list[KafkaSourceMessage],
    enrolments: list[KafkaSourceMessage] = (),  # type: ignore[assignment]
    settings: Settings | None = None,
    enrolments_late: bool = False,
) -> RecordedOutputs:
    early, late = (0.0, 0.5) if not enrolments_late else (0.5, 0.0)
    io, out = recording_io(
        TimedSource([(late, m) for m in readings], 1.0),
        enroll_source=TimedSource([(early, m) for m in enrolments], 1.0),
    )
    run_main(build(settings or Settings(), io=io, model=LowRisk()))
    return out


def alerts(out: RecordedOutputs, condition: str = "severe_range_bp") -> list[dict[str, Any]]:
    docs = [orjson.loads(value) for _, (_id, _k, value, _h) in out.alerts_kafka]
    return [d for d in docs if d["condition"] == condition]


def counts(out: RecordedOutputs) -> dict[str, int]:
    return out.stats[-1]


def adherence(out: RecordedOutputs) -> dict[str, dict[str, Any]]:
    """bp-adherence as Elasticsearch ends up holding it (the last write of each _id)."""
    final: dict[str, dict[str, Any]] = {}
    for op_, _id, doc in out.adherence:
        assert op_ == "index" and doc is not None
        assert _id == f"{doc['patient_id']}|{doc['cycle_start']}"
        final[_id] = doc
    return final


# -- postpartum: the severe-range episode --------------------------------------------------
def test_a_repeat_within_minutes_confirms_and_three_clear_readings_resolve():
    out = run(
        [
            reading("pp", "a", T0, 150, 95),  # hypertensive range: no episode
            reading("pp", "b", T0 + timedelta(hours=2), 165, 100),  # severe: opened
            reading("pp", "c", T0 + timedelta(hours=2, minutes=10), 158, 112),  # confirms
            *(reading("pp", f"k{i}", T0 + timedelta(hours=3 + i), 135, 85) for i in range(3)),
        ],
        [postpartum("pp")],
    )
    events = alerts(out)
    assert [(e["event"], e["severity"], e["tier"]) for e in events] == [
        ("opened", "high", "review"),
        ("escalated", "critical", "urgent"),
        ("resolved", "critical", "urgent"),
    ]
    opened, escalated, resolved = events
    assert opened["confirmed"] is False and "confirmation" not in opened
    assert escalated["confirmed"] is True and escalated["confirmation"] == "repeat"
    assert {e["program"] for e in events} == {"postpartum"}
    assert {e["episode_id"] for e in events} == {_digest("pp", "severe_range", "b")}
    assert len({e["alert_id"] for e in events}) == 3
    assert resolved["observation_ids"] == ["k0", "k1", "k2"]
    assert opened["observation_ids"] == ["b"] and escalated["observation_ids"] == ["c"]
    # anomaly documents carry the program and its band; the critical escalation is armed
    # for an acknowledgement like any critical event (its deadline is in test_acks_flow)
    docs = {d["observation_id"]: d for op_, _id, d in out.anomalies if op_ == "index"}
    assert docs["a"]["program"] == "postpartum"
    assert docs["a"]["program_band"] == "hypertensive_range"
    assert docs["c"]["program_band"] == "severe_range"
    clear = [d for oid, d in docs.items() if oid.startswith("k")]  # 135/85: stage 1
    assert clear and all(d["program"] == "postpartum" and "program_band" not in d for d in clear)
    eps = {}
    for _op, _id, doc in out.episodes:
        eps.setdefault(_id, {}).update(doc)
    ep = eps[_digest("pp", "severe_range", "b")]
    assert (ep["status"], ep["confirmed"], ep["program"]) == ("resolved", True, "postpartum")
    c = counts(out)
    assert (c["enroll_in"], c["enrolled"], c["enroll_dead_letter"]) == (1, 1, 0)


def test_a_second_severe_reading_fifteen_minutes_or_more_later_is_persistent():
    out = run(
        [
            reading("pp", "b", T0, 160, 90),  # exactly 160: severe
            reading("pp", "c", T0 + timedelta(minutes=15), 150, 110),  # exactly 15 min, 110
        ],
        [postpartum("pp")],
    )
    events = alerts(out)
    assert [e["event"] for e in events] == ["opened", "escalated"]
    assert events[1]["confirmation"] == "persistent"


def test_a_second_severe_reading_more_than_four_hours_later_does_not_confirm():
    out = run(
        [
            reading("pp", "b", T0, 162, 90),
            reading("pp", "c", T0 + timedelta(hours=4, seconds=1), 162, 90),  # a new wait
            reading("pp", "d", T0 + timedelta(hours=8, seconds=1), 159, 109),  # below: clear
        ],
        [postpartum("pp")],
    )
    assert [e["event"] for e in alerts(out)] == ["opened"]


def test_the_enrolment_has_no_effect_outside_its_dates_nor_without_one():
    out = run(
        [
            reading("pp", "before", T0 - timedelta(days=1), 185, 125),  # the day before start
            reading("pp", "before2", T0 - timedelta(days=1, minutes=-5), 185, 125),
            reading("pp", "after", T0 + timedelta(days=2), 185, 125),  # after its end
            reading("pp", "after2", T0 + timedelta(days=2, minutes=5), 185, 125),
            reading("x", "x1", T0, 185, 125),  # not enrolled
            reading("x", "x2", T0 + timedelta(minutes=5), 185, 125),
        ],
        [postpartum("pp", DAY0, DAY0 + timedelta(days=1))],
    )
    assert alerts(out) == []
    docs = [d for op_, _id, d in out.anomalies if op_ == "index"]
    assert docs and all("program" not in d for d in docs)
    crises = alerts(out, "hypertensive_crisis") + alerts(out, "combined_critical")
    assert crises and all("program" not in e for e in crises)  # the rule set's episodes


def test_other_episodes_of_an_enrolled_patient_carry_the_program():
    out = run(
        [reading("pp", "a", T0, 185, 125), reading("pp", "b", T0 + timedelta(minutes=5), 186, 126)],
        [enrolment("pp", {"program": "hypertension", "start": DAY0.isoformat()})],
    )
    events = [orjson.loads(v) for _, (_i, _k, v, _h) in out.alerts_kafka]
    assert events and {e["program"] for e in events} == {"hypertension"}
    assert alerts(out) == []  # the hypertension program has no severe-range rules


def test_invalid_enrolments_go_to_their_dead_letter_topic_with_a_reason():
    bad = [
        enrolment("p", b"{not json"),
        enrolment("p", {"program": "antenatal", "start": "2026-01-01"}),
        enrolment("p", {"program": "postpartum"}),
        enrolment("p", {"program": "postpartum", "start": "2026-02-01", "end": "2026-01-01"}),
        enrolment(None, {"program": "general", "start": "2026-01-01"}),
    ]
    out = run([reading("p", "a", T0, 120, 80)], [*bad, postpartum("p")])
    reasons = [dict(h)["error"].decode() for _, (_i, _k, _v, h) in out.enroll_dead_letters]
    assert sorted(reasons) == [*["invalid_enrollment"] * 4, "invalid_json"]
    assert {v for _, (_i, _k, v, _h) in out.enroll_dead_letters} == {m.value for m in bad}
    c = counts(out)
    assert (c["enroll_in"], c["enrolled"], c["enroll_dead_letter"]) == (6, 1, 5)
    assert c["in"] == 1  # enrolments are not readings


# -- adherence -------------------------------------------------------------------------------
def test_days_are_local_dates_retractions_uncount_and_the_next_cycle_rolls_over():
    late_evening = datetime.combine(DAY0, datetime.min.time(), UTC) + timedelta(
        hours=27, minutes=30
    )
    # 03:30 UTC on day 1 is 22:30 on day 0 at UTC-05:00
    out = run(
        [
            reading("a", "r0", T0, 120, 80, offset_min=-300),  # day 0 (07:00 local)
            reading("a", "r1", late_evening, 121, 80, offset_min=-300),  # still day 0
            reading("a", "r2", T0 + timedelta(days=3), 122, 80, offset_min=-300),  # day 3
            reading(
                "a",
                "r2",
                T0 + timedelta(days=3),
                122,
                80,
                offset_min=-300,
                status="entered-in-error",
            ),  # retracted: day 3 has no reading left
            reading("a", "r3", T0 + timedelta(days=30), 119, 79, offset_min=-300),  # next cycle
        ]
    )
    docs = adherence(out)
    first = docs[f"a|{DAY0.isoformat()}"]
    assert first["days_with_readings"] == 1 and first["last_reading_date"] == DAY0.isoformat()
    assert first["cycle_end"] == (DAY0 + timedelta(days=29)).isoformat()
    assert first["days_left"] == 29 and first["band"] == "under_2" and first["on_track"]
    second = docs[f"a|{(DAY0 + timedelta(days=30)).isoformat()}"]
    assert second["days_with_readings"] == 1
    # written when the count changed: day 0, day 3, day 3 removed, the next cycle's day 0
    assert len(out.adherence) == 4 == counts(out)["adherence"]


def test_an_enrolled_patient_s_cycle_starts_at_the_enrolment():
    start = DAY0 - timedelta(days=5)
    out = run(
        [reading("pp", f"r{d}", T0 + timedelta(days=d), 120, 80) for d in range(2)],
        [postpartum("pp", start)],
    )
    (doc,) = adherence(out).values()
    assert doc["cycle_start"] == start.isoformat() and doc["program"] == "postpartum"
    assert doc["days_with_readings"] == 2 and doc["days_left"] == 30 - 5 - 2


def test_device_only_counts_readings_with_a_device():
    settings = replace(Settings(), adherence_device_only=True)
    out = run(
        [
            reading("d", "r0", T0, 120, 80, device=None),
            reading("d", "r1", T0 + timedelta(days=1), 120, 80),
            reading("d", "r2", T0 + timedelta(days=2), 120, 80, device=None),
        ],
        settings=settings,
    )
    (doc,) = adherence(out).values()
    assert doc["cycle_start"] == DAY0.isoformat()  # anchored at the first reading all the same
    assert doc["days_with_readings"] == 1
    assert doc["last_reading_date"] == (DAY0 + timedelta(days=1)).isoformat()


def test_an_amended_reading_moves_to_its_new_day_and_is_not_counted_twice():
    out = run(
        [
            reading("m", "r0", T0, 120, 80),
            reading("m", "r1", T0 + timedelta(days=1), 120, 80),
            # the sender corrects r1's date: day 1 loses its only reading, day 4 gains one
            reading("m", "r1", T0 + timedelta(days=4), 121, 80, status="amended", version="2"),
            # and corrects r0's values only: same day, nothing changes
            reading("m", "r0", T0, 122, 80, status="amended", version="2"),
        ]
    )
    (doc,) = adherence(out).values()
    assert doc["days_with_readings"] == 2
    assert doc["last_reading_date"] == (DAY0 + timedelta(days=4)).isoformat()
    assert len(out.adherence) == 4  # day 0, day 1, day 1 removed, day 4


def test_an_enrolment_read_after_its_readings_judges_those_the_window_holds():
    """Two topics are read independently: after a backlog the readings may come first. The
    enrolment then judges the readings its patient's window still holds within its dates:
    the same episode and ids as in order (the score is not kept: risk 0)."""
    readings = [
        reading("pp", "x", T0 - timedelta(days=3), 170, 100),  # before the enrolment's start
        reading("pp", "b", T0, 165, 100),
        reading("pp", "c", T0 + timedelta(minutes=30), 150, 111),
        *(reading("pp", f"k{i}", T0 + timedelta(hours=1 + i), 130, 85) for i in range(2)),
    ]
    in_order = alerts(run(readings, [postpartum("pp")]))
    late = alerts(run(readings, [postpartum("pp")], enrolments_late=True))
    assert [e["event"] for e in in_order] == ["opened", "escalated"]
    assert [e["alert_id"] for e in late] == [e["alert_id"] for e in in_order]
    assert [e["confirmation"] for e in late if e["event"] == "escalated"] == ["persistent"]
    assert {e["risk_score"] for e in late} == {0.0}
    # a repeated enrolment judges nothing twice
    again = run(readings, [postpartum("pp"), postpartum("pp")], enrolments_late=True)
    assert [e["alert_id"] for e in alerts(again)] == [e["alert_id"] for e in in_order]


@pytest.mark.parametrize("ruleset", ["aha2025", "aha2017", "esh2023"])
def test_the_hypertensive_range_is_at_least_a_moderate_anomaly_under_every_rule_set(ruleset):
    """ACOG's hypertensive range (>= 140 or >= 90) is a moderate condition of the program: under
    every rule set such a reading is an anomaly of at least moderate severity, and its
    document names the program's band; 139/89 is neither."""
    out = run(
        [
            reading("pp", "s", T0, 140, 80),
            reading("pp", "d", T0 + timedelta(hours=1), 120, 90),
            reading("pp", "n", T0 + timedelta(hours=2), 139, 89),
        ],
        [postpartum("pp")],
        settings=replace(Settings(), ruleset=ruleset),
    )
    docs = {d["observation_id"]: d for op_, _id, d in out.anomalies if op_ == "index"}
    for oid in ("s", "d"):
        assert docs[oid]["severity"] in ("moderate", "high", "critical")
        assert docs[oid]["program_band"] == "hypertensive_range"
    below = docs.get("n") or next(r for _, r in out.normals if r["observation_id"] == "n")
    assert below["program"] == "postpartum" and "program_band" not in below
