"""Memory: resident set size with 100k patients' windows full.

    .venv/bin/python -m benchmarks.bench_memory [--patients 100000] [--quick]

Runs in a fresh subprocess (so nothing else inflates its heap): the monitor's per-patient state
(one :class:`lib.monitor.patient.Patient` per patient id, held as
:class:`lib.monitor.engine.Monitor` holds them, with the flow's default settings and alert
policy) is filled with ``window_size + GONE`` (12 + 52) readings for each patient, so that both
the window and the digests of departed readings are full (the steady state), through the same
``Patient.process`` call the flow makes, one reading at a time, with ids shaped like the
simulator's (``pat-8-000123``, ``bp-8-000123-000007``). Each reading is processed an hour after
it was measured (the wall clock passed to ``process``), as live data is: every patient keeps its
``no_data`` tracking. The values (105-134 / 65-84) are a typical patient's, below the default
alert policy's opening severity, so few patients hold an open episode (one that does costs
about 800 bytes more). The figure is
(RSS after - RSS before) / patients, after a garbage collection: the whole patient state
(window, ``no_data`` tracking, open episodes, the object itself); the readings and results are
dropped as they go, as in the flow.
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
    """In this process: fill the patients' state; bytes of RSS per patient."""
    from benchmarks.bench_inprocess import SETTINGS, _policy
    from benchmarks.common import load_model
    from lib.domain import Reading
    from lib.monitor.alerts import NoDataRule
    from lib.monitor.engine import Monitor
    from lib.monitor.patient import Patient

    model = load_model()
    monitor = Monitor(
        model,
        SETTINGS.ruleset,
        window_size=WINDOW,
        idle_expiry_hours=SETTINGS.idle_expiry_hours,
        policy=_policy(model),
        no_data=NoDataRule(SETTINGS.no_data_hours, SETTINGS.no_data_lookback_days),
    )
    held, ctx = monitor.patients, monitor.ctx
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    ids = [f"pat-8-{i:06d}" for i in range(patients)]
    gc.collect()
    before = rss_bytes()
    for k in range(READINGS):
        at = t0 + timedelta(hours=k)
        now = (at + timedelta(hours=1)).timestamp()  # processed an hour after it was measured
        for i, pid in enumerate(ids):
            r = Reading(
                f"bp-8-{i:06d}-{k:06d}",
                pid,
                at + timedelta(seconds=i % 3600),
                105.0 + (i * 7 + k * 13) % 30,  # a typical patient: seldom in an episode
                65.0 + (i * 3 + k * 5) % 20,
                "final",
                "1",
                f"bp.observations:{i % 6}:{k * patients + i}",
            )
            patient = held.get(pid)
            if patient is None:
                patient = held[pid] = Patient()
            patient.process(ctx, [(r, None, 1)], now)  # as Monitor.process, without the parse
    gc.collect()
    after = rss_bytes()
    states = held.values()
    return {
        "patients": len(held),
        "full_windows": sum(p.window is not None and len(p.window) == WINDOW for p in states),
        "tracked": sum(p.seen is not None for p in states),
        "in_episode": sum(p.alerts is not None for p in states),
        "rss_before": before,
        "rss_after": after,
        "bytes_per_patient": (after - before) / max(len(held), 1),
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
        f"+ {GONE} departed digests, {res['tracked']:,} no_data tracked, "
        f"{res['in_episode']:,} in an alert episode; "
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
