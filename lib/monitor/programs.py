"""Remote-monitoring programs: enrolments and the postpartum program's own rules. Pure, no I/O.

Status: the rules of issue 23, tested on their own; the monitor does not read
``bp.enrollments`` yet (the wiring, the documents' ``program`` field and the simulator's
postpartum cohort are still to come). Nothing here changes what the monitor does today.

Postpartum hypertension programs follow a patient for about six weeks after delivery and
judge her readings by the obstetric thresholds, on top of the patient's rule set:

==========================  ====================================  ==============================
band                        threshold (mm Hg)                     what the program does
==========================  ====================================  ==============================
``severe_range``            systolic >= 160 or diastolic >= 110   opens ``severe_range_bp`` at
                                                                  ``high`` at once; a second one
                                                                  within 4 h confirms it:
                                                                  ``critical``, ``confirmed``
``hypertensive_range``      systolic >= 140 or diastolic >= 90    a ``moderate`` condition
==========================  ====================================  ==============================

Sources (primary texts, as their abstracts and recommendations state them):

* ACOG Practice Bulletin No. 222, *Gestational Hypertension and Preeclampsia*, Obstet Gynecol
  2020;135(6):e237-e260: hypertension in pregnancy is systolic >= 140 or diastolic >= 90 mm Hg;
  severe features include systolic >= 160 or diastolic >= 110 mm Hg "on two occasions at least
  4 hours apart", while "severe hypertension can be confirmed within a short interval
  (minutes) to facilitate timely antihypertensive therapy".
* ACOG Committee Opinion No. 767, *Emergent Therapy for Acute-Onset, Severe Hypertension
  During Pregnancy and the Postpartum Period*, Obstet Gynecol 2019;133(2):e174-e180:
  acute-onset severe hypertension that is accurately measured and "persistent for 15 minutes
  or more" is a hypertensive emergency; treatment "as soon as possible within 30-60 minutes of
  confirmed severe hypertension".
* The six weeks (42 days), the default length of a postpartum enrolment: the usual length
  of postpartum hypertension programs and the classic puerperium of six weeks after birth.
  Only secondary sources were at hand for it; no primary text was checked, and a program can
  send its own ``end``.
* Secondary only, and to be checked against the texts themselves: the quotations above were
  read in reproductions of the ACOG documents (their abstracts and summaries), not in the
  journal versions.

Confirmation, the definition implemented: a second severe-range reading of the patient
within :data:`CONFIRM_WITHIN` (4 h) of the latest unconfirmed one confirms the episode. Its
``confirmation`` says which of ACOG's two readings applies: ``repeat`` when it came less than
:data:`PERSISTENT_AFTER` (15 min) after (a repeat measurement that confirms within minutes,
PB 222 / CO 767, so that treatment can start within 30-60 minutes), ``persistent`` at 15
minutes or more (severe hypertension persistent for 15 minutes or more: CO 767's hypertensive
emergency). A severe reading more than 4 h after the last one starts a new wait for
confirmation within the same open episode. Both intervals are in event time (the readings'
own times), so a replay confirms the same episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import NamedTuple

import orjson

__all__ = [
    "CONFIRM_WITHIN",
    "HYPERTENSIVE_RANGE",
    "PERSISTENT_AFTER",
    "POSTPARTUM_DAYS",
    "PROGRAMS",
    "SEVERE_RANGE",
    "Enrollment",
    "SevereRangeEpisode",
    "Transition",
    "parse_enrollment",
    "postpartum_band",
    "severe_range_step",
]

PROGRAMS = ("postpartum", "hypertension", "general")
POSTPARTUM_DAYS = 42
SEVERE_RANGE = (160.0, 110.0)  # ACOG PB 222, CO 767
HYPERTENSIVE_RANGE = (140.0, 90.0)  # ACOG PB 222
CONFIRM_WITHIN = timedelta(hours=4)  # PB 222: "two occasions at least 4 hours apart"
PERSISTENT_AFTER = timedelta(minutes=15)  # CO 767: "persistent for 15 minutes or more"
RESOLVE_AFTER = 3  # consecutive readings below the severe range, as the other episodes


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A patient's enrolment in a program, from ``start`` to ``end`` (dates, inclusive)."""

    program: str
    start: date
    end: date | None = None

    @property
    def last_day(self) -> date | None:
        """The last day covered: ``end``, or for a postpartum enrolment ``start`` + 42 days."""
        if self.end is not None:
            return self.end
        if self.program == "postpartum":
            return self.start + timedelta(days=POSTPARTUM_DAYS)
        return None

    def covers(self, day: date) -> bool:
        last = self.last_day
        return self.start <= day and (last is None or day <= last)


