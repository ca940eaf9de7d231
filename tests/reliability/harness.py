"""Reliability harness: the REAL local Kafka and Elasticsearch, the monitor as a subprocess.

Every scenario (``tests/reliability/scenarios.py``) runs in its own namespace
(``BPWATCH_NAMESPACE``), sends known messages, runs the monitor through its fault, and then
reconciles the real outputs *exactly* against an expectation computed independently of
Kafka, Elasticsearch and Bytewax: the monitor's pure logic (:class:`lib.monitor.engine.Monitor`)
run in-process over the same messages with the same model.

    expected anomaly ids        ==  document ids in ``NS-bp-anomalies``
    expected normal readings    ==  lines in the normal files, none twice
    expected dead letters       ==  DLQ messages (original bytes), none twice
    alerts                      ==  no ``bpwatch-id`` twice on ``NS.bp.alerts``; ES holds each once

``lost`` counts expected outputs that are missing, ``duplicated`` outputs present more than once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from lib.connectors.kafka import produce_all
from lib.connectors.normal_files import day_of, iter_records
from lib.monitor import documents, engine
from lib.settings import Settings
from lib.tools import admin

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
SERVICES = ROOT / "infra" / "local" / "services.sh"

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def digest(value: bytes) -> str:
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()


# ----------------------------------------------------------------------------- namespaces
def base_settings() -> Settings:
    """Settings of the running services from the environment, without a namespace."""
    env = {k: v for k, v in os.environ.items() if k.startswith("BPWATCH_")}
    env.pop("BPWATCH_NAMESPACE", None)
    base = Settings.from_env(env)
    return replace(base, model_path=(ROOT / base.model_path).resolve())


@contextlib.contextmanager
def namespace(
    base: Settings, workdir: Path, prefix: str = "rel", **overrides: Any
) -> Iterator[Settings]:
    """A fresh namespace (topics, templates, indices), torn down afterwards."""
    ns = f"{prefix}{uuid.uuid4().hex[:8]}"
    settings = replace(
        base,
        namespace=ns,
        normal_dir=workdir / ns / "normal",
        kafka_partitions=overrides.pop("kafka_partitions", 3),
        kafka_tail=False,
        **overrides,
    )
    admin.ensure_topics(settings)
    admin.ensure_elasticsearch(settings)
    try:
        yield settings
    finally:
        with contextlib.suppress(Exception):
            admin.teardown(settings)


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``BPWATCH_*`` environment that makes a subprocess build exactly ``settings``."""
    env = {
        "BPWATCH_KAFKA_BROKERS": settings.kafka_brokers,
        "BPWATCH_KAFKA_TAIL": "true" if settings.kafka_tail else "false",
        "BPWATCH_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "BPWATCH_ES_URL": settings.es_url,
        "BPWATCH_NORMAL_DIR": str(settings.normal_dir),
        "BPWATCH_MODEL_PATH": str(settings.model_path),
        "BPWATCH_RULESET": settings.ruleset,
        "BPWATCH_NAMESPACE": settings.namespace,
        "BPWATCH_WINDOW_SIZE": str(settings.window_size),
        "BPWATCH_IDLE_EXPIRY_HOURS": str(settings.idle_expiry_hours),
        "BPWATCH_ES_BATCH_SIZE": str(settings.es_batch_size),
        "BPWATCH_SIM_PATIENTS": str(settings.sim_patients),
        "BPWATCH_SIM_RATE": str(settings.sim_rate),
        "BPWATCH_SIM_COUNT": str(settings.sim_count),
        "BPWATCH_SIM_SEED": str(settings.sim_seed),
        "BPWATCH_SIM_FAULT_RATE": str(settings.sim_fault_rate),
    }
    if settings.kafka_config:
        env["BPWATCH_KAFKA_CONFIG"] = orjson.dumps(settings.kafka_config).decode()
    for name, value in (
        ("BPWATCH_ES_API_KEY", settings.es_api_key),
        ("BPWATCH_ES_USERNAME", settings.es_username),
        ("BPWATCH_ES_PASSWORD", settings.es_password),
        ("BPWATCH_ES_CA_CERTS", settings.es_ca_certs),
    ):
        if value:
            env[name] = value
    return env


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPWATCH_")}
    env.update(settings_env(settings))
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


