"""FHIR R4 blood-pressure Observations (vital-signs BP profile) and Bundles. Pure.

``to_fhir(reading, name)`` builds the resource as a dict; ``encode`` turns any resource into
compact JSON bytes (orjson, key order as built, so the same input gives the same bytes).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
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
