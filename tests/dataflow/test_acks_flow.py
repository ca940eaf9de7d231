"""The alert loop in the production graph (``dataflows.monitor.build`` with
``recording_io``): acknowledgements, overdue deadlines, the bp-episodes updates and the
acknowledgements' dead letters.

Deadlines are measured on the wall clock, so the inputs here are timed: each source emits its
items at given offsets from its start (:class:`TimedSource`) and ends after a while, and the
deadline is a fraction of a minute.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import run_main

from dataflows.monitor import RecordedOutputs, build, recording_io
from lib.domain import Reading
from lib.monitor.alerts import _digest
from lib.settings import Settings
from lib.sim import fhir_writer as obs

# Readings an hour ago: recent enough to be armed (the no-data lookback is 7 days)
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
DEADLINE_MIN = 0.02  # 1.2 s
SETTINGS = replace(Settings(), ack_deadline_minutes=DEADLINE_MIN, ack_settle_seconds=0.0)


class LowRisk:
    """A risk model that scores every reading 0.1: a crisis then needs a second reading to
    page (confirmation), which is the escalation these tests use."""

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        return np.tile([0.9, 0.1], (len(matrix), 1))


class _TimedPartition(StatefulSourcePartition[Any, None]):
    def __init__(self, items: list[tuple[float, Any]], end_after: float) -> None:
        self.items = sorted(items, key=lambda x: x[0])
        self.end_after = end_after
        self.start = time.monotonic()
        self.i = 0

    def next_batch(self) -> list[Any]:
        elapsed = time.monotonic() - self.start
        if self.i >= len(self.items) and elapsed >= self.end_after:
            raise StopIteration
        out = []
        while self.i < len(self.items) and self.items[self.i][0] <= elapsed:
            out.append(self.items[self.i][1])
            self.i += 1
        return out

    def next_awake(self) -> datetime:
        return datetime.now(UTC) + timedelta(milliseconds=20)

    def snapshot(self) -> None:
        return None


class TimedSource(FixedPartitionedSource[Any, None]):
    """Emits ``(seconds after start, item)`` items at their time, then ends at ``end_after``."""

    def __init__(self, items: list[tuple[float, Any]], end_after: float) -> None:
        self.items = items
        self.end_after = end_after

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _TimedPartition:
        return _TimedPartition(self.items, self.end_after)


def reading_msg(i: int, sys_: float, dia: float, patient: str = "p1") -> KafkaSourceMessage:
    r = Reading(
        f"{patient}-obs-{i}", patient, T0 + timedelta(minutes=5 * i), float(sys_), float(dia)
    )
    value = obs.encode(obs.to_fhir(r, "Jane Testpatient"))
    now_ms = int(time.time() * 1000)
    return KafkaSourceMessage(
        patient.encode(), value, topic="bp.observations", partition=0, offset=i,
        timestamp=(1, now_ms),
    )  # fmt: skip


_ack_offsets = iter(range(10**6))


def ack_msg(
    episode_id: str, by: str = "nurse-7", patient: str = "p1", note: str | None = "seen"
) -> KafkaSourceMessage:
    body: dict[str, Any] = {"episode_id": episode_id, "by": by, "at": "2026-12-05T10:00:00+01:00"}
    if note is not None:
        body["note"] = note
    return raw_ack(orjson.dumps(body), patient)


def raw_ack(value: bytes, patient: str | None = "p1") -> KafkaSourceMessage:
    return KafkaSourceMessage(
        None if patient is None else patient.encode(), value, topic="bp.alerts.acks",
        partition=0, offset=next(_ack_offsets), timestamp=(1, int(time.time() * 1000)),
    )  # fmt: skip


def episode_of(patient: str, first_obs: str, family: str = "hypertension") -> str:
    return _digest(patient, family, first_obs)


def run(
    observations: list[tuple[float, Any]],
    acks: list[tuple[float, Any]],
    end_after: float = 3.0,
    settings: Settings = SETTINGS,
) -> RecordedOutputs:
    io, out = recording_io(
        TimedSource(observations, end_after), ack_source=TimedSource(acks, end_after)
    )
    run_main(build(settings, io=io, model=LowRisk()))
    return out


def events(out: RecordedOutputs) -> list[dict[str, Any]]:
    """The bp.alerts messages, in order, as their JSON."""
    return [orjson.loads(value) for _, (_id, _key, value, _h) in out.alerts_kafka]


def episodes(out: RecordedOutputs) -> dict[str, dict[str, Any]]:
    """bp-episodes after applying the partial updates in order (what Elasticsearch holds)."""
    state: dict[str, dict[str, Any]] = {}
    for op_, _id, doc in out.episodes:
        assert op_ == "update" and doc is not None
        state.setdefault(_id, {}).update(doc)
    return state


def reconciled(out: RecordedOutputs) -> dict[str, int]:
    c = out.stats[-1]
    assert c["ack_in"] == c["acknowledged"] + c["ack_repeat"] + c["ack_dead_letter"]
    assert c["ack_dead_letter"] == len(out.ack_dead_letters)
    assert c["overdue"] == sum(1 for e in events(out) if e["event"] == "overdue")
    return c


def test_acknowledged_before_the_deadline_is_not_overdue():
    ep = episode_of("p1", "p1-obs-1")
    out = run([(0.0, reading_msg(1, 188, 104))], [(0.3, ack_msg(ep))], end_after=2.5)
    got = events(out)
    assert [(e["event"], e["episode_id"]) for e in got] == [("opened", ep), ("acknowledged", ep)]
    ack = got[1]
    assert ack["acknowledged_by"] == "nurse-7"
    assert ack["acknowledged_at"] == "2026-12-05T09:00:00.000Z"
    assert "note" not in ack  # free text stays out of Kafka
    es_ack = [doc for _, _id, doc in out.alerts_es if doc["event"] == "acknowledged"]
    assert es_ack[0]["note"] == "seen"  # ... and goes to Elasticsearch
    doc = episodes(out)[ep]
    assert (doc["status"], doc["acknowledged"], doc["overdue"]) == ("open", True, False)
    assert doc["acknowledged_by"] == "nurse-7" and doc["ack_note"] == "seen"
    assert doc["severity"] == "critical"
    c = reconciled(out)
    assert (c["ack_in"], c["acknowledged"], c["overdue"]) == (1, 1, 0)


def test_without_an_acknowledgement_the_event_goes_overdue_once():
    ep = episode_of("p1", "p1-obs-1")
    out = run([(0.0, reading_msg(1, 188, 104))], [], end_after=3.0)
    got = events(out)
    assert [e["event"] for e in got] == ["opened", "overdue"]
    opened, overdue = got
    assert overdue["episode_id"] == ep
    assert overdue["alert_id"] == _digest(opened["alert_id"], "overdue")
    assert overdue["overdue_minutes"] >= DEADLINE_MIN
    assert (overdue["condition"], overdue["severity"]) == (opened["condition"], "critical")
    doc = episodes(out)[ep]
    assert (doc["acknowledged"], doc["overdue"]) == (False, True)
    assert reconciled(out)["overdue"] == 1


def test_an_escalation_rearms_the_loop():
    """Acknowledged at opening; the confirming reading escalates (review -> urgent): a new
    acknowledgement is needed, none comes, so that escalation goes overdue."""
    ep = episode_of("p1", "p1-obs-1")
    out = run(
        [(0.0, reading_msg(1, 188, 104)), (0.6, reading_msg(2, 190, 106))],
        [(0.3, ack_msg(ep))],
        end_after=3.5,
    )
    got = events(out)
    assert [e["event"] for e in got] == ["opened", "acknowledged", "escalated", "overdue"]
    assert (got[0]["tier"], got[2]["tier"]) == ("review", "urgent")
    assert got[3]["alert_id"] == _digest(got[2]["alert_id"], "overdue")  # the escalation's
    doc = episodes(out)[ep]
    assert (doc["acknowledged"], doc["acknowledged_by"], doc["overdue"]) == (False, None, True)
    assert doc["tier"] == "urgent"
    assert reconciled(out)["acknowledged"] == 1


def test_a_repeated_acknowledgement_is_counted_not_re_emitted():
    ep = episode_of("p1", "p1-obs-1")
    out = run(
        [(0.0, reading_msg(1, 188, 104))],
        [(0.3, ack_msg(ep)), (0.5, ack_msg(ep, by="nurse-8"))],
        end_after=2.5,
    )
    assert [e["event"] for e in events(out)] == ["opened", "acknowledged"]
    assert episodes(out)[ep]["acknowledged_by"] == "nurse-7"
    c = reconciled(out)
    assert (c["ack_in"], c["acknowledged"], c["ack_repeat"]) == (2, 1, 1)


def test_refused_acknowledgements_go_to_their_dead_letter_topic():
    ep = episode_of("p1", "p1-obs-1")
    observations = [(0.0, reading_msg(1, 188, 104))] + [
        (0.1, reading_msg(i, 118, 76))
        for i in (2, 3, 4)  # three clear readings: resolved
    ]
    bad_json = raw_ack(b'{"episode_id": ')
    no_by = raw_ack(orjson.dumps({"episode_id": ep, "at": "2026-12-05T10:00:00Z"}))
    no_key = raw_ack(orjson.dumps({"episode_id": ep, "by": "x", "at": "2026-12-05T10:00:00Z"}),
                     patient=None)  # fmt: skip
    acks = [
        (0.6, ack_msg(ep)),  # resolved by then
        (0.6, ack_msg(episode_of("p1", "p1-obs-99"))),  # never existed
        (0.6, ack_msg(ep, patient="p2")),  # another patient's key
        (0.6, bad_json),
        (0.6, no_by),
        (0.6, no_key),
    ]
    out = run(observations, acks, end_after=2.0)
    assert [e["event"] for e in events(out)] == ["opened", "resolved"]
    reasons = sorted(dict(h)["error"].decode() for _, (_i, _k, _v, h) in out.ack_dead_letters)
    assert reasons == sorted(
        [
            "episode_resolved",
            "unknown_episode",
            "unknown_episode",
            "invalid_json",
            "invalid_ack",
            "invalid_ack",
        ]
    )
    # the original bytes, unchanged, and a unique id per refused message
    assert {v for _, (_i, _k, v, _h) in out.ack_dead_letters} >= {bad_json.value, no_by.value}
    assert len({i for _, (i, _k, _v, _h) in out.ack_dead_letters}) == 6
    c = reconciled(out)
    assert (c["ack_in"], c["ack_dead_letter"], c["acknowledged"]) == (6, 6, 0)
    assert episodes(out)[ep]["status"] == "resolved"
    assert not out.dead_letters  # the observations' dead-letter topic is not theirs


def test_below_the_minimum_severity_nothing_is_armed():
    ep = episode_of("p1", "p1-obs-1")
    out = run([(0.0, reading_msg(1, 152, 94))], [], end_after=2.0)  # stage 2: severity high
    assert [e["event"] for e in events(out)] == ["opened"]
    assert episodes(out)[ep]["overdue"] is False


def test_after_an_escalation_a_new_acknowledgement_is_applied():
    """The same acknowledgement before and after the escalation: two acknowledged events,
    one per level, and no overdue."""
    ep = episode_of("p1", "p1-obs-1")
    out = run(
        [(0.0, reading_msg(1, 188, 104)), (0.5, reading_msg(2, 190, 106))],
        [(0.25, ack_msg(ep)), (0.8, ack_msg(ep, by="nurse-9"))],
        end_after=3.0,
    )
    got = events(out)
    assert [e["event"] for e in got] == ["opened", "acknowledged", "escalated", "acknowledged"]
    assert got[1]["alert_id"] != got[3]["alert_id"]
    doc = episodes(out)[ep]
    assert (doc["acknowledged"], doc["acknowledged_by"], doc["overdue"]) == (True, "nurse-9", False)
    c = reconciled(out)
    assert (c["acknowledged"], c["ack_repeat"], c["overdue"]) == (2, 0, 0)
