"""No-data alert episodes: a patient who sent readings and then fell silent (wall clock,
``docs/clocks.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from lib.domain import Assessment
from lib.monitor.alert_events import REVIEW, AlertEvent, _digest

MIN_READINGS = 3  # readings a patient must have sent before silence opens an episode
NO_DATA_FAMILY = "no_data"
NO_DATA_CONDITION = "no_data"
_HOUR = 3600.0


@dataclass(slots=True)
class _LastSeen:
    ts: float  # event time of the patient's latest reading (POSIX s)
    observation_id: str
    readings: int  # readings seen, counted up to NoDataRule.min_readings
    open_key: str = ""  # the observation id an open no_data episode started after
    seen_at: float = 0.0  # wall clock when the latest reading was processed (0: unknown)


class NoDataRule:
    """``no_data`` episodes of one patient: a patient who has sent at least ``min_readings``
    readings and then none for ``silence_hours`` of *wall-clock* time.

    :meth:`observe` records a reading (event time) processed at wall-clock ``now``, and gives
    a ``resolved`` event when the patient's episode was open; :meth:`check` is given the wall
    clock ``now`` and opens an episode for a silent patient. Only patients whose latest
    reading lies within ``lookback_days`` of ``now`` are tracked (a replay of old data does not
    flood). While the monitor catches up (after downtime, or replaying the last week at
    start), a patient's newer readings may still be on the way: an episode opens only once
    ``catch_up_grace_s`` of wall-clock time has passed since the patient's latest reading was
    *processed*, or at the end of a bounded run (caught up). The ids do not depend on when:
    the episode and its ids derive from the last reading before the silence,
    ``sha256(patient | no_data | last observation id | event)``, and ``event_at`` is that
    reading's time + ``silence_hours`` (opened) or the new reading's time (resolved), so a
    replay or a resumed run that opens or resolves the same episode emits the same ids.

    :meth:`due` is the wall-clock time at which :meth:`check` can first open an episode after
    a reading: the monitor wakes the patient then (``lib.monitor.wakeups``).
    """

    __slots__ = ("grace_s", "lookback_s", "min_readings", "silence_s", "tier")

    def __init__(
        self,
        silence_hours: float = 48.0,
        lookback_days: float = 7.0,
        min_readings: int = MIN_READINGS,
        catch_up_grace_s: float = 900.0,
        tier: str = REVIEW,
    ) -> None:
        self.tier = tier  # of its events (a silent patient is a call, not a page: "Tiers")
        self.grace_s = catch_up_grace_s
        self.silence_s = silence_hours * _HOUR
        self.lookback_s = lookback_days * 24 * _HOUR
        self.min_readings = min_readings

    def tracked(self, ts: float, now: float) -> bool:
        """Is a reading at event time ``ts`` recent enough to be tracked at ``now``?"""
        return ts >= now - self.lookback_s

    def due(self, ts: float, now: float) -> float:
        """When a check can first open an episode after a reading at ``ts`` processed at
        ``now`` (both POSIX s, wall clock for ``now``)."""
        return max(ts + self.silence_s, now + self.grace_s)

    def observe(
        self, seen: _LastSeen | None, assessment: Assessment, now: float
    ) -> tuple[_LastSeen | None, AlertEvent | None]:
        """The patient's tracking after one more reading, and a ``resolved`` event if an
        episode was open. Every reading counts, however old: whether the patient is tracked
        is decided by its *latest* reading, at :meth:`check`."""
        r = assessment.reading
        ts = r.effective_at.timestamp()
        if seen is None:
            return _LastSeen(ts, r.observation_id, 1, "", now), None
        seen.seen_at = now
        event = None
        if seen.open_key:
            event = self._event(r.patient_id, seen, "resolved", assessment)
            seen.open_key = ""
        if ts >= seen.ts:
            seen.ts, seen.observation_id = ts, r.observation_id
        if seen.readings < self.min_readings:
            seen.readings += 1
        return seen, event

    def check(
        self, patient: str, seen: _LastSeen, now: float, caught_up: bool = False
    ) -> tuple[_LastSeen | None, AlertEvent | None]:
        """Open an episode if the patient is silent; None (forgotten) beyond the lookback.

        ``caught_up``: the input is exhausted (the end of a bounded run), so no newer reading
        can still be on the way and the catch-up grace does not apply.
        """
        if seen.ts < now - self.lookback_s:
            return (seen if seen.open_key else None), None
        if (
            not seen.open_key
            and seen.readings >= self.min_readings
            and now - seen.ts >= self.silence_s
            and (caught_up or seen.seen_at <= now - self.grace_s)
        ):
            seen.open_key = seen.observation_id
            return seen, self._event(patient, seen, "opened", None)
        return seen, None

    def _event(
        self, patient: str, seen: _LastSeen, event: str, assessment: Assessment | None
    ) -> AlertEvent:
        key = seen.open_key
        opened_at = datetime.fromtimestamp(seen.ts + self.silence_s, UTC)
        if assessment is None:
            event_at, ids, values, ruleset = opened_at, (key,), (0.0, 0.0), ""
        else:
            r = assessment.reading
            event_at, ids, ruleset = r.effective_at, (r.observation_id,), assessment.ruleset
            values = (r.systolic, r.diastolic)
        return AlertEvent(
            alert_id=_digest(patient, NO_DATA_FAMILY, key, event),
            episode_id=_digest(patient, NO_DATA_FAMILY, key),
            patient_id=patient,
            condition=NO_DATA_CONDITION,
            event=event,
            severity="moderate",
            opened_at=opened_at,
            event_at=event_at,
            observation_ids=ids,
            systolic=values[0],
            diastolic=values[1],
            risk_score=0.0,
            ruleset=ruleset,
            conditions=(NO_DATA_CONDITION,) if event == "opened" else (),
            tier=self.tier,
        )
