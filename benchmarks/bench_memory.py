"""Memory: resident set size with 100k patients' windows full.

    .venv/bin/python -m benchmarks.bench_memory [--patients 100000] [--quick]

Runs in a fresh subprocess (so nothing else inflates its heap): the monitor's per-patient state
(:class:`lib.monitor.state.PatientStates`, one per shard, as in the flow) is filled with
``window_size + GONE`` (12 + 52) readings for each patient, so that both the window and the
digests of departed readings are full (the steady state), through the same ``process`` call the flow
makes, with ids shaped like the simulator's (``pat-8-000123``, ``bp-8-000123-000007``). The
figure is (RSS after - RSS before) / patients, after a garbage collection; the readings and
results themselves are dropped as they go, as in the flow.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from benchmarks.common import PYTHON, ROOT, Option, Row, command
from lib.monitor.window import GONE

WINDOW = 12
READINGS = WINDOW + GONE  # steady state: window full, departed-reading digests full


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def fill(patients: int) -> dict[str, float]:
    """In this process: fill the windows; bytes of RSS per patient."""
    from lib.domain import Reading
    from lib.monitor import state
    from lib.monitor.risk import RiskModel
    from lib.monitor.rules import AHA2017
    from lib.monitor.shards import shard_of as shard_key

    model = RiskModel.load(ROOT / "models" / "bp_risk.joblib")
    shards: dict[str, state.PatientStates] = {}
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    ids = [f"pat-8-{i:06d}" for i in range(patients)]
    shard_of = {pid: shard_key(pid) for pid in ids}
    gc.collect()
    before = rss_bytes()
    chunk = 10_000
    for k in range(READINGS):
        at = t0 + timedelta(hours=k)
        for lo in range(0, patients, chunk):
            by_shard: dict[str, list] = {}
            for i in range(lo, min(lo + chunk, patients)):
                pid = ids[i]
                r = Reading(
                    f"bp-8-{i:06d}-{k:06d}",
                    pid,
                    at + timedelta(seconds=i % 3600),
                    110.0 + (i * 7 + k * 13) % 60,
                    70.0 + (i * 3 + k * 5) % 25,
                    "final",
                    "1",
                    f"bp.observations:{i % 6}:{k * patients + i}",
                )
                by_shard.setdefault(shard_of[pid], []).append((r, None, 1))
            for shard, entries in by_shard.items():
                states = shards.get(shard)
                if states is None:
                    states = shards[shard] = state.PatientStates(WINDOW, 72.0)
                states.process(entries, AHA2017, model)
            del by_shard
    gc.collect()
    after = rss_bytes()
    held = sum(len(s) for s in shards.values())
    full = sum(len(w) == WINDOW for s in shards.values() for w in s.windows.values())
    return {
        "patients": held,
        "full_windows": full,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_patient": (after - before) / max(held, 1),
    }


def child(patients: int) -> None:
    """The measuring subprocess: :func:`fill`'s figures as one JSON line on stdout."""
    sys.stdout.write(json.dumps(fill(patients)) + "\n")


def measure(patients: int) -> list[Row]:
    proc = subprocess.run(
        [PYTHON, "-c", f"from benchmarks.bench_memory import child; child({patients})"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    per = res["bytes_per_patient"]
    note = (
        f"{res['patients']:,} patients, {res['full_windows']:,} full windows of {WINDOW} "
        f"+ {GONE} departed digests; "
        f"RSS {res['rss_before'] / 2**20:.0f} -> {res['rss_after'] / 2**20:.0f} MiB"
    )
    return [
        Row("memory", "RSS per active patient", round(per), "bytes", "<= 3,072",
            per <= 3072, note),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    return command(__doc__, measure, argv, Option("--patients", 100_000, 2_000))


if __name__ == "__main__":
    main()
