"""Shared helpers of the benchmarks: simulator data (cached), namespaces, results, machine.

Benchmarks, not tests: nothing here asserts a time. Every measurement returns a list of
:class:`Row` (one line of the table printed by ``python -m benchmarks.run``).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import pickle
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

from lib.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BPWATCH_BENCH_CACHE", "/tmp/bpwatch-bench-cache"))
PYTHON = sys.executable

# The simulator's defaults for every benchmark: a realistic cohort mix (lib.sim.cohort.DEFAULT_MIX)
# and a small share of faulty messages (dead letters, duplicates, amendments, ...).
SIM_SEED = 8
FAULT_RATE = 0.01


@dataclass(slots=True)
class Row:
    """One line of the results table."""

    bench: str
    metric: str
    value: float | str
    unit: str = ""
    target: str = ""
    met: bool | None = None  # None: no target
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- command line -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Option:
    """One ``--flag VALUE`` of a benchmark's command: its default and its ``--quick`` value."""

    flag: str
    default: int | float
    quick: int | float
    dest: str = ""  # the keyword of ``measure`` it feeds, if not the flag's name

    @property
    def name(self) -> str:
        return self.dest or self.flag.removeprefix("--").replace("-", "_")


# The options most benchmarks take (``dataclasses.replace`` for other values).
MESSAGES = Option("--messages", 200_000, 2_000, dest="n_messages")
PATIENTS = Option("--patients", 2_000, 100)
REPEATS = Option("--repeats", 3, 1)


def command(
    doc: str | None,
    measure: Callable[..., Sequence[Row]],
    argv: list[str] | None,
    *options: Option,
) -> list[Row]:
    """The command of one benchmark: parse ``options`` (``--quick`` takes their quick values),
    run ``measure`` with them as keywords, print its rows, return them."""
    parser = argparse.ArgumentParser(description=doc)
    for opt in options:
        parser.add_argument(opt.flag, dest=opt.name, type=type(opt.default), default=opt.default)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it works")
    args = vars(parser.parse_args(argv))
    if args.pop("quick"):
        args.update({opt.name: opt.quick for opt in options})
    rows = list(measure(**args))
    print_rows(rows)
    return rows


def print_rows(rows: Sequence[Row]) -> None:
    """The rows of one benchmark as aligned text (its own command's output)."""
    for row in rows:
        print(f"{row.metric:<32} {row.value!s:>10} {row.unit:<12} {row.note}")


# -- data ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Message:
    """One pre-encoded simulator message (what the simulator would produce to Kafka)."""

    key: bytes
    value: bytes
    emitted_ms: int  # event time at which the simulator sends it (ms since the epoch)


def sim_settings(patients: int, count: int, fault_rate: float = FAULT_RATE) -> Settings:
    return replace(
        Settings(),
        sim_patients=patients,
        sim_count=count,
        sim_seed=SIM_SEED,
        sim_fault_rate=fault_rate,
    )


def messages(patients: int, count: int, fault_rate: float = FAULT_RATE) -> list[Message]:
    """``count`` simulator messages of ``patients`` patients, cached on disk by parameters.

    The simulator is deterministic for a seed, so the cache only saves time.
    """
    from lib.sim import stream

    tag = f"{SIM_SEED}-{patients}-{count}-{fault_rate}"
    path = CACHE / f"messages-{hashlib.sha1(tag.encode()).hexdigest()[:12]}.pickle"
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    out = [
        Message(m.key, m.value, int(m.emitted_at.timestamp() * 1000))
        for m in stream.messages(sim_settings(patients, count, fault_rate))
    ]
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return out


def kafka_records(msgs: Sequence[Message]) -> Iterator[tuple[bytes, bytes, list]]:
    """``(key, value, headers)`` items for :func:`lib.connectors.kafka.produce_all`."""
    headers = [("content-type", b"application/fhir+json")]
    for m in msgs:
        yield m.key, m.value, headers


def load_model() -> Any:
    from lib.monitor.risk import RiskModel

    return RiskModel.load_parameters(ROOT / "models" / "bp_risk.joblib")  # as the monitor


