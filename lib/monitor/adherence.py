"""Adherence of remote-monitoring patients per 30-day cycle. Pure, no I/O.

Status: the cycle arithmetic of issue 23, tested on its own; the monitor does not write
``bp-adherence`` yet (the per-patient state in the patient step, the parser's local dates and
the documents are still to come). Nothing here changes what the monitor does today.

Bands (CPT device-supply codes, 30-day period):

==============  ====================  =============================================
band            days with readings    code
==============  ====================  =============================================
``under_2``     0-1                   none
``2_to_15``     2-15                  CPT 99445, new in the CY2026 Physician Fee Schedule
``16_plus``     16-30                 CPT 99454
==============  ====================  =============================================

Source: the CMS CY2026 Physician Fee Schedule final rule (CMS-1832-F), which adopted CPT
99445 (device supply, 2-15 days of data in a 30-day period) beside 99454 (16-30 days); the
two are not billed together. Only secondary sources (summaries of the final rule by RPM
vendors and billing services, November-December 2025) were at hand here; the Federal Register
text itself was not checked.

Cycles: the first cycle starts on the patient's first reading date, or on the enrolment's
start; each lasts 30 days (``cycle_end`` = start + 29, inclusive) and the next begins the day
after. A day counts when it holds at least one reading that is not retracted. The state per
cycle is a count per day (30 bytes), never a list of readings: :class:`CycleDays`.

What the wiring must still settle (measured against the patient-scale design):

* the local day needs the reading's UTC offset, which the parser drops today
  (``lib.monitor.fhir.fields._instant`` converts to UTC): ``Reading`` needs the offset;
* a retraction carries no time: its day comes from the patient's window while the reading
  is held there, else it cannot be placed (to be counted, not guessed);
* the cycle anchor must outlive the idle-patient reclaim (72 h without input), or a patient
  with a gap of a few days would start a new cycle; kept as a date and 30 bytes, it must
  still be forgotten after a documented time without readings (e.g. a cycle and a half),
  which needs a wake-up far beyond the wheel's week (``lib.monitor.wakeups``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

__all__ = [
    "BANDS",
    "CYCLE_DAYS",
    "ON_TRACK_DAYS",
    "CycleDays",
    "band_of",
    "cycle_start",
    "local_day",
]

CYCLE_DAYS = 30
ON_TRACK_DAYS = 16  # CPT 99454's threshold
BANDS = ("under_2", "2_to_15", "16_plus")


def band_of(days: int) -> str:
    """The band of a count of days with readings (see the table above)."""
    if days < 2:
        return "under_2"
    return "2_to_15" if days <= 15 else "16_plus"


def local_day(at: datetime, offset_minutes: int | None) -> date:
    """The reading's day: its local date when its time carried a UTC offset, else the UTC
    date (``at`` is timezone-aware)."""
    if offset_minutes is None:
        return at.astimezone(UTC).date()
    return at.astimezone(timezone(timedelta(minutes=offset_minutes))).date()


def cycle_start(anchor: date, day: date) -> date:
    """The start of the cycle holding ``day`` for cycles anchored at ``anchor`` (a day before
    the anchor belongs to an earlier cycle: floor division)."""
    return anchor + timedelta(days=((day - anchor).days // CYCLE_DAYS) * CYCLE_DAYS)


@dataclass(slots=True)
class CycleDays:
    """One cycle's readings per day: 30 counts (capped at 255)."""

    start: date
    counts: bytearray = field(default_factory=lambda: bytearray(CYCLE_DAYS))

    @property
    def end(self) -> date:
        return self.start + timedelta(days=CYCLE_DAYS - 1)

    def _index(self, day: date) -> int:
        i = (day - self.start).days
        if not 0 <= i < CYCLE_DAYS:
            raise ValueError(f"{day} is outside the cycle starting {self.start}")
        return i

    def add(self, day: date) -> bool:
        """Count a reading; True when its day had none (the cycle's figures changed)."""
        i = self._index(day)
        was = self.counts[i]
        if was < 255:
            self.counts[i] = was + 1
        return was == 0

    def remove(self, day: date) -> bool:
        """Uncount a retracted reading; True when its day has none left."""
        i = self._index(day)
        if self.counts[i] == 0:
            return False
        self.counts[i] -= 1
        return self.counts[i] == 0

    @property
    def days_with_readings(self) -> int:
        return sum(1 for c in self.counts if c)

    @property
    def last_reading_date(self) -> date | None:
        for i in range(CYCLE_DAYS - 1, -1, -1):
            if self.counts[i]:
                return self.start + timedelta(days=i)
        return None

    def doc(self, patient_id: str) -> dict[str, Any]:
        """The cycle's ``bp-adherence`` document. ``days_left`` counts the cycle's days after
        its latest reading (event time, so a replay writes the same document)."""
        days = self.days_with_readings
        last = self.last_reading_date
        days_left = (self.end - last).days if last is not None else CYCLE_DAYS
        return {
            "patient_id": patient_id,
            "cycle_start": self.start.isoformat(),
            "cycle_end": self.end.isoformat(),
            "days_with_readings": days,
            "last_reading_date": None if last is None else last.isoformat(),
            "days_left": days_left,
            "band": band_of(days),
            "on_track": days + days_left >= ON_TRACK_DAYS,
        }
