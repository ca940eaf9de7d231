"""Acknowledgements (lib.monitor.acks) and their deadlines (lib.monitor.deadlines), pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage

from lib.domain import DeadLetter
from lib.errors import RecoveryError
from lib.monitor.acks import MAX_NOTE, Ack, AckState, OpenEpisode, acknowledge, parse_ack, settle
from lib.monitor.alert_events import AlertEvent, _digest
from lib.monitor.deadlines import DeadlineRule, Deadlines
from lib.monitor.patient import SNAPSHOT_TAG, Patient

NOW = 1_800_000_000.0
AT = datetime.fromtimestamp(NOW - 600, UTC)


def msg(value: bytes, key: bytes | None = b"p1") -> KafkaSourceMessage:
    return KafkaSourceMessage(key, value, topic="bp.alerts.acks", partition=2, offset=9)


def ack_json(**fields) -> bytes:
    body = {"episode_id": "e1", "by": "u1", "at": "2026-12-05T10:00:00-05:00"} | fields
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


def test_a_valid_acknowledgement():
    a = parse_ack(msg(ack_json(note="called the patient")))
    assert type(a) is Ack
    assert (a.episode_id, a.patient_id, a.by, a.note) == ("e1", "p1", "u1", "called the patient")
    assert a.at == datetime(2026, 12, 5, 15, 0, tzinfo=UTC)
    assert a.source == "bp.alerts.acks:2:9"


@pytest.mark.parametrize(
    ("value", "key", "reason", "detail_has"),
    [
        (b"{nope", b"p1", "invalid_json", "JSON"),
        (b"[1]", b"p1", "invalid_ack", "object"),
        (ack_json(), None, "invalid_ack", "key"),
        (ack_json(episode_id=None), b"p1", "invalid_ack", "episode_id"),
        (ack_json(by=""), b"p1", "invalid_ack", "by"),
        (ack_json(by="x" * 257), b"p1", "invalid_ack", "by"),
        (ack_json(at="yesterday"), b"p1", "invalid_ack", "ISO"),
        (ack_json(at="2026-12-05T10:00:00"), b"p1", "invalid_ack", "offset"),
        (ack_json(note="n" * (MAX_NOTE + 1)), b"p1", "invalid_ack", "note"),
        (ack_json(note=5), b"p1", "invalid_ack", "note"),
    ],
)
def test_refused_acknowledgements_name_the_field_not_its_value(value, key, reason, detail_has):
    d = parse_ack(msg(value, key))
    assert type(d) is DeadLetter
    assert (d.reason, d.raw, d.key) == (reason, value, key)
    assert detail_has in d.detail
    assert "n" * 50 not in d.detail and "x" * 50 not in d.detail


def _ack(episode: str = "e1", by: str = "u1") -> Ack:
    return Ack(episode, "p1", by, AT, "", b"{}", b"p1")


def _open(level: str = "crisis:2.3:review") -> dict[str, OpenEpisode]:
    return {"e1": OpenEpisode("e1", level, "hypertensive_crisis", "critical", AT, "review", "x")}


def test_acknowledge_once_per_level():
    st, first = acknowledge(None, _open(), _ack())
    assert first.event is not None and first.event.acknowledged_by == "u1"
    st, again = acknowledge(st, _open(), _ack(by="u2"))
    assert (again.event, again.repeat) == (None, True)
    st, higher = acknowledge(st, _open("crisis:2.3:urgent"), _ack(by="u2"))
    assert higher.event is not None and higher.event.alert_id != first.event.alert_id
    assert st is not None and st.acked["e1"][1] == "u2"


def test_a_resolved_episode_is_remembered_for_the_refusal():
    st, _ = acknowledge(None, _open(), _ack())
    st = settle(st, [_event("resolved")])
    assert st is not None and "e1" not in st.acked and st.closed == ("e1",)
    _, out = acknowledge(st, {}, _ack())
    assert out.refused is not None and out.refused.reason == "episode_resolved"
    _, out = acknowledge(st, {}, _ack("e2"))
    assert out.refused is not None and out.refused.reason == "unknown_episode"


def _event(kind: str, severity: str = "critical", at: datetime = AT, aid: str = "a1") -> AlertEvent:
    return AlertEvent(aid, "e1", "p1", "hypertensive_crisis", kind, severity, at, at, ("o1",),
                      188.0, 104.0, 0.1, "aha2025")  # fmt: skip


RULE = DeadlineRule(deadline_s=60.0, settle_s=30.0, lookback_s=86400.0, started_at=NOW)


def test_a_deadline_fires_once_after_the_settle_period():
    d = Deadlines()
    d.follow(RULE, [_event("opened")], NOW)
    assert d.next_due(RULE) == NOW + 60
    assert d.fire(RULE, NOW + 59) == []
    [overdue] = d.fire(RULE, NOW + 61)
    assert (overdue.event, overdue.overdue_minutes) == ("overdue", round(61 / 60, 2))
    assert overdue.event_at == datetime.fromtimestamp(NOW + 60, UTC)
    assert d.fire(RULE, NOW + 999) == [] and not d.pending


def test_the_settle_period_holds_deadlines_but_not_the_end_of_a_bounded_run():
    rule = DeadlineRule(deadline_s=5.0, settle_s=300.0, started_at=NOW)
    d = Deadlines()
    d.follow(rule, [_event("opened")], NOW)
    assert d.next_due(rule) == NOW + 300  # not before the settle period ends
    assert d.fire(rule, NOW + 10) == []
    assert [e.event for e in d.fire(rule, NOW + 10, caught_up=True)] == ["overdue"]


def test_what_arms_and_what_clears():
    d = Deadlines()
    d.follow(RULE, [_event("opened", severity="high")], NOW)  # below critical
    old = AT - timedelta(days=2)
    d.follow(RULE, [_event("opened", at=old)], NOW)  # older than the lookback
    assert not d.pending
    d.follow(RULE, [_event("opened"), _event("acknowledged")], NOW)
    assert not d.pending
    d.follow(RULE, [_event("opened"), _event("reminder"), _event("resolved")], NOW)
    assert not d.pending
    d.follow(RULE, [_event("opened")], NOW)
    d.follow(RULE, [_event("escalated", aid="a2")], NOW + 50)  # restarts the deadline
    assert d.fire(RULE, NOW + 70) == []
    [overdue] = d.fire(RULE, NOW + 111)
    assert overdue.alert_id == _digest("a2", "overdue")  # the escalation's overdue
    assert overdue.overdue_minutes == round(61 / 60, 2)


def test_deadline_snapshots_resume_and_refuse_unknown_versions():
    d = Deadlines()
    d.follow(RULE, [_event("opened")], NOW)
    back = Deadlines(d.snapshot())
    assert [e.alert_id for e in back.fire(RULE, NOW + 61)] == [
        e.alert_id for e in d.fire(RULE, NOW + 61)
    ]
    with pytest.raises(RecoveryError, match="new recovery store"):
        Deadlines(("bpw-deadlines", 99, {}))


def test_patient_snapshots_keep_acknowledgements_and_read_version_1():
    p = Patient("p1")
    p.acks = AckState({"e1": ("l", "u1", AT)}, ("e0",))
    back = Patient.restore(p.snapshot())
    assert back.acks == p.acks
    v1 = (SNAPSHOT_TAG, 1, "p1", None, None, None, None, None, 5.0, None)
    old = Patient.restore(v1)
    assert (old.patient_id, old.touched_at, old.acks) == ("p1", 5.0, None)
    with pytest.raises(RecoveryError):
        Patient.restore((SNAPSHOT_TAG, 1, "p1"))
