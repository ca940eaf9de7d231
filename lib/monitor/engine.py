"""The monitor's chain without Bytewax: parse -> shard -> window -> rules -> risk.

For the benchmarks and embedded runs; ``dataflows/monitor.py`` runs the same functions as
Bytewax steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lib.monitor.rules import DEFAULT_RULESET, RuleSet, get_ruleset
from lib.monitor.shards import SourceMessage, parse_messages
from lib.monitor.state import PatientStates, Results, RiskScorer

__all__ = ["Monitor"]

KeyedResults = tuple[str, Results]


class Monitor:
    """The monitor's logic without Bytewax: ``process(messages)`` -> Results per shard."""

    def __init__(
        self,
        model: RiskScorer,
        ruleset: str | RuleSet = DEFAULT_RULESET,
        *,
        window_size: int = 12,
        idle_expiry_hours: float = 72.0,
    ) -> None:
        self.model = model
        self.ruleset = get_ruleset(ruleset)  # resolved once
        self._new_states: Callable[[], PatientStates] = lambda: PatientStates(
            window_size, idle_expiry_hours
        )
        self.shards: dict[str, PatientStates] = {}

    def process(self, messages: Sequence[SourceMessage]) -> list[KeyedResults]:
        out: list[KeyedResults] = []
        for shard, entries in parse_messages(messages):
            states = self.shards.get(shard)
            if states is None:
                states = self.shards[shard] = self._new_states()
            out.append((shard, states.process(entries, self.ruleset, self.model)))
        return out