# ----------------------------------------------------------------------------- processes
class Proc:
    """A bpwatch program as a subprocess in its own session, stderr+stdout to a log file."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {' '.join(self.argv[1:])}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> int | None:
        assert self.proc is not None
        return self.proc.poll()

    def kill9(self) -> None:
        """``kill -9`` of this process only (by its id)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise

    def rss_kb(self) -> int:
        """Resident memory of the process (kB), 0 if it is gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


def init_recovery(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [PY, "-m", "bytewax.recovery", str(directory), "1"], check=True, capture_output=True
    )
    return directory


def monitor(settings: Settings, recovery: Path, log_path: Path, **env: str) -> Proc:
    """The monitor with recovery (snapshot every second, no backup delay)."""
    argv = [PY, "-m", "bytewax.run", "dataflows.monitor", "-r", str(recovery), "-s", "1", "-b", "0"]
    return Proc(argv, child_env(settings, **env), log_path)


def simulator(settings: Settings, log_path: Path, **env: str) -> Proc:
    return Proc(
        [PY, "-m", "bytewax.run", "dataflows.simulate"], child_env(settings, **env), log_path
    )


def services(command: str, what: str) -> None:
    subprocess.run(["bash", str(SERVICES), command, what], check=True, capture_output=True)


# ----------------------------------------------------------------------------- expectation
@dataclass
class _Msg:
    key: bytes | None
    value: bytes
    headers: tuple = ()
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: None = None


@dataclass
class Expected:
    messages: int = 0
    anomaly_ids: set[str] = field(default_factory=set)
    normal_keys: set[tuple[str, str]] = field(default_factory=set)
    dead_letters: Counter[str] = field(default_factory=Counter)  # sha1 of the original bytes
    counts: Counter[str] = field(default_factory=Counter)
    normal_days: Counter[str] = field(default_factory=Counter)  # YYYY-MM-DD of effective_at


def expect(settings: Settings, records: Iterable[Record], model: Any = None) -> Expected:
    """What the monitor must produce from ``records``: its pure logic, run in-process."""
    from lib.monitor.risk import RiskModel

    model = model or RiskModel.load(settings.model_path)
    mon = engine.Monitor(
        model,
        settings.ruleset,
        window_size=settings.window_size,
        idle_expiry_hours=settings.idle_expiry_hours,
    )
    exp = Expected()
    batch: list[_Msg] = []

    def flush() -> None:
        results = mon.process(batch)
        for action, _id, _doc in documents.elastic_actions(results):
            if action == "index":
                exp.anomaly_ids.add(_id)
            else:
                exp.anomaly_ids.discard(_id)
        for _, rec in documents.normal_records(results):
            exp.normal_keys.add((rec["observation_id"], str(rec.get("version", ""))))
            exp.normal_days[day_of(rec["effective_at"])] += 1
        for _key, raw, _headers in documents.dlq_messages(results):
            exp.dead_letters[digest(raw)] += 1
        for _, counts in documents.outcome_counts(results):
            exp.counts.update(counts)
        batch.clear()

    for key, value, _headers in records:
        exp.messages += 1
        batch.append(_Msg(key, value))
        if len(batch) >= 500:
            flush()
    flush()
    return exp


def send(settings: Settings, records: Sequence[Record]) -> int:
    return produce_all(settings, settings.observations_topic, records)


# ----------------------------------------------------------------------------- observation
def read_topic(settings: Settings, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every message of a topic, from the low to the high watermark of each partition."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"rel-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.message.max.bytes": 4_194_304,
        }
    )
    out: list[Any] = []
    try:
        md = consumer.list_topics(topic, timeout=30).topics[topic]
        ends: dict[int, int] = {}
        assign = []
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(topic, p, low))
        if not assign:
            return out
        consumer.assign(assign)
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is not None:
                    continue
                out.append(msg)
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
        if ends:
            raise TimeoutError(f"could not read {topic} to its end in {timeout}s")
    finally:
        consumer.close()
    return out


@dataclass
class Observed:
    anomaly_ids: set[str] = field(default_factory=set)
    normal_keys: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)  # sha1 of value, distinct ids
    dead_letter_dups: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    alert_ids: Counter[str] = field(default_factory=Counter)
    alerts_es: int = 0


def observe(settings: Settings) -> Observed:
    from lib.tools.summary import RunOutputs, elastic_outputs

    obs = Observed()
    out = RunOutputs()
    elastic_outputs(settings, out)
    obs.anomaly_ids, obs.alerts_es = out.anomaly_ids, out.alerts_es
    if settings.normal_dir.exists():
        for rec in iter_records(settings.normal_dir):
            obs.normal_keys[(rec["observation_id"], str(rec.get("version", "")))] += 1
    seen: set[tuple[bytes, bytes]] = set()
    for msg in read_topic(settings, settings.dlq_topic):
        headers = dict(msg.headers() or ())
        ident = (headers.get("source", b""), headers.get("error.detail", b""))
        if ident in seen:
            obs.dead_letter_dups += 1
            continue
        seen.add(ident)
        obs.dead_letters[digest(msg.value() or b"")] += 1
        obs.dead_letter_reasons[(headers.get("error") or b"").decode()] += 1
    for msg in read_topic(settings, settings.alerts_topic):
        headers = dict(msg.headers() or ())
        obs.alert_ids[(headers.get("bpwatch-id") or b"").decode()] += 1
    return obs


@dataclass
class Tally:
    """One scenario's result, as printed by ``python -m tests.reliability.run``."""

    fault: str
    runs: int = 0  # monitor processes started
    faults: int = 0  # kills or outages injected
    messages: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.duplicated == 0

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.notes.items())
        verdict = "OK" if self.ok else "FAIL"
        return (
            f"{self.fault:<13} runs={self.runs:<3} faults={self.faults:<3} "
            f"messages={self.messages:<7} lost={self.lost:<4} duplicated={self.duplicated:<4} "
            f"{verdict} {extra}"
        ).rstrip()


