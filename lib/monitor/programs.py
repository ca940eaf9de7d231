"""Remote-monitoring programs: enrolments and the postpartum program's own rules. Pure, no I/O.

Enrolments arrive on ``bp.enrollments`` (key: patient id), are parsed here
(:func:`parse_enrollments`) and reach the patient's state in the monitor's patient step
beside its readings (``lib.monitor.patient``): the patient's latest enrolment replaces the one
before. A refused enrolment goes to ``bp.enrollments.dlq``. A reading processed before its
patient's enrolment arrived (the topics are read independently) is judged when the enrolment
arrives if the patient's window still holds it (``Patient._judge_held``); older ones are not:
send enrolments before readings.

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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import NamedTuple

import orjson

from lib.domain import DeadLetter
from lib.monitor.alert_events import REVIEW, URGENT, AlertEvent, _digest
from lib.monitor.shards import Entry, SourceMessage, group_side_input, source_of

__all__ = [
    "CONFIRM_WITHIN",
    "ENROLL_DEAD_LETTER_REASONS",
    "HYPERTENSIVE_RANGE",
    "PERSISTENT_AFTER",
    "POSTPARTUM_DAYS",
    "PROGRAMS",
    "SEVERE_CONDITION",
    "SEVERE_FAMILY",
    "SEVERE_RANGE",
    "EnrollRefused",
    "Enrolled",
    "Enrollment",
    "SevereRangeEpisode",
    "Transition",
    "parse_enrollment",
    "parse_enrollments",
    "postpartum_band",
    "severe_event",
    "severe_range_step",
]

PROGRAMS = ("postpartum", "hypertension", "general")
ENROLL_DEAD_LETTER_REASONS = ("no_value", "invalid_json", "invalid_enrollment")
MAX_ENROLLMENT_BYTES = 4096
SEVERE_FAMILY = "severe_range"  # the episode family (its ids: lib.monitor.alert_events)
SEVERE_CONDITION = "severe_range_bp"  # its condition, and its tier key
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


@dataclass(frozen=True, slots=True)
class Enrolled:
    """A valid enrolment of the patient ``patient_id``."""

    patient_id: str
    enrollment: Enrollment


@dataclass(frozen=True, slots=True)
class EnrollRefused:
    """A message of ``bp.enrollments`` refused when parsed, on its way to the dead letters."""

    dead: DeadLetter


def parse_enrollment_message(msg: SourceMessage) -> Enrolled | DeadLetter:
    """One message of ``bp.enrollments``: an :class:`Enrolled`, or its dead letter."""
    key = msg.key
    source = source_of(msg)
    headers = tuple(getattr(msg, "headers", None) or ())
    value = msg.value
    if type(value) is not bytes:
        if not isinstance(value, bytearray):
            return DeadLetter(b"", key, "no_value", "message without a value", source, headers)
        value = bytes(value)
    if len(value) > MAX_ENROLLMENT_BYTES:
        detail = f"message larger than {MAX_ENROLLMENT_BYTES} bytes"
        return DeadLetter(value, key, "invalid_enrollment", detail, source, headers)
    patient = key.decode("utf-8", "replace").strip() if key else ""
    parsed = parse_enrollment(value)
    if type(parsed) is tuple:
        return DeadLetter(value, key, parsed[0], parsed[1], source, headers)
    if not patient:
        detail = "no key: the key must be the patient id"
        return DeadLetter(value, key, "invalid_enrollment", detail, source, headers)
    return Enrolled(patient, parsed)  # type: ignore[arg-type]


def parse_enrollments(messages: Sequence[SourceMessage]) -> list[tuple[str, list[Entry]]]:
    """Parse a batch of enrolments and group them by patient, in input order: a valid one
    under its patient's key, a refused one (:class:`EnrollRefused`) under a no-patient key.
    Their ``first`` flag is 0: enrolments are not counted in ``in``."""
    return group_side_input(messages, parse_enrollment_message, Enrolled, EnrollRefused)


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
    clear: tuple[str, ...] = ()  # ids of the clear readings since the latest severe one


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
        episode.clear = (*episode.clear, observation_id)
        if len(episode.clear) >= RESOLVE_AFTER:
            severity = "critical" if episode.confirmed else "high"
            return None, Transition("resolved", severity, episode.confirmed)
        return episode, None
    episode.clear = ()
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


def severe_event(
    patient_id: str,
    episode: SevereRangeEpisode,
    transition: Transition,
    at: datetime,
    observation_ids: tuple[str, ...],
    systolic: float,
    diastolic: float,
    risk_score: float,
    ruleset: str,
    urgent: bool,
) -> AlertEvent:
    """The alert event of a :class:`Transition` (``program`` is set by the caller, as on
    every event of an enrolled patient). Ids: ``sha256(patient | severe_range | first
    reading | event | discriminator)``, the discriminator ``confirmed`` for the escalation;
    ``tier`` ``urgent`` for the confirmed episode when ``severe_range_bp`` pages (``urgent``),
    else ``review``."""
    start = episode.start_id
    event = transition.event
    tier = URGENT if urgent and episode.confirmed else REVIEW
    discriminator = "confirmed" if event == "escalated" else ""
    return AlertEvent(
        alert_id=_digest(patient_id, SEVERE_FAMILY, start, event, discriminator),
        episode_id=_digest(patient_id, SEVERE_FAMILY, start),
        patient_id=patient_id,
        condition=SEVERE_CONDITION,
        event=event,
        severity=transition.severity,
        opened_at=episode.opened_at,
        event_at=at,
        observation_ids=observation_ids,
        systolic=systolic,
        diastolic=diastolic,
        risk_score=risk_score,
        ruleset=ruleset,
        conditions=() if event == "resolved" else (SEVERE_CONDITION,),
        tier=tier,
        program="postpartum",
        confirmed=transition.confirmed,
        confirmation=transition.confirmation,
    )
