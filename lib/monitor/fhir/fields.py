"""The field rules both parsers take: limits, codes, units, ids, patient keys, versions,
values and their plausibility, qualifiers, times, headers, and the dead letter.

Part of :mod:`lib.monitor.fhir` (docs/fhir-input.md has the input specification).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from lib.domain import (
    DEAD_LETTER_REASONS,
    DeadLetter,
)
from lib.memo import remember

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


# Observation kinds and reading states (resources, pairs, fields)
_PANEL, _AVERAGE, _SYSTOLIC, _DIASTOLIC = "panel", "average", "systolic", "diastolic"
_READ, _RETRACT, _IGNORE = 0, 1, 2


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
        remember(_patient_refs, ref, patient_id, _PATIENT_REFS_MAX)
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
    return _instant(_effective_text(res))


def _effective_offset(res: dict[str, Any]) -> int | None:
    """The UTC offset of an effective time that :func:`_effective` accepted; None when the
    resource has none (a panel whose time comes from its members: their UTC date)."""
    try:
        return _offset_minutes(_effective_text(res))
    except (_Bad, ValueError):
        return None


def _offset_minutes(text: str) -> int | None:
    """The UTC offset (minutes) of an ISO 8601 dateTime :func:`_instant` accepted; None for
    a date without a time of day (its date is the sender's own)."""
    n = len(text)
    if n <= 10:
        return None
    if text[-1] == "Z":
        return 0
    tail = text[-6:]
    offset = _OFFSETS.get(tail)
    if offset is not None:
        return offset
    if n >= 16 and text[-3] == ":" and text[-6] in "+-":
        hh, mm = text[-5:-3], text[-2:]
        if hh.isdigit() and mm.isdigit():
            minutes = int(hh) * 60 + int(mm)
            return -minutes if text[-6] == "-" else minutes
    offset = datetime.fromisoformat(text).utcoffset()  # the rarer forms (+HHMM, seconds)
    return None if offset is None else int(offset.total_seconds() // 60)


# the "+HH:MM" / "-HH:MM" endings of the world's UTC offsets, quarter hours from -12 to +14
_OFFSETS = {
    f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}": m
    for m in range(-12 * 60, 14 * 60 + 1, 15)
}


def _effective_text(res: dict[str, Any]) -> str:
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
    return text


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
