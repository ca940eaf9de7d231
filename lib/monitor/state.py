"""What the monitor makes of a batch (:class:`Results`), its counters, and the risk of one reading.

Each patient's state (window, alert episodes, home series, ``no_data`` tracking) lives in one
:class:`lib.monitor.patient.Patient`, in the monitor's ``patient_windows`` step keyed by patient
id; :meth:`Patient.process <lib.monitor.patient.Patient.process>` turns the patient's
:data:`lib.monitor.shards.Entry` of a batch into one :class:`Results`, in input order, and
scores each reading on its own with :func:`one_reading_scorer`.

Accounting: every Observation ends as exactly one outcome, counted under
:data:`lib.domain.OUTCOMES`; ``in`` counts input messages (a Bundle message carries several
Observations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Protocol, cast

import numpy as np

from lib.domain import (
    FEATURE_NAMES,
    OUTCOMES,
    Assessment,
    Average,
    DeadLetter,
    Features,
    Ignored,
    Processed,
    RetentionGap,
    Retraction,
    Skipped,
)
from lib.monitor.alerts import AlertEvent
from lib.monitor.home import HomeAverage

__all__ = ["COUNTER_NAMES", "Results", "RiskScorer"]

# "in" (messages) and one counter per outcome: in = the outcomes of its Observations;
# "gap": input offsets the broker deleted before they were read (lib.domain.RetentionGap);
# acknowledgements apart: ack_in = acknowledged + ack_repeat + ack_dead_letter; "overdue"
# counts the overdue events (lib.monitor.deadlines)
ACK_COUNTERS = ("ack_in", "acknowledged", "ack_repeat", "ack_dead_letter", "overdue")
# enrolments apart as well: enroll_in = enrolled + enroll_dead_letter; "adherence" counts the
# bp-adherence documents written (lib.monitor.programs, lib.monitor.adherence)
PROGRAM_COUNTERS = ("enroll_in", "enrolled", "enroll_dead_letter", "adherence")
COUNTER_NAMES = ("in", *OUTCOMES, "gap", *ACK_COUNTERS, *PROGRAM_COUNTERS)


class RiskScorer(Protocol):
    """What the monitor needs from a risk model (lib.monitor.risk.RiskModel, or a fitted sklearn
    estimator whose ``predict_proba`` returns ``(n, 2)``)."""

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray: ...


@dataclass(slots=True)
class Results:
    """What one key of the patient step made of one batch, in input order: a patient's
    outcomes and the events and home averages that followed, or the outcomes of a no-patient
    key (:func:`lib.monitor.shards.no_patient_key`), or a wake-up's events.

    ``outcomes[i]`` came from a message the broker stamped ``ingested_at[i]`` (POSIX s, or
    None when the input carries no timestamp). ``messages`` counts the input messages whose
    first Observation is in this batch.
    """

    outcomes: list[Processed] = field(default_factory=list)
    ingested_at: list[float | None] = field(default_factory=list)
    messages: int = 0
    events: list[AlertEvent] = field(default_factory=list)  # alert episode events
    averages: list[HomeAverage] = field(default_factory=list)  # home averages that changed
    acks: int = 0  # acknowledgement messages (lib.monitor.acks)
    acknowledged: int = 0  # of them, those that gave an ``acknowledged`` event
    ack_repeats: int = 0  # those that repeated one
    ack_refused: list[DeadLetter] = field(default_factory=list)  # to bp.alerts.acks.dlq
    enrolled: int = 0  # valid enrolment messages (lib.monitor.programs)
    enroll_refused: list[DeadLetter] = field(default_factory=list)  # to bp.enrollments.dlq
    adherence: list[dict[str, Any]] = field(default_factory=list)  # bp-adherence documents

    def counts(self) -> dict[str, int]:
        return counts_of((self,))


def counts_of(results: Iterable[Results]) -> dict[str, int]:
    """The outcome counters of several Results together (``in`` counts messages)."""
    c = dict.fromkeys(COUNTER_NAMES, 0)
    messages = normal = anomaly = dead = retracted = ignored = skipped = duplicate = gap = 0
    acks = acked = repeats = refused = enrolled = enroll_refused = adherence = 0
    for res in results:
        messages += res.messages
        if res.enrolled or res.enroll_refused or res.adherence:
            enrolled += res.enrolled
            enroll_refused += len(res.enroll_refused)
            adherence += len(res.adherence)
        if res.acks:
            acks += res.acks
            acked += res.acknowledged
            repeats += res.ack_repeats
            refused += len(res.ack_refused)
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
            elif t is RetentionGap:
                gap += o.skipped  # type: ignore[union-attr]
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
            "gap": gap,
            "ack_in": acks,
            "acknowledged": acked,
            "ack_repeat": repeats,
            "ack_dead_letter": refused,
            "enroll_in": enrolled + enroll_refused,
            "enrolled": enrolled,
            "enroll_dead_letter": enroll_refused,
            "adherence": adherence,
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
