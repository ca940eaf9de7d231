"""In-process throughput: the full monitor flow vs a plain-Python loop, in the same run.

    .venv/bin/python -m benchmarks.bench_inprocess [--messages 200000] [--patients 2000] [--quick]

Pre-encoded simulator messages (Kafka-like, batches of 1,000 as ``KafkaSource`` delivers them)
go through ``dataflows.monitor.build`` with ``TestingSource`` and in-memory sinks behind the
production steps (``recording_io``; ``run_main``: one worker), and through
:class:`lib.monitor.engine.Monitor` plus the same output extractors without Bytewax. Both do
the same per-reading work (parse, window, rules, risk, output documents); the ratio is flow /
plain. Each figure is the best of ``--repeats`` runs (wall time; the machine should otherwise
be idle).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSource, run_main

from benchmarks.common import (
    MESSAGES,
    PATIENTS,
    REPEATS,
    Message,
    Row,
    command,
    load_model,
    messages,
)
from lib.domain import OUTCOMES
from lib.monitor import documents, engine
from lib.monitor.alerts import AlertPolicy
from lib.monitor.documents import elastic_item, once_item
from lib.settings import Settings

BATCH = 1000  # KafkaSource's default batch size
TOPIC = "bench.bp.observations"
SETTINGS = Settings()  # defaults: rule set aha2017, window 12, alerts from severity "high"


def source_messages(msgs: Sequence[Message]) -> list[KafkaSourceMessage]:
    headers = [("content-type", b"application/fhir+json")]
    return [
        KafkaSourceMessage(
            m.key,
            m.value,
            topic=TOPIC,
            headers=headers,
            partition=0,
            offset=i,
            timestamp=(1, m.emitted_ms),
        )
        for i, m in enumerate(msgs)
    ]


def _policy(model: Any) -> AlertPolicy:
    """The flow's default alert policy (dataflows.monitor.build)."""
    threshold = getattr(model, "threshold", None)
    return AlertPolicy(
        open_severity=SETTINGS.alert_min_severity,
        **({"risk_threshold": threshold} if threshold else {}),
    )


@contextmanager
def production_gc() -> Iterator[None]:
    """The garbage collector as the monitor process sets it (``dataflows.monitor.tune_gc``:
    start-up objects frozen, young collections every 50,000 allocations), then as it was."""
    from dataflows.monitor import tune_gc

    before = gc.get_threshold()
    gc.collect()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def run_flow(items: list[KafkaSourceMessage], model: Any) -> tuple[float, dict[str, int]]:
    """Seconds for the whole flow over ``items``; the final counters (+ alerts)."""
    from dataflows.monitor import build, recording_io

    io, out = recording_io(TestingSource(items, batch_size=BATCH))
    flow = build(SETTINGS, io=io, model=model)
    with production_gc():
        start = time.perf_counter()
        run_main(flow)
        took = time.perf_counter() - start
    alerts = {"alerts": len(out.alerts_kafka), "alert_docs": len(out.alerts_es)}
    return took, {**out.stats[-1], **alerts}


def run_plain(items: list[KafkaSourceMessage], model: Any) -> tuple[float, dict[str, int]]:
    """Seconds for the same per-reading work in a plain loop; the counters."""
    monitor = engine.Monitor(model, SETTINGS.ruleset, policy=_policy(model))
    n_alerts = n_alert_docs = 0
    totals: dict[str, int] = {}
    with production_gc():
        start = time.perf_counter()
        for i in range(0, len(items), BATCH):
            results = monitor.process(items[i : i + BATCH])
            for _patient, res in results:
                events = res.events
                # each output is built, counted and dropped, as a sink writes and drops it
                n_alerts += len(list(map(once_item, events)))
                n_alert_docs += len(list(map(elastic_item, events)))
            documents.elastic_actions(results)
            documents.normal_records(results)
            documents.dlq_messages(results)
            for _, counts in documents.outcome_counts(results):
                for k, v in counts.items():
                    totals[k] = totals.get(k, 0) + v
        took = time.perf_counter() - start
    return took, {**totals, "alerts": n_alerts, "alert_docs": n_alert_docs}


def measure(n_messages: int, patients: int, repeats: int) -> list[Row]:
    items = source_messages(messages(patients, n_messages))
    model = load_model()
    flow_s = plain_s = float("inf")
    flow_counts: dict[str, int] = {}
    plain_counts: dict[str, int] = {}
    for _ in range(repeats):  # interleaved, so drift of the machine hits both alike
        s, flow_counts = run_flow(items, model)
        flow_s = min(flow_s, s)
        s, plain_counts = run_plain(items, model)
        plain_s = min(plain_s, s)
    if flow_counts != plain_counts:
        raise AssertionError(f"flow and plain loop disagree: {flow_counts} != {plain_counts}")
    readings = flow_counts["normal"] + flow_counts["anomaly"]
    observations = sum(v for k, v in flow_counts.items() if k in OUTCOMES)
    share = flow_counts["anomaly"] / max(readings, 1)
    flow_rate = observations / flow_s
    plain_rate = observations / plain_s
    ratio = flow_rate / plain_rate
    note = f"{n_messages:,} msgs, {patients:,} patients, {share:.1%} anomalies, best of {repeats}"
    return [
        Row("in-process", "flow throughput (1 worker)", round(flow_rate), "readings/s",
            ">= 100,000", flow_rate >= 100_000, note),
        Row("in-process", "plain loop throughput", round(plain_rate), "readings/s", "", None,
            "lib.monitor.engine.Monitor + output extractors, no Bytewax"),
        Row("in-process", "flow / plain loop", round(ratio, 2), "x", ">= 0.7", ratio >= 0.7,
            "same run"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    return command(__doc__, measure, argv, replace(MESSAGES, quick=3_000), PATIENTS, REPEATS)


if __name__ == "__main__":
    main()
