"""Latency at a steady rate: produce -> searchable in Elasticsearch, produce -> alert.

    .venv/bin/python -m benchmarks.bench_latency [--rate 1000] [--seconds 30] [--quick]

A fresh ``bench-lat-...`` namespace; the monitor runs as in production (tailing Kafka). Once
it is up (a warm-up message is searchable), simulator messages are produced at a steady
``--rate`` (paced by the monotonic clock). For every anomalous Observation the time from its
``produce()`` call to the first search that returns it is recorded (a poller searches
``bp-anomalies`` every 50 ms; the index refreshes every 1 s, as the template sets), and the
time from producing the reading that triggered an alert to its arrival on ``bp.alerts``.
Percentiles are nearest-rank.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks import common
from benchmarks.common import PATIENTS, Message, Option, Row, percentile
from lib.settings import Settings


class _Poller(threading.Thread):
    """Record when each anomaly document first becomes searchable."""

    def __init__(self, es: Any, index: str) -> None:
        super().__init__(daemon=True)
        self.es = es
        self.index = index
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                resp = self.es.search(
                    index=self.index,
                    query={"range": {"ingested_at": {"gte": "now-5s"}}},
                    source=False,
                    size=10_000,
                )
                now = time.time()
                for hit in resp["hits"]["hits"]:
                    self.seen.setdefault(hit["_id"], now)
            except Exception:  # a failed poll is retried; the run's result shows the gap
                pass
            self.stop.wait(0.05)


class _AlertListener(threading.Thread):
    """Record the arrival time of each alert on ``bp.alerts`` with its triggering reading."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            settings.kafka_client_config(
                **{"group.id": f"lat-{settings.namespace}", "auto.offset.reset": "earliest"}
            )
        )
        self.consumer.subscribe([settings.alerts_topic])
        self.arrived: list[tuple[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import orjson

        while not self.stop.is_set():
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            now = time.time()
            doc = orjson.loads(msg.value())
            ids = doc.get("observation_ids") or []
            if ids and doc.get("event") != "resolved":
                self.arrived.append((ids[-1], now))
        self.consumer.close()


def _first_ids(msgs: list) -> list[str | None]:
    """Observation id of each message (None for messages that are not a single reading)."""
    from lib.domain import Reading
    from lib.monitor import fhir

    out: list[str | None] = []
    for m in msgs:
        outcomes = fhir.parse(m.value, m.key)
        out.append(outcomes[0].observation_id if type(outcomes[0]) is Reading else None)
    return out


def measure(rate: float, seconds: float, patients: int) -> list[Row]:
    from confluent_kafka import Producer

    from lib.connectors.elastic import make_client
    from lib.connectors.kafka_produce import producer_config

    msgs = common.messages(patients, int(rate * seconds) + 1)
    ids = _first_ids(msgs)
    with common.namespace("lat") as settings, _monitor(settings) as log_path:
        es = make_client(settings)
        listener = _AlertListener(settings)
        producer = Producer(producer_config(settings, **{"linger.ms": 1}))
        try:
            _warm_up(es, settings, producer, msgs[0], log_path)
            poller = _Poller(make_client(settings), settings.anomalies_index)
            poller.start()
            listener.start()
            produced, sent_s = _produce_steadily(producer, settings, msgs, ids, rate)
            time.sleep(5.0)  # let the tail arrive
            for watcher in (poller, listener):
                watcher.stop.set()
                watcher.join()
        finally:
            es.close()
    actual = (len(msgs) - 1) / sent_s
    return [
        *_searchable_rows(poller.seen, produced, f"{actual:,.0f} msgs/s for {sent_s:.0f} s"),
        *_alert_rows(listener.arrived, produced),
    ]


@contextmanager
def _monitor(settings: Settings) -> Iterator[str]:
    """The monitor as in production (tailing Kafka) while the block runs; yields its log path."""
    path = f"/tmp/{settings.namespace}.log"
    with open(path, "ab") as log:
        proc = common.start_monitor(settings, log, tail=True)
        try:
            yield path
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _warm_up(es: Any, settings: Settings, producer: Any, first: Message, log_path: str) -> None:
    """Return once a first message has gone all the way through the monitor."""
    producer.produce(settings.observations_topic, first.value, first.key)
    producer.flush(10)
    up = common.wait_until(
        lambda: (
            (
                es.indices.refresh(index=settings.anomalies_index) is not None
                and es.count(index=settings.anomalies_index)["count"] > 0
            )
            or any(settings.normal_dir.glob("date=*/part-*.jsonl"))
        ),
        timeout=120,
        every=0.2,
    )
    if not up:
        raise RuntimeError(f"the monitor did not start; see {log_path}")


def _produce_steadily(
    producer: Any, settings: Settings, msgs: list[Message], ids: list[str | None], rate: float
) -> tuple[dict[str, float], float]:
    """Produce ``msgs[1:]`` at ``rate`` per second; when each reading was produced (epoch
    seconds, by Observation id) and the seconds it took."""
    topic = settings.observations_topic
    produced: dict[str, float] = {}
    start = time.monotonic()
    for i, m in enumerate(msgs[1:], 1):
        delay = start + (i - 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.produce(topic, m.value, m.key)
        if ids[i] is not None:
            produced.setdefault(ids[i], time.time())
        producer.poll(0)
    producer.flush(30)
    return produced, time.monotonic() - start


def _searchable_rows(seen: dict[str, float], produced: dict[str, float], pace: str) -> list[Row]:
    searchable = [seen[i] - t for i, t in produced.items() if i in seen]
    note = f"{len(searchable):,} anomaly docs, {pace}"
    if not searchable:
        return [Row("latency", "produce -> searchable", "no data", "", "<= 2 s", False, note)]
    p50, p99 = percentile(searchable, 50), percentile(searchable, 99)
    return [
        Row("latency", "produce -> searchable p50", round(p50, 3), "s", "", None, note),
        Row("latency", "produce -> searchable p99", round(p99, 3), "s", "<= 2 s", p99 <= 2.0,
            "ES refresh_interval 1 s"),
    ]  # fmt: skip


def _alert_rows(arrived: list[tuple[str, float]], produced: dict[str, float]) -> list[Row]:
    alerts = [t - produced[i] for i, t in arrived if i in produced]
    if not alerts:
        return [Row("latency", "produce -> alert", "no alerts", "", "<= 1 s", None, "")]
    p50, p99 = percentile(alerts, 50), percentile(alerts, 99)
    return [
        Row("latency", "produce -> alert p50", round(p50, 3), "s", "", None,
            f"{len(alerts):,} alerts"),
        Row("latency", "produce -> alert p99", round(p99, 3), "s", "<= 1 s", p99 <= 1.0, ""),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    rate, seconds = Option("--rate", 1000.0, 200.0), Option("--seconds", 30.0, 3.0)
    return common.command(__doc__, measure, argv, rate, seconds, PATIENTS)


if __name__ == "__main__":
    main()
