"""The monitor's chain without Bytewax: parse -> per-patient state -> Results per patient.

For the benchmarks and embedded runs; ``dataflows/monitor.py`` runs the same functions as
Bytewax steps (there the patients live in a keyed step and a wake-up wheel drives the wall
clock; here :meth:`Monitor.finish` does the end-of-run check of every patient).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from lib.monitor.alerts import AlertPolicy, EpisodeTracker, NoDataRule
from lib.monitor.patient import Patient, PatientContext
from lib.monitor.rules import DEFAULT_RULESET, RuleSet, get_ruleset
from lib.monitor.shards import SourceMessage, parse_messages
from lib.monitor.state import Results, RiskScorer, one_reading_scorer
from lib.settings import DEFAULTS

__all__ = ["Monitor"]

KeyedResults = tuple[str, Results]


class Monitor:
    """The monitor's logic without Bytewax: ``process(messages)`` -> Results per patient."""

    def __init__(
        self,
        model: RiskScorer,
        ruleset: str | RuleSet = DEFAULT_RULESET,
        *,
        window_size: int = DEFAULTS.window_size,
        idle_expiry_hours: float = DEFAULTS.idle_expiry_hours,
        policy: AlertPolicy | None = None,
        no_data: NoDataRule | None = None,
        every_home: bool = False,
    ) -> None:
        rules = get_ruleset(ruleset)  # resolved once
        self.ctx = PatientContext(
            ruleset=rules,
            score=one_reading_scorer(model),
            tracker=EpisodeTracker(policy),
            no_data=no_data or NoDataRule(),
            window_size=window_size,
            expiry_s=idle_expiry_hours * 3600.0,
            every_home=every_home,
        )
        self.patients: dict[str, Patient] = {}

    def process(
        self, messages: Sequence[SourceMessage], now: float | None = None
    ) -> list[KeyedResults]:
        now = time.time() if now is None else now
        out: list[KeyedResults] = []
        patients, ctx = self.patients, self.ctx
        for key, entries in parse_messages(messages):
            patient = patients.get(key)
            if patient is None:
                patient = patients[key] = Patient()
            out.append((key, patient.process(ctx, entries, now)))
            if patient.is_empty():
                del patients[key]
        return out

    def finish(self, now: float | None = None) -> list[KeyedResults]:
        """The end of a bounded run: every patient's ``no_data`` check, caught up."""
        now = time.time() if now is None else now
        out: list[KeyedResults] = []
        for key, patient in self.patients.items():
            events = patient.wake(self.ctx, now, caught_up=True)
            if events:
                out.append((key, Results(events=events)))
        return out
