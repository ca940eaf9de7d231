"""Per-shard patient state: windows -> rules -> risk, with idle expiry on event time.

:class:`PatientStates` holds the windows of one shard's patients and turns a batch of
:data:`lib.monitor.shards.Entry` into :class:`Results`, in input order. The risk model scores
a shard's batch with one numpy call.

Accounting: every Observation ends as exactly one outcome, counted under
:data:`lib.domain.OUTCOMES`; ``in`` counts input messages (a Bundle message carries several
Observations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain
from math import inf
from typing import Any, Protocol, cast

import numpy as np

from lib.domain import (
    FEATURE_NAMES,
    OUTCOMES,
    Assessment,
    Average,
    DeadLetter,
    Duplicate,
    Features,
    Ignored,
    Processed,
    Reading,
    Retraction,
    Skipped,
)
from lib.monitor import rules
from lib.monitor.alerts import AlertEvent
from lib.monitor.home import HomeAverage
from lib.monitor.rules import RuleSet
from lib.monitor.shards import Entry
from lib.monitor.window import PatientWindow

__all__ = ["COUNTER_NAMES", "PatientStates", "Results", "RiskScorer"]

# "in" (messages) and one counter per outcome: in = the outcomes of its Observations
COUNTER_NAMES = ("in", *OUTCOMES)
_HOUR = 3600.0
_MAX_SKEW_S = _HOUR  # event time ahead of the broker's timestamp by more is not trusted


class RiskScorer(Protocol):
    """What the monitor needs from a risk model (lib.monitor.risk.RiskModel, or a fitted sklearn
    estimator whose ``predict_proba`` returns ``(n, 2)``)."""

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray: ...


@dataclass(slots=True)
class Results:
    """What one shard made of one batch, in input order.

    ``outcomes[i]`` came from a message the broker stamped ``ingested_at[i]`` (POSIX s, or
    None when the input carries no timestamp). ``messages`` counts the input messages whose
    first Observation is in this batch.
    """

    outcomes: list[Processed] = field(default_factory=list)
    ingested_at: list[float | None] = field(default_factory=list)
    messages: int = 0
    events: list[AlertEvent] = field(default_factory=list)  # alert episode events
    averages: list[HomeAverage] = field(default_factory=list)  # home averages that changed

    def counts(self) -> dict[str, int]:
        return counts_of((self,))


def counts_of(results: Iterable[Results]) -> dict[str, int]:
    """The outcome counters of several Results together (``in`` counts messages)."""
    c = dict.fromkeys(COUNTER_NAMES, 0)
    messages = normal = anomaly = dead = retracted = ignored = skipped = duplicate = 0
    for res in results:
        messages += res.messages
        for o in res.outcomes:
            t = type(o)
            if t is Assessment:
                if o.anomaly_types:  # type: ignore[union-attr]
                    anomaly += 1
                else:
                    normal += 1
            elif t is DeadLetter:
                dead += 1
            elif t is Retraction:
                retracted += 1
            elif t is Ignored or t is Average:
                ignored += 1
            elif t is Skipped:
                skipped += 1
            else:
                duplicate += 1
    c.update(
        {
            "in": messages,
            "normal": normal,
            "anomaly": anomaly,
            "dead_letter": dead,
            "ignored": ignored,
            "retracted": retracted,
            "duplicate": duplicate,
            "skipped": skipped,
        }
    )
    return c


def one_reading_scorer(model: RiskScorer) -> Callable[[Features], float]:
    """The risk of one reading's features: ``model.predict_proba_one`` when the model has it
    (:class:`lib.monitor.risk.RiskModel`: pure Python, the same result whatever else is
    scored with it), else ``predict_proba`` on a one-row matrix (a bare scikit-learn
    estimator: its positive class)."""
    one = getattr(model, "predict_proba_one", None)
    if one is not None:
        return cast(Callable[[Features], float], one)

    def score(features: Features) -> float:
        return _risks(model, [features])[0]

    return score


def _risks(model: RiskScorer, features: list[Features]) -> list[float]:
    """One numpy call for a batch of feature vectors (a Features is its matrix row)."""
    n = len(features)
    k = len(FEATURE_NAMES)
    matrix = np.fromiter(chain.from_iterable(features), np.float64, n * k).reshape(n, k)
    proba = np.asarray(model.predict_proba(matrix), dtype=np.float64)
    if proba.ndim == 2:  # a bare sklearn estimator: (n, 2) -> positive class
        proba = proba[:, 1]
    return proba.tolist()


class PatientStates:
    """The windows of one shard's patients, with idle expiry on event time.

    The shard's clock is a low watermark of event time: the latest event time seen on each
    input partition (``topic:partition`` of the reading's source), minimum over the partitions.
    A shard reads several partitions, which may be consumed unevenly (catching up, a slow
    partition); with the maximum instead, patients of a lagging partition would expire while
    their readings are still on the way. A patient whose latest reading is more than
    ``idle_expiry_hours`` behind that clock is dropped: the check runs whenever the clock has
    advanced by a tenth of the expiry time, so state is bounded by the patients seen within
    about 1.1x the expiry time (a partition that stops receiving data holds the clock back:
    expiry waits, nothing is lost). Event time, not the wall clock: a replay expires the same
    patients at the same point. A reading dated more than an hour after its message's broker
    timestamp advances the clock only to that timestamp + 1 h, so one device with a wrong
    clock cannot expire everyone else.

    Memory per patient and snapshot cost are measured by ``benchmarks/bench_memory.py``.
    """

    __slots__ = ("_expiry_s", "_next_sweep", "_size", "clock", "part_clocks", "windows")

    def __init__(self, window_size: int = 12, idle_expiry_hours: float = 72.0) -> None:
        self._size = window_size
        self._expiry_s = idle_expiry_hours * _HOUR
        self.windows: dict[str, PatientWindow] = {}
        self.clock = float("-inf")
        self.part_clocks: dict[str, float] = {}  # "topic:partition" -> latest event time
        self._next_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self.windows)

    def process(self, entries: Iterable[Entry], ruleset: RuleSet, model: RiskScorer) -> Results:
        """Window, rules and risk for each reading of the batch, in input order."""
        res = Results()
        ingested = res.ingested_at
        outcomes = res.outcomes
        windows = self.windows
        verdict = rules.verdict
        ruleset_name = ruleset.name
        # the batch's Assessments, their risk filled in by one model call at the end
        assessed: list[Assessment] = []
        feats: list[Features] = []
        part_clocks = self.part_clocks
        messages = 0
        for outcome, ing, first in entries:
            messages += first
            ingested.append(ing)
            if type(outcome) is Reading:
                r = outcome
                window = windows.get(r.patient_id)
                if window is None:
                    window = windows[r.patient_id] = PatientWindow(self._size)
                ts = r.effective_at.timestamp()
                f = window.add(r, ts)
                if f is None:
                    outcomes.append(Duplicate(r.observation_id, r.patient_id, r.version, r.source))
                    continue
                if ing is not None and ts > ing + _MAX_SKEW_S:
                    ts = ing + _MAX_SKEW_S  # a future-dated device must not expire others
                src = r.source
                part = src[: src.rfind(":")]  # "topic:partition", "" without coordinates
                if ts > part_clocks.get(part, -inf):
                    part_clocks[part] = ts
                category, label, types, severity = verdict(r, f, ruleset)
                a = Assessment(r, f, category, types, severity, 0.0, ruleset_name, label)
                outcomes.append(a)
                assessed.append(a)
                feats.append(f)
                continue
            if type(outcome) is Retraction:
                window = windows.get(outcome.patient_id)
                if window is None:  # retraction before its reading: keep the tombstone
                    window = windows[outcome.patient_id] = PatientWindow(self._size)
                window.retract(outcome.observation_id)
            outcomes.append(cast(Processed, outcome))  # not a Reading: passed on as it is
        res.messages = messages
        if feats:
            for a, risk in zip(assessed, _risks(model, feats), strict=True):
                a.risk_score = risk
        if part_clocks:
            self.clock = clock = min(part_clocks.values())
            if clock >= self._next_sweep:
                self.expire()
        return res

    def expire(self) -> int:
        """Drop patients idle for longer than the expiry time; how many were dropped."""
        horizon = self.clock - self._expiry_s
        # a window without readings (only retracted ids) expires at the next sweep
        idle = [
            pid
            for pid, w in self.windows.items()
            if (-inf if w.last_ts is None else w.last_ts) < horizon
        ]
        for pid in idle:
            del self.windows[pid]
        self._next_sweep = self.clock + self._expiry_s / 10.0
        return len(idle)

    # -- recovery ---------------------------------------------------------------------------
    def snapshot(self) -> tuple[Any, ...]:
        return (
            self._size,
            self._expiry_s,
            self.clock,
            self._next_sweep,
            {pid: w.state() for pid, w in self.windows.items()},
            dict(self.part_clocks),
        )

    @classmethod
    def restore(cls, snap: tuple[Any, ...]) -> PatientStates:
        size, expiry_s, clock, next_sweep, windows = snap[:5]
        states = cls(size, expiry_s / _HOUR)
        states.clock = clock
        # snapshots before partition clocks: the old single clock stands for every partition
        states.part_clocks = dict(snap[5]) if len(snap) > 5 else {}
        states._next_sweep = next_sweep
        states.windows = {pid: PatientWindow.from_state(s) for pid, s in windows.items()}
        return states
