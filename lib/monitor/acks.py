"""Acknowledgements of alert episodes (``bp.alerts.acks``): parsing, and what they do to a
patient's state. Pure, no I/O.

An acknowledgement says that a person has seen an open episode (IHE PCD Alert Communication
Management tracks whether an alert was delivered, read and accepted, so that a notification
never falls into a black hole). The message is keyed by patient id, so it reaches the
patient's state in the monitor's ``patient_windows`` step beside the readings
(:meth:`lib.monitor.patient.Patient.process`), and is judged there against the patient's open
episodes (reading episodes, ``home_hypertension``, ``no_data``):

* the first acknowledgement of an open episode at its current **level** (the level of its
  latest ``opened`` / ``escalated`` event: :func:`level_of`) gives an ``acknowledged`` event,
  ``alert_id`` = ``sha256(episode id | acknowledged | level)``, so a replay gives the same id;
* a repeat at the same level is counted (``ack_repeat``), not re-emitted; after an
  escalation the level has changed, so the episode needs a new acknowledgement;
* an acknowledgement of an episode the patient does not hold open is refused to
  ``bp.alerts.acks.dlq``: ``episode_resolved`` when it is one of the patient's last
  :data:`CLOSED_KEPT` resolved episodes, else ``unknown_episode``; a message that is not a
  valid acknowledgement is refused when parsed (``no_value``, ``invalid_json``,
  ``invalid_ack``).

The ``overdue`` deadline of an unacknowledged event is kept downstream, per shard
(:mod:`lib.monitor.deadlines`). The ``note`` goes to Elasticsearch only: never to Kafka,
never to a log line.

State per patient (:class:`AckState`, ``Patient.acks``): the acknowledged level of each open
episode that has one, and the ids of the last resolved episodes; ``None`` for the patients
without either, so its cost follows the patients with acknowledged episodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from lib.domain import DeadLetter
from lib.monitor.alert_events import AlertEvent, _digest
from lib.monitor.shards import Entry, SourceMessage, group_side_input, source_of

__all__ = [
    "ACK_DEAD_LETTER_REASONS",
    "CLOSED_KEPT",
    "MAX_BY",
    "MAX_NOTE",
    "Ack",
    "AckRefused",
    "AckState",
    "OpenEpisode",
    "acknowledge",
    "parse_ack",
    "parse_acks",
]

ACK_DEAD_LETTER_REASONS = (
    "no_value",
    "invalid_json",
    "invalid_ack",
    "unknown_episode",
    "episode_resolved",
)
MAX_NOTE = 500  # characters of ``note``
MAX_BY = 256  # characters of ``by``
MAX_EPISODE_ID = 256
CLOSED_KEPT = 4  # resolved episode ids a patient remembers (``episode_resolved``)
MAX_ACK_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Ack:
    """A valid acknowledgement; ``raw``, ``key``, ``source`` and ``headers`` are kept to
    dead-letter it unchanged when its episode is not open."""

    episode_id: str
    patient_id: str
    by: str
    at: datetime
    note: str
    raw: bytes
    key: bytes | None
    source: str = ""
    headers: tuple[tuple[str, bytes], ...] = ()

    def refused(self, reason: str, detail: str) -> DeadLetter:
        return DeadLetter(self.raw, self.key, reason, detail, self.source, self.headers)


@dataclass(frozen=True, slots=True)
class AckRefused:
    """A message of ``bp.alerts.acks`` refused when parsed, on its way to the dead letters."""

    dead: DeadLetter


def parse_ack(msg: SourceMessage) -> Ack | DeadLetter:
    """One message of ``bp.alerts.acks``: a valid :class:`Ack`, or its dead letter (the detail
    names the field, never its value: a note or a user id is not for logs or headers)."""
    key = msg.key
    source = source_of(msg)
    raw_headers = getattr(msg, "headers", None) or ()
    headers = tuple(raw_headers)
    value = msg.value
    if type(value) is not bytes:
        if not isinstance(value, bytearray):
            return DeadLetter(b"", key, "no_value", "message without a value", source, headers)
        value = bytes(value)

    def refuse(reason: str, detail: str) -> DeadLetter:
        return DeadLetter(value, key, reason, detail, source, headers)

    if len(value) > MAX_ACK_BYTES:
        return refuse("invalid_ack", f"message larger than {MAX_ACK_BYTES} bytes")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return refuse("invalid_json", "not JSON")
    if type(doc) is not dict:
        return refuse("invalid_ack", "not a JSON object")
    patient = key.decode("utf-8", "replace").strip() if key else ""
    if not patient:
        return refuse("invalid_ack", "no key: the key must be the patient id")
    episode_id = doc.get("episode_id")
    if type(episode_id) is not str or not 0 < len(episode_id) <= MAX_EPISODE_ID:
        return refuse("invalid_ack", "episode_id missing or not a string of 1..256 characters")
    by = doc.get("by")
    if type(by) is not str or not by.strip() or len(by) > MAX_BY:
        return refuse("invalid_ack", f"by missing or not a string of 1..{MAX_BY} characters")
    at_text = doc.get("at")
    if type(at_text) is not str:
        return refuse("invalid_ack", "at missing: an ISO 8601 time with an offset")
    try:
        at = datetime.fromisoformat(at_text)
    except ValueError:
        return refuse("invalid_ack", "at is not an ISO 8601 time")
    if at.tzinfo is None:
        return refuse("invalid_ack", "at has no UTC offset")
    note = doc.get("note")
    if note is None:
        note = ""
    if type(note) is not str or len(note) > MAX_NOTE:
        return refuse("invalid_ack", f"note not a string of at most {MAX_NOTE} characters")
    return Ack(episode_id, patient, by, at, note, value, key, source, headers)


def parse_acks(messages: Sequence[SourceMessage]) -> list[tuple[str, list[Entry]]]:
    """Parse a batch of acknowledgements and group them by patient, in input order: a valid
    one under its patient's key, a refused one (:class:`AckRefused`) under a no-patient key.
    Their ``first`` flag is 0: acknowledgements are not counted in ``in``."""
    return group_side_input(messages, parse_ack, Ack, AckRefused)


class OpenEpisode(NamedTuple):
    """What an acknowledgement needs of an open episode."""

    episode_id: str
    level: str  # changes with every opened / escalated event (:func:`level_of`)
    condition: str
    severity: str
    opened_at: datetime
    tier: str
    ruleset: str


def level_of(condition: str, level: tuple[int, int], tier: str) -> str:
    """The level of a reading episode: what its latest opened / escalated event reached (every
    escalation changes the condition's rank, the severity's rank or the tier)."""
    return f"{condition}:{level[0]}.{level[1]}:{tier}"


@dataclass(slots=True)
class AckState:
    """One patient's acknowledgements: ``acked`` maps an open episode's id to ``(level, by,
    at)`` of its acknowledgement; ``closed`` holds the patient's last resolved episode ids."""

    acked: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)
    closed: tuple[str, ...] = ()

    def snapshot(self) -> tuple[Any, ...]:
        return (dict(self.acked), self.closed)

    @classmethod
    def restore(cls, stored: tuple[Any, ...]) -> AckState:
        acked, closed = stored
        return cls(dict(acked), tuple(closed))

    def holds_acks(self) -> bool:
        return bool(self.acked)


