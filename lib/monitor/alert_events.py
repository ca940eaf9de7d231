"""Alert events: what an episode sends (``bp.alerts``, ``bp-alerts``), and their ids.

:class:`AlertEvent` is made by the reading episodes (:mod:`lib.monitor.alerts`), the home-BP
episodes (:mod:`lib.monitor.home_alerts`) and the no-data episodes (:mod:`lib.monitor.no_data`).
Ids are ``sha256`` digests of the episode's identity (:func:`_digest`), so a replay gives the
same ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lib.domain import TIERS, utc_iso

URGENT, REVIEW = TIERS
EVENTS = ("opened", "escalated", "reminder", "resolved", "acknowledged", "overdue")


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert event; :meth:`to_doc` is its documented JSON (``bp.alerts``, ``bp-alerts``).

    Fields: ``alert_id`` (deterministic, see module docstring), ``episode_id`` (the same for
    every event of one episode), ``patient_id``, ``condition`` (the episode's highest
    condition so far), ``event`` (opened | escalated | reminder | resolved), ``severity``
    (the episode's highest severity so far), ``opened_at`` (event time of the first reading
    of the episode), ``event_at`` (event time of the reading that triggered this event),
    ``observation_ids`` (the triggering readings: one for opened / escalated / reminder,
    the ``resolve_after`` clear readings for resolved), ``systolic``, ``diastolic``,
    ``risk_score`` (of the triggering reading), ``ruleset``, ``conditions`` (all
    conditions active on the triggering reading; empty when resolved), ``tier`` (``urgent``:
    a page; ``review``: the worklist; the episode's tier at this event, see "Tiers").

    The events of the alert loop (:mod:`lib.monitor.acks`, :mod:`lib.monitor.deadlines`)
    carry more: ``acknowledged`` its ``acknowledged_by``, ``acknowledged_at`` and ``note``
    (free text: Elasticsearch only, never Kafka or logs); ``overdue`` its
    ``overdue_minutes``. The other events leave them unset, and their documents omit them.
    Every event of an enrolled patient carries ``program``; the ``severe_range_bp`` events
    (:mod:`lib.monitor.programs`) ``confirmed`` and, once confirmed, ``confirmation``.
    """

    alert_id: str
    episode_id: str
    patient_id: str
    condition: str
    event: str
    severity: str
    opened_at: datetime
    event_at: datetime
    observation_ids: tuple[str, ...]
    systolic: float
    diastolic: float
    risk_score: float
    ruleset: str
    conditions: tuple[str, ...] = ()
    tier: str = URGENT
    acknowledged_by: str = ""
    acknowledged_at: datetime | None = None
    note: str = ""
    overdue_minutes: float | None = None
    program: str = ""  # the patient's program (lib.monitor.programs), "" when not enrolled
    confirmed: bool | None = None  # severe_range_bp only: confirmed by a second reading
    confirmation: str = ""  # severe_range_bp only: "repeat" | "persistent" when confirmed

    def to_doc(self, *, note: bool = True) -> dict[str, Any]:
        """The event's document; ``note=False`` leaves an acknowledgement's note out (Kafka)."""
        doc = {
            "alert_id": self.alert_id,
            "episode_id": self.episode_id,
            "patient_id": self.patient_id,
            "condition": self.condition,
            "event": self.event,
            "severity": self.severity,
            "opened_at": utc_iso(self.opened_at),
            "event_at": utc_iso(self.event_at),
            "observation_ids": list(self.observation_ids),
            "systolic": self.systolic,
            "diastolic": self.diastolic,
            "risk_score": self.risk_score,
            "ruleset": self.ruleset,
            "conditions": list(self.conditions),
            "tier": self.tier,
        }
        if self.acknowledged_at is not None:
            doc["acknowledged_by"] = self.acknowledged_by
            doc["acknowledged_at"] = utc_iso(self.acknowledged_at)
            if note and self.note:
                doc["note"] = self.note
        if self.overdue_minutes is not None:
            doc["overdue_minutes"] = self.overdue_minutes
        if self.program:
            doc["program"] = self.program
        if self.confirmed is not None:
            doc["confirmed"] = self.confirmed
            if self.confirmation:
                doc["confirmation"] = self.confirmation
        return doc


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
