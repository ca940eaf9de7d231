"""FHIR R4 blood-pressure Observations (vital-signs BP profile) and Bundles. Pure.

``to_fhir(reading, name)`` builds the resource as a dict; ``encode`` turns any resource into
compact JSON bytes (orjson, key order as built, so the same input gives the same bytes).
:func:`observation_json` writes the bytes of ``encode(to_fhir(...))`` without the dict: the
simulator's hot path splices the few fields that vary into fragments that orjson encoded once
(``tests/unit/test_fhir_writer.py`` compares both byte for byte).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson

from lib.domain import Reading

BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
IDENTIFIER_SYSTEM = "urn:bpwatch:observation-id"
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = ("8480-6", "Systolic blood pressure")
DIASTOLIC = ("8462-4", "Diastolic blood pressure")
KPA_PER_MMHG = 0.133322  # 1 mm[Hg] = 0.133322 kPa
# the Vitals IG's measurement-setting extension and its SNOMED CT codes
MEASUREMENT_SETTING_URL = "http://hl7.org/fhir/us/vitals/StructureDefinition/MeasurementSettingExt"
_SETTINGS = {"home": ("264362003", "Home"), "clinic": ("257585005", "Clinic")}
_ARM_SITES = {
    "left": ("368208006", "Left upper arm structure"),
    "right": ("368209003", "Right upper arm structure"),
}


@functools.cache
def _tz(utc_offset_min: int) -> timezone:
    return timezone(timedelta(minutes=utc_offset_min))


def fhir_datetime(dt: datetime, utc_offset_min: int = 0) -> str:
    """``dt`` as a FHIR dateTime in the given UTC offset, e.g. ``2025-03-03T08:15:00.000+01:00``."""
    if dt.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    local = dt.astimezone(_tz(utc_offset_min))
    return local.isoformat(timespec="milliseconds")


def _coding(system: str, code: tuple[str, str]) -> dict[str, Any]:
    return {"system": system, "code": code[0], "display": code[1]}


def _component(code: tuple[str, str], value: float, unit: str) -> dict[str, Any]:
    if unit == "kPa":
        quantity = {
            "value": round(value * KPA_PER_MMHG, 2),
            "unit": "kPa",
            "system": UCUM,
            "code": "kPa",
        }
    else:
        quantity = {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
    return {"code": {"coding": [_coding(LOINC, code)], "text": code[1]}, "valueQuantity": quantity}


def to_fhir(
    reading: Reading,
    patient_name: str,
    *,
    utc_offset_min: int = 0,
    device: str | None = None,
    arm: str | None = None,
    status: str | None = None,
    unit: str = "mm[Hg]",
    issued: datetime | None = None,
    setting: str | None = None,
) -> dict[str, Any]:
    """A FHIR R4 Observation conforming to the vital-signs blood-pressure profile.

    ``setting`` (``home``, ``clinic``) adds the Vitals IG ``MeasurementSettingExt``.

    ``status`` overrides ``reading.status`` (e.g. ``entered-in-error``); ``unit`` ``"kPa"``
    expresses both components in kilopascal (valid UCUM; consumers convert it).
    Values that are whole numbers are written as JSON integers.
    """
    if unit not in ("mm[Hg]", "kPa"):
        raise ValueError(f"unit must be mm[Hg] or kPa, not {unit!r}")
    sys_v = int(reading.systolic) if reading.systolic.is_integer() else reading.systolic
    dia_v = int(reading.diastolic) if reading.diastolic.is_integer() else reading.diastolic
    version = reading.version or "1"
    effective = fhir_datetime(reading.effective_at, utc_offset_min)
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": reading.observation_id,
        "meta": {"versionId": version, "profile": [BP_PROFILE]},
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": reading.observation_id}],
        "status": status or reading.status,
        "category": [
            {
                "coding": [
                    {"system": CATEGORY_SYSTEM, "code": "vital-signs", "display": "Vital Signs"}
                ]
            }
        ],
        "code": {"coding": [_coding(LOINC, BP_PANEL)], "text": "Blood pressure"},
        "subject": {"reference": f"Patient/{reading.patient_id}", "display": patient_name},
        "effectiveDateTime": effective,
        "issued": effective if issued is None else fhir_datetime(issued, utc_offset_min),
    }
    if setting is not None:
        obs["extension"] = [
            {
                "url": MEASUREMENT_SETTING_URL,
                "valueCodeableConcept": {"coding": [_coding(SNOMED, _SETTINGS[setting])]},
            }
        ]
    if arm is not None:
        obs["bodySite"] = {"coding": [_coding(SNOMED, _ARM_SITES[arm])]}
    if device is not None:
        obs["device"] = {"display": device}
    obs["component"] = [_component(SYSTOLIC, sys_v, unit), _component(DIASTOLIC, dia_v, unit)]
    return obs


def bundle(
    resources: Sequence[dict[str, Any]],
    *,
    bundle_id: str,
    kind: str = "collection",
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """Wrap resources in a Bundle of type ``collection`` or ``transaction`` (PUT by logical id)."""
    if kind not in ("collection", "transaction"):
        raise ValueError(f"bundle type must be collection or transaction, not {kind!r}")
    entries = []
    for res in resources:
        url = f"{res['resourceType']}/{res['id']}"
        entry: dict[str, Any] = {"fullUrl": f"urn:bpwatch:{url}", "resource": res}
        if kind == "transaction":
            entry["request"] = {"method": "PUT", "url": url}
        entries.append(entry)
    out: dict[str, Any] = {"resourceType": "Bundle", "id": bundle_id, "type": kind}
    if timestamp is not None:
        out["timestamp"] = timestamp.astimezone(UTC).isoformat(timespec="milliseconds")
    out["entry"] = entries
    return out


def encode(obj: Any) -> bytes:
    """Compact JSON bytes (orjson)."""
    return orjson.dumps(obj)


# ------------------------------------------------------------------ bytes without the dict
# Fragments of encode(to_fhir(...)) cut around a marker string: orjson encoded each of them,
# so splicing JSON-safe values between them gives orjson's own output byte for byte.
_MARK = "\u0001"
_MARK_JSON = orjson.dumps(_MARK).decode()[1:-1]  # the marker as it appears inside a string


def _cut(obj: Any) -> list[str]:
    return orjson.dumps(obj).decode().split(_MARK_JSON)


def _fragments() -> tuple[list[str], dict[tuple[str, str], str], dict[str, list[str]]]:
    r = Reading(_MARK, _MARK, datetime(2000, 1, 1, tzinfo=UTC), 1.0, 1.0, _MARK, _MARK)
    obs = to_fhir(r, _MARK, status=_MARK)
    head = {k: v for k, v in obs.items() if k not in ("effectiveDateTime", "issued", "component")}
    # around: id, versionId, identifier value, status, subject reference (after "Patient/"),
    # subject display; the last piece ends before the closing brace
    pieces = _cut(head)
    pieces[-1] = pieces[-1][:-1]
    optional: dict[tuple[str, str], str] = {}
    for setting in _SETTINGS:
        optional["setting", setting] = orjson.dumps(
            {"extension": to_fhir(r, _MARK, setting=setting)["extension"]}
        ).decode()[1:-1]
    for arm in _ARM_SITES:
        optional["arm", arm] = orjson.dumps(
            {"bodySite": to_fhir(r, _MARK, arm=arm)["bodySite"]}
        ).decode()[1:-1]
    comps: dict[str, list[str]] = {}
    for unit in ("mm[Hg]", "kPa"):
        components = [_component(SYSTOLIC, 1, unit), _component(DIASTOLIC, 1, unit)]
        for c in components:
            c["valueQuantity"]["value"] = _MARK  # same key, same place
        text = orjson.dumps({"component": components}).decode()[1:-1]
        comps[unit] = text.split(f'"{_MARK_JSON}"')
    return pieces, optional, comps


_P, _OPTIONAL, _COMPONENTS = _fragments()


@functools.cache
def _offset_text(utc_offset_min: int) -> str:
    return datetime(2000, 1, 1, tzinfo=_tz(utc_offset_min)).isoformat()[-6:]


@functools.cache
def _day_text(day: int) -> str:
    return date.fromordinal(_EPOCH_ORDINAL + day).isoformat()


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def fhir_time_ms(ms: int, utc_offset_min: int = 0) -> str:
    """:func:`fhir_datetime` of a millisecond since the Unix epoch (UTC), without a datetime."""
    day, rest = divmod(ms + utc_offset_min * 60_000, 86_400_000)
    h, rest = divmod(rest, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{_day_text(day)}T{h:02d}:{m:02d}:{s:02d}.{milli:03d}{_offset_text(utc_offset_min)}"


@functools.cache
def _json_string(text: str) -> str:
    return orjson.dumps(text).decode()[1:-1]


_MMHG_TEXT: dict[float, str] = {}
_KPA_TEXT: dict[float, str] = {}


def _value_text(value: float, unit: str) -> str:
    """A component's value as orjson writes it (whole mm[Hg] values as integers)."""
    table = _KPA_TEXT if unit == "kPa" else _MMHG_TEXT
    text = table.get(value)
    if text is None:
        v = int(value) if value.is_integer() else value
        q = round(v * KPA_PER_MMHG, 2) if unit == "kPa" else v
        text = table[value] = orjson.dumps(q).decode()
        if len(table) > 100_000:  # values outside the physiological range: do not grow forever
            table.clear()
    return text