# -- services -----------------------------------------------------------------------------
def base_settings() -> Settings:
    """Settings from the environment (service endpoints), without a namespace."""
    env = {k: v for k, v in os.environ.items() if k.startswith("BPWATCH_")}
    env.pop("BPWATCH_NAMESPACE", None)
    return Settings.from_env(env)


@contextmanager
def namespace(prefix: str, partitions: int = 6, workdir: Path | None = None) -> Iterator[Settings]:
    """A fresh ``bench-...`` namespace: topics, templates and indices exist; torn down after."""
    from lib.tools import admin

    ns = f"bench-{prefix}-{uuid.uuid4().hex[:8]}"
    work = workdir or Path("/tmp") / ns
    s = replace(
        base_settings(),
        namespace=ns,
        kafka_partitions=partitions,
        normal_dir=work / "normal",
    )
    admin.ensure_topics(s)
    admin.ensure_elasticsearch(s)
    try:
        yield s
    finally:
        try:
            admin.teardown(s)
        except Exception as exc:  # cleanup must not hide the measurement's own error
            print(f"teardown of namespace {ns} failed: {exc}", file=sys.stderr)


def env_of(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a monitor subprocess running against ``settings``."""
    env = dict(os.environ)
    env.update(
        BPWATCH_KAFKA_BROKERS=settings.kafka_brokers,
        BPWATCH_ES_URL=settings.es_url,
        BPWATCH_NAMESPACE=settings.namespace,
        BPWATCH_NORMAL_DIR=str(settings.normal_dir),
        BPWATCH_MODEL_PATH=str(ROOT / "models" / "bp_risk.joblib"),
        BPWATCH_KAFKA_PARTITIONS=str(settings.kafka_partitions),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def start_monitor(
    settings: Settings, out: IO[bytes], *, tail: bool, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """The monitor as production runs it (``python -m bytewax.run dataflows.monitor ARGS``)
    against ``settings``, tailing Kafka or stopping once caught up; output to ``out``."""
    return subprocess.Popen(
        [PYTHON, "-m", "bytewax.run", "dataflows.monitor", *args],
        cwd=ROOT,
        env=env_of(settings, BPWATCH_KAFKA_TAIL="true" if tail else "false"),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def count_docs(es: Any, index: str) -> int:
    es.indices.refresh(index=index)
    return int(es.count(index=index)["count"])


def wait_until(cond: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return cond()


# -- machine ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return ""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[k]


# -- shared by the end-to-end benchmarks (bench_e2e, bench_ceiling, bench_scaleout, naive) --


def expected_outputs(msgs: Sequence[Message], topic: str = "") -> dict[str, int]:
    """What the monitor must write for ``msgs``: computed with lib.monitor.engine in-process."""
    from benchmarks.bench_inprocess import BATCH, source_messages
    from lib.monitor import documents, engine

    monitor = engine.Monitor(load_model(), "aha2017")
    items = source_messages(msgs)
    docs: dict[str, bool] = {}
    normal = dead = observations = anomalies = 0
    for i in range(0, len(items), BATCH):
        results = monitor.process(items[i : i + BATCH])
        for op, _id, _ in documents.elastic_actions(results):
            if op == "index":
                docs[_id] = True
            else:
                docs.pop(_id, None)
        normal += len(documents.normal_records(results))
        dead += len(documents.dlq_messages(results))
        for _, counts in documents.outcome_counts(results):
            observations += sum(v for k, v in counts.items() if k != "in")
            anomalies += counts["anomaly"]
    return {
        "messages": len(msgs),
        "docs": len(docs),
        "normal_lines": normal,
        "dead_letters": dead,
        "observations": observations,
        "anomalies": anomalies,
    }


def fill(settings: Settings, msgs: Sequence[Message]) -> float:
    from lib.connectors.kafka import produce_all

    start = time.perf_counter()
    produce_all(settings, settings.observations_topic, kafka_records(msgs))
    return time.perf_counter() - start
