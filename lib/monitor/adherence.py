"""Adherence of remote-monitoring patients per 30-day cycle. Pure, no I/O.

The monitor keeps a patient's cycles in its patient state (:class:`Adherence`,
``lib.monitor.patient``) and writes a ``bp-adherence`` document whenever a cycle's count of
days changes.

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

Placing readings (the rules the monitor follows):

* a day is the reading's local date when its time carried a UTC offset
  (``Reading.utc_offset``), else the UTC date (a date without a time: that date); a reading
  with only a month or a year is not placed;
* an amended reading (a new version of an id the patient's window holds) moves from its old
  day to its new one, it is not counted twice;
* a retraction carries no time: its day comes from the patient's window while the window
  holds the reading, on the patient's latest UTC offset; a retraction of a reading the
  window no longer holds cannot be placed and changes nothing (nor does one under
  ``BPWATCH_ADHERENCE_DEVICE_ONLY`` once a reading without a device was left out, since
  whether the retracted one was counted is then unknown);
* the state holds the anchor, the current and the previous cycle (30 bytes each): a
  reading older than both is not counted;
* the state is dropped at a wake-up of the patient (the idle reclaim) once its latest
  counted reading is a cycle's length (30 days) old or more, by the wall-clock date: a
  patient back after a whole silent cycle starts a new anchor. Otherwise it lives as long as
  the patient's state, as the ``no_data`` tracking does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

__all__ = [
    "BANDS",
    "CYCLE_DAYS",
    "ON_TRACK_DAYS",
    "Adherence",
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


EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def day_number(ts: float, offset_minutes: int | None) -> int:
    """:func:`local_day` as days since 1970-01-01, from POSIX seconds (no datetime made)."""
    if offset_minutes:
        ts += offset_minutes * 60
    return int(ts // 86400)


def day_of_number(day: int) -> date:
    return date.fromordinal(EPOCH_ORDINAL + day)


def number_of_day(day: date) -> int:
    return day.toordinal() - EPOCH_ORDINAL


_HEAD = struct.Struct("<iiihB")  # anchor, current start, previous start, UTC offset, flags
_START = struct.Struct("<i")
_NONE_START = -(2**31)  # no cycle
_NONE_OFFSET = -(2**15)  # no offset seen
_CUR = _HEAD.size  # the current cycle's 30 counts, then the previous cycle's
_PREV = _CUR + CYCLE_DAYS
_LEFT_OUT = 1  # flag: a reading was left out for want of a device


class Adherence(bytearray):
    """One patient's cycles in 75 bytes (a ``bytearray``, ~150 bytes of memory with its
    header): the anchor, the current and the previous cycle (start and 30 counts), the latest
    UTC offset that counted a new day (to place a retraction) and whether a reading was left
    out for want of a device. Days are numbers (days since 1970-01-01): a reading on a day
    already counted costs integer arithmetic and a byte. Its snapshot is its bytes."""

    __slots__ = ()

    @classmethod
    def new(cls, anchor: int) -> Adherence:
        a = cls(_PREV + CYCLE_DAYS)
        _HEAD.pack_into(a, 0, anchor, _NONE_START, _NONE_START, _NONE_OFFSET, 0)
        return a

    # -- the header -----------------------------------------------------------------------
    @property
    def anchor(self) -> int:
        return int(_HEAD.unpack_from(self)[0])

    @property
    def cur_start(self) -> int:
        """The current cycle's start (days since 1970), or a large negative number."""
        return int(_HEAD.unpack_from(self)[1])

    @property
    def offset(self) -> int | None:
        off = _HEAD.unpack_from(self)[3]
        return None if off == _NONE_OFFSET else int(off)

    @offset.setter
    def offset(self, minutes: int) -> None:
        struct.pack_into("<h", self, 12, minutes)

    @property
    def left_out(self) -> bool:
        return bool(self[14] & _LEFT_OUT)

    def leave_out(self) -> None:
        self[14] |= _LEFT_OUT

    def starts(self) -> list[int]:
        """The starts of the cycles held, the previous first."""
        _anchor, cur, prev, _off, _flags = _HEAD.unpack_from(self)
        return [s for s in (prev, cur) if s != _NONE_START]

    # -- counting -------------------------------------------------------------------------
    def count_again(self, day: int) -> bool:
        """One more reading on a day of the current cycle that has one already (the common
        case, done in place); False when :meth:`add` must decide."""
        i = _CUR + day - _START.unpack_from(self, 4)[0]
        if _CUR <= i < _PREV and 0 < self[i] < 255:
            self[i] += 1
            return True
        return False

    def _counts(self, day: int, create: bool) -> tuple[int, int]:
        """(cycle start, index of its first count), index -1 when not held."""
        anchor, cur, prev, off, flags = _HEAD.unpack_from(self)
        start = anchor + (day - anchor) // CYCLE_DAYS * CYCLE_DAYS
        if start == cur:
            return start, _CUR
        if start == prev:
            return start, _PREV
        if not create or (cur != _NONE_START and start < cur):
            return start, -1  # older than the cycles kept: not counted
        if cur != _NONE_START and cur + CYCLE_DAYS <= start:
            self[_PREV:] = self[_CUR:_PREV]
            prev = cur
        else:
            self[_PREV:] = bytes(CYCLE_DAYS)
            prev = _NONE_START
        self[_CUR:_PREV] = bytes(CYCLE_DAYS)
        _HEAD.pack_into(self, 0, anchor, start, prev, off, flags)
        return start, _CUR

    def add(self, day: int) -> int | None:
        """Count a reading on ``day``; the start of the cycle whose count of days changed."""
        start, at = self._counts(day, True)
        if at < 0:
            return None
        i = at + day - start
        was = self[i]
        if was < 255:
            self[i] = was + 1
        return start if was == 0 else None

    def remove(self, day: int) -> int | None:
        """Uncount a reading on ``day``; the start of the cycle whose count of days changed."""
        start, at = self._counts(day, False)
        if at < 0 or self[at + day - start] == 0:
            return None
        i = at + day - start
        self[i] -= 1
        return start if self[i] == 0 else None

    def doc(self, start: int, patient_id: str) -> dict[str, Any]:
        """:meth:`CycleDays.doc` of the held cycle starting at ``start``, from its bytes (a
        document per patient-day: the common case at a million patients)."""
        at = _CUR if start == self.cur_start else _PREV
        counts = bytes(self[at : at + CYCLE_DAYS])
        days = CYCLE_DAYS - counts.count(0)
        held = len(counts.rstrip(b"\0"))  # the last day with a reading, + 1
        o = EPOCH_ORDINAL + start
        end = date.fromordinal(o + CYCLE_DAYS - 1).isoformat()
        return {
            "patient_id": patient_id,
            "cycle_start": date.fromordinal(o).isoformat(),
            "cycle_end": end,
            "days_with_readings": days,
            "last_reading_date": date.fromordinal(o + held - 1).isoformat() if held else None,
            "days_left": CYCLE_DAYS - held,
            "band": "under_2" if days < 2 else "2_to_15" if days <= 15 else "16_plus",
            "on_track": days + CYCLE_DAYS - held >= ON_TRACK_DAYS,
        }

    def cycle(self, start: int) -> CycleDays:
        """The held cycle starting at ``start`` as :class:`CycleDays`."""
        at = _CUR if start == self.cur_start else _PREV
        return CycleDays(day_of_number(start), bytearray(self[at : at + CYCLE_DAYS]))

    def reanchor(self, start: date) -> None:
        """An enrolment starting after the current cycle's start anchors the next cycles at
        its start (readings already counted stay where they were counted)."""
        n = number_of_day(start)
        cur = self.cur_start
        if cur == _NONE_START or n > cur:
            struct.pack_into("<i", self, 0, n)

    def expired(self, today: date) -> bool:
        """No reading counted for a cycle's length (30 days) before ``today``: the patient's
        next reading starts a new anchor."""
        cur = self.cur_start
        held = len(bytes(self[_CUR:_PREV]).rstrip(b"\0"))  # the last day with a reading, + 1
        if cur == _NONE_START or not held:
            return True
        return number_of_day(today) - (cur + held - 1) >= CYCLE_DAYS

    def snapshot(self) -> bytes:
        """Its bytes, without the previous cycle's while it has none (45 bytes, else 75)."""
        if _HEAD.unpack_from(self)[2] == _NONE_START:
            return bytes(self[:_PREV])
        return bytes(self)

    @classmethod
    def restore(cls, stored: bytes) -> Adherence:
        a = cls(stored)
        if len(a) < _PREV + CYCLE_DAYS:
            a.extend(bytes(_PREV + CYCLE_DAYS - len(a)))
        return a
