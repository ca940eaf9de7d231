"""The simulator at program scale: msg/s and bytes per patient at 10k and 1M patients.

    .venv/bin/python -m benchmarks.bench_simulator [--sizes 10000,1000000] [--messages N]

Per cohort size, each in a fresh process:

- ``generator``: ``lib.sim.stream.messages`` alone (no Bytewax, no Kafka), start-up included;
  peak RSS, and bytes per patient = (peak RSS - RSS after the imports) / patients;
- ``kafka -w 1``: ``python -m bytewax.run dataflows.simulate`` into a fresh 6-partition topic
  (every message confirmed by the broker), wall time of the process, its peak RSS.

At the smallest size also ``-w 2`` (two worker threads in one process) and two processes of
one worker each (``-i 0/1 -a``), against ``-w 1``. The last row is how the cost grows from the
smallest to the largest size. Faults 1 %, seed 8, no home cohort (the benchmarks' data).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import FAULT_RATE, PYTHON, ROOT, SIM_SEED, Option, Row, command
from lib.settings import Settings

MSGS = Option("--messages", 1_000_000, 5_000, dest="n_messages")
TARGET_RATE = 30_000.0
TARGET_RSS = 1024**3


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _generator_child(patients: int, count: int) -> None:
    """In a fresh process: the generator alone; prints one JSON line."""
    from lib.sim import stream

    settings = Settings(
        sim_patients=patients, sim_count=count, sim_seed=SIM_SEED, sim_fault_rate=FAULT_RATE
    )
    base = _rss_now()
    t0 = time.perf_counter()
    msgs = stream.messages(settings)
    first = next(msgs)
    setup = time.perf_counter() - t0
    n = 1 + sum(1 for _ in msgs)
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"n": n, "took": took, "setup": setup, "base": base, "peak": peak,
                      "first": first.patient_id}))  # fmt: skip


def generator(patients: int, count: int) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, "-m", "benchmarks.bench_simulator", "--child", str(patients), str(count)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_flow(settings: Settings, patients: int, count: int, args: list[list[str]]) -> dict:
    """``dataflows.simulate`` as one or more processes (``args``: each one's extra flags);
    wall time until all exit, the largest peak RSS among them."""
    env = common.env_of(
        settings,
        BPWATCH_SIM_PATIENTS=str(patients),
        BPWATCH_SIM_COUNT=str(count),
        BPWATCH_SIM_SEED=str(SIM_SEED),
        BPWATCH_SIM_FAULT_RATE=str(FAULT_RATE),
        BPWATCH_LOG_LEVEL="WARNING",
    )
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [PYTHON, "-m", "bytewax.run", "dataflows.simulate", *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for extra in args
    ]
    peak = 0
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        peak = max(peak, usage.ru_maxrss * 1024)
        if p.returncode != 0:
            err = p.stderr.read().decode()[-500:] if p.stderr else ""
            raise RuntimeError(f"dataflows.simulate failed ({p.returncode}): {err}")
    return {"took": time.perf_counter() - t0, "peak": peak}


def _topic_count(settings: Settings) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(settings.kafka_client_config(**{"group.id": "bench-sim-count"}))
    try:
        md = c.list_topics(settings.observations_topic, timeout=10)
        total = 0
        for p in md.topics[settings.observations_topic].partitions:
            lo, hi = c.get_watermark_offsets(
                TopicPartition(settings.observations_topic, p), timeout=10
            )
            total += hi - lo
        return total
    finally:
        c.close()


def kafka(patients: int, count: int, mode: str) -> dict[str, Any]:
    """One run into a fresh namespace; ``mode``: ``w1``, ``w2`` or ``p2``."""
    flags = {
        "w1": [[]],
        "w2": [["-w", "2"]],
        "p2": [["-i", str(i), "-a", "127.0.0.1:2191;127.0.0.1:2192"] for i in (0, 1)],
    }[mode]
    with common.namespace("sim") as s:
        res = _run_flow(s, patients, count, flags)
        res["sent"] = _topic_count(s)
    return res


def measure(sizes: str = "10000,1000000", n_messages: int = 1_000_000) -> list[Row]:
    sizes_n = [int(x) for x in sizes.split(",") if x.strip()]
    rows: list[Row] = []
    gen: dict[int, dict[str, Any]] = {}
    for n in sizes_n:
        g = gen[n] = generator(n, n_messages)
        rate = g["n"] / g["took"]
        per_patient = (g["peak"] - g["base"]) / n
        rows += [
            Row("simulator", f"generator alone, {n:,} patients", round(rate), "msg/s",
                f">= {TARGET_RATE:,.0f}", rate >= TARGET_RATE,
                f"{g['n']:,} msgs, start-up {g['setup']:.1f} s included, no Kafka"),
            Row("simulator", f"bytes per patient, {n:,} patients", round(per_patient), "bytes",
                "", None, "(peak RSS - RSS after imports) / patients, generator process"),
            Row("simulator", f"generator peak RSS, {n:,} patients", round(g["peak"] / 2**20),
                "MiB", "<= 1,024" if n >= 1_000_000 else "",
                g["peak"] <= TARGET_RSS if n >= 1_000_000 else None, ""),
        ]  # fmt: skip
        k = kafka(n, n_messages, "w1")
        rate_k = k["sent"] / k["took"]
        gen[n]["kafka"] = rate_k
        rows += [
            Row("simulator", f"to Kafka -w 1, {n:,} patients", round(rate_k), "msg/s",
                f">= {TARGET_RATE:,.0f}", rate_k >= TARGET_RATE,
                f"{k['sent']:,} msgs confirmed, process wall time, start-up included"),
            Row("simulator", f"Kafka run peak RSS, {n:,} patients", round(k["peak"] / 2**20),
                "MiB", "<= 1,024" if n >= 1_000_000 else "",
                k["peak"] <= TARGET_RSS if n >= 1_000_000 else None, "bytewax.run process"),
        ]  # fmt: skip
    n0 = sizes_n[0]
    base = gen[n0]["kafka"]
    for mode, label in (("w2", "-w 2 (threads)"), ("p2", "2 processes (-i/-a)")):
        k = kafka(n0, n_messages, mode)
        rate = k["sent"] / k["took"]
        rows.append(
            Row("simulator", f"to Kafka {label} / -w 1, {n0:,} patients", round(rate / base, 2),
                "x", "> 1", rate / base > 1, f"{rate:,.0f} msg/s, {k['sent']:,} msgs")
        )  # fmt: skip
    if len(sizes_n) > 1:
        n1 = sizes_n[-1]
        g0, g1 = gen[n0], gen[n1]
        r0, r1 = g0["n"] / g0["took"], g1["n"] / g1["took"]
        rows.append(
            Row("simulator", f"how cost grows {n0:,} -> {n1:,}", round(r1 / r0, 2), "x",
                "", None, f"generator msg/s {r1:,.0f} / {r0:,.0f}; Kafka msg/s "
                f"{g1['kafka']:,.0f} / {g0['kafka']:,.0f}; bytes per patient "
                f"{(g1['peak'] - g1['base']) / n1:,.0f} / {(g0['peak'] - g0['base']) / n0:,.0f}")
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _generator_child(int(argv[1]), int(argv[2]))
        return []
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--messages", type=int, default=MSGS.default)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it works")
    args = parser.parse_args(argv)
    if args.quick:
        return command(None, measure, ["--sizes", "200,2000", "--n-messages", "5000"],
                       Option("--sizes", "", ""), Option("--n-messages", 0, 0))  # fmt: skip
    return command(None, measure, ["--sizes", args.sizes, "--n-messages", str(args.messages)],
                   Option("--sizes", "", ""), Option("--n-messages", 0, 0))  # fmt: skip


if __name__ == "__main__":
    main()
