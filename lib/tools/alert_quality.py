"""Alert quality: the monitor's real-time alerts scored against the simulator's ground truth.

    python -m lib.tools.alert_quality --truth ground_truth.jsonl --alerts alerts.jsonl

Pure scoring, no I/O outside :func:`read_truth` and :func:`main`. The inputs are the
simulator's ground-truth records (``BPWATCH_SIM_TRUTH``: one per Observation sent,
:func:`lib.sim.stream.truth_record`) and the alert events the monitor emitted
(:class:`lib.monitor.alerts.AlertEvent`, or their documents as ``bp.alerts`` and ``bp-alerts``
hold them). ``benchmarks/alert_quality.py`` runs a held-out cohort through the monitor
dataflow and prints these tables; ``lib.tools.summary`` prints the headline of a demo run.

Definitions
-----------
truth readings  the truth records that carry ``in_event``: each clean reading sent, once
                (duplicates, amendments and the faults' extra messages carry no truth)
true event      a maximal run of one patient's truth readings, in event time, with
                ``in_event`` true: an acute event from its first reading (``start``) to its
                last (``end``). Its ``kind`` (``crisis``, ``hypotension``) is the
                ``event_kind`` of its readings, taken from one that has no event starting
                within the horizon (there the kind names the *next* event)
tier            the alert event's ``tier`` (``urgent`` or ``review``); ``urgent`` when absent,
                since every alert paged before tiers existed
reading alerts  the conditions judged on readings; ``home_hypertension`` and ``no_data`` are
                counted (opened, burden) but have no truth to score them against, and no
                ``all`` row includes them
opened          episodes per tier: an episode's first event in a tier (its ``opened``
                event, or the ``escalated`` event that raised a ``review`` episode to
                ``urgent``: the page), grouped by the condition and tier of that event. An
                episode that opens as review and is confirmed urgent counts once in each tier
precision       true opened / opened, where an opened episode is *true* when the triggering
                reading (``observation_ids[0]``) of that first event is ``in_event`` or
                ``event_within_horizon`` in the truth
covered         a true event is covered by a group of alerts when one of them, ``opened`` or
                ``escalated``, of the same patient, falls during the event
                (``start <= event_at <= end``), or when an episode of the group was open at
                the event's start (opened before it, not resolved by then; the episode's
                condition and tier at that moment decide its group)
recall          covered / all true events. The headline is the ``urgent`` tier's ``all`` row
time to alert   from an event's start to its first covering alert, in minutes of event time
                and in readings: the patient's truth readings after the start up to and
                including the alert's (0 = the event's first reading alerted); 0 for an event
                covered by an episode open at its start. Median, and p90 by nearest rank
                (the smallest value with at least 90 % of the values at or below it), over
                the covered events
patient-days    the sum, over the patients of the truth, of the span from a patient's first
                to last reading in event time (a patient with one reading adds 0), in days;
                burden = opened episodes per 100 patient-days

The policy trade-off (:func:`trade_off`) re-runs the monitor's own episode logic
(:class:`lib.monitor.alerts.EpisodeTracker`) over the assessments of a run, once per value of
an :class:`~lib.monitor.alerts.AlertPolicy` knob: the assessments (window, rules, risk) do
not depend on the policy, so nothing else needs to run again.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from lib.domain import Assessment
from lib.monitor.alerts import (
    HOME_CONDITION,
    NO_DATA_CONDITION,
    AlertEvent,
    AlertPolicy,
    EpisodeTracker,
    PatientAlertState,
)

__all__ = [
    "ALL",
    "REVIEW",
    "TIERS",
    "URGENT",
    "Alert",
    "Report",
    "Score",
    "TradeOff",
    "TrueEvent",
    "Truth",
    "alert_of",
    "evaluate",
    "format_report",
    "format_trade_off",
    "headline",
    "read_truth",
    "replay",
    "trade_off",
    "truth_from_records",
]

log = logging.getLogger(__name__)

URGENT, REVIEW = "urgent", "review"
TIERS = (URGENT, REVIEW)
ALL = "all"  # the row of a tier over every reading condition
_NOT_SCORED = frozenset((HOME_CONDITION, NO_DATA_CONDITION))  # no reading truth behind them
_COVERING = ("opened", "escalated")
_DAY_S = 86_400.0


# -- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TrueEvent:
    """One acute event of the truth: a maximal run of a patient's in-event readings."""

    patient_id: str
    kind: str
    start: float  # POSIX s of the first in-event reading
    end: float  # POSIX s of the last
    first_index: int  # position of the first reading in the patient's truth readings
    readings: int


