"""One resource of the general path: what kind of BP Observation it is, its head (id,
status, patient), and the Reading, Average, Retraction, Ignored or Skipped it makes.

Part of :mod:`lib.monitor.fhir` (docs/fhir-input.md has the input specification).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from lib.domain import (
    Average,
    Ignored,
    Outcome,
    Reading,
    Retraction,
)
from lib.monitor.fhir.fields import (
    _AVERAGE,
    _DIASTOLIC,
    _DIASTOLIC_CODES,
    _IGNORE,
    _LOINC_SYSTEMS,
    _PANEL,
    _READ,
    _RETRACT,
    _SYSTOLIC,
    _SYSTOLIC_CODES,
    AVERAGE_BP_CODE,
    AVG_DIASTOLIC_CODE,
    AVG_SYSTOLIC_CODE,
    BP_PANEL_CODE,
    DIASTOLIC_CODE,
    IGNORED_STATUSES,
    LEGACY_BP_PANEL_CODE,
    READING_STATUSES,
    RETRACTION_STATUS,
    SYSTOLIC_CODE,
    _Absent,
    _Bad,
    _check,
    _effective,
    _effective_offset,
    _has_any_value,
    _instant,
    _name,
    _patient_id,
    _qualifiers,
    _resource_id,
    _values,
    _version,
)

# -- Observation kinds -------------------------------------------------------------------

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
    offset = None if precision else _effective_offset(res)
    return Reading(obs_id, patient_id, effective_at, systolic, diastolic, status,
                   _version(res.get("meta")), source, precision, position, site, setting,
                   device, offset)  # fmt: skip


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