def parse_enrollment(value: bytes) -> Enrollment | tuple[str, str]:
    """An enrolment message (``{"program", "start", "end"?}``), or ``(reason, detail)``:
    ``invalid_json``, or ``invalid_enrollment`` naming the field (never its value)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return ("invalid_json", "not JSON")
    if type(doc) is not dict:
        return ("invalid_enrollment", "not a JSON object")
    program = doc.get("program")
    if program not in PROGRAMS:
        return ("invalid_enrollment", f"program missing or not one of {', '.join(PROGRAMS)}")
    try:
        start = date.fromisoformat(doc["start"])
    except (KeyError, TypeError, ValueError):
        return ("invalid_enrollment", "start missing or not a date (YYYY-MM-DD)")
    end = None
    if doc.get("end") is not None:
        try:
            end = date.fromisoformat(doc["end"])
        except (TypeError, ValueError):
            return ("invalid_enrollment", "end not a date (YYYY-MM-DD)")
        if end < start:
            return ("invalid_enrollment", "end before start")
    return Enrollment(program, start, end)


def postpartum_band(systolic: float, diastolic: float) -> str | None:
    """``severe_range``, ``hypertensive_range`` or None (see the table above)."""
    if systolic >= SEVERE_RANGE[0] or diastolic >= SEVERE_RANGE[1]:
        return "severe_range"
    if systolic >= HYPERTENSIVE_RANGE[0] or diastolic >= HYPERTENSIVE_RANGE[1]:
        return "hypertensive_range"
    return None


@dataclass(slots=True)
class SevereRangeEpisode:
    """An open ``severe_range_bp`` episode: its first reading, the latest severe reading still
    waiting for confirmation (or the confirming one), and the clear readings since."""

    start_id: str
    opened_at: datetime
    last_severe_at: datetime
    confirmed: bool = False
    clear: int = 0


class Transition(NamedTuple):
    """What one reading did to the episode: ``opened`` (severity ``high``), ``escalated``
    (``critical``, confirmed, with ``confirmation`` ``repeat`` or ``persistent``) or
    ``resolved``."""

    event: str
    severity: str
    confirmed: bool
    confirmation: str = ""


def severe_range_step(
    episode: SevereRangeEpisode | None,
    observation_id: str,
    at: datetime,
    systolic: float,
    diastolic: float,
) -> tuple[SevereRangeEpisode | None, Transition | None]:
    """One reading of an enrolled postpartum patient (within the enrolment's dates)."""
    severe = postpartum_band(systolic, diastolic) == "severe_range"
    if episode is None:
        if not severe:
            return None, None
        return SevereRangeEpisode(observation_id, at, at), Transition("opened", "high", False)
    if not severe:
        episode.clear += 1
        if episode.clear >= RESOLVE_AFTER:
            severity = "critical" if episode.confirmed else "high"
            return None, Transition("resolved", severity, episode.confirmed)
        return episode, None
    episode.clear = 0
    if episode.confirmed:
        return episode, None
    gap = abs(at - episode.last_severe_at)
    if gap > CONFIRM_WITHIN:
        episode.last_severe_at = at  # a new wait for confirmation
        return episode, None
    episode.confirmed = True
    episode.last_severe_at = at
    kind = "repeat" if gap < PERSISTENT_AFTER else "persistent"
    return episode, Transition("escalated", "critical", True, kind)