class AckOutcome(NamedTuple):
    """What one acknowledgement did: an event, a repeat, or a refusal."""

    event: AlertEvent | None
    repeat: bool
    refused: DeadLetter | None


def acknowledge(
    state: AckState | None, episodes: dict[str, OpenEpisode], ack: Ack
) -> tuple[AckState | None, AckOutcome]:
    """Apply one acknowledgement to a patient with these open ``episodes``."""
    ep = episodes.get(ack.episode_id)
    if ep is None:
        if state is not None and ack.episode_id in state.closed:
            return state, AckOutcome(
                None, False, ack.refused("episode_resolved", "episode resolved")
            )
        detail = "no open episode of the key's patient has this id"
        return state, AckOutcome(None, False, ack.refused("unknown_episode", detail))
    st = state if state is not None else AckState()
    held = st.acked.get(ep.episode_id)
    if held is not None and held[0] == ep.level:
        return st, AckOutcome(None, True, None)
    st.acked[ep.episode_id] = (ep.level, ack.by, ack.at)
    event = AlertEvent(
        alert_id=_digest(ep.episode_id, "acknowledged", ep.level),
        episode_id=ep.episode_id,
        patient_id=ack.patient_id,
        condition=ep.condition,
        event="acknowledged",
        severity=ep.severity,
        opened_at=ep.opened_at,
        event_at=ack.at,
        observation_ids=(),
        systolic=0.0,
        diastolic=0.0,
        risk_score=0.0,
        ruleset=ep.ruleset,
        conditions=(),
        tier=ep.tier,
        acknowledged_by=ack.by,
        acknowledged_at=ack.at,
        note=ack.note,
    )
    return st, AckOutcome(event, False, None)


def settle(state: AckState | None, events: Iterable[AlertEvent]) -> AckState | None:
    """The patient's acknowledgements after its episodes' events: a resolved episode leaves
    ``acked`` and joins ``closed``. None when nothing is left to hold."""
    st = state
    for e in events:
        if e.event != "resolved":
            continue
        if st is None:
            st = AckState()
        st.acked.pop(e.episode_id, None)
        st.closed = (e.episode_id, *st.closed)[:CLOSED_KEPT]
    return st