@dataclass(slots=True)
class Truth:
    """The truth readings of a run, their acute events and the patient-days they span."""

    labels: dict[str, bool] = field(default_factory=dict)  # observation id -> true alert
    times: dict[str, list[float]] = field(default_factory=dict)  # patient -> sorted times
    events: list[TrueEvent] = field(default_factory=list)

    @property
    def patients(self) -> int:
        return len(self.times)

    @property
    def patient_days(self) -> float:
        return sum(t[-1] - t[0] for t in self.times.values()) / _DAY_S


def truth_from_records(records: Iterable[Mapping[str, Any]]) -> Truth:
    """The :class:`Truth` of ground-truth records (the lines of a ``BPWATCH_SIM_TRUTH`` file)."""
    rows: dict[str, list[tuple[float, bool, bool, str]]] = defaultdict(list)
    truth = Truth()
    for rec in records:
        if "in_event" not in rec:
            continue  # no ground truth of its own: a duplicate, an amendment, a fault extra
        in_event = bool(rec["in_event"])
        within = bool(rec.get("event_within_horizon"))
        truth.labels[rec["observation_id"]] = in_event or within
        at = _epoch(rec["effective_at"])
        rows[rec["patient_id"]].append((at, in_event, within, rec.get("event_kind") or ""))
    for patient, readings in rows.items():
        readings.sort(key=lambda r: r[0])
        truth.times[patient] = [r[0] for r in readings]
        truth.events += _events_of(patient, readings)
    truth.events.sort(key=lambda e: (e.start, e.patient_id))
    return truth


def _events_of(patient: str, readings: list[tuple[float, bool, bool, str]]) -> list[TrueEvent]:
    events = []
    i, n = 0, len(readings)
    while i < n:
        if not readings[i][1]:
            i += 1
            continue
        j = i
        while j < n and readings[j][1]:
            j += 1
        run = readings[i:j]
        own = [kind for _, _, within, kind in run if not within and kind]
        kind = own[0] if own else run[0][3]
        events.append(TrueEvent(patient, kind, run[0][0], run[-1][0], i, j - i))
        i = j
    return events


def read_truth(path: Path) -> Truth:
    """The :class:`Truth` of a ground-truth file (JSON Lines)."""
    with path.open("rb") as fh:
        return truth_from_records(orjson.loads(line) for line in fh if line.strip())


@dataclass(frozen=True, slots=True)
class Alert:
    """The fields of an alert event that the scoring reads."""

    episode_id: str
    patient_id: str
    condition: str
    event: str
    tier: str
    at: float  # POSIX s of event_at
    observation_id: str  # the triggering reading (the first of observation_ids), or ""


def alert_of(event: AlertEvent | Mapping[str, Any]) -> Alert:
    """An :class:`Alert` of an :class:`AlertEvent` or of its document (``to_doc()``, the
    ``bp.alerts`` value, the ``bp-alerts`` source); a missing ``tier`` is ``urgent``."""
    if isinstance(event, Mapping):
        at = event["event_at"]
        ids = event.get("observation_ids") or ()
        return Alert(
            episode_id=event["episode_id"],
            patient_id=event["patient_id"],
            condition=event["condition"],
            event=event["event"],
            tier=event.get("tier") or URGENT,
            at=_epoch(at) if isinstance(at, str) else at.timestamp(),
            observation_id=ids[0] if ids else "",
        )
    ids = event.observation_ids
    return Alert(
        episode_id=event.episode_id,
        patient_id=event.patient_id,
        condition=event.condition,
        event=event.event,
        tier=getattr(event, "tier", None) or URGENT,
        at=event.event_at.timestamp(),
        observation_id=ids[0] if ids else "",
    )


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# -- scores ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Score:
    """The figures of one group of alerts: a condition (or :data:`ALL`) and a tier."""

    condition: str
    tier: str
    opened: int
    true_opened: int
    events: int  # true events of the truth (every kind)
    covered: int
    minutes: tuple[float, ...]  # time to alert of each covered event
    readings: tuple[int, ...]
    patient_days: float
    scored: bool = True  # False: a condition without reading truth (precision, recall n/a)

    @property
    def precision(self) -> float | None:
        return self.true_opened / self.opened if self.scored and self.opened else None

    @property
    def recall(self) -> float | None:
        return self.covered / self.events if self.scored and self.events else None

    @property
    def burden(self) -> float | None:
        """Opened episodes per 100 patient-days."""
        return 100.0 * self.opened / self.patient_days if self.patient_days > 0 else None

    @property
    def median_readings(self) -> float | None:
        return statistics.median(self.readings) if self.readings else None

    @property
    def p90_readings(self) -> float | None:
        return _p90(self.readings)

    @property
    def median_minutes(self) -> float | None:
        return statistics.median(self.minutes) if self.minutes else None

    @property
    def p90_minutes(self) -> float | None:
        return _p90(self.minutes)