def reconcile(tally: Tally, exp: Expected, obs: Observed) -> Tally:
    """Fill ``lost``, ``duplicated`` and ``problems`` of ``tally`` from ``exp`` vs ``obs``."""
    tally.messages = exp.messages
    lost_anomalies = exp.anomaly_ids - obs.anomaly_ids
    extra_anomalies = obs.anomaly_ids - exp.anomaly_ids
    lost_normals = exp.normal_keys - set(obs.normal_keys)
    extra_normals = set(obs.normal_keys) - exp.normal_keys
    dup_normals = sum(c - 1 for c in obs.normal_keys.values() if c > 1)
    lost_dead = sum((exp.dead_letters - obs.dead_letters).values())
    extra_dead = sum((obs.dead_letters - exp.dead_letters).values())
    dup_alerts = sum(c - 1 for c in obs.alert_ids.values() if c > 1)
    tally.lost = len(lost_anomalies) + len(lost_normals) + lost_dead
    tally.duplicated = dup_normals + obs.dead_letter_dups + dup_alerts
    for what, n in (
        ("anomaly documents missing", len(lost_anomalies)),
        ("unexpected anomaly documents", len(extra_anomalies)),
        ("normal readings missing", len(lost_normals)),
        ("unexpected normal readings", len(extra_normals)),
        ("duplicate normal lines", dup_normals),
        ("dead letters missing", lost_dead),
        ("unexpected dead letters", extra_dead),
        ("duplicate dead letters", obs.dead_letter_dups),
        ("duplicate alerts on Kafka", dup_alerts),
    ):
        if n:
            tally.problems.append(f"{what}: {n}")
    if obs.alert_ids and obs.alerts_es != len(obs.alert_ids):
        tally.problems.append(
            f"alerts: {len(obs.alert_ids)} distinct on Kafka, {obs.alerts_es} in Elasticsearch"
        )
    tally.notes.setdefault("anomalies", len(obs.anomaly_ids))
    tally.notes.setdefault("normals", sum(obs.normal_keys.values()))
    tally.notes.setdefault("dead_letters", sum(obs.dead_letters.values()))
    if obs.alert_ids:
        tally.notes.setdefault("alerts", len(obs.alert_ids))
    return tally


def phi_leaks(text: str, names: Iterable[str]) -> list[str]:
    """Patient names (or FHIR payload fragments) found in a log text."""
    found = [n for n in names if n in text]
    for marker in ('"resourceType"', '"valueQuantity"', "subject.display", '"display"'):
        if marker in text:
            found.append(marker)
    return found
