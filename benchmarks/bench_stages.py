"""Where the per-reading time goes: the plain loop of ``bench_inprocess`` timed stage by stage.

    .venv/bin/python -m benchmarks.bench_stages [--messages 100000] [--repeats 3] [--quick]

The same pre-encoded simulator messages and batches of 1,000 as ``bench_inprocess``. Each stage
runs over the whole input on its own (its input prepared by the stages before it, untimed, and
frozen out of the garbage collector's scans), best of ``--repeats`` in process CPU time, so
other load on the machine inflates it little. ``total`` is the plain loop as it runs in
``bench_inprocess`` (every output built, counted and dropped, as the sinks drop them; garbage
collection included, with the monitor's settings).
Figures are µs per Observation. A benchmark, not a test: nothing asserts a time.

Stages: ``parse`` (``shards.parse_messages``: orjson + FHIR + shard grouping), ``windows``
(``PatientStates.process``: window features, rules, one risk call per shard batch), ``alerts``
(``ShardAlerts.process``), ``documents`` (``elastic_actions`` + ``normal_records`` +
``dlq_messages`` + ``outcome_counts``), and ``total`` (the whole loop, as in bench_inprocess).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from benchmarks.bench_inprocess import (
    BATCH,
    SETTINGS,
    _policy,
    production_gc,
    run_plain,
    source_messages,
)
from benchmarks.common import MESSAGES, PATIENTS, REPEATS, Row, command, load_model, messages
from lib.domain import OUTCOMES, Assessment
from lib.monitor import documents, shards, state
from lib.monitor.alerts import EpisodeTracker, ShardAlerts
from lib.monitor.rules import get_ruleset


def _cpu(fn: Callable[[], Any], repeats: int) -> float:
    """Best CPU time of ``fn`` under the monitor's garbage-collector settings; the prepared
    inputs are frozen out of the collector's scans, so a stage pays for its own allocations,
    not for the whole benchmark's heap."""
    best = float("inf")
    for _ in range(repeats):
        with production_gc():  # collects, freezes, and sets the monitor's thresholds
            start = time.process_time()
            fn()
            took = time.process_time() - start
        best = min(best, took)
    return best


def measure(n_messages: int, patients: int, repeats: int) -> list[Row]:
    items = source_messages(messages(patients, n_messages))
    model = load_model()
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    parsed = [shards.parse_messages(b) for b in batches]
    ruleset = get_ruleset(SETTINGS.ruleset)

    def parse() -> None:
        for b in batches:
            shards.parse_messages(b)

    def windows(keep: bool = False) -> list[list[documents.KeyedResults]]:
        by_shard: dict[str, state.PatientStates] = {}
        out = []
        for batch in parsed:
            res = []
            for shard, entries in batch:
                states = by_shard.get(shard)
                if states is None:
                    states = by_shard[shard] = state.PatientStates(
                        SETTINGS.window_size, SETTINGS.idle_expiry_hours
                    )
                res.append((shard, states.process(entries, ruleset, model)))
            if keep:
                out.append(res)
        return out

    results = windows(keep=True)
    tracker = EpisodeTracker(_policy(model))

    def alerts() -> None:
        shard_alerts: dict[str, ShardAlerts] = {}
        for batch in results:
            for shard, res in batch:
                tracked = shard_alerts.get(shard)
                if tracked is None:
                    tracked = shard_alerts[shard] = ShardAlerts(tracker)
                tracked.process(o for o in res.outcomes if type(o) is Assessment)

    def outputs() -> None:
        for batch in results:
            documents.elastic_actions(batch)
            documents.normal_records(batch)
            documents.dlq_messages(batch)
            documents.outcome_counts(batch)

    observations = sum(
        v for batch in results for _, res in batch for k, v in res.counts().items() if k in OUTCOMES
    )
    figures = {
        "parse": _cpu(parse, repeats),
        "windows": _cpu(windows, repeats),
        "alerts": _cpu(alerts, repeats),
        "documents": _cpu(outputs, repeats),
        "total": _cpu(lambda: run_plain(items, model), repeats),
    }
    notes = {
        "parse": "parse_messages: orjson + lib.monitor.fhir + shard grouping",
        "windows": "PatientStates.process: window features, rules, risk, Assessment",
        "alerts": "ShardAlerts.process (episodes)",
        "documents": "elastic_actions + normal_records + dlq_messages + outcome_counts",
        "total": f"the plain loop of bench_inprocess, {n_messages:,} msgs, best of {repeats}",
    }
    return [
        Row("stages", f"{name} (CPU)", round(s / observations * 1e6, 1), "µs/reading", "", None,
            notes[name])
        for name, s in figures.items()
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    messages_ = replace(MESSAGES, default=100_000, quick=3_000)
    return command(__doc__, measure, argv, messages_, PATIENTS, REPEATS)


if __name__ == "__main__":
    main()