def _p90(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Report:
    """Every group's :class:`Score`, and recall by event kind for each tier's ``all`` row."""

    scores: tuple[Score, ...]
    patients: int
    patient_days: float
    events_by_kind: dict[str, int]
    covered_by_kind: dict[str, dict[str, int]]  # tier -> kind -> covered

    def score(self, condition: str = ALL, tier: str = URGENT) -> Score:
        for s in self.scores:
            if (s.condition, s.tier) == (condition, tier):
                return s
        return Score(condition, tier, 0, 0, self.events, 0, (), (), self.patient_days)

    @property
    def events(self) -> int:
        return sum(self.events_by_kind.values())


Group = tuple[str, str]  # (condition or ALL, tier)


def evaluate(truth: Truth, events: Iterable[AlertEvent | Mapping[str, Any]]) -> Report:
    """Score alert events against the truth (see the module docstring for each figure)."""
    alerts = sorted(map(alert_of, events), key=lambda a: a.at)
    days = truth.patient_days
    opened: dict[Group, int] = defaultdict(int)
    true_opened: dict[Group, int] = defaultdict(int)
    unknown = 0
    paged: set[tuple[str, str]] = set()  # (episode, tier) already counted
    for a in alerts:
        if a.event not in _COVERING or (a.episode_id, a.tier) in paged:
            continue
        paged.add((a.episode_id, a.tier))
        groups = [(a.condition, a.tier)]
        if a.condition not in _NOT_SCORED:
            groups.append((ALL, a.tier))
            label = truth.labels.get(a.observation_id)
            unknown += label is None
            for g in groups:
                true_opened[g] += bool(label)
        for g in groups:
            opened[g] += 1
    if unknown:
        log.warning("opened episodes whose triggering reading is not in the truth: %d", unknown)

    by_patient: dict[str, list[Alert]] = defaultdict(list)
    for a in alerts:
        if a.condition not in _NOT_SCORED:
            by_patient[a.patient_id].append(a)
    minutes: dict[Group, list[float]] = defaultdict(list)
    readings: dict[Group, list[int]] = defaultdict(list)
    kinds: dict[str, int] = defaultdict(int)
    covered_kinds: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for ev in truth.events:
        kinds[ev.kind] += 1
        times = truth.times[ev.patient_id]
        for group, at in _first_cover(ev, by_patient.get(ev.patient_id, ())).items():
            minutes[group].append((at - ev.start) / 60.0)
            readings[group].append(bisect_right(times, at) - 1 - ev.first_index)
            if group[0] == ALL:
                covered_kinds[group[1]][ev.kind] += 1

    n_events = len(truth.events)
    groups = sorted(
        set(opened) | set(minutes),
        key=lambda g: (TIERS.index(g[1]) if g[1] in TIERS else len(TIERS), g[0] == ALL, g),
    )
    scores = tuple(
        Score(
            condition=g[0],
            tier=g[1],
            opened=opened[g],
            true_opened=true_opened[g],
            events=n_events,
            covered=len(minutes[g]),
            minutes=tuple(minutes[g]),
            readings=tuple(readings[g]),
            patient_days=days,
            scored=g[0] not in _NOT_SCORED,
        )
        for g in groups
    )
    return Report(
        scores=scores,
        patients=truth.patients,
        patient_days=days,
        events_by_kind=dict(kinds),
        covered_by_kind={t: dict(k) for t, k in covered_kinds.items()},
    )


def _first_cover(ev: TrueEvent, alerts: Sequence[Alert]) -> dict[Group, float]:
    """Each group's first covering time of one true event (``alerts``: the patient's reading
    alerts in event-time order)."""
    first: dict[Group, float] = {}

    def cover(condition: str, tier: str, at: float) -> None:
        for g in ((condition, tier), (ALL, tier)):
            if g not in first or at < first[g]:
                first[g] = at

    state: dict[str, Alert] = {}  # episode -> its latest opened / escalated event before start
    for a in alerts:
        if a.at < ev.start:
            if a.event in _COVERING:
                state[a.episode_id] = a
            elif a.event == "resolved":
                state.pop(a.episode_id, None)
        elif a.at > ev.end:
            break
        elif a.event in _COVERING:
            cover(a.condition, a.tier, a.at)
        elif a.event == "resolved" and a.at == ev.start:
            state.pop(a.episode_id, None)  # resolved by the event's first reading
    for a in state.values():
        cover(a.condition, a.tier, ev.start)
    return first


def headline(report: Report) -> str:
    """``precision 0.07 (53/718), recall 1.00 (50/50), burden 212.4 episodes per 100
    patient-days (urgent alerts)``."""
    s = report.score(ALL, URGENT)
    return (
        f"precision {_fmt(s.precision, 2)} ({s.true_opened}/{s.opened}), "
        f"recall {_fmt(s.recall, 2)} ({s.covered}/{s.events}), "
        f"burden {_fmt(s.burden, 1)} episodes per 100 patient-days (urgent alerts)"
    )


# -- the policy trade-off --------------------------------------------------------------------
def replay(assessments: Iterable[Sequence[Assessment]], policy: AlertPolicy) -> list[AlertEvent]:
    """The alert events of each patient's assessments (in the order the monitor processed
    them) under ``policy``: the monitor's own :class:`EpisodeTracker`, offline."""
    tracker = EpisodeTracker(policy)
    out: list[AlertEvent] = []
    for patient in assessments:
        state: PatientAlertState | None = None
        for a in patient:
            state, events = tracker.step(state, a)
            out += events
    return out


@dataclass(frozen=True, slots=True)
class TradeOff:
    """One knob value of the policy and the report it gives."""

    knob: str
    value: Any
    report: Report
    base: bool  # the value of the base policy


def trade_off(
    truth: Truth,
    assessments: Mapping[str, Sequence[Assessment]],
    base: AlertPolicy,
    knobs: Mapping[str, Sequence[Any]],
) -> list[TradeOff]:
    """One :class:`TradeOff` per knob value: ``base`` with that one field changed
    (``dataclasses.replace``), its alerts replayed over ``assessments`` and scored."""
    out = []
    patients = list(assessments.values())
    for knob, values in knobs.items():
        for value in values:
            policy = replace(base, **{knob: value})
            report = evaluate(truth, replay(patients, policy))
            out.append(TradeOff(knob, value, report, getattr(base, knob) == value))
    return out


# -- text ------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(a: float | None, b: float | None, digits: int = 0) -> str:
    return "-" if a is None else f"{_fmt(a, digits)} / {_fmt(b, digits)}"


def format_report(report: Report) -> str:
    """The report as a markdown table, and recall by event kind."""
    lines = [
        f"{report.patients} patients, {report.patient_days:.1f} patient-days, "
        f"{report.events} true acute events "
        f"({', '.join(f'{k} {n}' for k, n in sorted(report.events_by_kind.items()))})",
        "",
        "| condition | tier | opened | true | precision | covered | recall "
        "| to alert, readings (median / p90) | to alert, min (median / p90) "
        "| per 100 patient-days |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.scores:
        covered = f"{s.covered}/{s.events}" if s.scored else "-"
        lines.append(
            f"| {s.condition} | {s.tier} | {s.opened} | {s.true_opened if s.scored else '-'} "
            f"| {_fmt(s.precision, 3)} | {covered} | {_fmt(s.recall, 3)} "
            f"| {_pair(s.median_readings, s.p90_readings, 1)} "
            f"| {_pair(s.median_minutes, s.p90_minutes)} | {_fmt(s.burden)} |"
        )
    for tier, kinds in report.covered_by_kind.items():
        parts = [f"{k} {kinds.get(k, 0)}/{n}" for k, n in sorted(report.events_by_kind.items())]
        lines.append(f"\nrecall by event kind ({tier}, all conditions): {', '.join(parts)}")
    return "\n".join(lines)


def format_trade_off(rows: Sequence[TradeOff]) -> str:
    """The trade-off as a markdown table (urgent tier, every reading condition)."""
    lines = [
        "| knob | value | urgent opened | precision | recall "
        "| to alert, readings (median / p90) | per 100 patient-days | review opened |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        s = row.report.score(ALL, URGENT)
        review = row.report.score(ALL, REVIEW).opened
        value = f"**{row.value}** (base)" if row.base else str(row.value)
        lines.append(
            f"| {row.knob} | {value} | {s.opened} | {_fmt(s.precision, 3)} "
            f"| {_fmt(s.recall, 3)} | {_pair(s.median_readings, s.p90_readings, 1)} "
            f"| {_fmt(s.burden)} | {review} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.tools.alert_quality")
    parser.add_argument("--truth", type=Path, required=True, help="simulator ground truth")
    parser.add_argument(
        "--alerts",
        type=Path,
        required=True,
        help="alert events as JSON Lines (bp.alerts values or bp-alerts sources)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with args.alerts.open("rb") as fh:
        docs = [orjson.loads(line) for line in fh if line.strip()]
    report = evaluate(read_truth(args.truth), docs)
    sys.stdout.write(format_report(report) + "\n\n" + headline(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
