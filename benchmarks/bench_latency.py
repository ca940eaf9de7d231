"""Latency at a steady rate: produce -> searchable in Elasticsearch, produce -> alert.

    .venv/bin/python -m benchmarks.bench_latency [--rate 1000] [--seconds 30] [--quick]

A fresh ``bench-lat-...`` namespace; the monitor runs as in production (tailing Kafka). Once
it is up (a warm-up message is searchable), simulator messages are produced at a steady
``--rate`` (paced by the monotonic clock). For every anomalous Observation the time from its
``produce()`` call to the first search that returns it is recorded (a poller searches
``bp-anomalies`` every 50 ms; the index refreshes every 1 s, as the template sets), and, if
the monitor publishes alerts, the time from producing the reading that triggered an alert to
its arrival on ``bp.alerts``. Percentiles are nearest-rank.
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import threading
import time
from typing import Any

from benchmarks.common import (
    PYTHON,
    ROOT,
    Row,
    env_of,
    messages,
    namespace,
    percentile,
    print_rows,
    wait_until,
)
from lib.settings import Settings


def alerts_wired() -> bool:
    """Does the monitor publish alerts (the lead's alerts step)?"""
    import dataflows.monitor as monitor

    src = inspect.getsource(monitor)
    return "alerts_topic" in src and "not wired" not in src


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

    n = int(rate * seconds)
    msgs = messages(patients, n + 1)
    ids = _first_ids(msgs)
    wired = alerts_wired()
    with namespace("lat") as settings:
        es = make_client(settings)
        listener = _AlertListener(settings) if wired else None
        log = open(f"/tmp/{settings.namespace}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [PYTHON, "-m", "bytewax.run", "dataflows.monitor"],
            cwd=ROOT,
            env=env_of(settings, BPWATCH_KAFKA_TAIL="true"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        producer = Producer(producer_config(settings, **{"linger.ms": 1}))
        topic = settings.observations_topic
        try:
            # warm-up: the monitor is up once a first message has gone all the way through
            producer.produce(topic, msgs[0].value, msgs[0].key)
            producer.flush(10)
            up = wait_until(
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
                raise RuntimeError(f"the monitor did not start; see {log.name}")
            poller = _Poller(make_client(settings), settings.anomalies_index)
            poller.start()
            if listener is not None:
                listener.start()
            produced: dict[str, float] = {}
            start = time.monotonic()
            for i, m in enumerate(msgs[1:], 1):
                due = start + (i - 1) / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                producer.produce(topic, m.value, m.key)
                if ids[i] is not None:
                    produced.setdefault(ids[i], time.time())
                producer.poll(0)
            producer.flush(30)
            sent_s = time.monotonic() - start
            time.sleep(5.0)  # let the tail arrive
            poller.stop.set()
            poller.join()
            if listener is not None:
                listener.stop.set()
                listener.join()
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            es.close()
    searchable = [poller.seen[i] - t for i, t in produced.items() if i in poller.seen]
    rows = []
    actual = (len(msgs) - 1) / sent_s
    note = f"{len(searchable):,} anomaly docs, {actual:,.0f} msgs/s for {sent_s:.0f} s"
    if searchable:
        p50, p99 = percentile(searchable, 50), percentile(searchable, 99)
        rows += [
            Row("latency", "produce -> searchable p50", round(p50, 3), "s", "", None, note),
            Row("latency", "produce -> searchable p99", round(p99, 3), "s", "<= 2 s", p99 <= 2.0,
                "ES refresh_interval 1 s"),
        ]  # fmt: skip
    else:
        rows.append(Row("latency", "produce -> searchable", "no data", "", "<= 2 s", False, note))
    if listener is None:
        rows.append(Row("latency", "produce -> alert p99", "pending", "", "<= 1 s", None,
                        "the alerts step is not wired into dataflows/monitor.py yet"))  # fmt: skip
    else:
        alerts = [t - produced[i] for i, t in listener.arrived if i in produced]
        if alerts:
            p50, p99 = percentile(alerts, 50), percentile(alerts, 99)
            rows += [
                Row("latency", "produce -> alert p50", round(p50, 3), "s", "", None,
                    f"{len(alerts):,} alerts"),
                Row("latency", "produce -> alert p99", round(p99, 3), "s", "<= 1 s", p99 <= 1.0,
                    ""),
            ]  # fmt: skip
        else:
            rows.append(Row("latency", "produce -> alert", "no alerts", "", "<= 1 s", None, ""))
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--patients", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it works")
    args = parser.parse_args(argv)
    if args.quick:
        args.rate, args.seconds, args.patients = 200.0, 3.0, 100
    rows = measure(args.rate, args.seconds, args.patients)
    print_rows(rows)
    return rows


if __name__ == "__main__":
    main()
