"""Parsing a batch of messages and grouping the outcomes by patient.

The patient step is keyed by patient id, so one batch gives one item per patient (its outcomes
in input order). An outcome without a patient (a dead letter, a skipped message) goes to one of
:data:`SHARDS` keys of its own, :func:`no_patient_key` of its message key, which hold no state.
Every message gives at least one outcome: ``in`` counts messages, and each carries a ``first``
flag on its first outcome. :func:`shard_of` groups patients for the Elasticsearch writing
steps (a writer per shard, not per patient).
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from lib.domain import DeadLetter, Outcome, Reading, RetentionGap, Skipped
from lib.memo import remember
from lib.monitor import fhir

__all__ = [
    "SHARDS",
    "Entry",
    "SourceMessage",
    "ingested_at_of",
    "no_patient_key",
    "parse_message",
    "parse_messages",
    "shard_of",
    "source_of",
]

logger = logging.getLogger(__name__)

SHARDS = 32
_SHARD_KEYS = tuple(str(i) for i in range(SHARDS))


class SourceMessage(Protocol):
    """The fields read from an input message (``bytewax.connectors.kafka.KafkaSourceMessage``)."""

    key: bytes | None
    value: bytes
    headers: Any
    topic: str | None
    partition: int | None
    offset: int | None
    timestamp: tuple[int, int] | None


# One parsed Observation on its way to its patient: (outcome, ingested_at POSIX s | None,
# 1 if it is the first outcome of its input message else 0 -- for the ``in`` counter).
Entry = tuple[Outcome, float | None, int]


_NO_PATIENT = (DeadLetter, Skipped)  # a tuple: isinstance with a union builds it per call

_shard_cache: dict[str, str] = {}
_SHARD_CACHE_MAX = 1 << 17  # patients; cleared when full (the result never depends on it)


def shard_of(patient_id: str) -> str:
    """Stable shard key of a patient (the same in every process and run)."""
    shard = _shard_cache.get(patient_id)
    if shard is None:
        shard = _SHARD_KEYS[zlib.crc32(patient_id.encode()) % SHARDS]
        remember(_shard_cache, patient_id, shard, _SHARD_CACHE_MAX)
    return shard


# A patient id is a FHIR id or reference: it never holds a control character.
_NO_PATIENT_KEYS = tuple(f"\x1fno-patient/{i}" for i in range(SHARDS))


def no_patient_key(key: bytes | None) -> str:
    """The patient-step key of an outcome without a patient (by its message key)."""
    return _NO_PATIENT_KEYS[zlib.crc32(key or b"") % SHARDS]


def group_side_input(
    messages: Sequence[SourceMessage],
    parse: Callable[[SourceMessage], Any],
    valid: type,
    refused: Callable[[Any], Any],
) -> list[tuple[str, list[Entry]]]:
    """A batch of a side input (acknowledgements, enrolments) grouped by patient in input
    order: ``parse(msg)`` of type ``valid`` under its ``patient_id``, anything else wrapped
    by ``refused`` under a no-patient key. Their ``first`` flag is 0: not counted in ``in``."""
    by_key: defaultdict[str, list[Entry]] = defaultdict(list)
    for msg in messages:
        item = parse(msg)
        ing = ingested_at_of(msg)
        if type(item) is valid:
            by_key[item.patient_id].append((item, ing, 0))
        else:
            by_key[no_patient_key(msg.key)].append((refused(item), ing, 0))
    return list(by_key.items())


def source_of(msg: SourceMessage) -> str:
    topic = getattr(msg, "topic", None)
    if topic is None:
        return ""
    return f"{topic}:{getattr(msg, 'partition', '')}:{getattr(msg, 'offset', '')}"


def ingested_at_of(msg: SourceMessage) -> float | None:
    """The broker's timestamp of the message: deterministic under replay, unlike a wall clock."""
    ts = getattr(msg, "timestamp", None)
    if ts and ts[0] != 0 and ts[1] >= 0:  # type 0: TIMESTAMP_NOT_AVAILABLE
        return ts[1] / 1000.0
    return None


def parse_message(msg: SourceMessage) -> list[Outcome]:
    """All outcomes of one input message: never empty, never raises."""
    key = msg.key
    value = msg.value
    source = source_of(msg)
    headers = getattr(msg, "headers", None) or ()
    if type(headers) is not list and type(headers) is not tuple:
        headers = tuple(headers)  # read more than once (one dead letter per bad Bundle entry)
    if type(value) is not bytes:
        if not isinstance(value, bytearray):
            detail = "message without a value"
            return [DeadLetter(b"", key, "no_value", detail, source, tuple(headers))]
        value = bytes(value)
    try:
        outcomes = fhir.parse(value, key, source, headers)
    except Exception as exc:  # the parser promises not to raise; if it does, dead-letter it
        # type only: an exception's text may quote the payload (PHI)
        logger.error("parser_error error=%s source=%s", type(exc).__name__, source)
        detail = f"parser failed: {type(exc).__name__}"
        return [DeadLetter(bytes(value), key, "parser_error", detail, source, tuple(headers))]
    if not outcomes:
        return [DeadLetter(bytes(value), key, "empty_bundle", "no entries", source, tuple(headers))]
    return outcomes


def parse_messages(messages: Sequence[SourceMessage]) -> list[tuple[str, list[Entry]]]:
    """Parse a batch and group the outcomes by patient, keeping the input order."""
    by_key: defaultdict[str, list[Entry]] = defaultdict(list)
    for msg in messages:
        if type(msg) is RetentionGap:  # reported by the source: not a message (first = 0)
            by_key[no_patient_key(None)].append((msg, None, 0))
            continue
        ingested = ingested_at_of(msg)
        first = 1
        for outcome in parse_message(msg):
            if type(outcome) is Reading or not isinstance(outcome, _NO_PATIENT):
                key = outcome.patient_id  # type: ignore[union-attr]
            else:  # no patient: by the message key
                key = no_patient_key(outcome.key)  # type: ignore[union-attr]
            by_key[key].append((outcome, ingested, first))
            first = 0
    return list(by_key.items())
