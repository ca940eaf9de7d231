"""Systolic and diastolic sent as separate Observations of one Bundle: paired by a panel's
``hasMember``, else by subject and effective time.

Part of :mod:`lib.monitor.fhir` (docs/fhir-input.md has the input specification).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lib.domain import (
    Ignored,
    Outcome,
    Retraction,
)
from lib.monitor.fhir.fields import (
    _DIASTOLIC,
    _IGNORE,
    _READ,
    _RETRACT,
    _SYSTOLIC,
    _Bad,
    _check,
    _effective,
    _patient_id,
    _quantity,
    _resource_id,
    _strip_history,
    _version,
)
from lib.monitor.fhir.resources import (
    _head,
    _reading,
    _status,
)

if TYPE_CHECKING:
    from lib.monitor.fhir.general import _Message


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
