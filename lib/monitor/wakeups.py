"""Wall-clock wake-ups of patients: a timer wheel of ten-second buckets.

Pure, no I/O. Silence (``no_data``) and the reclaim of idle patients must happen when *no*
input arrives, so something else must wake the patient. A timer per patient key will not do in
Bytewax 0.21: the ``notify_at`` times of all keys of a step are scanned on every activation.
So the monitor keeps its timers in a separate step keyed by **due time**, in buckets of
:data:`BUCKET_SECONDS`: each reading registers the patient in the bucket of the time when it
must be woken, and a bucket, once that time has come (one timer per non-empty bucket), sends
each of its patients a wake-up that goes into the patient step with the readings.

* Two wake-ups per patient and batch with readings: when a ``no_data`` episode could first
  open (:meth:`lib.monitor.alerts.NoDataRule.due`, only for a reading within the lookback),
  and when the patient's window may be reclaimed (``now + idle_expiry_hours``).
* A wake-up is only a prompt: the patient decides from its own state (a patient who sent a
  reading since is neither silent nor idle), so a stale one costs a call and nothing else.
* Buckets cycle weekly (:data:`WHEEL_BUCKETS` keys at most); a bucket keeps what is not due
  yet (a due more than a week ahead). A bucket holds one entry per patient (the latest due).
  Live data fills a bucket for about :data:`BUCKET_SECONDS` (as long as a 10 s epoch), so
  its snapshot is rewritten about once or twice, not once per epoch for a minute.
* The clock is the wall clock at registration (``now``), read once per batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from lib.domain import Reading
from lib.errors import RecoveryError
from lib.monitor.alerts import NoDataRule
from lib.monitor.shards import Entry

__all__ = [
    "BUCKET_SECONDS",
    "WHEEL_BUCKETS",
    "Bucket",
    "BucketSnapshot",
    "bucket_of",
    "registrations",
]

BUCKET_SECONDS = 10
WHEEL_BUCKETS = 7 * 24 * 3600 // BUCKET_SECONDS
SNAPSHOT_VERSION = 1

Registration = tuple[str, float]  # (patient id, due: POSIX s, wall clock)


def bucket_of(due: float) -> str:
    """The key of the bucket that wakes at ``due``."""
    return str(int(due // BUCKET_SECONDS) % WHEEL_BUCKETS)


def registrations(
    batch: Iterable[tuple[str, list[Entry]]], rule: NoDataRule, reclaim_s: float, now: float
) -> list[tuple[str, list[Registration]]]:
    """``(bucket, [(patient, due), ...])`` for the patients with readings in the batch: one
    item per bucket (a batch's reclaims share one), not one per patient."""
    by_bucket: dict[str, list[Registration]] = {}
    reclaim = now + reclaim_s
    reclaims = by_bucket[bucket_of(reclaim)] = []
    for patient, entries in batch:
        latest = None
        for outcome, _ing, _first in entries:
            if type(outcome) is Reading:
                ts = outcome.effective_at.timestamp()
                if latest is None or ts > latest:
                    latest = ts
        if latest is None:
            continue
        reclaims.append((patient, reclaim))
        if rule.tracked(latest, now):
            due = rule.due(latest, now)
            key = bucket_of(due)
            regs = by_bucket.get(key)
            if regs is None:
                regs = by_bucket[key] = []
            regs.append((patient, due))
    return [(key, regs) for key, regs in by_bucket.items() if regs]


SNAPSHOT_TAG = "bpw-wakeups"


class BucketSnapshot(NamedTuple):
    """A bucket's recovery snapshot; stored as a plain tuple (cheap to pickle) whose first
    fields name the record and its version."""

    tag: str
    version: int
    due: dict[str, float]


class Bucket:
    """The patients to wake in one bucket of the wheel (patient -> due), and the earliest due
    (kept as entries arrive: Bytewax asks for it after every batch)."""

    __slots__ = ("_next", "due")

    def __init__(self, stored: tuple[Any, ...] | None = None) -> None:
        if stored is not None and (stored[:2] != (SNAPSHOT_TAG, SNAPSHOT_VERSION)):
            raise RecoveryError(
                f"a wake-up bucket snapshot this version cannot read ({stored[:2]!r}): "
                "start on a new recovery store (docs/operations.md, 'Upgrades')"
            )
        snap = None if stored is None else BucketSnapshot._make(stored)
        self.due: dict[str, float] = dict(snap.due) if snap is not None else {}
        self._next = min(self.due.values()) if self.due else None

    def add(self, regs: Iterable[Registration]) -> None:
        due, earliest = self.due, self._next
        for patient, at in regs:
            if at > due.get(patient, float("-inf")):
                due[patient] = at
                if earliest is None or at < earliest:
                    earliest = at
        self._next = earliest

    def next_due(self) -> float | None:
        return self._next

    def fire(self, now: float) -> list[str]:
        """The patients due at ``now``, removed from the bucket."""
        if self._next is None or self._next > now:
            return []
        ready = [p for p, at in self.due.items() if at <= now]
        for p in ready:
            del self.due[p]
        self._next = min(self.due.values()) if self.due else None
        return ready

    def snapshot(self) -> tuple[Any, ...]:
        return (SNAPSHOT_TAG, SNAPSHOT_VERSION, dict(self.due))
