"""The home blood-pressure protocol: per patient, a monitoring series of up to 7 days, averaged
and judged against the rule set's out-of-office thresholds (``RuleSet.home``).

Pure, deterministic, no I/O, no clock: only event time. A patient's current series
(:class:`HomeSeries`) is part of the patient's state, :class:`lib.monitor.patient.Patient`
(``Patient.home``), in the monitor's ``patient_windows`` step keyed by patient id.
``Patient.process`` adds to it only readings marked as home measurements
(``Reading.setting == "home"``: the Vitals IG ``MeasurementSettingExt`` with SNOMED 264362003),
or every reading when ``BPWATCH_READING_SETTING=home``, and judges average BP Observations
(LOINC 96607-7) with :func:`reported`.

The protocol (ESH 2023 and AHA/ACC 2017/2025 home-BP monitoring: 7 days, morning and evening
sessions, the first day discarded, at least 12 readings over at least 3 days):

* A series starts with a patient's first home reading and covers 7 *days*. Day 1 starts 6 h
  before the first reading, each day is 24 h, and each day has two *sessions* of 12 h (the
  "morning" one around the first reading's time of day, the "evening" one 12 h later). Days and
  sessions are counted from the series start, not by calendar or time zone (the reading's UTC
  time is all the stream keeps), so a device in any time zone gets the same protocol.
* Day 1 is discarded. A session's readings are averaged, and the mean of the session means is
  the home average (rounded to 0.1 mm[Hg], then judged). ``readings_used`` counts the readings,
  ``days_used`` the days with at least one.
* The average counts once at least 12 readings over at least 3 days are in; from then on it is
  written (``bp-home-averages``, ``_id`` = patient + series start) and rewritten as the series
  grows. A reading after day 7 starts a new series. A reading before the series start is left
  out (a late reading of an earlier period). An amended reading replaces its earlier version,
  a retracted one leaves the series.
* ``home_hypertension``: the mean systolic >= the rule set's home systolic threshold *or* the
  mean diastolic >= its home diastolic threshold (AHA 130/80, ESH 135/85: "and/or").
* An average BP Observation (``lib.domain.Average``) is judged against the same thresholds and
  written as its own document (``origin`` ``reported``, series = its effective period).

A series holds at most :data:`MAX_READINGS` readings (more are left out). It is replaced when
a home reading falls after its 7 days (``day_of >= SERIES_DAYS``: from 6 days 18 h after its
first reading): a new series starts at that reading. A patient's home series goes with its
window when the patient is reclaimed after ``BPWATCH_IDLE_EXPIRY_HOURS`` of wall-clock time
without input (``Patient.wake``: dropped once the input is caught up, packed while it is
behind); an open ``home_hypertension`` episode stays until it resolves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lib.domain import Average, utc_iso
from lib.monitor.rules import RuleSet

__all__ = ["HomeAverage", "HomeSeries", "average_of", "judge", "reported"]

HOME = "home"  # Reading.setting of a home measurement
SERIES_DAYS = 7
MIN_READINGS = 12
MIN_DAYS = 3
MAX_READINGS = 256
_DAY = 86_400.0
_HALF_DAY = _DAY / 2
_LEAD = 6 * 3600.0  # day 1 starts this long before the series' first reading


@dataclass(frozen=True, slots=True)
class HomeAverage:
    """One patient's home average over one series; :meth:`to_doc` is its ``bp-home-averages``
    document (``_id`` = :attr:`doc_id`)."""

    patient_id: str
    series_start: datetime
    series_end: datetime
    readings_used: int
    days_used: int
    mean_systolic: float
    mean_diastolic: float
    home_hypertension: bool
    threshold_systolic: float
    threshold_diastolic: float
    ruleset: str
    origin: str = "protocol"  # protocol | reported (an average BP Observation)
    observation_id: str = ""  # the average BP Observation's id (reported)

    @property
    def doc_id(self) -> str:
        return f"{self.patient_id}|{utc_iso(self.series_start)}"

    def to_doc(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "series_start": utc_iso(self.series_start),
            "series_end": utc_iso(self.series_end),
            "readings_used": self.readings_used,
            "days_used": self.days_used,
            "mean_systolic": self.mean_systolic,
            "mean_diastolic": self.mean_diastolic,
            "home_hypertension": self.home_hypertension,
            "threshold_systolic": self.threshold_systolic,
            "threshold_diastolic": self.threshold_diastolic,
            "ruleset": self.ruleset,
            "origin": self.origin,
            "observation_id": self.observation_id,
        }


def judge(mean_systolic: float, mean_diastolic: float, rules: RuleSet) -> bool:
    """Home hypertension: at or above the home systolic *or* diastolic threshold."""
    home_sys, home_dia = rules.home
    return mean_systolic >= home_sys or mean_diastolic >= home_dia


@dataclass(slots=True)
class HomeSeries:
    """One patient's current series: its start (POSIX s) and readings by observation id."""

    start: float
    readings: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def anchor(self) -> float:
        return self.start - _LEAD

    def day_of(self, ts: float) -> int:
        """0 for day 1; negative before the series; SERIES_DAYS or more after it."""
        return int((ts - self.anchor) // _DAY)

    def add(self, observation_id: str, ts: float, systolic: float, diastolic: float) -> bool:
        """Keep a reading of this series; False when it lies outside it or the series is full."""
        if not 0 <= self.day_of(ts) < SERIES_DAYS:
            return False
        if observation_id not in self.readings and len(self.readings) >= MAX_READINGS:
            return False
        self.readings[observation_id] = (ts, systolic, diastolic)
        return True


def average_of(patient_id: str, series: HomeSeries, rules: RuleSet) -> HomeAverage | None:
    """The protocol average of a series, or None while it has too few readings."""
    anchor = series.anchor
    sessions: dict[int, list[tuple[float, float]]] = {}
    last = series.start
    for ts, systolic, diastolic in series.readings.values():
        half = int((ts - anchor) // _HALF_DAY)
        if half < 2:  # day 1
            continue
        sessions.setdefault(half, []).append((systolic, diastolic))
        last = max(last, ts)
    used = sum(len(v) for v in sessions.values())
    days = len({half // 2 for half in sessions})
    if used < MIN_READINGS or days < MIN_DAYS:
        return None
    means = [
        (sum(s for s, _ in v) / len(v), sum(d for _, d in v) / len(v))
        for _, v in sorted(sessions.items())
    ]
    mean_sys = round(sum(s for s, _ in means) / len(means), 1)
    mean_dia = round(sum(d for _, d in means) / len(means), 1)
    return HomeAverage(
        patient_id, _utc(series.start), _utc(last), used, days, mean_sys, mean_dia,
        judge(mean_sys, mean_dia, rules), *rules.home, rules.name,
    )  # fmt: skip


def reported(average: Average, rules: RuleSet) -> HomeAverage:
    """An average BP Observation, judged against the same thresholds."""
    start, end = average.start, average.end
    days = max(1, int((end - start).total_seconds() // _DAY) + 1)
    return HomeAverage(
        average.patient_id, start, end, 0, days, average.systolic, average.diastolic,
        judge(average.systolic, average.diastolic, rules), *rules.home, rules.name,
        origin="reported", observation_id=average.observation_id,
    )  # fmt: skip


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
