"""FHIR R4 blood-pressure Observations -> outcomes (the monitor's hot path).

``parse(value, key, source, headers)`` turns one Kafka message into a list of outcomes
(:mod:`lib.domain`): ``Reading`` | ``Retraction`` | ``Ignored`` | ``Average`` | ``Skipped`` |
``DeadLetter``. It never raises, never returns an empty list, gives **at most one dead letter
per message**, and does no I/O, no logging of payloads and no wall-clock work.

What is accepted
----------------
- A lone resource, or a ``Bundle`` of any ``type`` (transaction, batch, collection, searchset,
  document, message). A Bundle gives one outcome per BP reading and per other resource, in
  entry order. Valid FHIR that is not a BP reading (a Patient, an Encounter, an
  OperationOutcome, a weight or pulse Observation, an entry without ``resource``, an empty
  Bundle) is ``Skipped``: counted, never a dead letter.
- A message with broken BP entries gives **one** ``DeadLetter`` holding the whole original
  message (the DLQ keeps bytes unchanged), after the good outcomes of the same message: its
  ``reason`` is the first problem's, its ``detail`` names each bad entry
  (``entry[3] missing_component: ...; entry[7] bad_unit: ...``, 0-based as in FHIRPath).
- BP codes (LOINC, system ``http://loinc.org`` or its OID ``urn:oid:2.16.840.1.113883.6.1``,
  among any codings): the panel ``85354-9`` or the older ``55284-4``, with ``component``
  ``8480-6`` systolic and ``8462-4`` diastolic in any order (extra codings and components
  allowed; a component repeated with a *different* value is ``implausible_value``); or a
  panel without components whose ``hasMember`` names a systolic and a diastolic Observation of
  the same Bundle; or **separate** systolic (``8480-6``) and diastolic (``8462-4``)
  Observations of one Bundle, paired by subject and effective time, with the id
  :func:`pair_id` derived from both. A lone systolic or diastolic is ``missing_component``.
  The average BP ``96607-7`` (components ``96608-5`` / ``96609-3``, over ``effectivePeriod``)
  is an ``Average``.
- Values: ``valueQuantity`` with UCUM code ``mm[Hg]`` (also ``mmHg``/``mm Hg`` as code or as
  ``unit`` when ``code`` is absent), or ``kPa`` (x 7.50062, rounded to 0.1 mm[Hg]). A decimal
  sent as a JSON string (``"132"``, as C-CDA converters do) is read as the number. No unit,
  another unit, a ``comparator`` (``>300``) or a non-numeric value are dead letters.
  ``dataAbsentReason`` instead of a value (on a component, or on the Observation) is not an
  error: ``Ignored`` with reason ``data_absent``.
- Plausibility (mm[Hg], inclusive): systolic 40..300, diastolic 20..200, systolic > diastolic.
- ``subject``: ``reference`` ``Patient/x``, an absolute URL ``.../Patient/x`` with or without
  ``/_history/n``, or ``urn:uuid:u`` (patient id = ``u``); when there is no usable reference,
  ``subject.identifier``: patient key ``system|value`` (so the same MRN of two systems is two
  patients; the bare value when no system is given). References to anything other than a
  Patient (Group, Device, contained ``#x``, conditional ``Patient?...``) are
  ``missing_subject`` unless such an identifier is there.
- Ids: the resource ``id`` (1..256 of ``[A-Za-z0-9.-_]``: EHRs exceed FHIR's 64); else its
  ``identifier`` (system + value, hashed to ``idf-<40 hex>``); else the id of the Bundle
  ``entry.fullUrl`` (``urn:uuid:u`` or ``.../Observation/x``); else ``missing_id``. It becomes
  the Elasticsearch ``_id``, so it must be stable across redeliveries.
- Version: ``meta.versionId``, else ``meta.lastUpdated``, else ``""``.
- Time: ``effectiveDateTime``, ``effectiveInstant``, else ``effectivePeriod.start``, else
  ``.end``; any ISO 8601 precision. With a time of day an offset is **required** (FHIR requires
  it; guessing a zone would shift readings by hours): without one -> ``missing_timezone``.
  A date only (``YYYY-MM-DD``, ``YYYY-MM``, ``YYYY``; athenahealth sends dates) means its
  first instant, midnight UTC, and the Reading's ``precision`` says ``day`` / ``month`` /
  ``year``: such readings stay out of the per-hour slope features.
- Status: ``final`` / ``amended`` / ``corrected`` -> ``Reading``; ``preliminary`` /
  ``registered`` / ``cancelled`` / ``unknown`` -> ``Ignored`` (reason ``status``);
  ``entered-in-error`` -> ``Retraction``. Ignored and Retraction need only an id, a BP code and
  a subject (an entered-in-error resource may well have wrong values or time).
- Qualifiers kept on the Reading (codes and labels, never names): body position (the
  ``observation-bodyPosition`` extension), cuff location (``bodySite``), measurement setting
  (the Vitals IG ``MeasurementSettingExt``: SNOMED 264362003 home, 257585005 clinic,
  285201006 hospital) and device (display, else reference).

One hot path, one home per rule
-------------------------------
Most messages are one Observation of a common shape (the simulator's, a device gateway's), or
a Bundle of such Observations. :func:`_common_outcomes` recognises that shape: msgspec decodes
the bytes straight into typed structs that name every field the shape may carry, and each
Reading is built with the general path's own helpers (id charset and length, statuses, LOINC
codes, units, plausibility, time, version, qualifiers). It returns those Readings or declines;
whatever it declines -- another shape, another resource, any problem, bytes that are not JSON
-- goes to the general path, :func:`_parse_json` (orjson and the rules below), which alone
decides dead letters, so a ``not JSON at char N`` detail still comes from orjson. The tests
check both paths give the same outcomes for the same bytes; no rule is written twice.

Dead-letter reason codes (stable; they go to the DLQ header ``error``)
----------------------------------------------------------------------
Checked in this order, so the first problem found is the one reported:

    too_large          message over MAX_MESSAGE_BYTES, or a Bundle over MAX_BUNDLE_ENTRIES
    invalid_json       not UTF-8 JSON (incl. BOM, NaN, nesting deeper than 1024), or no value
    not_observation    JSON that is not a FHIR resource (no or an invalid ``resourceType``),
                       a Bundle entry that is not an object or holds no object
    wrong_code         an Observation without a code (FHIR requires one)
    missing_id         no id, identifier or Bundle entry fullUrl
    bad_status         status absent or not an Observation status
    missing_subject    no usable Patient reference or identifier
    missing_time       no effectiveDateTime / effectiveInstant / effectivePeriod.start|end
    bad_time           effective time is not an ISO 8601 date/dateTime (or out of range)
    missing_timezone   effective time has a time of day but no offset
    missing_component  no systolic or diastolic (component, partner Observation or hasMember
                       member), or one without a numeric value
    bad_unit           a value with no unit, or a unit other than mm[Hg] / kPa
    implausible_value  out of bounds, systolic <= diastolic, a comparator, conflicting repeats
    internal_error     a defect in this module (logged with the exception type only)

Around the parser, ``lib.monitor.shards`` adds ``no_value`` (a message without a value),
``parser_error`` and ``empty_bundle`` (defences that a correct parser never triggers). All of
them are in :data:`lib.domain.DEAD_LETTER_REASONS`.

``detail`` is short human text with numbers where useful and never names, ids or payload text.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from lib.domain import (
    DEAD_LETTER_REASONS,
    Average,
    DeadLetter,
    Ignored,
    Outcome,
    Reading,
    Retraction,
    Skipped,
)

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1_048_576
MAX_BUNDLE_ENTRIES = 1_000

LOINC_SYSTEM = "http://loinc.org"
LOINC_OID = "urn:oid:2.16.840.1.113883.6.1"
BP_PANEL_CODE = "85354-9"
LEGACY_BP_PANEL_CODE = "55284-4"  # the older vital-signs BP code (Synthea <= 2.4, legacy feeds)
SYSTOLIC_CODE = "8480-6"
DIASTOLIC_CODE = "8462-4"
AVERAGE_BP_CODE = "96607-7"  # average BP over a period (US Core, Vitals IG)
AVG_SYSTOLIC_CODE = "96608-5"
AVG_DIASTOLIC_CODE = "96609-3"
MAX_ID_LENGTH = 256
MAX_DETAIL_ENTRIES = 20  # entries named in one dead letter's detail

KPA_TO_MMHG = 7.50062
SYSTOLIC_BOUNDS = (40.0, 300.0)  # mm[Hg], inclusive
DIASTOLIC_BOUNDS = (20.0, 200.0)  # mm[Hg], inclusive

READING_STATUSES = frozenset({"final", "amended", "corrected"})
IGNORED_STATUSES = frozenset({"preliminary", "registered", "cancelled", "unknown"})
RETRACTION_STATUS = "entered-in-error"

REASONS = DEAD_LETTER_REASONS  # the one list, in lib.domain

_UNIT_FACTORS: dict[str, float] = {
    "mm[Hg]": 1.0,
    "mmHg": 1.0,
    "mm Hg": 1.0,
    "kPa": KPA_TO_MMHG,
}
# tuples, not sets: ``in`` compares with ==, so unhashable JSON values cannot raise
_LOINC_SYSTEMS = (LOINC_SYSTEM, LOINC_OID)
_SYSTOLIC_CODES = (SYSTOLIC_CODE,)
_DIASTOLIC_CODES = (DIASTOLIC_CODE,)
_SYS_LO, _SYS_HI = SYSTOLIC_BOUNDS
_DIA_LO, _DIA_HI = DIASTOLIC_BOUNDS


class _Bad(Exception):
    """Internal: a resource cannot be processed (reason code + PHI-free detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


class _Absent(Exception):
    """Internal: a value carries ``dataAbsentReason`` instead of a number (not measured)."""


def parse(
    value: bytes,
    key: bytes | None = None,
    source: str = "",
    headers: Iterable[tuple[str, bytes]] | None = (),
) -> list[Outcome]:
    """One message -> one outcome per BP reading or other resource it carries (module doc)."""
    try:
        return _parse(value, key, source, headers)
    except Exception as exc:  # a defect here must not lose the message: dead-letter it
        log.error("fhir.parse defect error=%s source=%s", type(exc).__name__, source)
        return [_dead(value, key, source, headers, "internal_error", type(exc).__name__)]


def _parse(
    value: bytes, key: bytes | None, source: str, headers: Iterable[tuple[str, bytes]] | None
) -> list[Outcome]:
    if type(value) is not bytes:
        value = _as_bytes(value)
    outcomes = _common_outcomes(value, source)
    return _parse_json(value, key, source, headers) if outcomes is None else outcomes


def _parse_json(
    value: bytes, key: bytes | None, source: str, headers: Iterable[tuple[str, bytes]] | None
) -> list[Outcome]:
    """The general path: every message the fast path does not take (and the tests' oracle)."""
    if len(value) > MAX_MESSAGE_BYTES:
        detail = f"{len(value)} bytes > {MAX_MESSAGE_BYTES}"
        return [_dead(value, key, source, headers, "too_large", detail)]
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        detail = f"not JSON at char {exc.pos}" if value else "empty message"
        return [_dead(value, key, source, headers, "invalid_json", detail)]
    if type(doc) is not dict:
        return [_dead(value, key, source, headers, "not_observation", "JSON is not an object")]
    rtype = doc.get("resourceType")
    if rtype == "Observation":
        message = _Message(value, key, source, headers)
        message.resource(doc, None, None)
    elif rtype == "Bundle":
        entries = doc.get("entry")
        if entries is None or entries == []:
            return [Skipped("Bundle (no entries)", key, source)]
        if type(entries) is not list:
            return [_dead(value, key, source, headers, "not_observation", "entry is not an array")]
        if len(entries) > MAX_BUNDLE_ENTRIES:
            detail = f"Bundle has {len(entries)} entries > {MAX_BUNDLE_ENTRIES}"
            return [_dead(value, key, source, headers, "too_large", detail)]
        message = _Message(value, key, source, headers)
        for i, entry in enumerate(entries):
            message.entry(i, entry)
    elif type(rtype) is str and _RESOURCE_TYPE.fullmatch(rtype):
        return [Skipped(rtype, key, source)]
    else:
        detail = f"resourceType {_name(rtype)} is not a FHIR resource type"
        return [_dead(value, key, source, headers, "not_observation", detail)]
    return message.outcomes()


_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


class _Message:
    """The outcomes of one message's resources (a lone Observation, or a Bundle's entries).

    Panels and averages become outcomes at once; single systolic / diastolic Observations
    wait for their partner (:meth:`outcomes` pairs them). Problems are collected: the message
    gets at most one dead letter, after its good outcomes.
    """

    __slots__ = ("headers", "key", "out", "panels", "parts", "problems", "raw", "source")

    def __init__(self, raw: bytes, key: bytes | None, source: str, headers: Any) -> None:
        self.raw, self.key, self.source, self.headers = raw, key, source, headers
        self.out: list[Outcome] = []
        self.problems: list[tuple[int | None, str, str]] = []  # (entry, reason, detail)
        self.parts: list[_Part] = []
        self.panels: list[tuple[int | None, dict[str, Any], Any]] = []  # hasMember panels

    def entry(self, i: int, entry: Any) -> None:
        if type(entry) is not dict:
            self.problems.append((i, "not_observation", "entry is not an object"))
            return
        res = entry.get("resource")
        if res is None:  # e.g. a transaction DELETE: no resource to read
            self.out.append(Skipped("Bundle entry without resource", self.key, self.source))
            return
        if type(res) is not dict:
            self.problems.append((i, "not_observation", "entry.resource is not an object"))
            return
        rtype = res.get("resourceType")
        if rtype == "Observation":
            self.resource(res, entry.get("fullUrl"), i)
        elif type(rtype) is str and _RESOURCE_TYPE.fullmatch(rtype):
            self.out.append(Skipped(rtype, self.key, self.source))
        else:
            self.problems.append((i, "not_observation", f"resourceType {_name(rtype)}"))

    def resource(self, res: dict[str, Any], full_url: Any, i: int | None) -> None:
        """One Observation: an outcome now, a part to pair, or a problem."""
        source = self.source
        try:
            kind = _kind_of(res.get("code"))
            if kind is _PANEL:
                if "component" not in res and type(res.get("hasMember")) is list:
                    self.panels.append((i, res, full_url))
                    return
                self.out.append(_observation(res, source, full_url))
            elif kind is _AVERAGE:
                self.out.append(_average(res, source, full_url))
            elif kind is None:
                self.out.append(Skipped(f"Observation {_first_code(res)}", self.key, source))
            else:
                self.parts.append(_part(res, source, full_url, kind, i))
        except _Bad as bad:
            self.problems.append((i, bad.reason, bad.detail))

    def outcomes(self) -> list[Outcome]:
        if self.panels or self.parts:
            self._pair()
        if self.problems:
            self.out.append(self._dead_letter())
        return self.out

    def _pair(self) -> None:
        unused = list(self.parts)
        for i, panel, full_url in self.panels:
            try:
                members = _members(panel, unused)
                self.out.append(_from_parts(panel, full_url, members, self))
            except _Bad as bad:
                self.problems.append((i, bad.reason, bad.detail))
        for sys_part, dia_part, lone in _pairs_by_time(unused):
            if lone is not None:
                partner = "diastolic" if lone.kind == "systolic" else "systolic"
                detail = f"{lone.kind} Observation without a {partner} partner"
                self.problems.append((lone.entry, "missing_component", detail))
                continue
            try:
                self.out.append(_pair_outcome(sys_part, dia_part, self.source))
            except _Bad as bad:
                self.problems.append((sys_part.entry, bad.reason, bad.detail))

    def _dead_letter(self) -> DeadLetter:
        _, reason, detail = self.problems[0]
        if len(self.problems) > 1 or self.problems[0][0] is not None:
            detail = _summary(self.problems)
        return _dead(self.raw, self.key, self.source, self.headers, reason, detail)


def _summary(problems: list[tuple[int | None, str, str]]) -> str:
    """``entry[3] missing_component: no diastolic; entry[7] bad_unit: ...`` (bounded)."""
    shown = [
        f"entry[{i}] {reason}: {detail}" if i is not None else f"{reason}: {detail}"
        for i, reason, detail in problems[:MAX_DETAIL_ENTRIES]
    ]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


# -- Observation kinds -------------------------------------------------------------------

_PANEL, _AVERAGE, _SYSTOLIC, _DIASTOLIC = "panel", "average", "systolic", "diastolic"
_KIND_OF_CODE = {
    BP_PANEL_CODE: _PANEL,
    LEGACY_BP_PANEL_CODE: _PANEL,
    AVERAGE_BP_CODE: _AVERAGE,
    SYSTOLIC_CODE: _SYSTOLIC,
    DIASTOLIC_CODE: _DIASTOLIC,
}
_KIND_RANK = {_PANEL: 0, _AVERAGE: 1, _SYSTOLIC: 2, _DIASTOLIC: 2}


def _kind_of(concept: Any) -> str | None:
    """What a BP-related LOINC coding makes of an Observation; None when it is not BP.

    A panel code wins over a component code among the codings (Epic lists both).
    """
    if type(concept) is not dict:
        raise _Bad("wrong_code", "Observation has no code")
    codings = concept.get("coding")
    if type(codings) is not list:
        if "text" in concept:
            return None  # text only: valid FHIR, nothing to recognise as BP
        raise _Bad("wrong_code", "Observation code has no coding")
    best: str | None = None
    for coding in codings:
        if type(coding) is dict and coding.get("system") in _LOINC_SYSTEMS:
            code = coding.get("code")
            kind = _KIND_OF_CODE.get(code) if type(code) is str else None
            if kind is not None and (best is None or _KIND_RANK[kind] < _KIND_RANK[best]):
                best = kind
    return best


def _first_code(res: dict[str, Any]) -> str:
    """The first LOINC code of a non-BP Observation, for counting what was skipped."""
    concept = res.get("code")
    codings = concept.get("coding") if type(concept) is dict else None
    if type(codings) is list:
        for coding in codings:
            if type(coding) is dict and type(coding.get("code")) is str:
                code = coding["code"]  # named only when shaped like a LOINC code
                return code if _LOINC_SHAPE.fullmatch(code) else "<code>"
    return "<no coding>"


_LOINC_SHAPE = re.compile(r"[0-9]{1,8}-[0-9]")


def _head(res: dict[str, Any], source: str, full_url: Any) -> tuple[str, str, str, Outcome | None]:
    """(id, status, patient id, the outcome when the status decides it: Retraction | Ignored)."""
    obs_id = _resource_id(res, full_url)
    status, kind = _status(res)
    patient_id = _patient_id(res.get("subject"))
    if kind == _RETRACT:
        return obs_id, status, patient_id, Retraction(obs_id, patient_id, source)
    if kind == _IGNORE:
        return obs_id, status, patient_id, Ignored(obs_id, patient_id, status, source)
    return obs_id, status, patient_id, None


def _observation(res: dict[str, Any], source: str, full_url: Any) -> Outcome:
    """A BP panel Observation -> Reading | Retraction | Ignored; raises _Bad otherwise."""
    obs_id, status, patient_id, decided = _head(res, source, full_url)
    if decided is not None:
        return decided
    effective_at, precision = _effective(res)
    try:
        systolic, diastolic = _values(res.get("component"), _SYSTOLIC_CODES, _DIASTOLIC_CODES)
    except _Absent:
        return Ignored(obs_id, patient_id, status, source, "data_absent")
    except _Bad:
        if "dataAbsentReason" in res and not _has_any_value(res.get("component")):
            return Ignored(obs_id, patient_id, status, source, "data_absent")
        raise
    _check(systolic, diastolic)
    return _reading(res, obs_id, patient_id, effective_at, precision, systolic, diastolic,
                    status, source)  # fmt: skip


def _reading(
    res: dict[str, Any],
    obs_id: str,
    patient_id: str,
    effective_at: datetime,
    precision: str,
    systolic: float,
    diastolic: float,
    status: str,
    source: str,
) -> Reading:
    position, site, setting, device = _qualifiers(res)
    # positional: the field order of lib.domain.Reading
    return Reading(obs_id, patient_id, effective_at, systolic, diastolic, status,
                   _version(res.get("meta")), source, precision, position, site, setting,
                   device)  # fmt: skip


def _average(res: dict[str, Any], source: str, full_url: Any) -> Outcome:
    """An average BP Observation (96607-7) over its effective period."""
    obs_id, status, patient_id, decided = _head(res, source, full_url)
    if decided is not None:
        return decided
    try:
        systolic, diastolic = _values(res.get("component"), (AVG_SYSTOLIC_CODE,),
                                      (AVG_DIASTOLIC_CODE,))  # fmt: skip
    except _Absent:
        return Ignored(obs_id, patient_id, status, source, "data_absent")
    _check(systolic, diastolic)
    period = res.get("effectivePeriod")
    if type(period) is dict and period.get("start") is not None:
        start, _ = _instant(_text(period.get("start")))
        end = _instant(_text(period["end"]))[0] if period.get("end") is not None else start
    else:
        start, _ = _effective(res)
        end = start
    return Average(obs_id, patient_id, start, end, systolic, diastolic, status,
                   _version(res.get("meta")), source)  # fmt: skip


def _text(value: Any) -> str:
    if type(value) is not str:
        raise _Bad("bad_time", "effective time is not a string")
    return value


_READ, _RETRACT, _IGNORE = 0, 1, 2


def _status(res: dict[str, Any]) -> tuple[str, int]:
    status = res.get("status")
    if type(status) is not str:
        raise _Bad("bad_status", "no status")
    if status in READING_STATUSES:
        return status, _READ
    if status == RETRACTION_STATUS:
        return status, _RETRACT
    if status in IGNORED_STATUSES:
        return status, _IGNORE
    raise _Bad("bad_status", f"status {_name(status)} is not a known Observation status")


# -- systolic and diastolic sent as separate Observations ---------------------------------


@dataclass(frozen=True, slots=True)
class _Part:
    """One single-component Observation (systolic 8480-6 or diastolic 8462-4) to be paired."""

    entry: int | None
    kind: str  # "systolic" | "diastolic"
    obs_id: str
    refs: tuple[str, ...]  # how a panel's hasMember may name it
    patient_id: str
    status: str
    state: int  # _READ | _RETRACT | _IGNORE
    effective_at: datetime | None
    precision: str
    value: float | None  # None: dataAbsentReason
    version: str
    res: dict[str, Any]


def _part(res: dict[str, Any], source: str, full_url: Any, kind: str, i: int | None) -> _Part:
    obs_id = _resource_id(res, full_url)
    status, state = _status(res)
    patient_id = _patient_id(res.get("subject"))
    effective_at: datetime | None = None
    precision = ""
    value: float | None = None
    if state != _READ:  # a retraction pairs by time when it has one; no values needed
        with contextlib.suppress(_Bad):
            effective_at, precision = _effective(res)
    else:
        effective_at, precision = _effective(res)
        q = res.get("valueQuantity")
        value = None if q is None and "dataAbsentReason" in res else _quantity(q, kind)
    refs = (f"Observation/{obs_id}", *((full_url,) if type(full_url) is str else ()))
    return _Part(i, kind, obs_id, refs, patient_id, status, state, effective_at, precision,
                 value, _version(res.get("meta")), res)  # fmt: skip


def _members(panel: dict[str, Any], unused: list[_Part]) -> tuple[_Part, _Part]:
    """The systolic and diastolic parts a panel's ``hasMember`` names (removed from unused)."""
    found: dict[str, _Part] = {}
    for member in panel.get("hasMember") or ():
        ref = member.get("reference") if type(member) is dict else None
        if type(ref) is not str:
            continue
        ref = _strip_history(ref)
        for part in unused:
            if any(ref == r or ref.endswith("/" + r) for r in part.refs):
                found.setdefault(part.kind, part)
    if _SYSTOLIC not in found or _DIASTOLIC not in found:
        missing = _SYSTOLIC if _SYSTOLIC not in found else _DIASTOLIC
        raise _Bad("missing_component", f"hasMember names no {missing} Observation in the Bundle")
    for part in found.values():
        unused.remove(part)
    return found[_SYSTOLIC], found[_DIASTOLIC]


def _from_parts(
    panel: dict[str, Any], full_url: Any, members: tuple[_Part, _Part], message: _Message
) -> Outcome:
    """A panel with ``hasMember``: the reading is the panel's, the values its members'."""
    source = message.source
    obs_id, status, patient_id, decided = _head(panel, source, full_url)
    if decided is not None:
        return decided
    sys_part, dia_part = members
    if sys_part.value is None or dia_part.value is None:
        return Ignored(obs_id, patient_id, status, source, "data_absent")
    try:
        effective_at, precision = _effective(panel)
    except _Bad:
        if sys_part.effective_at is None:
            raise
        effective_at, precision = sys_part.effective_at, sys_part.precision
    _check(sys_part.value, dia_part.value)
    return _reading(panel, obs_id, patient_id, effective_at, precision, sys_part.value,
                    dia_part.value, status, source)  # fmt: skip


def _pairs_by_time(parts: list[_Part]) -> list[tuple[_Part, _Part, _Part | None]]:
    """Pair systolic with diastolic by subject and effective time, in entry order.

    Returns ``(systolic, diastolic, None)`` per pair and ``(x, x, x)`` per part left alone.
    """
    out: list[tuple[_Part, _Part, _Part | None]] = []
    waiting: dict[tuple[str, str, datetime | None], _Part] = {}
    for part in parts:
        other = _DIASTOLIC if part.kind == _SYSTOLIC else _SYSTOLIC
        match = waiting.pop((other, part.patient_id, part.effective_at), None)
        if match is None:
            waiting.setdefault((part.kind, part.patient_id, part.effective_at), part)
            continue
        sys_part, dia_part = (part, match) if part.kind == _SYSTOLIC else (match, part)
        out.append((sys_part, dia_part, None))
    out.extend((p, p, p) for p in waiting.values())
    return out


def _pair_outcome(sys_part: _Part, dia_part: _Part, source: str) -> Outcome:
    """One reading from a systolic and a diastolic Observation, with an id derived from both."""
    obs_id = pair_id(sys_part.obs_id, dia_part.obs_id)
    patient_id = sys_part.patient_id
    states = (sys_part.state, dia_part.state)
    if _RETRACT in states:
        return Retraction(obs_id, patient_id, source)
    if _IGNORE in states:
        status = sys_part.status if sys_part.state == _IGNORE else dia_part.status
        return Ignored(obs_id, patient_id, status, source)
    if sys_part.value is None or dia_part.value is None:
        return Ignored(obs_id, patient_id, sys_part.status, source, "data_absent")
    _check(sys_part.value, dia_part.value)
    status = sys_part.status if sys_part.status != "final" else dia_part.status
    assert sys_part.effective_at is not None
    reading = _reading(sys_part.res, obs_id, patient_id, sys_part.effective_at,
                       sys_part.precision, sys_part.value, dia_part.value, status,
                       source)  # fmt: skip
    versions = (sys_part.version, dia_part.version)
    return replace(reading, version="+".join(versions) if any(versions) else "")


def pair_id(systolic_id: str, diastolic_id: str) -> str:
    """The stable id of a reading sent as two Observations (the same for every redelivery)."""
    digest = hashlib.sha256(f"{systolic_id}|{diastolic_id}".encode()).hexdigest()[:40]
    return f"pair-{digest}"


# -- the fast path for the common shape ---------------------------------------------------
#
# A shape recogniser, not a second parser: msgspec decodes the message straight into the
# structs below, which name every field the common shape may carry (``forbid_unknown_fields``:
# any other field, or any value of another JSON type, fails the decode). Every value is typed,
# so msgspec validates all of it (UTF-8, numbers in range). Nothing is skipped unread: msgspec
# skips unknown fields without the checks orjson makes (a ``1e400`` or invalid UTF-8 there
# would turn an invalid_json dead letter into a Reading). ``extension``, ``bodySite`` and
# ``device`` are kept as raw JSON and read with orjson, as the general path reads them. A
# message that fails to decode, or whose values are not of the common shape, goes to the
# general path.

_RAW_ABSENT = msgspec.Raw()


class _Struct(msgspec.Struct, gc=False, forbid_unknown_fields=True, rename="camel"):
    """A FHIR element of the common shape (subclasses inherit these options)."""


class _Coding(_Struct):
    system: str | None = None
    version: str | None = None
    code: str | None = None
    display: str | None = None
    user_selected: bool | None = None


class _Concept(_Struct):
    coding: list[_Coding] | None = None
    text: str | None = None


class _Quantity(_Struct):
    value: float | None = None  # a JSON number (an integer too); a bool or a string fails
    unit: str | None = None
    system: str | None = None
    code: str | None = None


class _Component(_Struct):
    code: _Concept | None = None
    value_quantity: _Quantity | None = None


class _Identifier(_Struct):
    use: str | None = None
    type: _Concept | None = None
    system: str | None = None
    value: str | None = None


class _Extension(_Struct):
    """An extension the recogniser does not read (``url`` and the usual value types)."""

    url: str | None = None
    value_string: str | None = None
    value_code: str | None = None
    value_boolean: bool | None = None
    value_date_time: str | None = None
    value_coding: _Coding | None = None
    value_codeable_concept: _Concept | None = None
    value_identifier: _Identifier | None = None


class _Reference(_Struct):
    reference: str | None = None
    type: str | None = None
    identifier: _Identifier | None = None
    display: str | None = None
    extension: list[_Extension] | None = None


class _Meta(_Struct):
    version_id: str | None = None
    last_updated: str | None = None
    source: str | None = None
    profile: list[str] | None = None
    security: list[_Coding] | None = None
    tag: list[_Coding] | None = None


class _Narrative(_Struct):
    status: str | None = None
    div: str | None = None


class _CommonObservation(_Struct, tag_field="resourceType", tag="Observation"):
    """The fields of an Observation of the common shape (any other field: general path)."""

    id: str | None = None
    meta: _Meta | None = None
    text: _Narrative | None = None
    identifier: list[_Identifier] | None = None
    status: str | None = None
    category: list[_Concept] | None = None
    code: _Concept | None = None
    subject: _Reference | None = None
    encounter: _Reference | None = None
    effective_date_time: str | None = None
    issued: str | None = None
    performer: list[_Reference] | None = None
    interpretation: list[_Concept] | None = None
    component: list[_Component] | None = None
    # read with orjson, as the general path reads them (see _qualifiers)
    extension: msgspec.Raw = _RAW_ABSENT
    body_site: msgspec.Raw = _RAW_ABSENT
    device: msgspec.Raw = _RAW_ABSENT


class _Search(_Struct):
    mode: str | None = None
    score: float | None = None


class _Request(_Struct):
    method: str | None = None
    url: str | None = None


class _Entry(_Struct):
    full_url: str | None = None
    # a union, so that msgspec requires the resourceType tag (of a lone tagged struct it does not)
    resource: _CommonObservation | _CommonBundle | None = None
    search: _Search | None = None
    request: _Request | None = None


class _Link(_Struct):
    relation: str | None = None
    url: str | None = None


class _CommonBundle(_Struct, tag_field="resourceType", tag="Bundle"):
    """A Bundle whose entries may all be Observations of the common shape."""

    id: str | None = None
    meta: _Meta | None = None
    identifier: _Identifier | None = None
    type: str | None = None
    timestamp: str | None = None
    total: int | None = None
    link: list[_Link] | None = None
    entry: list[_Entry] | None = None


_decode_common = msgspec.json.Decoder(_CommonObservation | _CommonBundle).decode
_PANEL_CODES = (BP_PANEL_CODE, LEGACY_BP_PANEL_CODE)


def _common_outcomes(value: bytes, source: str) -> list[Outcome] | None:
    """The Readings of a message of the common shape, else None (the general path decides).

    The common shape: one Observation that :func:`_common_reading` takes, or a Bundle of 1 to
    MAX_BUNDLE_ENTRIES entries, each such an Observation (one Reading per entry, in entry
    order, as the general path gives them).
    """
    if len(value) > MAX_MESSAGE_BYTES:
        return None
    try:
        doc = _decode_common(value)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    if isinstance(doc, _CommonObservation):
        reading = _common_reading(doc, source)
        return None if reading is None else [reading]
    entries = doc.entry
    if not entries or len(entries) > MAX_BUNDLE_ENTRIES:
        return None
    out: list[Outcome] = []
    for entry in entries:
        res = entry.resource
        reading = _common_reading(res, source) if isinstance(res, _CommonObservation) else None
        if reading is None:
            return None
        out.append(reading)
    return out


def _common_reading(obs: _CommonObservation, source: str) -> Reading | None:
    """The Reading of an Observation of the common shape, else None.

    The common shape: only the fields of :class:`_CommonObservation`, each of its JSON type; a
    valid ``id``; status final / amended / corrected; a LOINC BP panel code among its codings;
    a ``subject.reference`` to a Patient; ``effectiveDateTime`` (any precision the
    general path accepts); exactly two components, systolic then diastolic, each with its LOINC
    code as the first coding and a numeric ``valueQuantity`` in mm[Hg] or kPa; plausible
    values. For such an Observation the general path (:func:`_parse_json`) returns this very
    Reading: each check below is one of its rules, through the same helpers. Anything else,
    including every problem, returns None and the general path judges the message.
    """
    obs_id = obs.id
    status = obs.status
    code = obs.code
    subject = obs.subject
    text = obs.effective_date_time
    components = obs.component
    if (
        obs_id is None
        or not _valid_id(obs_id)
        or status not in READING_STATUSES
        or code is None
        or code.coding is None
        or not _has_panel_coding(code.coding)
        or subject is None
        or subject.reference is None
        or text is None
        or components is None
        or len(components) != 2
    ):
        return None
    patient_id = _patient_of_reference(subject.reference)
    if patient_id is None:
        return None
    systolic = _common_value(components[0], SYSTOLIC_CODE)
    if systolic is None:
        return None
    diastolic = _common_value(components[1], DIASTOLIC_CODE)
    if diastolic is None or not _plausible(systolic, diastolic):
        return None
    try:
        effective_at, precision = _instant(text)
    except _Bad:
        return None
    meta = obs.meta
    version = "" if meta is None else _version_of(meta.version_id, meta.last_updated)
    ext, site, device = obs.extension, obs.body_site, obs.device
    if ext or site or device:
        qualifiers = _raw_qualifiers(bytes(ext), bytes(site), bytes(device))
        if qualifiers is None:
            return None
        position, site_label, setting, device_label = qualifiers
    else:
        position = site_label = setting = device_label = ""
    # positional: the field order of lib.domain.Reading
    return Reading(obs_id, patient_id, effective_at, systolic, diastolic, status, version,
                   source, precision, position, site_label, setting, device_label)  # fmt: skip


_raw_qualifiers_cache: dict[tuple[bytes, bytes, bytes], tuple[str, str, str, str]] = {}
_RAW_QUALIFIERS_CACHE_MAX = 4096  # distinct (extension, bodySite, device); cleared when full


def _raw_qualifiers(ext: bytes, site: bytes, device: bytes) -> tuple[str, str, str, str] | None:
    """:func:`_qualifiers_of` the raw JSON of the three fields (b"" when absent), read with
    orjson as the general path reads them; None when orjson refuses one (invalid_json).

    A device or a cuff site recurs on every reading of a patient, so the result is kept by
    the raw bytes (a pure function of them: the result never depends on the cache).
    """
    key = (ext, site, device)
    qualifiers = _raw_qualifiers_cache.get(key)
    if qualifiers is None:
        try:
            qualifiers = _qualifiers_of(_raw_json(ext), _raw_json(site), _raw_json(device))
        except orjson.JSONDecodeError:
            return None
        if len(_raw_qualifiers_cache) >= _RAW_QUALIFIERS_CACHE_MAX:
            _raw_qualifiers_cache.clear()
        _raw_qualifiers_cache[key] = qualifiers
    return qualifiers


def _raw_json(raw: bytes) -> Any:
    """A raw JSON value read as the general path reads it (None when the field is absent)."""
    return orjson.loads(raw) if raw else None


def _has_panel_coding(codings: list[_Coding]) -> bool:
    """A LOINC BP panel coding among these (it wins over any other coding: see _kind_of)."""
    for coding in codings:
        if coding.code in _PANEL_CODES and coding.system in _LOINC_SYSTEMS:
            return True
    return False


def _common_value(comp: _Component, loinc: str) -> float | None:
    """The mm[Hg] value of a component whose first coding is this LOINC code, else None."""
    q = comp.value_quantity
    concept = comp.code
    if q is None or q.value is None or concept is None or not concept.coding:
        return None
    coding = concept.coding[0]
    if coding.code != loinc or coding.system not in _LOINC_SYSTEMS:
        return None
    factor = _UNIT_FACTORS.get(q.code if q.code is not None else q.unit)  # type: ignore[arg-type]
    return None if factor is None else _in_mmhg(q.value, factor)


# -- identity -------------------------------------------------------------------------


_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._")


def _valid_id(value: Any) -> bool:
    """An id as EHRs send them: 1..256 characters of ``[A-Za-z0-9.-_]``.

    FHIR's own ``id`` is at most 64 of ``[A-Za-z0-9.-]``; Epic sends 66, others underscores.
    256 ASCII characters keep the Elasticsearch ``_id`` (at most 512 bytes) within its limit.
    """
    return type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and _ID_CHARS.issuperset(value)


def _resource_id(res: dict[str, Any], full_url: Any) -> str:
    """The stable key of an Observation: its ``id``; without one, its ``identifier`` (system +
    value, hashed to an id), else the id of its Bundle ``entry.fullUrl``; else ``missing_id``.
    An ``id`` that is there but not valid is ``missing_id`` too (never silently replaced)."""
    obs_id = res.get("id")
    if type(obs_id) is str and _valid_id(obs_id):
        return obs_id
    if obs_id is not None:
        raise _Bad("missing_id", "id is not 1..256 characters of [A-Za-z0-9.-_]")
    key = _identifier_key(res.get("identifier"))
    if key is not None:
        return "idf-" + hashlib.sha256(key.encode()).hexdigest()[:40]
    obs_id = _id_from_full_url(full_url)
    if obs_id is None:
        raise _Bad("missing_id", "no valid id, identifier or fullUrl")
    return obs_id


def _identifier_key(identifiers: Any) -> str | None:
    """``system|value`` of the first Identifier with a value (``|value`` without a system)."""
    if type(identifiers) is dict:
        identifiers = [identifiers]
    if type(identifiers) is not list:
        return None
    for ident in identifiers:
        if type(ident) is not dict:
            continue
        value = ident.get("value")
        if type(value) is str and value.strip():
            system = ident.get("system")
            return f"{system if type(system) is str else ''}|{value.strip()}"
    return None


def _id_from_full_url(url: Any) -> str | None:
    if type(url) is not str:
        return None
    if url.startswith("urn:uuid:"):
        candidate = url[9:]
    else:
        parts = _strip_history(url).rsplit("/", 2)
        if len(parts) < 2 or parts[-2] != "Observation":
            return None
        candidate = parts[-1]
    return candidate if _valid_id(candidate) else None


def _strip_history(ref: str) -> str:
    i = ref.find("/_history/")
    return ref[:i] if i >= 0 else ref


def _patient_of_reference(ref: str) -> str | None:
    """The patient id of a ``Patient/<id>`` reference (also absolute, with or without
    ``/_history/n``) or of ``urn:uuid:<id>``; None when it names no Patient by a valid id."""
    patient_id = _patient_refs.get(ref)
    if patient_id is None:
        if ref.startswith("Patient/") and _valid_id(ref[8:]):  # the common case
            patient_id = ref[8:]
        else:
            if ref.startswith("urn:uuid:"):
                candidate = ref[9:]
            else:
                parts = _strip_history(ref).rsplit("/", 2)
                candidate = parts[-1] if len(parts) >= 2 and parts[-2] == "Patient" else ""
            if not _valid_id(candidate):
                return None
            patient_id = candidate
        if len(_patient_refs) >= _PATIENT_REFS_MAX:
            _patient_refs.clear()
        _patient_refs[ref] = patient_id
    return patient_id


# valid Patient references seen -> their id: every reading of a patient names it
_patient_refs: dict[str, str] = {}
_PATIENT_REFS_MAX = 1 << 17  # cleared when full (the result never depends on it)


def _patient_id(subject: Any) -> str:
    """Patient key from ``subject.reference``, else from ``subject.identifier``.

    An identifier keeps its ``system``: ``system|value``, so MRN 123 of two systems is two
    patients (a bare ``value`` only when the sender gives no system).
    """
    if type(subject) is not dict:
        raise _Bad("missing_subject", "no subject")
    ref = subject.get("reference")
    problem = "subject has neither reference nor identifier"
    if type(ref) is str:
        patient_id = _patient_of_reference(ref)
        if patient_id is not None:
            return patient_id
        problem = "subject.reference is not a Patient reference with a valid id"
    ident = subject.get("identifier")
    if type(ident) is dict:
        value = ident.get("value")
        system = ident.get("system")
        if type(value) is str and 0 < len(value.strip()) <= 128:
            if type(system) is str and 0 < len(system) <= 128:
                return f"{system}|{value.strip()}"
            return value.strip()
        problem = "subject.identifier has no usable value"
    raise _Bad("missing_subject", problem)


def _version(meta: Any) -> str:
    if type(meta) is not dict:
        return ""
    return _version_of(meta.get("versionId"), meta.get("lastUpdated"))


def _version_of(vid: Any, updated: Any) -> str:
    """``meta.versionId`` (a string, or an integer as sent by some servers), else
    ``meta.lastUpdated``, else ``""``."""
    if type(vid) is str:
        return vid
    if type(vid) is int:
        return str(vid)
    return updated if type(updated) is str else ""


# -- values ---------------------------------------------------------------------------


def _values(
    components: Any, systolic_codes: tuple[str, ...], diastolic_codes: tuple[str, ...]
) -> tuple[float, float]:
    """(systolic, diastolic) in mm[Hg] from the components with these LOINC codes.

    Raises _Absent when either carries ``dataAbsentReason`` instead of a value.
    """
    if type(components) is not list:
        raise _Bad("missing_component", "no component array")
    found: dict[str, float | None] = {}
    for comp in components:
        if type(comp) is not dict:
            continue
        name = _component_name(comp.get("code"), systolic_codes, diastolic_codes)
        if name is None:
            continue
        q = comp.get("valueQuantity")
        mmhg = None if q is None and "dataAbsentReason" in comp else _quantity(q, name)
        if name in found and found[name] != mmhg:
            raise _Bad("implausible_value", f"{name} component repeated with another value")
        found[name] = mmhg
    for name, codes in ((_SYSTOLIC, systolic_codes), (_DIASTOLIC, diastolic_codes)):
        if name not in found:
            raise _Bad("missing_component", f"no {name} ({codes[0]}) component")
    systolic, diastolic = found[_SYSTOLIC], found[_DIASTOLIC]
    if systolic is None or diastolic is None:
        raise _Absent
    return systolic, diastolic


def _component_name(
    concept: Any, systolic_codes: tuple[str, ...], diastolic_codes: tuple[str, ...]
) -> str | None:
    codings = concept.get("coding") if type(concept) is dict else None
    if type(codings) is not list:
        return None
    for coding in codings:
        if type(coding) is dict and coding.get("system") in _LOINC_SYSTEMS:
            code = coding.get("code")
            if code in systolic_codes:
                return _SYSTOLIC
            if code in diastolic_codes:
                return _DIASTOLIC
    return None


def _has_any_value(components: Any) -> bool:
    return type(components) is list and any(
        type(c) is dict and "valueQuantity" in c for c in components
    )


def _plausible(systolic: float, diastolic: float) -> bool:
    """Plausibility, mm[Hg], inclusive bounds; systolic above diastolic."""
    return (
        _SYS_LO <= systolic <= _SYS_HI and _DIA_LO <= diastolic <= _DIA_HI and systolic > diastolic
    )


def _check(systolic: float, diastolic: float) -> None:
    """:func:`_plausible`, or raise _Bad naming the first problem."""
    if _plausible(systolic, diastolic):
        return
    if not _SYS_LO <= systolic <= _SYS_HI:
        raise _Bad("implausible_value", f"systolic {systolic:.4g} outside {_SYS_LO:g}..{_SYS_HI:g}")
    if not _DIA_LO <= diastolic <= _DIA_HI:
        raise _Bad(
            "implausible_value", f"diastolic {diastolic:.4g} outside {_DIA_LO:g}..{_DIA_HI:g}"
        )
    if systolic <= diastolic:
        raise _Bad(
            "implausible_value",
            f"systolic {systolic:.4g} not above diastolic {diastolic:.4g}",
        )


_DECIMAL = re.compile(r"-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,6})?")


def _quantity(q: Any, name: str) -> float:
    if type(q) is not dict:
        raise _Bad("missing_component", f"{name} component has no valueQuantity")
    value: Any = q.get("value")
    vtype = type(value)
    if vtype is str and _DECIMAL.fullmatch(value):
        value = float(value)  # a decimal sent as a JSON string (C-CDA converters do)
    elif vtype is not float and vtype is not int:
        raise _Bad("missing_component", f"{name} value is not a number")
    if "comparator" in q:
        raise _Bad("implausible_value", f"{name} value has a comparator")
    unit = q.get("code")
    if unit is None:
        unit = q.get("unit")
        if unit is None:
            raise _Bad("bad_unit", f"{name} value has no unit")
    factor = _UNIT_FACTORS.get(unit) if type(unit) is str else None
    if factor is None:
        raise _Bad("bad_unit", f"{name} unit {_name(unit)} is not mm[Hg] or kPa")
    return _in_mmhg(value, factor)


def _in_mmhg(value: float, factor: float) -> float:
    """A value in mm[Hg]: as sent, or converted (kPa) and rounded to 0.1 mm[Hg]."""
    return float(value) if factor == 1.0 else round(value * factor, 1)


# -- qualifiers -------------------------------------------------------------------------

BODY_POSITION_URL = "http://hl7.org/fhir/StructureDefinition/observation-bodyPosition"
MEASUREMENT_SETTING_URL = "http://hl7.org/fhir/us/vitals/StructureDefinition/MeasurementSettingExt"
# the Vitals IG's MeasSettingVS (SNOMED CT): code -> the setting kept in the documents
SETTINGS_BY_SNOMED = {"264362003": "home", "257585005": "clinic", "285201006": "hospital"}
_MAX_LABEL = 64


def _qualifiers(res: dict[str, Any]) -> tuple[str, str, str, str]:
    """(body position, body site, measurement setting, device): codes and labels only."""
    return _qualifiers_of(res.get("extension"), res.get("bodySite"), res.get("device"))


def _qualifiers_of(extensions: Any, site: Any, device: Any) -> tuple[str, str, str, str]:
    """:func:`_qualifiers` of an Observation's ``extension``, ``bodySite`` and ``device``."""
    if extensions is None and site is None and device is None:
        return _NO_QUALIFIERS
    position = setting = ""
    if type(extensions) is list:
        for ext in extensions:
            if type(ext) is not dict:
                continue
            url = ext.get("url")
            if url == BODY_POSITION_URL:
                position = _label(ext.get("valueCodeableConcept"))
            elif url == MEASUREMENT_SETTING_URL:
                concept = ext.get("valueCodeableConcept")
                setting = SETTINGS_BY_SNOMED.get(_code(concept), "") or _label(concept)
    return (
        position,
        "" if site is None else _label(site),
        setting,
        "" if device is None else _device(device),
    )


_NO_QUALIFIERS = ("", "", "", "")


def _label(concept: Any) -> str:
    """A CodeableConcept's first coding display, else its code, else its text (bounded)."""
    if type(concept) is not dict:
        return ""
    codings = concept.get("coding")
    if type(codings) is list:
        for coding in codings:
            if type(coding) is dict:
                text = coding.get("display") or coding.get("code")
                if type(text) is str and text:
                    return text if len(text) <= _MAX_LABEL else text[:_MAX_LABEL]
    text = concept.get("text")
    return text[:_MAX_LABEL] if type(text) is str else ""


def _code(concept: Any) -> str:
    codings = concept.get("coding") if type(concept) is dict else None
    if type(codings) is list:
        for coding in codings:
            if type(coding) is dict and type(coding.get("code")) is str:
                return coding["code"]  # type: ignore[no-any-return]
    return ""


def _device(ref: Any) -> str:
    """The device's display, else its reference (a Device is not a person)."""
    if type(ref) is not dict:
        return ""
    text = ref.get("display") or ref.get("reference")
    if type(text) is str and text:
        return text if len(text) <= _MAX_LABEL else text[:_MAX_LABEL]
    return ""


# -- time -----------------------------------------------------------------------------


def _effective(res: dict[str, Any]) -> tuple[datetime, str]:
    """(UTC instant, precision) of the effective time: precision "" with a time of day."""
    text = res.get("effectiveDateTime")
    if text is None:
        text = res.get("effectiveInstant")
    if text is None:
        period = res.get("effectivePeriod")
        if type(period) is dict:
            text = period.get("start")
            if text is None:
                text = period.get("end")
    if text is None:
        raise _Bad("missing_time", "no effectiveDateTime, effectiveInstant or effectivePeriod")
    if type(text) is not str:
        raise _Bad("bad_time", "effective time is not a string")
    return _instant(text)


def _instant(text: str) -> tuple[datetime, str]:
    """ISO 8601 date/dateTime -> (aware UTC datetime, precision).

    Partial dates mean their first instant, midnight UTC, with precision ``day``, ``month``
    or ``year``; a time of day needs an offset.
    """
    n = len(text)
    try:
        if n > 10:
            dt = datetime.fromisoformat(text)
            tz = dt.tzinfo
            if tz is None:
                raise _Bad("missing_timezone", "effective time has a time of day but no offset")
            return (dt if tz is UTC else dt.astimezone(UTC)), ""
        if n == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC), "day"
        if text.isascii():
            if n == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit():
                return datetime(int(text[:4]), int(text[5:]), 1, tzinfo=UTC), "month"
            if n == 4 and text.isdigit():
                return datetime(int(text), 1, 1, tzinfo=UTC), "year"
    except (ValueError, OverflowError):
        pass
    raise _Bad("bad_time", f"effective time ({n} characters) is not an ISO 8601 date/dateTime")


# -- helpers --------------------------------------------------------------------------


def _name(value: Any) -> str:
    """What a detail may say about a sender's value: its JSON type only, never its text.

    Sender text can hold anything (a name typed into the wrong field); the DLQ keeps the
    original bytes for whoever is allowed to read them.
    """
    if value is None:
        return "absent"
    return f"<{_JSON_TYPES.get(type(value), type(value).__name__)}>"


_JSON_TYPES = {
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b""


def _headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    if not headers:
        return ()
    try:
        return tuple((str(k), v) for k, v in headers)
    except (TypeError, ValueError):
        return ()


def _dead(
    value: Any, key: bytes | None, source: str, headers: Any, reason: str, detail: str
) -> DeadLetter:
    raw = value if type(value) is bytes else _as_bytes(value)
    return DeadLetter(
        raw=raw,
        key=key,
        reason=reason,
        detail=detail,
        source=source,
        headers=_headers(headers),
    )
