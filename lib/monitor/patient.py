"""One patient's whole state in the monitor, and what one batch of the patient's input makes.

Pure, no I/O. The monitor keys its one stateful patient step by patient id, so a recovery
snapshot holds only the patients whose input arrived in the epoch (Bytewax snapshots the keys
awoken in an epoch, each in full): its cost follows the patients touched, not the cohort.

A :class:`Patient` holds, each part ``None`` until it is needed:

* ``window``: the rolling window of recent readings (:class:`lib.monitor.window.PatientWindow`);
* ``alerts``: open alert episodes (:class:`lib.monitor.alerts.PatientAlertState`);
* ``home`` / ``home_episode``: the home-BP series and its ``home_hypertension`` episode;
* ``seen``: the ``no_data`` tracking (:class:`lib.monitor.alerts.NoDataRule`);
* ``acks``: the acknowledgements of its open episodes (:class:`lib.monitor.acks.AckState`);
* ``enrollment`` / ``severe``: its latest program enrolment and its open ``severe_range_bp``
  episode (:mod:`lib.monitor.programs`);
* ``adherence``: its 30-day cycles of days with readings (:class:`lib.monitor.adherence.Adherence`);
* ``touched_at``: the wall-clock time the patient's input was last processed.

Clocks (see ``docs/clocks.md``): what a reading means is judged in **event time** (windows,
trends, episodes, home series); silence and memory are judged on the **wall clock**, since
they are about what must happen now:

* *Window expiry*: a reading more than ``idle_expiry_hours`` of event time after the window's
  latest reading starts a new window, as if the patient were new (the same windows as the
  sharded design's sweep gave in-order data; the rule no longer depends on other patients).
* *Reclaim*: a patient woken (``lib.monitor.wakeups``) after ``idle_expiry_hours`` of wall-clock
  time without input drops its window and home series when the monitor is caught up with
  its input (:class:`IngestClock`: a message stamped by the broker within the last
  :data:`CAUGHT_UP_S` was processed), since any reading of the patient would then have
  arrived. While the monitor is behind (resumed after an outage longer than the expiry, the
  patient's readings may still wait in Kafka) it packs them into one ``bytes`` instead
  (``packed``, a few hundred bytes instead of a few KB of objects), unpacked by the patient's
  next reading: lossless, so a long outage changes no window. A window older than the expiry
  plus the ``no_data`` lookback (10 days by default), or holding only retracted ids, is
  dropped either way. Open episodes and ``no_data`` tracking stay until they end. A patient
  holding nothing is discarded from the state.

Per-reading work, in input order: window features -> rules -> risk (one reading at a time, by
``RiskScorer.predict_proba_one``: a patient's score does not depend on which other patients
shared its batch) -> alert episodes -> home series -> ``no_data`` tracking. An
acknowledgement (:class:`lib.monitor.acks.Ack`) in the patient's input is judged against the
episodes open at that point of the input; an enrolment (:class:`lib.monitor.programs.Enrolled`)
replaces the patient's enrolment from that point on. After the reading episodes, an enrolled
patient's reading is judged by its program (postpartum: the ``severe_range_bp`` episode),
and every reading counts towards its cycle (``bp-adherence``). The events of an enrolled
patient carry ``program``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from math import inf
from typing import Any, NamedTuple, cast

from lib.domain import (
    Assessment,
    Average,
    Duplicate,
    Features,
    Processed,
    Reading,
    Retraction,
)
from lib.errors import RecoveryError
from lib.monitor import rules
from lib.monitor.acks import Ack, AckRefused, AckState, OpenEpisode, acknowledge, level_of, settle
from lib.monitor.adherence import CYCLE_DAYS, Adherence, day_number, day_of_number
from lib.monitor.alert_events import REVIEW, URGENT, _digest
from lib.monitor.alerts import (
    FAMILIES,
    HOME_CONDITION,
    HOME_FAMILY,
    NO_DATA_CONDITION,
    NO_DATA_FAMILY,
    AlertEvent,
    EpisodeTracker,
    NoDataRule,
    PatientAlertState,
    _HomeEpisode,
    _LastSeen,
    home_step,
)
from lib.monitor.home import HOME, SERIES_DAYS, HomeAverage, HomeSeries, average_of, reported
from lib.monitor.programs import (
    SEVERE_CONDITION,
    SEVERE_FAMILY,
    SEVERE_RANGE,
    Enrolled,
    Enrollment,
    EnrollRefused,
    SevereRangeEpisode,
    postpartum_band,
    severe_event,
    severe_range_step,
)
from lib.monitor.rules import RuleSet
from lib.monitor.shards import Entry
from lib.monitor.state import Results
from lib.monitor.window import PatientWindow, WindowState

__all__ = [
    "CAUGHT_UP_S",
    "SNAPSHOT_TAG",
    "SNAPSHOT_VERSION",
    "IngestClock",
    "Patient",
    "PatientContext",
    "PatientSnapshot",
]

_HOUR = 3600.0
SNAPSHOT_TAG = "bpw-patient"
SNAPSHOT_VERSION = 3  # 2: ``acks`` added; 3: ``enrollment``, ``severe``, ``adherence``
CAUGHT_UP_S = 3600.0  # the latest broker timestamp processed this recently: caught up
_FIRST_VERSIONS = frozenset(("", "1"))  # a reading's first version: no earlier one to move


class IngestClock:
    """The latest broker timestamp this process has processed (POSIX s; -inf before any):
    a patient step's evidence that the input is caught up. Per process, not recovered (after
    a restart the monitor counts as behind until it has processed a recent message)."""

    __slots__ = ("latest",)

    def __init__(self) -> None:
        self.latest = -inf

    def caught_up(self, now: float) -> bool:
        return now - self.latest <= CAUGHT_UP_S


@dataclass(frozen=True, slots=True)
class PatientContext:
    """What every patient shares: the rules, the model and the settings (resolved once).

    :arg score: risk of one reading's features (``RiskModel.predict_proba_one``).
    :arg reclaim_s: wall-clock seconds without input after which a woken patient packs (or
        drops) its window and home series (``BPWATCH_IDLE_EXPIRY_HOURS``).
    """

    ruleset: RuleSet
    score: Callable[[Features], float]
    tracker: EpisodeTracker
    no_data: NoDataRule
    window_size: int = 12
    expiry_s: float = 72 * _HOUR
    every_home: bool = False
    ingest: IngestClock = field(default_factory=IngestClock)
    device_only: bool = False  # BPWATCH_ADHERENCE_DEVICE_ONLY
    severe_urgent: bool = True  # a confirmed severe_range_bp episode pages (tier key)

    @property
    def reclaim_s(self) -> float:
        return self.expiry_s


class PatientSnapshot(NamedTuple):
    """A patient's recovery snapshot, as :meth:`PatientSnapshot.read` gives it.

    Bytewax stores it as the plain tuple :meth:`Patient.snapshot` returns, whose first two
    fields name the record (:data:`SNAPSHOT_TAG`) and its version: pickling a NamedTuple or a
    dataclass looks its class up every time, seven times the cost of a tuple of plain values,
    and the monitor writes a snapshot per patient touched. ``seen`` is the ``no_data`` tracking
    as a tuple of :class:`lib.monitor.alerts._LastSeen`'s fields.
    """

    tag: str
    version: int
    patient_id: str
    window: WindowState | None
    seen: tuple[Any, ...] | None
    alerts: PatientAlertState | None
    home: HomeSeries | None
    home_episode: _HomeEpisode | None
    touched_at: float
    packed: bytes | None  # the window state and home series of an idle patient, pickled
    acks: tuple[Any, ...] | None = None  # AckState.snapshot(); version 2
    enrollment: tuple[Any, ...] | None = None  # (program, start, end) ordinals; version 3
    severe: tuple[Any, ...] | None = None  # SevereRangeEpisode's fields; version 3
    adherence: bytes | None = None  # Adherence.snapshot(); version 3

    @classmethod
    def read(cls, stored: Any) -> PatientSnapshot:
        """The record of a stored snapshot; :class:`lib.errors.RecoveryError` naming the fix
        for one this version cannot read (a store written by an earlier layout). A version 1
        snapshot (before acknowledgements) reads as one without acknowledgements, a version 2
        one (before programs) as one without enrolment and cycles."""
        if type(stored) is tuple and len(stored) > 2 and stored[0] == SNAPSHOT_TAG:
            if stored[1] == SNAPSHOT_VERSION and len(stored) == len(cls._fields):
                return cls._make(stored)
            if stored[1] == 2 and len(stored) == len(cls._fields) - 3:
                return cls._make((*stored, None, None, None))
            if stored[1] == 1 and len(stored) == len(cls._fields) - 4:
                return cls._make((*stored, None, None, None, None))
        raise RecoveryError(
            "the recovery store holds monitor state this version cannot read "
            f"({_describe(stored)}): it was written by an earlier bpwatch, which kept "
            "patients in 32 shards. Either resume it with that version until the topic is "
            "consumed and then start this version on a new store (python -m "
            "bytewax.recovery NEW_DIR 64), or start on a new store now: the monitor then "
            "re-reads the topic from its earliest offset and rebuilds every patient's "
            "state; bp.alerts and the dead-letter topic skip what they already hold (same id). "
            "See docs/operations.md, 'Upgrades'."
        )


class Patient:
    """One patient's state; see the module docstring."""

    __slots__ = (
        "acks",
        "adherence",
        "alerts",
        "enrollment",
        "home",
        "home_episode",
        "packed",
        "patient_id",
        "seen",
        "severe",
        "touched_at",
        "window",
    )

    def __init__(self, patient_id: str = "") -> None:
        self.patient_id = patient_id
        self.window: PatientWindow | None = None
        self.alerts: PatientAlertState | None = None
        self.home: HomeSeries | None = None
        self.home_episode: _HomeEpisode | None = None
        self.seen: _LastSeen | None = None
        self.touched_at = 0.0
        self.packed: bytes | None = None
        self.acks: AckState | None = None
        self.enrollment: Enrollment | None = None
        self.severe: SevereRangeEpisode | None = None
        self.adherence: Adherence | None = None

    def is_empty(self) -> bool:
        """Nothing held: the key can be discarded (the ids of resolved episodes alone are not
        worth a key)."""
        return (
            (self.acks is None or not self.acks.holds_acks())
            and self.window is None
            and self.alerts is None
            and self.home is None
            and self.home_episode is None
            and self.seen is None
            and self.packed is None
            and self.enrollment is None
            and self.severe is None
            and self.adherence is None
        )

    # -- input --------------------------------------------------------------------------
    def process(self, ctx: PatientContext, entries: Iterable[Entry], now: float) -> Results:
        """Window, rules, risk, episodes, home series and tracking for each outcome of the
        batch, in input order. ``now``: the wall clock (``no_data`` tracking only)."""
        res = Results()
        outcomes, ingested = res.outcomes, res.ingested_at
        messages = 0
        self.touched_at = now
        if self.packed is not None:
            self._unpack()
        clock = ctx.ingest
        events = res.events
        for outcome, ing, first in entries:
            if ing is not None and ing > clock.latest:
                clock.latest = ing
            t = type(outcome)
            if t is Ack or t is AckRefused:
                self._ack(ctx, outcome, res)  # type: ignore[arg-type]
                continue
            if t is Enrolled or t is EnrollRefused:
                n_events = len(events)
                self._enroll(ctx, outcome, res)  # type: ignore[arg-type]
                if len(events) > n_events:
                    self.acks = settle(self.acks, events[n_events:])
                continue
            messages += first
            ingested.append(ing)
            n_events = len(events)
            if t is Reading:
                r = cast(Reading, outcome)
                if not self.patient_id:
                    self.patient_id = r.patient_id
                w = self.window
                held_ts = None  # an amendment's earlier version, to move its day
                if w is not None and (r.status != "final" or r.version not in _FIRST_VERSIONS):
                    held_ts = w.ts_of(r.observation_id)
                ts = r.effective_at.timestamp()
                a = self._assess(ctx, r, ts)
                outcomes.append(a)
                if type(a) is Assessment:
                    day = _day_of(r, ts)
                    self._follow(ctx, a, now, res)
                    if self.enrollment is not None or self.severe is not None:
                        self._program(ctx, a, None if day < 0 else day_of_number(day), res,
                                      n_events)  # fmt: skip
                    if day >= 0:
                        self._adhere(ctx, r, day, held_ts, res)
                    if len(events) > n_events:
                        self.acks = settle(self.acks, events[n_events:])
                continue
            if t is Retraction:
                r = cast(Retraction, outcome)
                if self.window is None:  # retraction before its reading: keep the tombstone
                    self.window = PatientWindow(ctx.window_size)
                held_ts = self.window.ts_of(r.observation_id)
                if held_ts is not None and self.adherence is not None:
                    self._unadhere(held_ts, res)
                self.window.retract(r.observation_id)
                if (
                    self.home is not None
                    and self.home.readings.pop(r.observation_id, None) is not None
                ):
                    avg = average_of(r.patient_id, self.home, ctx.ruleset)
                    if avg is not None:
                        self._home_average(avg, res, ctx.tracker.policy.tier_of(HOME_CONDITION))
            elif t is Average:
                self._home_average(
                    reported(cast(Average, outcome), ctx.ruleset),
                    res,
                    ctx.tracker.policy.tier_of(HOME_CONDITION),
                )
            outcomes.append(cast(Processed, outcome))  # not a Reading: passed on as it is
            if len(events) > n_events:
                self.acks = settle(self.acks, events[n_events:])
        res.messages = messages
        return res

    def _ack(self, ctx: PatientContext, item: Ack | AckRefused, res: Results) -> None:
        res.acks += 1
        if type(item) is AckRefused:
            res.ack_refused.append(item.dead)
            return
        ack = cast(Ack, item)
        self.acks, outcome = acknowledge(self.acks, self.open_episodes(ctx), ack)
        if outcome.event is not None:
            event = outcome.event
            program = self._program_on(event.event_at.date())
            res.events.append(replace(event, program=program) if program else event)
            res.acknowledged += 1
        elif outcome.repeat:
            res.ack_repeats += 1
        elif outcome.refused is not None:
            res.ack_refused.append(outcome.refused)
        if self.acks is not None and not self.acks.acked and not self.acks.closed:
            self.acks = None

    # -- programs and adherence ------------------------------------------------------
    def _enroll(self, ctx: PatientContext, item: Enrolled | EnrollRefused, res: Results) -> None:
        if type(item) is EnrollRefused:
            res.enroll_refused.append(item.dead)
            return
        e = cast(Enrolled, item).enrollment
        res.enrolled += 1
        if not self.patient_id:
            self.patient_id = cast(Enrolled, item).patient_id
        before, self.enrollment = self.enrollment, e
        ad = self.adherence
        if ad is not None:
            ad.reanchor(e.start)
            for start in ad.starts():  # its documents now name the program
                self._adherence_doc(start, res)
        if e.program == "postpartum" and self.window is not None and self.severe is None:
            self._judge_held(ctx, before, e, res)

    def _judge_held(
        self, ctx: PatientContext, before: Enrollment | None, e: Enrollment, res: Results
    ) -> None:
        """An enrolment that arrives after some of its readings (two topics, read
        independently) judges the readings the window still holds within its dates and not
        judged by the enrolment before it, in event-time order: the same episodes and ids as
        in order; the events carry ``risk_score`` 0 (the window keeps no score)."""
        w = cast(PatientWindow, self.window)
        offset = None if self.adherence is None else self.adherence.offset
        patient = self.patient_id
        for ts, oid, sys_, dia in w.held():
            day = day_of_number(day_number(ts, offset))
            if not e.covers(day) or (before is not None and before.program == "postpartum"
                                     and before.covers(day)):  # fmt: skip
                continue
            at = datetime.fromtimestamp(ts, UTC)
            old = self.severe
            self.severe, tr = severe_range_step(old, oid, at, sys_, dia)
            if tr is not None:
                ep = cast(SevereRangeEpisode, self.severe if self.severe is not None else old)
                ids = ep.clear if tr.event == "resolved" else (oid,)
                event = severe_event(patient, ep, tr, at, ids, sys_, dia, 0.0, ctx.ruleset.name,
                                     ctx.severe_urgent)  # fmt: skip
                res.events.append(event)

    def _program_on(self, day: date | None) -> str:
        """The program whose enrolment covers ``day`` ("" when none)."""
        e = self.enrollment
        if e is None or day is None or not e.covers(day):
            return ""
        return e.program

    def _program(
        self, ctx: PatientContext, a: Assessment, day: date | None, res: Results, n_events: int
    ) -> None:
        """The program's rules after the reading episodes; ``program`` on the reading and on
        the events it made."""
        r = a.reading
        program = self._program_on(day)
        if program:
            a.program = program
        events = res.events
        if program == "postpartum":
            a.program_band = postpartum_band(r.systolic, r.diastolic) or ""
        if program == "postpartum" or (
            self.severe is not None
            and r.systolic < SEVERE_RANGE[0]
            and r.diastolic < SEVERE_RANGE[1]
        ):  # outside its dates, a reading may still end an open episode
            old = self.severe
            self.severe, tr = severe_range_step(
                old, r.observation_id, r.effective_at, r.systolic, r.diastolic
            )
            if tr is not None:
                ep = cast(SevereRangeEpisode, self.severe if self.severe is not None else old)
                ids = ep.clear if tr.event == "resolved" else (r.observation_id,)
                patient = self.patient_id or r.patient_id
                values = (r.systolic, r.diastolic, a.risk_score, a.ruleset)
                events.append(
                    severe_event(patient, ep, tr, r.effective_at, ids, *values, ctx.severe_urgent)
                )
        if program:
            for i in range(n_events, len(events)):
                if not events[i].program:
                    events[i] = replace(events[i], program=program)

    def _adhere(
        self, ctx: PatientContext, r: Reading, day: int, held_ts: float | None, res: Results
    ) -> None:
        """Count a scored reading in its cycle (``day``: :func:`day_number`; an amendment
        moves it: see :mod:`lib.monitor.adherence`)."""
        ad = self.adherence
        if ad is not None and held_ts is None and not ctx.device_only and ad.count_again(day):
            return
        if ad is None:
            e = self.enrollment
            anchor = day
            if e is not None and e.covers(day_of_number(day)):
                anchor = day - (day_of_number(day) - e.start).days
            ad = self.adherence = Adherence.new(anchor)
        if ctx.device_only and not r.device:
            ad.leave_out()
            return
        if r.utc_offset is not None:
            ad.offset = r.utc_offset
        if held_ts is not None:  # a new version of a held reading: moved, not added
            before = day_number(held_ts, ad.offset)
            if before == day:
                return
            self._adherence_doc(ad.remove(before), res)
        start = ad.add(day)
        if start is not None:
            self._adherence_doc(start, res)

    def _unadhere(self, held_ts: float, res: Results) -> None:
        """Uncount a retracted reading the window held (placed on the latest offset)."""
        ad = cast(Adherence, self.adherence)
        if ad.left_out:
            return  # whether the retracted reading was counted is unknown
        self._adherence_doc(ad.remove(day_number(held_ts, ad.offset)), res)

    def _adherence_doc(self, start: int | None, res: Results) -> None:
        if start is None:
            return
        doc = cast(Adherence, self.adherence).doc(start, self.patient_id)
        program = self._program_on(day_of_number(start)) if self.enrollment is not None else ""
        if program:
            doc["program"] = program
        res.adherence.append(doc)

    def open_episodes(self, ctx: PatientContext) -> dict[str, OpenEpisode]:
        """The patient's open episodes by episode id, each at its current level."""
        patient = self.patient_id
        out: dict[str, OpenEpisode] = {}
        if self.alerts is not None:
            ruleset = ctx.ruleset.name
            for family in FAMILIES:
                ep = self.alerts.episodes.get(family)
                if ep is None:
                    continue
                eid = _digest(patient, family, ep.start_observation_id)
                level = level_of(ep.condition, ep.level, ep.tier)
                out[eid] = OpenEpisode(
                    eid, level, ep.condition, ep.severity, ep.opened_at, ep.tier, ruleset
                )
        home = self.home_episode
        if home is not None:
            eid = _digest(patient, HOME_FAMILY, home.key)
            tier = ctx.tracker.policy.tier_of(HOME_CONDITION)
            out[eid] = OpenEpisode(eid, "home", HOME_CONDITION, "moderate", home.opened_at,
                                   tier, ctx.ruleset.name)  # fmt: skip
        seen = self.seen
        if seen is not None and seen.open_key:
            eid = _digest(patient, NO_DATA_FAMILY, seen.open_key)
            opened = datetime.fromtimestamp(seen.ts + ctx.no_data.silence_s, UTC)
            out[eid] = OpenEpisode(eid, "no_data", NO_DATA_CONDITION, "moderate", opened,
                                   ctx.no_data.tier, "")  # fmt: skip
        sev = self.severe
        if sev is not None:
            eid = _digest(patient, SEVERE_FAMILY, sev.start_id)
            tier = URGENT if ctx.severe_urgent and sev.confirmed else REVIEW
            state = "confirmed" if sev.confirmed else "opened"
            out[eid] = OpenEpisode(eid, f"{SEVERE_CONDITION}:{state}:{tier}", SEVERE_CONDITION,
                                   "critical" if sev.confirmed else "high", sev.opened_at, tier,
                                   ctx.ruleset.name)  # fmt: skip
        return out

    def _assess(self, ctx: PatientContext, r: Reading, ts: float) -> Assessment | Duplicate:
        window = self.window
        if window is None:
            window = self.window = PatientWindow(ctx.window_size)
        else:
            last = window.last_ts
            if last is not None and ts - last > ctx.expiry_s:
                window = self.window = PatientWindow(ctx.window_size)  # idle: a new window
        f = window.add(r, ts)
        if f is None:
            return Duplicate(r.observation_id, r.patient_id, r.version, r.source)
        ruleset = ctx.ruleset
        category, label, types, severity = rules.verdict(r, f, ruleset)
        return Assessment(
            r, f, category, types, severity, ctx.score(f), ruleset.name, label
        )  # fmt: skip

    def _follow(self, ctx: PatientContext, a: Assessment, now: float, res: Results) -> None:
        """Alert episodes, home series and ``no_data`` tracking after one assessment."""
        tracker = ctx.tracker
        st = self.alerts
        if st is not None or not tracker.quiet(a):
            self.alerts, new = tracker._step(st, a)
            if new:
                res.events.extend(new)
        r = a.reading
        if ctx.every_home or r.setting == HOME:
            avg = self._home_add(ctx, r)
            if avg is not None:
                self._home_average(avg, res, ctx.tracker.policy.tier_of(HOME_CONDITION))
        self.seen, event = ctx.no_data.observe(self.seen, a, now)
        if event is not None:
            res.events.append(event)

    def _home_add(self, ctx: PatientContext, r: Reading) -> HomeAverage | None:
        ts = r.effective_at.timestamp()
        s = self.home
        if s is None or s.day_of(ts) >= SERIES_DAYS:
            s = self.home = HomeSeries(ts)
        if not s.add(r.observation_id, ts, r.systolic, r.diastolic):
            return None
        return average_of(r.patient_id, s, ctx.ruleset)

    def _home_average(self, avg: HomeAverage, res: Results, tier: str) -> None:
        res.averages.append(avg)
        self.home_episode, event = home_step(self.home_episode, avg, tier)
        if event is not None:
            res.events.append(event)

    # -- wall clock -----------------------------------------------------------------------
    def wake(self, ctx: PatientContext, now: float, caught_up: bool = False) -> list[AlertEvent]:
        """A wake-up at wall-clock ``now`` (or the end of a bounded run, ``caught_up``): the
        ``no_data`` check, then the reclaim of an idle patient's window and home series."""
        events: list[AlertEvent] = []
        if self.seen is not None:
            self.seen, event = ctx.no_data.check(self.patient_id, self.seen, now, caught_up)
            if event is not None:
                events.append(event)
        if events:
            if self.enrollment is not None:
                for i, e in enumerate(events):
                    program = self._program_on(e.event_at.date())
                    if program:
                        events[i] = replace(e, program=program)
            self.acks = settle(self.acks, events)
        if not caught_up and now - self.touched_at >= ctx.reclaim_s:
            self._reclaim(ctx, now)
            self._forget(datetime.fromtimestamp(now, UTC).date())
        return events

    def _forget(self, today: date) -> None:
        """Drop cycles without a reading for a cycle's length, and an enrolment more than a
        cycle past its end (wall-clock date)."""
        if self.adherence is not None and self.adherence.expired(today):
            self.adherence = None
        e = self.enrollment
        if e is not None and self.severe is None:
            last = e.last_day
            if last is not None and (today - last).days > CYCLE_DAYS:
                self.enrollment = None

    def _reclaim(self, ctx: PatientContext, now: float) -> None:
        """Drop an idle patient's window and home series, or pack them while the input is
        behind (see the module docstring)."""
        w, home = self.window, self.home
        if w is None and home is None:
            return
        latest = max(
            w.last_ts if w is not None and w.last_ts is not None else float("-inf"),
            max((r[0] for r in home.readings.values()), default=home.start) if home else -inf,
        )
        self.window = self.home = None
        if latest < now - ctx.expiry_s - ctx.no_data.lookback_s or ctx.ingest.caught_up(now):
            return  # dropped: stale, only retracted ids, or nothing of the patient can be due
        self.packed = pickle.dumps((None if w is None else w.state(), home), protocol=5)

    def _unpack(self) -> None:
        window_state, home = pickle.loads(cast(bytes, self.packed))
        self.packed = None
        self.window = None if window_state is None else PatientWindow.from_state(window_state)
        self.home = home

    # -- recovery -------------------------------------------------------------------------
    def snapshot(self) -> tuple[Any, ...]:
        """The stored form of :class:`PatientSnapshot` (a plain tuple: cheap to pickle)."""
        w, seen = self.window, self.seen
        return (
            SNAPSHOT_TAG,
            SNAPSHOT_VERSION,
            self.patient_id,
            None if w is None else w.state(),
            None if seen is None else (seen.ts, seen.observation_id, seen.readings,
                                       seen.open_key, seen.seen_at),
            self.alerts,
            self.home,
            self.home_episode,
            self.touched_at,
            self.packed,
            None if self.acks is None else self.acks.snapshot(),
            _enrollment_state(self.enrollment),
            None if (sev := self.severe) is None else (sev.start_id, sev.opened_at,
                                                       sev.last_severe_at, sev.confirmed,
                                                       sev.clear),
            None if self.adherence is None else self.adherence.snapshot(),
        )  # fmt: skip

    @classmethod
    def restore(cls, stored: Any) -> Patient:
        """A patient from its stored snapshot (see :meth:`PatientSnapshot.read`)."""
        snap = PatientSnapshot.read(stored)
        p = cls(snap.patient_id)
        if snap.window is not None:
            p.window = PatientWindow.from_state(snap.window)
        if snap.seen is not None:
            p.seen = _LastSeen(*snap.seen)
        p.alerts = snap.alerts
        p.home = snap.home
        p.home_episode = snap.home_episode
        p.touched_at = snap.touched_at
        p.packed = snap.packed
        if snap.acks is not None:
            p.acks = AckState.restore(snap.acks)
        if snap.enrollment is not None:
            program, start, end = snap.enrollment
            p.enrollment = Enrollment(
                program, date.fromordinal(start), None if end is None else date.fromordinal(end)
            )
        if snap.severe is not None:
            p.severe = SevereRangeEpisode(*snap.severe)
        if snap.adherence is not None:
            p.adherence = Adherence.restore(snap.adherence)
        return p


def _day_of(r: Reading, ts: float) -> int:
    """The reading's day for programs and cycles, as days since 1970-01-01
    (``lib.monitor.adherence.day_number``); -1 for a time given only as a month or a year."""
    if r.precision and r.precision != "day":
        return -1
    return day_number(ts, r.utc_offset)


def _enrollment_state(e: Enrollment | None) -> tuple[Any, ...] | None:
    if e is None:
        return None
    return (e.program, e.start.toordinal(), None if e.end is None else e.end.toordinal())


def _describe(stored: Any) -> str:
    if type(stored) is tuple and stored and stored[0] == SNAPSHOT_TAG:
        version = stored[1] if len(stored) > 1 else "?"
        return f"snapshot version {version}, this version reads {SNAPSHOT_VERSION}"
    return f"a {type(stored).__name__} where a patient snapshot was expected"
