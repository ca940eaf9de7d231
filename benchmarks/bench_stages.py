"""Where the per-reading time goes: the plain loop of ``bench_inprocess`` timed stage by stage.

    .venv/bin/python -m benchmarks.bench_stages [--messages 100000] [--repeats 3] [--quick]

The same pre-encoded simulator messages and batches of 1,000 as ``bench_inprocess``. Each stage
runs over the whole input on its own (its input prepared by the stages before it, untimed, and
frozen out of the garbage collector's scans), best of ``--repeats`` in process CPU time, so
other load on the machine inflates it little. ``total`` is the plain loop as it runs in
``bench_inprocess`` (every output built, counted and dropped, as the sinks drop them; garbage
collection included, with the monitor's settings).
Figures are µs per Observation. A benchmark, not a test: nothing asserts a time.

Stages: ``parse`` (``shards.parse_messages``: orjson + FHIR + grouping by patient),
``patients`` (``Patient.process`` for each patient of each batch, as ``engine.Monitor.process``
runs it: window features, rules, risk one reading at a time, alert episodes, home series and
``no_data`` tracking, which happen together in one call), ``documents`` (``elastic_actions`` +
``normal_records`` + ``dlq_messages`` + ``outcome_counts``), and ``total`` (the whole loop, as
in bench_inprocess).
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
from lib.domain import OUTCOMES
from lib.monitor import documents, engine, shards
from lib.monitor.patient import Patient


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

    def parse() -> None:
        for b in batches:
            shards.parse_messages(b)

    def patient_step(keep: bool = False) -> list[list[documents.KeyedResults]]:
        """``engine.Monitor.process`` without the parse: each key's entries through its
        Patient, with the wall clock read once per batch."""
        monitor = engine.Monitor(
            model,
            SETTINGS.ruleset,
            window_size=SETTINGS.window_size,
            idle_expiry_hours=SETTINGS.idle_expiry_hours,
            policy=_policy(model),
        )
        held, ctx = monitor.patients, monitor.ctx
        out = []
        for batch in parsed:
            now = time.time()
            res = []
            for key, entries in batch:
                patient = held.get(key)
                if patient is None:
                    patient = held[key] = Patient()
                res.append((key, patient.process(ctx, entries, now)))
                if patient.is_empty():
                    del held[key]
            if keep:
                out.append(res)
        return out

    results = patient_step(keep=True)

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
        "patients": _cpu(patient_step, repeats),
        "documents": _cpu(outputs, repeats),
        "total": _cpu(lambda: run_plain(items, model), repeats),
    }
    notes = {
        "parse": "parse_messages: orjson + lib.monitor.fhir + grouping by patient",
        "patients": "Patient.process: window, rules, risk, episodes, home, no_data",
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
