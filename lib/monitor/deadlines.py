"""Acknowledgement deadlines: the ``overdue`` events of the alert loop. Pure, no I/O.

An ``opened`` or ``escalated`` event at ``BPWATCH_ACK_MIN_SEVERITY`` or above must be
acknowledged (:mod:`lib.monitor.acks`) or resolved within ``BPWATCH_ACK_DEADLINE_MINUTES`` of
**wall-clock** time after the monitor emitted it (``docs/clocks.md``: a deadline is about what
must happen now, as ``no_data`` silence is); otherwise one ``overdue`` event follows, at most
one per such event. An escalation restarts the deadline and needs a new acknowledgement.

Where the deadlines live. Every alert event of a patient passes, in order, through the
monitor's ``ack_deadlines`` step, keyed by the patient's shard
(:func:`lib.monitor.shards.shard_of`: :data:`lib.monitor.shards.SHARDS` keys): a
:class:`Deadlines` per shard holds the pending deadlines of its patients, and its one timer is
the earliest of them. Bytewax 0.21 scans the timers of every key of a step on each
activation, so a timer per patient or per episode would cost in proportion to the episodes
pending; per shard it is a fixed 32. A shard's state holds only the events waiting for an
acknowledgement (few: critical, unacknowledged, open), and is snapshotted only in the epochs
that touch it. The events pass through the step unchanged and in order, with the ``overdue``
events inserted where they fall due, so every output (``bp.alerts``, ``bp-alerts``,
``bp-episodes``) sees one ordered stream per patient.

Catching up (the no-data catch-up grace, :class:`lib.monitor.no_data.NoDataRule`):

* an event whose reading is older than the no-data lookback when the monitor processes it
  is not armed (a replay of old data does not flood);
* no deadline fires within ``settle_s`` (``BPWATCH_ACK_SETTLE_SECONDS``) of the monitor's
  start or resume, while it reads the acknowledgements sent meanwhile; a deadline that fell
  due then fires once the period is over;
* at the end of a bounded run every deadline already due fires: all input has been read.

The deadline is measured with the setting in force when it is checked
(``armed_at + deadline``), so a changed ``BPWATCH_ACK_DEADLINE_MINUTES`` applies to the
pending ones after a restart. Ids are deterministic: ``sha256(arming event's alert_id |
overdue)``, so a replay after a crash emits the same id (``bp.alerts`` sends it once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lib.domain import SEVERITIES
from lib.errors import RecoveryError
from lib.monitor.alert_events import AlertEvent, _digest

__all__ = ["SNAPSHOT_TAG", "SNAPSHOT_VERSION", "DeadlineRule", "Deadlines"]

SNAPSHOT_TAG = "bpw-deadlines"
SNAPSHOT_VERSION = 1
_SEV_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_ARMING = ("opened", "escalated")


@dataclass(frozen=True, slots=True)
class DeadlineRule:
    """The settings of the deadlines (shared by every shard).

    :arg min_severity: events at this severity or above are armed.
    :arg deadline_s: wall-clock seconds from an armed event to its ``overdue``.
    :arg settle_s: no ``overdue`` this soon after ``started_at``.
    :arg lookback_s: an event whose reading is older than this at processing is not armed.
    :arg started_at: when this process started the monitor (wall clock, POSIX s).
    """

    min_severity: str = "critical"
    deadline_s: float = 15 * 60.0
    settle_s: float = 900.0
    lookback_s: float = 7 * 86400.0
    started_at: float = 0.0

    def __post_init__(self) -> None:
        if self.min_severity not in _SEV_RANK:
            raise ValueError(f"min_severity must be one of {SEVERITIES}")
        if self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")

    def arms(self, event: AlertEvent, now: float) -> bool:
        """Does this event start a deadline?"""
        return (
            event.event in _ARMING
            and _SEV_RANK.get(event.severity, 0) >= _SEV_RANK[self.min_severity]
            and event.event_at.timestamp() >= now - self.lookback_s
        )

    def settled(self, now: float) -> bool:
        return now >= self.started_at + self.settle_s


class Deadlines:
    """The pending deadlines of one shard: episode id -> (armed at, the arming event)."""

    __slots__ = ("pending",)

    def __init__(self, stored: tuple[Any, ...] | None = None) -> None:
        self.pending: dict[str, tuple[float, AlertEvent]] = {}
        if stored is not None:
            if type(stored) is not tuple or stored[:2] != (SNAPSHOT_TAG, SNAPSHOT_VERSION):
                raise RecoveryError(
                    f"an acknowledgement-deadline snapshot this version cannot read "
                    f"({stored[:2] if type(stored) is tuple else type(stored).__name__!r}): "
                    "start on a new recovery store (docs/operations.md, 'Upgrades')"
                )
            self.pending = dict(stored[2])

    def follow(self, rule: DeadlineRule, events: Iterable[AlertEvent], now: float) -> None:
        """Arm, re-arm or clear deadlines after a patient's events (in their order)."""
        pending = self.pending
        for e in events:
            kind = e.event
            if kind == "acknowledged" or kind == "resolved":
                pending.pop(e.episode_id, None)
            elif kind in _ARMING:
                if rule.arms(e, now):
                    pending[e.episode_id] = (now, e)  # an escalation restarts the deadline
                else:
                    pending.pop(e.episode_id, None)

    def next_due(self, rule: DeadlineRule) -> float | None:
        """When :meth:`fire` next has something to do (wall clock), or None."""
        if not self.pending:
            return None
        due = min(at for at, _ in self.pending.values()) + rule.deadline_s
        return max(due, rule.started_at + rule.settle_s)

    def fire(self, rule: DeadlineRule, now: float, caught_up: bool = False) -> list[AlertEvent]:
        """The ``overdue`` events of the deadlines due at ``now`` (removed). ``caught_up``: the
        end of a bounded run (all input read), where the settle period does not apply."""
        if not self.pending or not (caught_up or rule.settled(now)):
            return []
        limit = now - rule.deadline_s
        due = [eid for eid, (at, _) in self.pending.items() if at <= limit]
        out = []
        for eid in due:
            armed_at, e = self.pending.pop(eid)
            out.append(_overdue(e, armed_at, rule.deadline_s, now))
        return out

    def snapshot(self) -> tuple[Any, ...]:
        return (SNAPSHOT_TAG, SNAPSHOT_VERSION, dict(self.pending))


def _overdue(e: AlertEvent, armed_at: float, deadline_s: float, now: float) -> AlertEvent:
    return AlertEvent(
        alert_id=_digest(e.alert_id, "overdue"),
        episode_id=e.episode_id,
        patient_id=e.patient_id,
        condition=e.condition,
        event="overdue",
        severity=e.severity,
        opened_at=e.opened_at,
        event_at=datetime.fromtimestamp(armed_at + deadline_s, UTC),
        observation_ids=e.observation_ids,
        systolic=e.systolic,
        diastolic=e.diastolic,
        risk_score=e.risk_score,
        ruleset=e.ruleset,
        conditions=e.conditions,
        tier=e.tier,
        overdue_minutes=round((now - armed_at) / 60.0, 2),
    )
