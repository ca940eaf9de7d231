"""Run every benchmark and print one markdown table (``make bench``).

    .venv/bin/python -m benchmarks.run [--quick] [--only NAME[,NAME]] [--out FILE]

NAME: inprocess, stages, e2e, naive, latency, memory, scaleout, scale, alerts, simulator (the
order they run in). Each has its own command too (``python -m benchmarks.bench_<name>``, ``python -m
benchmarks.naive``, ``python -m benchmarks.alert_quality``). ``e2e`` includes the I/O ceiling
(``benchmarks.bench_ceiling`` on the same filled topic).
``--quick`` runs every benchmark on tiny sizes, to prove the harness works (CI); its figures
mean nothing. Results go to ``benchmarks/results.json`` (``--out``) with the machine they
ran on. The e2e, ceiling and naive figures are measured in the same run, on the same messages
and services, so their ratios are fair; the closing headline gives them with the CPU per
reading of ``stages``. Needs the local services (``make services``) for all but
inprocess, stages, memory and alerts (alert quality against the simulator's truth).
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Row, machine

NAMES = (
    "inprocess", "stages", "e2e", "naive", "latency", "memory", "scaleout", "scale", "alerts",
    "simulator",
)  # fmt: skip
RESULTS = ROOT / "benchmarks" / "results.json"


def _plans(quick: bool) -> dict[str, Callable[[dict[str, Any]], list[Row]]]:
    """name -> runner(shared) (``shared`` passes the e2e rate to the naive comparison)."""
    from benchmarks import (
        alert_quality,
        bench_e2e,
        bench_inprocess,
        bench_latency,
        bench_memory,
        bench_scale,
        bench_scaleout,
        bench_simulator,
        bench_stages,
        naive,
    )

    msgs, patients = (2_000, 100) if quick else (200_000, 2_000)

    def e2e(shared: dict[str, Any]) -> list[Row]:
        rows, info = bench_e2e.measure(msgs, patients, ceiling=True)
        shared["e2e_rate"] = info["rate"]
        return rows

    def naive_(shared: dict[str, Any]) -> list[Row]:
        rows, rate = naive.measure(msgs, patients, 300 if quick else 5_000)
        if "e2e_rate" in shared:
            ratio = shared["e2e_rate"] / rate
            rows.append(Row("naive", "monitor e2e / naive", round(ratio, 1), "x", ">= 30",
                            ratio >= 30, "same messages, same services, same run"))  # fmt: skip
        return rows

    return {
        "inprocess": lambda _: bench_inprocess.measure(
            3_000 if quick else 100_000, 100 if quick else 2_000, 1 if quick else 3
        ),
        "stages": lambda _: bench_stages.measure(
            3_000 if quick else 100_000, 100 if quick else 2_000, 1 if quick else 3
        ),
        "e2e": e2e,
        "naive": naive_,
        "latency": lambda _: bench_latency.measure(
            200.0 if quick else 1000.0, 3.0 if quick else 30.0, patients
        ),
        "memory": lambda _: bench_memory.measure(2_000 if quick else 100_000),
        "scaleout": lambda _: bench_scaleout.measure(msgs, patients),
        "scale": lambda _: bench_scale.measure(
            [200, 2_000] if quick else [10_000, 100_000, 1_000_000],
            4_000 if quick else 1_000_000,
            64,
            50,
            3 if quick else 120,
        ),
        "alerts": lambda _: alert_quality.measure(
            patients=60 if quick else 500, n_messages=2_000 if quick else 20_000
        ),
        "simulator": lambda _: bench_simulator.measure(
            "200,2000" if quick else "10000,1000000", 5_000 if quick else 1_000_000
        ),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | measurement | value | unit | target | met | notes |",
        "|---|---|---:|---|---|---|---|",
    ]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.bench} | {r.metric} | {_fmt(r.value)} | {r.unit} | {r.target} | {met} "
            f"| {r.note} |"
        )
    return "\n".join(lines)


# The three figures of the headline, found by (bench, metric) in the rows of one run.
HEADLINE = (
    ("monitor / I/O ceiling", "ceiling", "monitor e2e / ceiling", "x"),
    ("monitor / naive", "naive", "monitor e2e / naive", "x"),
    ("CPU per reading", "stages", "total (CPU)", "µs"),
)


def headline(rows: list[Row]) -> str:
    """``monitor / I/O ceiling 0.62x, monitor / naive 15.1x, CPU per reading 47.9µs``."""
    found = {(r.bench, r.metric): r.value for r in rows}
    parts = [
        f"{label} {found[(bench, metric)]}{unit}"
        for label, bench, metric, unit in HEADLINE
        if (bench, metric) in found
    ]
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it works")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {NAMES}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(NAMES)
    unknown = set(chosen) - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}: choose from {', '.join(NAMES)}")
    plans = _plans(args.quick)
    shared: dict[str, Any] = {}
    rows: list[Row] = []
    failed: dict[str, str] = {}
    started = datetime.now(UTC)
    for name in NAMES:
        if name not in chosen:
            continue
        t0 = time.perf_counter()
        print(f"== {name} ...", flush=True)
        try:
            got = plans[name](shared)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
            got = [Row(name, "FAILED", type(exc).__name__, "", "", False, str(exc)[:200])]
        rows.extend(got)
        print(f"   {name} took {time.perf_counter() - t0:.0f} s", flush=True)
    result = {
        "started_at": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "rows": [r.as_dict() for r in rows],
        "failed": failed,
    }
    m = result["machine"]
    print()
    quick = " (QUICK: sizes too small to mean anything)" if args.quick else ""
    print(
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, "
        f"Python {m['python']}, commit {m['commit']}{quick}"
    )
    print()
    print(table(rows))
    result["headline"] = headline(rows)
    if result["headline"]:
        print(f"\nHeadline (one run): {result['headline']}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {args.out}")
    if failed:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
