"""End-to-end throughput: a pre-filled topic -> the monitor -> real Elasticsearch and files.

    .venv/bin/python -m benchmarks.bench_e2e [--messages 200000] [--patients 2000] [--quick]
                                             [--ceiling 1]

A fresh ``bench-e2e-...`` namespace (6 partitions) is filled with simulator messages
(:func:`lib.connectors.kafka.produce_all`, confirmed by the broker), then the monitor runs as
it does in production (``python -m bytewax.run dataflows.monitor``, one process) with
``BPWATCH_KAFKA_TAIL=false``, so it exits once it has caught up, after every sink flushed.
The time is the monitor process's wall time, start-up included (it is also given apart).
Afterwards the outputs are checked against the same messages run through
:class:`lib.monitor.engine.Monitor` in this process: documents in ``bp-anomalies``, lines in the
normal files, messages on the DLQ. The namespace is torn down at the end. With ``--ceiling 1``
(as ``make bench`` runs it) the I/O ceiling of ``benchmarks.bench_ceiling`` then reads the same
topic, and the monitor's ratio to it is reported.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import (
    MESSAGES,
    PATIENTS,
    Row,
    count_docs,
    expected_outputs,
    fill,
    messages,
)
from lib.settings import Settings


def normal_lines(directory: Path) -> int:
    from lib.connectors.normal_files import part_files

    total = 0
    for path in part_files(directory):
        with path.open("rb") as f:
            total += sum(1 for _ in f)
    return total


def run_monitor(
    settings: Settings, *, processes: int = 1, timeout: float = 1800.0, log: Path | None = None
) -> float:
    """Run the monitor to the end of the topic (1 or more processes); wall seconds."""
    if processes > 1:
        addresses = ";".join(f"127.0.0.1:{2101 + i}" for i in range(processes))
        args = [["-i", str(i), "-a", addresses] for i in range(processes)]
    else:
        args = [[]]
    log = log or Path("/tmp") / f"{settings.namespace}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("ab") as out:
        procs = [common.start_monitor(settings, out, tail=False, args=a) for a in args]
        try:
            codes = [p.wait(timeout=timeout) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    took = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"monitor exited with {codes}; see {log}")
    return took


def startup_seconds(settings: Settings) -> float:
    """The monitor's fixed cost (imports, model load, Kafka/ES clients) on an empty topic."""
    return run_monitor(settings)


def check_outputs(settings: Settings, es: Any, expected: dict[str, int]) -> list[str]:
    problems = []
    got_docs = count_docs(es, settings.anomalies_index)
    if got_docs != expected["docs"]:
        problems.append(f"docs {got_docs} != {expected['docs']}")
    got_lines = normal_lines(settings.normal_dir)
    if got_lines != expected["normal_lines"]:
        problems.append(f"normal lines {got_lines} != {expected['normal_lines']}")
    from lib.tools.summary import topic_size

    got_dead = topic_size(settings, settings.dlq_topic)
    if got_dead != expected["dead_letters"]:
        problems.append(f"dead letters {got_dead} != {expected['dead_letters']}")
    return problems


def measure(
    n_messages: int, patients: int, *, ceiling: bool = False
) -> tuple[list[Row], dict[str, Any]]:
    """The monitor end to end; with ``ceiling``, the I/O ceiling (``bench_ceiling``) on the
    same filled topic right after it, and the monitor's ratio to it."""
    from benchmarks import bench_ceiling
    from lib.connectors.elastic import make_client

    msgs = messages(patients, n_messages)
    expected = expected_outputs(msgs)
    shapes = bench_ceiling.templates(msgs) if ceiling else {}
    with common.namespace("e2e") as settings:
        es = make_client(settings)
        fill_s = fill(settings, msgs)
        took = run_monitor(settings)
        problems = check_outputs(settings, es, expected)
        es.close()
        top = bench_ceiling.measure_on(settings, shapes, expected) if ceiling else None
    with common.namespace("e2e0") as empty:
        startup = startup_seconds(empty)
    rate = expected["observations"] / took
    steady = expected["observations"] / max(took - startup, 1e-9)
    share = expected["anomalies"] / max(expected["observations"], 1)
    verdict = "outputs verified" if not problems else "OUTPUT MISMATCH: " + "; ".join(problems)
    note = (
        f"{n_messages:,} msgs, {patients:,} patients, {share:.1%} anomalies, "
        f"{expected['docs']:,} docs, {expected['normal_lines']:,} lines; {verdict}"
    )
    rows = [
        Row("end-to-end", "monitor, Kafka -> ES + files", round(rate), "readings/s",
            ">= 20,000", rate >= 20_000, note),
        Row("end-to-end", "same, start-up excluded", round(steady), "readings/s", "", None,
            f"start-up {startup:.1f} s (empty topic)"),
        Row("end-to-end", "topic fill (produce_all)", round(n_messages / fill_s), "msgs/s",
            "", None, "confirmed by the broker"),
    ]  # fmt: skip
    if problems:
        raise RuntimeError(note)
    info = {"rate": rate, "steady": steady, "observations": expected["observations"],
            "seconds": took}  # fmt: skip
    if top is not None:
        rows += bench_ceiling.rows(top, info)
    return rows, info


def main(argv: list[str] | None = None) -> list[Row]:
    ceiling = common.Option("--ceiling", 0, 1)
    return common.command(
        __doc__,
        lambda ceiling, **kw: measure(**kw, ceiling=bool(ceiling))[0],
        argv,
        MESSAGES,
        PATIENTS,
        ceiling,
    )


if __name__ == "__main__":
    main()
