"""Patient scale: the monitor with recovery on, at 10k, 100k and 1M patients.

    .venv/bin/python -m benchmarks.bench_scale [--readings 1000000] [--sizes 10000,100000,1000000]
        [--parts 64] [--trickle-rate 50] [--trickle-seconds 120] [--quick]

Each size runs in a fresh subprocess: ``dataflows.monitor.build`` (the production dataflow)
with a synthetic source and counting sinks behind the production steps, in one worker, with a
recovery store of ``--parts`` partitions and a snapshot every 10 s, as ``python -m bytewax.run
dataflows.monitor -r DIR -s 10 -b 0`` runs it. The source is a plain load generator, not the
simulator: FHIR BP Observations round-robin over the patients, 5 minutes apart per patient,
the last one about now; values drawn from a hash of the reading's index (a few percent
anomalous). Generating a message costs the same at every size.

Per size (the "load" phase, ``--readings`` readings from an empty store): throughput, peak RSS
growth per patient, the recovery store's size, and the snapshot bytes (every object Bytewax
pickles for the store is counted, by type) per epoch. Then, on the largest size's store, the
"trickle" phase resumes the monitor with ``--trickle-rate`` readings/s for
``--trickle-seconds``: resume time to the first output, CPU (share of one core) and snapshot
bytes per patient touched, per epoch. The ratios to the smallest size are from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, ROOT, Row, print_rows

_RECORDS = {"bpw-patient": "PatientSnapshot", "bpw-wakeups": "BucketSnapshot"}
SPACING_S = 300  # 5 minutes between a patient's readings
EPOCH_S = 10
BATCH = 1_000

_TEMPLATE = (
    '{"resourceType":"Observation","id":"obs-%d","meta":{"profile":['
    '"http://hl7.org/fhir/StructureDefinition/bp"]},"status":"final","category":[{"coding":[{'
    '"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":'
    '"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"85354-9",'
    '"display":"Blood pressure panel with all children optional"}]},"subject":{"reference":'
    '"Patient/%s"},"effectiveDateTime":"%s","component":[{"code":{"coding":[{"system":'
    '"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":%d,"unit":"mmHg",'
    '"system":"http://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":'
    '"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":%d,"unit":"mmHg",'
    '"system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}'
)


def patient_id(i: int) -> str:
    return f"pat-{i:07d}"


def message(i: int, patients: int, t0: float, live: bool = False) -> tuple[bytes, bytes, float]:
    """Reading ``i``: (key, FHIR JSON, event time); ``live``: measured now (the trickle)."""
    pid = patient_id(i % patients)
    if live:
        ts = time.time()
    else:
        ts = t0 + (i // patients) * SPACING_S + (i % patients) * SPACING_S / patients
    h = zlib.crc32(i.to_bytes(8, "little"))
    systolic = 105 + h % 50 + (40 if h % 97 == 0 else 0)
    diastolic = 65 + (h >> 8) % 25 + (20 if h % 89 == 0 else 0)
    when = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    body = _TEMPLATE % (i, pid, when.replace("+00:00", "Z"), systolic, diastolic)
    return pid.encode(), body.encode(), ts


# -- the child process: one phase of one size ------------------------------------------------
def _child(args: argparse.Namespace) -> dict[str, Any]:
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.recovery import RecoveryConfig
    from bytewax.testing import run_main

    from benchmarks.bench_inprocess import production_gc
    from benchmarks.common import load_model
    from dataflows.monitor import MonitorIO, build
    from lib.connectors.elastic import ElasticSink
    from lib.connectors.kafka import SourceRecord
    from lib.settings import Settings

    snap_bytes: Counter[str] = Counter()
    snap_count: Counter[str] = Counter()
    original_dumps = pickle.dumps

    def counting_dumps(obj: Any, *a: Any, **kw: Any) -> bytes:  # Bytewax's snapshot pickler
        data = original_dumps(obj, *a, **kw)
        name = type(obj).__name__
        if name == "tuple" and obj and obj[0] in _RECORDS:  # the stored records' tags
            name = _RECORDS[obj[0]]
        snap_bytes[name] += len(data)
        snap_count[name] += 1
        return data

    pickle.dumps = counting_dumps  # type: ignore[assignment]
    first_output: list[float] = []
    at_end: dict[str, Any] = {}
    cpu_first: list[float] = []
    outputs = Counter[str]()

    def count(name: str, items: list[Any]) -> None:
        if items and not first_output:
            first_output.append(time.perf_counter())
            cpu_first.append(time.process_time())
        outputs[name] += len(items)

    class _Count(StatelessSinkPartition):
        def __init__(self, name: str) -> None:
            self.name = name

        def write_batch(self, items: list[Any]) -> None:
            count(self.name, items)

    class _CountWriter:
        """The Elasticsearch write steps' writer: counts the actions, keeps none."""

        def __init__(self, name: str) -> None:
            self.name = name

        def submit(self, actions: list[Any]) -> int:
            count(self.name, actions)
            return 0

        def wait(self, ticket: int | None = None) -> None:
            return None

        def finish(self, ticket: int | None = None) -> None:
            return None

        def close(self) -> None:
            return None

    class CountSink(DynamicSink):
        def __init__(self, name: str) -> None:
            self.name = name

        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
            return _Count(self.name)

    start_index, end_index, rate = args.start, args.end, args.rate
    t0 = args.t0

    class _Part(StatefulSourcePartition[SourceRecord, int]):
        def __init__(self, at: int | None) -> None:
            self.at = start_index if at is None else at
            self.began = time.monotonic()
            self.began_at = self.at

        def next_batch(self) -> list[SourceRecord]:
            if self.at >= end_index:
                if not at_end:  # before the end-of-run pass over every key (on_eof)
                    at_end.update(
                        wall=time.perf_counter(),
                        cpu=time.process_time(),
                        snap_bytes=dict(snap_bytes),
                        snap_count=dict(snap_count),
                    )
                raise StopIteration
            n = BATCH
            if rate:
                due = self.began_at + int((time.monotonic() - self.began) * rate)
                n = min(BATCH, due - self.at)
            out = []
            for i in range(self.at, min(end_index, self.at + n)):
                key, value, ts = message(i, args.patients, t0, live=bool(rate))
                out.append(SourceRecord(key, value, [], "bench", 0, i, (1, int(ts * 1000))))
            self.at += len(out)
            return out

        def next_awake(self) -> datetime | None:
            return datetime.now(UTC) + timedelta(milliseconds=20) if rate else None

        def snapshot(self) -> int:
            return self.at

    class GenSource(FixedPartitionedSource[SourceRecord, int]):
        def list_parts(self) -> list[str]:
            return ["0"]

        def build_part(self, step_id: str, for_part: str, resume: int | None) -> _Part:
            return _Part(resume)

    def count_docs(name: str) -> ElasticSink:
        return ElasticSink(settings, name, writer_factory=lambda: _CountWriter(name))

    settings = replace(Settings(), normal_dir=Path(args.store) / "unused")
    io = MonitorIO(
        source=GenSource(),
        anomaly_sink=count_docs("anomaly"),
        normal_sink=CountSink("normal"),
        dlq_sink=CountSink("dlq"),
        alert_sinks=(CountSink("alert"), count_docs("alert_doc")),
        home_sink=count_docs("home"),
        stats_sink=CountSink("stats"),
    )
    flow = build(settings, io=io, model=load_model())
    rss_before = _rss()
    cpu0 = time.process_time()
    start = time.perf_counter()
    with production_gc():
        run_main(
            flow,
            epoch_interval=timedelta(seconds=EPOCH_S),
            recovery_config=RecoveryConfig(args.store) if args.store != "none" else None,
        )
    wall = time.perf_counter() - start
    if at_end:
        at_end["wall"] -= start
        at_end["cpu"] -= cpu0
    return {
        "at_end": at_end or {"wall": wall, "cpu": time.process_time() - cpu0},
        "wall": wall,
        "cpu": time.process_time() - cpu0,
        "resume_to_first_output": (first_output[0] - start) if first_output else None,
        "cpu_at_first_output": (cpu_first[0] - cpu0) if cpu_first else 0.0,
        "rss_before": rss_before,
        "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "snap_bytes": dict(snap_bytes),
        "snap_count": dict(snap_count),
        "outputs": dict(outputs),
        "store_bytes": sum(f.stat().st_size for f in Path(args.store).iterdir())
        if args.store != "none"
        else 0,
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run_child(cwd: str | Path = ROOT, **kw: Any) -> dict[str, Any]:
    cmd = [PYTHON, "-m", "benchmarks.bench_scale", "--child"]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench_scale child failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _new_store(parts: int) -> Path:
    store = Path(tempfile.mkdtemp(prefix="bpwatch-scale-"))
    subprocess.run([PYTHON, "-m", "bytewax.recovery", str(store), str(parts)], check=True)
    return store


# -- the parent: the table ---------------------------------------------------------------------
def measure(
    sizes: list[int],
    readings: int,
    parts: int,
    trickle_rate: int,
    trickle_seconds: int,
    baseline: str = "",
) -> list[Row]:
    rows: list[Row] = []
    base: dict[str, Any] | None = None
    last_store: Path | None = None
    t0 = time.time() - (readings / min(sizes)) * SPACING_S  # the last reading about now
    for patients in sizes:
        store = _new_store(parts)
        r = _run_child(patients=patients, store=store, start=0, end=readings, rate=0, t0=t0)
        # a tailing monitor never reaches the end of its input: the rate is up to the end of
        # the input, before the end-of-run pass that wakes (and snapshots) every key
        rate = readings / r["at_end"]["wall"]
        epochs = max(1.0, r["wall"] / EPOCH_S)
        patient_snaps = r["snap_count"].get("PatientSnapshot", 0)
        snap_total = sum(r["snap_bytes"].values())
        base = base or {"rate": rate, "patients": patients}
        tag = f"{patients:,} patients"
        note = (
            f"{readings:,} readings, recovery on (-s {EPOCH_S}, {parts} parts), 1 worker; "
            f"{readings / r['wall']:,.0f}/s with the end-of-run pass"
        )
        rows += [
            Row("scale", f"{tag}: throughput", round(rate), "readings/s", "", None, note),
            Row(
                "scale",
                f"{tag}: throughput / smallest",
                round(rate / base["rate"], 2),
                "x",
                ">= 0.7" if patients >= 1_000_000 else "",
                None if patients < 1_000_000 else rate / base["rate"] >= 0.7,
                "same run",
            ),
            Row(
                "scale",
                f"{tag}: peak RSS growth per patient",
                round((r["rss_peak"] - r["rss_before"]) / patients),
                "bytes",
                "<= 3,072" if patients >= 1_000_000 else "",
                None
                if patients < 1_000_000
                else (r["rss_peak"] - r["rss_before"]) / patients <= 3072,
                f"peak {r['rss_peak'] / 2**20:,.0f} MiB",
            ),
            Row(
                "scale",
                f"{tag}: recovery store",
                round(r["store_bytes"] / 2**20, 1),
                "MiB",
                "",
                None,
                f"{r['store_bytes'] / patients:,.0f} bytes per patient",
            ),
            Row(
                "scale",
                f"{tag}: snapshot bytes per epoch",
                round(snap_total / epochs / 2**20, 2),
                "MiB",
                "",
                None,
                f"{patient_snaps:,} patient snapshots, "
                f"{r['snap_bytes'].get('PatientSnapshot', 0) / max(1, patient_snaps):,.0f} "
                "bytes each",
            ),
        ]
        if last_store is not None:
            shutil.rmtree(last_store, ignore_errors=True)
        last_store = store
        last_patients = patients
    if baseline:
        rows += _baseline_rows(baseline, base, readings, parts, t0)
    if last_store is not None and trickle_seconds > 0:
        n = trickle_rate * trickle_seconds
        r = _run_child(
            patients=last_patients,
            store=last_store,
            start=readings,
            end=readings + n,
            rate=trickle_rate,
            t0=t0,
        )
        resume = r["resume_to_first_output"]
        # the trickle alone: from the first output to the end of the input, before the
        # end-of-run pass over every key (on_eof) that a tailing monitor never makes
        end = r["at_end"]
        trickle_wall = max(1e-9, end["wall"] - (resume or 0.0))
        cpu_share = 100 * (end["cpu"] - r["cpu_at_first_output"]) / trickle_wall
        snaps = end["snap_count"].get("PatientSnapshot", 0)
        patient_bytes = end["snap_bytes"].get("PatientSnapshot", 0)
        other_bytes = sum(end["snap_bytes"].values()) - patient_bytes
        tag = f"trickle on {last_patients:,}"
        rows += [
            Row(
                "scale",
                f"{tag}: resume to first output",
                round(resume or -1, 1),
                "s",
                "<= 30",
                resume is not None and resume <= 30,
                "store of the load phase",
            ),
            Row(
                "scale",
                f"{tag}: CPU share of one core",
                round(cpu_share, 1),
                "%",
                "<= 10",
                cpu_share <= 10,
                f"{trickle_rate}/s for {trickle_seconds} s after the resume; the whole process",
            ),
            Row(
                "scale",
                f"{tag}: snapshot bytes per patient touched",
                round(patient_bytes / max(1, snaps)),
                "bytes",
                "<= 1,024",
                (patient_bytes / snaps <= 1024) if snaps else None,
                f"{snaps:,} patient snapshots; the rest (offsets, wheel, counters) "
                f"{other_bytes / max(1.0, trickle_wall / EPOCH_S):,.0f} bytes per epoch",
            ),
        ]
        shutil.rmtree(last_store, ignore_errors=True)
    return rows


def _baseline_rows(
    checkout: str, base: dict[str, Any] | None, readings: int, parts: int, t0: float
) -> list[Row]:
    """The smallest size again with the code of another checkout (e.g. ``git worktree add
    /tmp/before <commit>``), this file's child run with that checkout's dataflow."""
    if base is None:
        return []
    target = Path(checkout) / "benchmarks" / "bench_scale.py"
    if not target.exists():
        shutil.copy(__file__, target)
    store = _new_store(parts)
    r = _run_child(
        patients=base["patients"], store=store, start=0, end=readings, rate=0, t0=t0, cwd=checkout
    )
    shutil.rmtree(store, ignore_errors=True)
    old = readings / r["at_end"]["wall"]
    return [
        Row("scale", f"{base['patients']:,} patients: baseline throughput", round(old),
            "readings/s", "", None, f"{checkout}: the same child run on that checkout's code"),
        Row("scale", f"{base['patients']:,} patients: this code / baseline",
            round(base["rate"] / old, 2), "x", ">= 1.0", base["rate"] / old >= 1.0, "same run"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--patients", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--store", default="", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--end", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=64)
    parser.add_argument("--trickle-rate", type=int, default=50)
    parser.add_argument("--trickle-seconds", type=int, default=120)
    parser.add_argument("--baseline", default="", help="a checkout to compare the smallest size")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it works")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return []
    if args.quick:
        args.sizes, args.readings, args.trickle_seconds = "200,2000", 4_000, 3
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = measure(
        sizes, args.readings, args.parts, args.trickle_rate, args.trickle_seconds, args.baseline
    )
    print_rows(rows)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
