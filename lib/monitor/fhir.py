"""FHIR R4 blood-pressure Observations -> outcomes (the monitor's hot path).

``parse(value, key, source, headers)`` turns one Kafka message into a list of outcomes
(:mod:`lib.domain`): ``Reading`` | ``Retraction`` | ``Ignored`` | ``DeadLetter``. It never raises,
never returns an empty list, and does no I/O, no logging of payloads and no wall-clock work.

What is accepted
----------------
- A lone ``Observation``, or a ``Bundle`` (any ``type``) whose ``entry[i].resource`` are
  Observations. A Bundle gives **one outcome per entry**, in entry order. A bad entry gives a
  ``DeadLetter`` that holds the **whole original message** (the DLQ keeps bytes unchanged) and a
  detail starting ``entry[i]:`` (0-based, as in FHIRPath). A Bundle with no entries gives one
  ``DeadLetter`` (``not_observation``). An entry without ``resource`` (e.g. a transaction
  ``DELETE``) is ``not_observation``; retractions must be sent as ``entered-in-error``.
- ``code``: LOINC ``85354-9`` among any codings (system ``http://loinc.org``, or its OID
  ``urn:oid:2.16.840.1.113883.6.1``).
- ``component``: ``8480-6`` systolic and ``8462-4`` diastolic (LOINC), in any order, extra codings
  and extra components allowed. A component repeated with a *different* value is
  ``implausible_value`` (ambiguous); repeated with the same value it is accepted.
- Values: ``valueQuantity`` with UCUM code ``mm[Hg]`` (also ``mmHg``/``mm Hg`` as code or as
  ``unit`` when ``code`` is absent), or ``kPa`` (x 7.50062, rounded to 0.1 mm[Hg], so
  kPa sent with 2 decimals gives back whole mm[Hg] exactly). No unit at all, another
  unit, a ``comparator`` (``>300``) or a non-numeric value are dead letters.
- Plausibility (mm[Hg], inclusive): systolic 40..300, diastolic 20..200, systolic > diastolic.
- ``subject``: ``reference`` ``Patient/x``, an absolute URL ``.../Patient/x`` with or without
  ``/_history/n``, or ``urn:uuid:u`` (patient id = ``u``); when there is no usable reference,
  ``subject.identifier.value`` (patient id = the value, stripped, at most 128 characters; the
  ``system`` is not part of the id, so one sender's identifier system must be used consistently).
  References to anything other than a Patient (Group, Device, contained ``#x``, conditional
  ``Patient?...``) are ``missing_subject`` unless such an identifier is there.
- ``id``: the resource ``id`` (FHIR id: 1..64 of ``[A-Za-z0-9.-]``); in a Bundle entry without an
  ``id``, the id of ``entry.fullUrl`` (``urn:uuid:u`` or ``.../Observation/x``). It becomes the
  Elasticsearch ``_id``, so it must be stable across redeliveries.
- Version: ``meta.versionId``, else ``meta.lastUpdated``, else ``""``.
- Time: ``effectiveDateTime``, ``effectiveInstant``, else ``effectivePeriod.start``, else
  ``.end``; any ISO 8601 precision. With a time of day an offset is **required** (FHIR requires
  it; guessing a zone would shift readings by hours): without one -> ``missing_timezone``.
  Partial dates (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``) mean their first instant, **midnight UTC**.
  The result is always a timezone-aware UTC datetime.
- Status: ``final`` / ``amended`` / ``corrected`` -> ``Reading``; ``preliminary`` /
  ``registered`` / ``cancelled`` / ``unknown`` -> ``Ignored``; ``entered-in-error`` ->
  ``Retraction``. Ignored and Retraction need only ``id``, ``code`` and ``subject`` (an
  entered-in-error resource may well have wrong values or time).

Dead-letter reason codes (stable; they go to the DLQ header ``error``)
----------------------------------------------------------------------
Checked in this order, so the first problem found is the one reported:

    too_large          message over MAX_MESSAGE_BYTES, or a Bundle over MAX_BUNDLE_ENTRIES
    invalid_json       not UTF-8 JSON (incl. BOM, NaN, nesting deeper than 1024), or no value
    not_observation    JSON that is not an Observation / a Bundle entry that is not one
    missing_id         no valid FHIR id (resource id, or Bundle entry fullUrl)
    bad_status         status absent or not an Observation status
    wrong_code         code has no LOINC 85354-9 coding
    missing_subject    no usable Patient reference or identifier
    missing_time       no effectiveDateTime / effectiveInstant / effectivePeriod.start|end
    bad_time           effective time is not an ISO 8601 date/dateTime (or out of range)
    missing_timezone   effective time has a time of day but no offset
    missing_component  no systolic or diastolic component, or one without a numeric value
    bad_unit           a value with no unit, or a unit other than mm[Hg] / kPa
    implausible_value  out of bounds, systolic <= diastolic, a comparator, conflicting repeats
    internal_error     a defect in this module (logged with the exception type only)

Around the parser, ``lib.monitor.shards`` adds ``no_value`` (a message without a value),
``parser_error`` and ``empty_bundle`` (defences that a correct parser never triggers). All of
them are in :data:`lib.domain.DEAD_LETTER_REASONS`.

``detail`` is short human text with numbers where useful and never names, ids or payload text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from lib.domain import DEAD_LETTER_REASONS, DeadLetter, Ignored, Outcome, Reading, Retraction

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1_048_576
MAX_BUNDLE_ENTRIES = 1_000

LOINC_SYSTEM = "http://loinc.org"
LOINC_OID = "urn:oid:2.16.840.1.113883.6.1"
BP_PANEL_CODE = "85354-9"
SYSTOLIC_CODE = "8480-6"
DIASTOLIC_CODE = "8462-4"

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
_COMPONENT_CODES = (SYSTOLIC_CODE, DIASTOLIC_CODE)
_SYS_LO, _SYS_HI = SYSTOLIC_BOUNDS
_DIA_LO, _DIA_HI = DIASTOLIC_BOUNDS


class _Bad(Exception):
    """Internal: a resource cannot be processed (reason code + PHI-free detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def parse(
    value: bytes,
    key: bytes | None = None,
    source: str = "",
    headers: Iterable[tuple[str, bytes]] | None = (),
) -> list[Outcome]:
    """One message -> one outcome per Observation it carries (see the module docstring)."""
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
        reading = _common_reading(doc, source)
        if reading is not None:
            return [reading]
        try:
            return [_observation(doc, source, None)]
        except _Bad as bad:
            return [_dead(value, key, source, headers, bad.reason, bad.detail)]
    if rtype == "Bundle":
        return _bundle(doc, value, key, source, headers)
    return [_dead(value, key, source, headers, "not_observation", f"resourceType {_name(rtype)}")]


def _bundle(
    doc: dict[str, Any],
    value: bytes,
    key: bytes | None,
    source: str,
    headers: Iterable[tuple[str, bytes]] | None,
) -> list[Outcome]:
    entries = doc.get("entry")
    if type(entries) is not list or not entries:
        return [_dead(value, key, source, headers, "not_observation", "Bundle has no entries")]
    if len(entries) > MAX_BUNDLE_ENTRIES:
        detail = f"Bundle has {len(entries)} entries > {MAX_BUNDLE_ENTRIES}"
        return [_dead(value, key, source, headers, "too_large", detail)]
    out: list[Outcome] = []
    for i, entry in enumerate(entries):
        try:
            if type(entry) is not dict:
                raise _Bad("not_observation", "entry is not an object")
            res = entry.get("resource")
            if type(res) is not dict:
                raise _Bad("not_observation", "entry has no resource")
            rtype = res.get("resourceType")
            if rtype != "Observation":
                raise _Bad("not_observation", f"resourceType {_name(rtype)}")
            reading = _common_reading(res, source)
            out.append(
                reading if reading is not None else _observation(res, source, entry.get("fullUrl"))
            )
        except _Bad as bad:
            detail = f"entry[{i}] of {len(entries)}: {bad.detail}"
            out.append(_dead(value, key, source, headers, bad.reason, detail))
    return out


def _observation(res: dict[str, Any], source: str, full_url: Any) -> Outcome:
    """One Observation resource -> Reading | Retraction | Ignored; raises _Bad otherwise."""
    obs_id: Any = res.get("id")
    if not _valid_id(obs_id):
        obs_id = _id_from_full_url(full_url)
        if obs_id is None:
            raise _Bad("missing_id", "no valid Observation id")

    status = res.get("status")
    if type(status) is not str:
        raise _Bad("bad_status", "no status")
    if status in READING_STATUSES:
        kind = 0
    elif status == RETRACTION_STATUS:
        kind = 1
    elif status in IGNORED_STATUSES:
        kind = 2
    else:
        raise _Bad("bad_status", f"status {_name(status)} is not a known Observation status")

    if not _has_coding(res.get("code"), BP_PANEL_CODE):
        raise _Bad("wrong_code", f"code has no LOINC {BP_PANEL_CODE} coding")

    patient_id = _patient_id(res.get("subject"))

    if kind == 1:
        return Retraction(obs_id, patient_id, source)
    if kind == 2:
        return Ignored(obs_id, patient_id, status, source)

    effective_at = _effective(res)
    systolic, diastolic = _values(res.get("component"))
    # positional: the field order of lib.domain.Reading (faster on this hot path)
    return Reading(
        obs_id,
        patient_id,
        effective_at,
        systolic,
        diastolic,
        status,
        _version(res.get("meta")),
        source,
    )


# -- the fast path for the common shape ---------------------------------------------------

_MMHG = "mm[Hg]"


def _common_reading(res: dict[str, Any], source: str) -> Reading | None:
    """The Reading of an Observation of the common shape, or None to take the general path.

    The common shape: a valid ``id``; status final / amended / corrected; the panel code as the
    *first* coding; ``subject.reference`` ``Patient/<id>``; ``effectiveDateTime`` with a time
    and an offset; exactly two components, systolic then diastolic, each with its LOINC code as
    the first coding and a plain numeric ``valueQuantity`` whose ``code`` is ``mm[Hg]``;
    plausible values. For such a resource :func:`_observation` returns the very same Reading
    (each check below is one of its checks, taken in the order it takes them); anything else,
    including every problem, returns None and is judged by :func:`_observation`.
    """
    obs_id = res.get("id")
    status = res.get("status")
    if (
        type(obs_id) is not str
        or not 0 < len(obs_id) <= 64
        or not _ID_CHARS.issuperset(obs_id)
        or type(status) is not str
        or status not in READING_STATUSES
    ):
        return None
    # code: the panel as the first coding
    code = res.get("code")
    if type(code) is not dict:
        return None
    codings = code.get("coding")
    if type(codings) is not list or not codings:
        return None
    coding = codings[0]
    if (
        type(coding) is not dict
        or coding.get("code") != BP_PANEL_CODE
        or coding.get("system") not in _LOINC_SYSTEMS
    ):
        return None
    # subject: Patient/<id>
    subject = res.get("subject")
    if type(subject) is not dict:
        return None
    ref = subject.get("reference")
    if type(ref) is not str or not ref.startswith("Patient/"):
        return None
    patient_id = ref[8:]
    if not 0 < len(patient_id) <= 64 or not _ID_CHARS.issuperset(patient_id):
        return None
    # time: effectiveDateTime with a time of day and an offset
    text = res.get("effectiveDateTime")
    if type(text) is not str or len(text) <= 10:
        return None
    try:
        effective_at = datetime.fromisoformat(text)
        tz = effective_at.tzinfo
        if tz is None:
            return None
        if tz is not UTC:
            effective_at = effective_at.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    # components: [systolic, diastolic]
    components = res.get("component")
    if type(components) is not list or len(components) != 2:
        return None
    systolic = _common_component(components[0], SYSTOLIC_CODE)
    if systolic is None:
        return None
    diastolic = _common_component(components[1], DIASTOLIC_CODE)
    if (
        diastolic is None
        or not _SYS_LO <= systolic <= _SYS_HI
        or not _DIA_LO <= diastolic <= _DIA_HI
        or systolic <= diastolic
    ):
        return None
    # meta.versionId as a string (else the general path works it out)
    meta = res.get("meta")
    if type(meta) is not dict:
        return None
    version = meta.get("versionId")
    if type(version) is not str:
        return None
    # positional: the field order of lib.domain.Reading
    return Reading(obs_id, patient_id, effective_at, systolic, diastolic, status, version, source)


def _common_component(comp: Any, loinc: str) -> float | None:
    """The mm[Hg] value of a component of the common shape with this LOINC code, else None."""
    if type(comp) is not dict:
        return None
    concept = comp.get("code")
    if type(concept) is not dict:
        return None
    codings = concept.get("coding")
    if type(codings) is not list or not codings:
        return None
    coding = codings[0]
    if (
        type(coding) is not dict
        or coding.get("code") != loinc
        or coding.get("system") not in _LOINC_SYSTEMS
    ):
        return None
    q = comp.get("valueQuantity")
    if type(q) is not dict or q.get("code") != _MMHG or "comparator" in q:
        return None
    value: Any = q.get("value")
    vtype = type(value)
    if vtype is float or vtype is int:
        return float(value)
    return None


# -- identity -------------------------------------------------------------------------


_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def _valid_id(value: Any) -> bool:
    """FHIR ``id``: 1..64 characters of ``[A-Za-z0-9.-]``."""
    return type(value) is str and 0 < len(value) <= 64 and _ID_CHARS.issuperset(value)


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


def _patient_id(subject: Any) -> str:
    """Patient id from ``subject.reference``, falling back to ``subject.identifier.value``."""
    if type(subject) is not dict:
        raise _Bad("missing_subject", "no subject")
    ref = subject.get("reference")
    problem = "subject has neither reference nor identifier"
    if type(ref) is str:
        if ref.startswith("Patient/") and _valid_id(ref[8:]):  # the common case
            return ref[8:]
        if ref.startswith("urn:uuid:"):
            candidate = ref[9:]
        else:
            parts = _strip_history(ref).rsplit("/", 2)
            candidate = parts[-1] if len(parts) >= 2 and parts[-2] == "Patient" else ""
        if _valid_id(candidate):
            return candidate
        problem = "subject.reference is not a Patient reference with a valid id"
    ident = subject.get("identifier")
    if type(ident) is dict:
        value = ident.get("value")
        if type(value) is str:
            value = value.strip()
            if 0 < len(value) <= 128:
                return value
        problem = "subject.identifier has no usable value"
    raise _Bad("missing_subject", problem)


def _version(meta: Any) -> str:
    if type(meta) is not dict:
        return ""
    vid = meta.get("versionId")
    if type(vid) is str:
        return vid
    if type(vid) is int:
        return str(vid)
    updated = meta.get("lastUpdated")
    return updated if type(updated) is str else ""


# -- code and values ------------------------------------------------------------------


def _has_coding(concept: Any, code: str) -> bool:
    if type(concept) is not dict:
        return False
    codings = concept.get("coding")
    if type(codings) is not list:
        return False
    for coding in codings:
        if type(coding) is dict and coding.get("code") == code:
            system = coding.get("system")
            if system in _LOINC_SYSTEMS:
                return True
    return False


def _values(components: Any) -> tuple[float, float]:
    """(systolic, diastolic) in mm[Hg], checked for plausibility."""
    if type(components) is not list:
        raise _Bad("missing_component", "no component array")
    systolic: float | None = None
    diastolic: float | None = None
    for comp in components:
        if type(comp) is not dict:
            continue
        # _component_code, inlined (hot path)
        concept = comp.get("code")
        codings = concept.get("coding") if type(concept) is dict else None
        if type(codings) is not list:
            continue
        code = None
        for coding in codings:
            if (
                type(coding) is dict
                and coding.get("system") in _LOINC_SYSTEMS
                and coding.get("code") in _COMPONENT_CODES
            ):
                code = coding["code"]
                break
        if code is None:
            continue
        if code == SYSTOLIC_CODE:
            mmhg = _quantity(comp.get("valueQuantity"), "systolic")
            if systolic is not None and systolic != mmhg:
                raise _Bad("implausible_value", "systolic component repeated with another value")
            systolic = mmhg
        else:
            mmhg = _quantity(comp.get("valueQuantity"), "diastolic")
            if diastolic is not None and diastolic != mmhg:
                raise _Bad("implausible_value", "diastolic component repeated with another value")
            diastolic = mmhg
    if systolic is None:
        raise _Bad("missing_component", f"no systolic ({SYSTOLIC_CODE}) component")
    if diastolic is None:
        raise _Bad("missing_component", f"no diastolic ({DIASTOLIC_CODE}) component")
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
    return systolic, diastolic


def _quantity(q: Any, name: str) -> float:
    if type(q) is not dict:
        raise _Bad("missing_component", f"{name} component has no valueQuantity")
    value: Any = q.get("value")
    vtype = type(value)
    if vtype is not float and vtype is not int:
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
    return float(value) if factor == 1.0 else round(value * factor, 1)


# -- time -----------------------------------------------------------------------------


def _effective(res: dict[str, Any]) -> datetime:
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


def _instant(text: str) -> datetime:
    """ISO 8601 date/dateTime -> aware UTC datetime (partial dates: their first instant, UTC)."""
    n = len(text)
    try:
        if n > 10:
            dt = datetime.fromisoformat(text)
            tz = dt.tzinfo
            if tz is None:
                raise _Bad("missing_timezone", "effective time has a time of day but no offset")
            return dt if tz is UTC else dt.astimezone(UTC)
        if n == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        if text.isascii():
            if n == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit():
                return datetime(int(text[:4]), int(text[5:]), 1, tzinfo=UTC)
            if n == 4 and text.isdigit():
                return datetime(int(text), 1, 1, tzinfo=UTC)
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
