"""The fast path for the common shape of a lone BP Observation (msgspec structs).

Part of :mod:`lib.monitor.fhir` (docs/fhir-input.md has the input specification).
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from lib.domain import (
    Outcome,
    Reading,
)
from lib.memo import remember
from lib.monitor.fhir.fields import (
    _LOINC_SYSTEMS,
    _UNIT_FACTORS,
    BP_PANEL_CODE,
    DIASTOLIC_CODE,
    LEGACY_BP_PANEL_CODE,
    MAX_BUNDLE_ENTRIES,
    MAX_MESSAGE_BYTES,
    READING_STATUSES,
    SYSTOLIC_CODE,
    _Bad,
    _in_mmhg,
    _instant,
    _offset_minutes,
    _patient_of_reference,
    _plausible,
    _qualifiers_of,
    _valid_id,
    _version_of,
)

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
    offset = None if precision else _offset_minutes(text)
    return Reading(obs_id, patient_id, effective_at, systolic, diastolic, status, version,
                   source, precision, position, site_label, setting, device_label,
                   offset)  # fmt: skip


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
        remember(_raw_qualifiers_cache, key, qualifiers, _RAW_QUALIFIERS_CACHE_MAX)
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
