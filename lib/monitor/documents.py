"""What each sink receives: the one home of output shaping (docs/contract.md).

Documents: :func:`anomaly_doc` (``bp-anomalies``), :func:`normal_record` (JSON Lines),
:func:`dlq_message` (``bp.observations.dlq``), :func:`home_item` (``bp-home-averages``).
Batch extractors, used as ``flat_map_batch`` steps over ``(patient id, Results)`` items:
:func:`keyed_elastic_actions`, :func:`normal_records`, :func:`dlq_messages`,
:func:`outcome_counts`.
Alert items: :func:`once_item` (``bp.alerts``, with its id), :func:`kafka_item` and
:func:`elastic_item` (``bp-alerts``); dead letters with their ids: :func:`dead_letter_item`.
Adding a sink means adding its document and extractor here.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from lib.domain import Assessment, DeadLetter, Reading, RetentionGap, Retraction, utc_iso
from lib.memo import remember
from lib.monitor.alerts import AlertEvent
from lib.monitor.home import HomeAverage
from lib.monitor.rules import band_of, news2_systolic
from lib.monitor.state import Results, counts_of

__all__ = [
    "anomaly_doc",
    "dlq_message",
    "dlq_messages",
    "elastic_actions",
    "elastic_item",
    "home_item",
    "iso_ms",
    "kafka_item",
    "keyed_elastic_actions",
    "normal_record",
    "normal_records",
    "once_item",
    "outcome_counts",
    "supersedes",
]

_ISO_PREFIXES: dict[tuple[int, ...] | int, str] = {}  # one minute -> its ISO prefix
_ISO_PREFIXES_MAX = 4096  # minutes; cleared when full (output never depends on it)
_ISO_SECONDS = tuple(f"{s:02d}." for s in range(60))
_ISO_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))


def iso_ms(dt: datetime) -> str:
    """:func:`lib.domain.utc_iso`, about 3x cheaper for a UTC datetime (the hot path's case).

    ``YYYY-MM-DDTHH:MM:`` comes from a small per-minute cache, seconds and milliseconds
    (truncated, as ``isoformat(timespec="milliseconds")`` does) from two tables.
    """
    if dt.tzinfo is not UTC:
        return utc_iso(dt)
    key = (dt.year, dt.month, dt.day, dt.hour, dt.minute)
    prefix = _ISO_PREFIXES.get(key)
    if prefix is None:
        prefix = _remember_prefix(key, dt)
    return prefix + _ISO_SECONDS[dt.second] + _ISO_MILLIS[dt.microsecond // 1000]


_MS_LIMIT = 2**32 * 1000  # POSIX ms below 2**32 s (the year 2106): see iso_ts


def iso_ts(ts: float) -> str:
    """``iso_ms(datetime.fromtimestamp(ts, UTC))`` without the datetime, for a broker timestamp.

    A Kafka timestamp is whole milliseconds, so ``ts`` is the double nearest ``ms / 1000``;
    below 2**32 s that double is within half a unit in the last place (2**-22 s, 0.24 us) of
    it, so ``fromtimestamp``, which rounds to the microsecond, gives exactly ``ms``. Any other
    ``ts`` (not whole milliseconds, or out of range) takes the datetime path.
    """
    ms = round(ts * 1000.0)
    if ms / 1000.0 != ts or not 0 <= ms < _MS_LIMIT:
        return iso_ms(datetime.fromtimestamp(ts, UTC))
    minute, rest = divmod(ms, 60_000)
    prefix = _ISO_PREFIXES.get(minute)
    if prefix is None:
        prefix = _remember_prefix(minute, datetime.fromtimestamp(minute * 60, UTC))
    return prefix + _ISO_SECONDS[rest // 1000] + _ISO_MILLIS[rest % 1000]


def _remember_prefix(key: tuple[int, ...] | int, at: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:`` of the UTC datetime ``at``, cached under ``key`` (the minute as
    date fields, or as minutes since the epoch)."""
    return remember(_ISO_PREFIXES, key, at.isoformat()[:17], _ISO_PREFIXES_MAX)


def anomaly_doc(assessment: Assessment, ingested_at: datetime | None) -> dict[str, Any]:
    """The ``bp-anomalies`` document (infra/elasticsearch/templates/bp-anomalies.json, strict
    mapping): the contract's fields plus status, version, source and the window ``features``.
    ``ingested_at`` is the broker's timestamp of the message; None falls back to the event time.
    """
    return _anomaly_doc(assessment, None if ingested_at is None else iso_ms(ingested_at))


def _anomaly_doc(assessment: Assessment, ingested_at: str | None) -> dict[str, Any]:
    """:func:`anomaly_doc` with ``ingested_at`` already in ISO form."""
    r = assessment.reading
    effective_at = iso_ms(r.effective_at)
    doc = _with_qualifiers(
        {
            "observation_id": r.observation_id,
            "patient_id": r.patient_id,
            "effective_at": effective_at,
            "systolic": r.systolic,
            "diastolic": r.diastolic,
            "category": assessment.category,
            "category_label": assessment.category_label or _band_label(assessment),
            "news2_systolic": news2_systolic(r.systolic),
            "anomaly_types": list(assessment.anomaly_types),
            "severity": assessment.severity,
            "risk_score": assessment.risk_score,
            "ruleset": assessment.ruleset,
            "ingested_at": effective_at if ingested_at is None else ingested_at,
            "status": r.status,
            "version": r.version,
            "source": r.source,
            "features": assessment.features.as_dict(),
        },
        r,
    )
    return _with_program(doc, assessment) if assessment.program else doc


def normal_record(assessment: Assessment) -> dict[str, Any]:
    """One JSON Lines record for a normal reading."""
    r = assessment.reading
    doc = _with_qualifiers(
        {
            "observation_id": r.observation_id,
            "patient_id": r.patient_id,
            "effective_at": iso_ms(r.effective_at),
            "systolic": r.systolic,
            "diastolic": r.diastolic,
            "category": assessment.category,
            "category_label": assessment.category_label or _band_label(assessment),
            "news2_systolic": news2_systolic(r.systolic),
            "risk_score": assessment.risk_score,
            "severity": assessment.severity,
            "ruleset": assessment.ruleset,
            "status": r.status,
            "version": r.version,
            "source": r.source,
        },
        r,
    )
    return _with_program(doc, assessment) if assessment.program else doc


def _band_label(a: Assessment) -> str:
    """The rule set's own name of the reading's band, for an Assessment built without its
    ``category_label`` (the monitor sets it on every one)."""
    r = a.reading
    return band_of(r.systolic, r.diastolic, a.ruleset).label


def _with_qualifiers(doc: dict[str, Any], r: Reading) -> dict[str, Any]:
    """Add the optional fields, present only when the sender gave them: ``effective_precision``
    (``day`` for a date-only time), ``body_position``, ``body_site``, ``measurement_setting``,
    ``device`` (codes and labels, never names). In place: no copy of the document."""
    if r.precision:
        doc["effective_precision"] = r.precision
    if r.body_position:
        doc["body_position"] = r.body_position
    if r.body_site:
        doc["body_site"] = r.body_site
    if r.setting:
        doc["measurement_setting"] = r.setting
    if r.device:
        doc["device"] = r.device
    return doc


def _with_program(doc: dict[str, Any], a: Assessment) -> dict[str, Any]:
    """Add ``program`` and ``program_band`` for a reading its patient's program covers."""
    if a.program:
        doc["program"] = a.program
        if a.program_band:
            doc["program_band"] = a.program_band
    return doc


# Our dead-letter headers; an original header of the same name is kept as ORIGINAL_PREFIX + name
DLQ_HEADERS = ("error", "error.detail", "source")
ORIGINAL_PREFIX = "original."


def dlq_message(
    dead: DeadLetter | RetentionGap,
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """The DLQ message: original key and value unchanged, original headers, then ours. An
    original ``error``, ``error.detail`` or ``source`` header (a message that was dead-lettered
    before, re-sent) is kept as ``original.error`` etc.

    A :class:`RetentionGap` gives one record without a key whose value describes the gap
    (JSON: topic, partition, from_offset, to_offset, skipped)."""
    if isinstance(dead, RetentionGap):
        return _gap_message(dead)
    headers = [
        (ORIGINAL_PREFIX + name, value) if name in DLQ_HEADERS else (name, value)
        for name, value in dead.headers
    ]
    headers += [
        ("error", dead.reason.encode()),
        ("error.detail", dead.detail.encode()),
        ("source", dead.source.encode()),
    ]
    return (dead.key, dead.raw, headers)


def _gap_message(gap: RetentionGap) -> tuple[None, bytes, list[tuple[str, bytes]]]:
    value = {
        "topic": gap.topic,
        "partition": gap.partition,
        "from_offset": gap.from_offset,
        "to_offset": gap.to_offset,
        "skipped": gap.skipped,
    }
    # the detail names the gap's start only: a re-detection after a crash (when the broker
    # may have deleted more) gets the same dead-letter id and is not sent twice
    detail = (
        f"offsets from {gap.from_offset} of partition {gap.partition} were deleted by the "
        "broker's retention before the monitor read them"
    )
    headers = [
        ("error", b"retention_gap"),
        ("error.detail", detail.encode()),
        ("source", gap.source.encode()),
    ]
    return (None, orjson.dumps(value), headers)


KeyedResults = tuple[str, Results]


def supersedes(reading: Reading) -> bool:
    """Is this reading a later version of an Observation (which may have been indexed)?"""
    v = reading.version
    return reading.status != "final" or (v.isdigit() and int(v) > 1)


def elastic_actions(batch: list[KeyedResults]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Actions for ``bp-anomalies``, in input order.

    ``("index", id, doc)`` per anomaly; ``("delete", id, None)`` per retraction, and per normal
    reading that supersedes an earlier version (an amendment that clears an anomaly removes
    its document; deleting a document that does not exist is a no-op).
    """
    return [action for _, action in keyed_elastic_actions(batch)]


def keyed_elastic_actions(
    batch: list[KeyedResults],
) -> list[tuple[str, tuple[str, str, dict[str, Any] | None]]]:
    """:func:`elastic_actions`, each with the key of the Results it came from."""
    out: list[tuple[str, tuple[str, str, dict[str, Any] | None]]] = []
    for key, res in batch:
        for o, ing in zip(res.outcomes, res.ingested_at, strict=True):
            if type(o) is Assessment:
                r = o.reading
                if o.anomaly_types:
                    doc = _anomaly_doc(o, None if ing is None else iso_ts(ing))
                    out.append((key, ("index", r.observation_id, doc)))
                elif supersedes(r):
                    out.append((key, ("delete", r.observation_id, None)))
            elif type(o) is Retraction:
                out.append((key, ("delete", o.observation_id, None)))
    return out


def normal_records(batch: list[KeyedResults]) -> list[tuple[str, dict[str, Any]]]:
    """``(patient_id, record)`` per normal reading (keyed for the sharded file sink)."""
    return [
        (o.reading.patient_id, normal_record(o))
        for _, res in batch
        for o in res.outcomes
        if type(o) is Assessment and not o.anomaly_types
    ]


def dlq_messages(batch: list[KeyedResults]) -> list[tuple[bytes | None, bytes, list]]:
    """``(original key, original value, headers)`` per dead letter."""
    return [
        dlq_message(o)  # type: ignore[arg-type]
        for _, res in batch
        for o in res.outcomes
        if type(o) is DeadLetter or type(o) is RetentionGap
    ]


def ack_dlq_messages(batch: list[KeyedResults]) -> list[tuple[bytes | None, bytes, list]]:
    """``(original key, original value, headers)`` per refused acknowledgement
    (``bp.alerts.acks.dlq``)."""
    return [dlq_message(d) for _, res in batch if res.ack_refused for d in res.ack_refused]


def enroll_dlq_messages(batch: list[KeyedResults]) -> list[tuple[bytes | None, bytes, list]]:
    """``(original key, original value, headers)`` per refused enrolment
    (``bp.enrollments.dlq``)."""
    return [dlq_message(d) for _, res in batch if res.enroll_refused for d in res.enroll_refused]


def outcome_counts(batch: list[KeyedResults]) -> list[tuple[str, dict[str, int]]]:
    """One ``("all", counts)`` item per batch, for the single counters key."""
    return [("all", counts_of(res for _, res in batch))]


# -- alert events: bp.alerts (Kafka) and bp-alerts (Elasticsearch) --------------------------
def kafka_item(event: AlertEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` for ``lib.connectors.kafka.ConfirmedKafkaSink`` (bp.alerts)."""
    return (
        event.patient_id.encode(),
        orjson.dumps(event.to_doc(note=False)),  # a note is free text: Elasticsearch only
        [
            ("alert_id", event.alert_id.encode()),
            ("event", event.event.encode()),
            ("tier", event.tier.encode()),  # a pager can route on it without parsing JSON
        ],
    )


def elastic_item(event: AlertEvent) -> tuple[str, str, dict[str, Any]]:
    """``("index", _id, doc)`` for ``lib.connectors.elastic.ElasticSink`` (bp-alerts)."""
    return ("index", event.alert_id, event.to_doc())


# What each event writes to its episode's bp-episodes document (docs/contract.md, bp-episodes)
_CLINICAL = ("condition", "severity", "tier", "observation_ids", "systolic", "diastolic",
             "risk_score")  # fmt: skip
_REARMED = {
    "acknowledged": False,
    "acknowledged_by": None,
    "acknowledged_at": None,
    "ack_note": None,
    "overdue": False,
    "overdue_at": None,
}


def episode_update(event: AlertEvent) -> tuple[str, tuple[str, str, dict[str, Any]]]:
    """``(patient id, ("update", episode_id, partial document))`` for ``bp-episodes``: the
    fields this event changes (a partial update with upsert, applied in event order, so a
    replay ends in the same document)."""
    doc = event.to_doc()
    kind = event.event
    at = doc["event_at"]
    part: dict[str, Any] = {"episode_id": event.episode_id, "patient_id": event.patient_id}
    if event.program and kind in ("opened", "escalated"):
        part["program"] = event.program
    if event.confirmed is not None and kind in ("opened", "escalated"):
        part["confirmed"] = event.confirmed
    if kind == "opened":
        part.update({k: doc[k] for k in _CLINICAL})
        part.update(_REARMED)
        part.update(status="open", opened_at=doc["opened_at"], last_event_at=at,
                    resolved_at=None, ruleset=event.ruleset)  # fmt: skip
    elif kind == "escalated":
        part.update({k: doc[k] for k in _CLINICAL})
        part.update(_REARMED)
        part.update(status="open", opened_at=doc["opened_at"], last_event_at=at)
    elif kind == "reminder":
        part.update({k: doc[k] for k in _CLINICAL})
        part["last_event_at"] = at
    elif kind == "acknowledged":
        part.update(
            acknowledged=True,
            acknowledged_by=event.acknowledged_by,
            acknowledged_at=doc["acknowledged_at"],
            ack_note=event.note or None,
        )
    elif kind == "overdue":
        part.update(overdue=True, overdue_at=at)
    else:  # resolved
        part.update(status="resolved", resolved_at=at, last_event_at=at)
    return event.patient_id, ("update", event.episode_id, part)


def adherence_item(doc: dict[str, Any]) -> tuple[str, tuple[str, str, dict[str, Any]]]:
    """``(patient id, ("index", _id, doc))`` for ``bp-adherence``: ``_id`` = patient | cycle
    start, so a cycle's growing count rewrites its one document and a replay changes nothing."""
    patient = doc["patient_id"]
    return patient, ("index", f"{patient}|{doc['cycle_start']}", doc)


def adherence_docs(batch: list[KeyedResults]) -> list[tuple[str, tuple[str, str, dict[str, Any]]]]:
    """The ``bp-adherence`` actions of a batch, in order."""
    return [adherence_item(d) for _, res in batch if res.adherence for d in res.adherence]


def home_item(average: HomeAverage) -> tuple[str, str, dict[str, Any]]:
    """``("index", _id, doc)`` for ``bp-home-averages``: ``_id`` = patient | series start, so a
    growing series rewrites its one document and a replay changes nothing."""
    return ("index", average.doc_id, average.to_doc())


def once_item(event: AlertEvent) -> tuple[str, tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """``(routing key, (id, key, value, headers))`` for ``IdempotentKafkaSink`` (bp.alerts)."""
    key, value, headers = kafka_item(event)
    return (event.patient_id, (event.alert_id, key, value, headers))


# -- dead letters: bp.observations.dlq through the idempotent Kafka sink -------------------
def dead_letter_item(
    record: tuple[bytes | None, bytes, list[tuple[str, bytes]]],
) -> tuple[str, tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]:
    """A DLQ ``(key, value, headers)`` record as an ``IdempotentKafkaSink`` item
    ``(routing key, (id, key, value, headers))``.

    Its id is the message's ``source`` (topic:partition:offset) plus a digest of the reason and
    its detail: unique per dead-lettered message (one at most per message), and the same when
    a recovery replay dead-letters it again. Routed by the original key.
    """
    key, value, headers = record
    h = dict(headers)
    digest = hashlib.sha256(h.get("error.detail", b"") + b"\0" + h.get("error", b""))
    source = h.get("source", b"").decode("utf-8", "replace")
    if not source:  # no broker coordinates (not from Kafka): fall back to the content
        digest.update(value)
    rec_id = f"{source}#{digest.hexdigest()[:16]}"
    routing = key.decode("utf-8", "replace") if key is not None else ""
    return routing, (rec_id, key, value, headers)