def observation_json(
    observation_id: str,
    patient_id: str,
    patient_name: str,
    effective_ms: int,
    systolic: float,
    diastolic: float,
    *,
    status: str = "final",
    version: str = "1",
    utc_offset_min: int = 0,
    device: str | None = None,
    arm: str | None = None,
    unit: str = "mm[Hg]",
    issued_ms: int | None = None,
    setting: str | None = None,
) -> bytes:
    """``encode(to_fhir(reading, patient_name, ...))`` of the reading these fields describe,
    byte for byte (times as milliseconds since the Unix epoch, UTC).

    ``observation_id``, ``patient_id``, ``status`` and ``version`` are written as they are:
    they must need no JSON escaping (the simulator's ids and codes do not).
    """
    if unit not in ("mm[Hg]", "kPa"):
        raise ValueError(f"unit must be mm[Hg] or kPa, not {unit!r}")
    effective = fhir_time_ms(effective_ms, utc_offset_min)
    issued = effective if issued_ms is None else fhir_time_ms(issued_ms, utc_offset_min)
    p = _P
    comp = _COMPONENTS[unit]
    text = (
        f"{p[0]}{observation_id}{p[1]}{version or '1'}{p[2]}{observation_id}{p[3]}{status}"
        f"{p[4]}{patient_id}{p[5]}{_json_string(patient_name)}{p[6]}"
        f',"effectiveDateTime":"{effective}","issued":"{issued}"'
        f"{'' if setting is None else ',' + _OPTIONAL['setting', setting]}"
        f"{'' if arm is None else ',' + _OPTIONAL['arm', arm]}"
        f"{'' if device is None else ',' + _device_json(device)}"
        f",{comp[0]}{_value_text(systolic, unit)}{comp[1]}{_value_text(diastolic, unit)}{comp[2]}}}"
    )
    return text.encode()


@functools.cache
def _device_json(device: str) -> str:
    return orjson.dumps({"device": {"display": device}}).decode()[1:-1]
