"""Simulator -> REAL Kafka -> monitor -> REAL Elasticsearch + files + DLQ, reconciled exactly.

Run twice over the same topic: nothing changes. The expected outputs come from the monitor's
pure logic (lib.monitor.engine.Monitor) run in-process on the same messages, independent of Kafka,
Elasticsearch and Bytewax; the expected fates come from the simulator's fault ground truth.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
import uuid
from typing import Any

import numpy as np
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, run_main
from confluent_kafka import Consumer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataflows.monitor import build, production_io
from lib.connectors.kafka import produce_all
from lib.connectors.normal_files import iter_records
from lib.domain import FEATURE_NAMES
from lib.monitor import documents, engine
from lib.monitor.risk import RiskModel
from lib.sim import stream

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)


def _model() -> RiskModel:
    rng = np.random.default_rng(1)
    x = rng.normal(125, 20, (300, len(FEATURE_NAMES)))
    y = (x[:, FEATURE_NAMES.index("mean_sys")] > 130).astype(int)
    return RiskModel.from_pipeline(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y))


def _index(es: Any, index: str) -> dict[str, dict[str, Any]]:
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=10_000, query={"match_all": {}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def _dead_letters(kafka_config: dict[str, Any], topic: str, expected: int) -> list[Any]:
    consumer = Consumer(
        {**kafka_config, "group.id": f"dlq-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(got) <= expected:
        for msg in consumer.consume(500, 1.0 if len(got) < expected else 3.0):
            assert msg.error() is None
            got.append(msg)
        if len(got) >= expected:
            # keep polling a little: more than expected would be a failure too
            extra = consumer.consume(500, 2.0)
            got += [m for m in extra if m.error() is None]
            break
    consumer.close()
    return got


def test_simulator_kafka_monitor_elasticsearch_files_reconcile(settings_factory, es, kafka_config):
    settings = settings_factory(
        kafka_tail=False, sim_patients=80, sim_count=4000, sim_fault_rate=0.2, sim_seed=9
    )
    msgs = list(stream.messages(settings))
    assert produce_all(settings, settings.observations_topic, (m.kafka_record() for m in msgs))
    model = _model()

    # expected: the same logic in-process
    expect_index: dict[str, str] = {}
    expect_normals: set[str] = set()
    mon = engine.Monitor(model, settings.ruleset)
    for i in range(0, len(msgs), 200):
        batch = [KafkaSourceMessage(m.key, m.value) for m in msgs[i : i + 200]]
        results = mon.process(batch)
        for action, _id, doc in documents.elastic_actions(results):
            if action == "index":
                expect_index[_id] = doc["category"]  # type: ignore[index]
            else:
                expect_index.pop(_id, None)
        expect_normals |= {rec["observation_id"] for _, rec in documents.normal_records(results)}
    fates = collections.Counter(e.fate for m in msgs for e in m.expected)

    def run_monitor(on_fresh_start: str = "refuse") -> dict[str, int]:
        stats: list[dict[str, int]] = []
        started = time.perf_counter()
        run = dataclasses.replace(settings, normal_on_fresh_start=on_fresh_start)
        run_main(build(run, io=production_io(run, TestingSink(stats)), model=model))
        elapsed = time.perf_counter() - started
        log.warning(
            "monitor e2e: %d messages in %.2fs = %.0f msg/s (Kafka -> ES + files + DLQ)",
            len(msgs), elapsed, len(msgs) / elapsed,
        )  # fmt: skip
        return stats[-1]

    counts = run_monitor()
    assert counts["in"] == len(msgs)
    assert counts["normal"] + counts["anomaly"] == fates["reading"]
    for fate in ("dead_letter", "ignored", "retracted", "duplicate"):
        assert counts[fate] == fates[fate], fate

    index = _index(es, settings.anomalies_index)
    assert set(index) == set(expect_index)
    assert {k: v["category"] for k, v in index.items()} == expect_index
    lines = list(iter_records(settings.normal_dir))
    assert len(lines) == counts["normal"]
    assert {r["observation_id"] for r in lines} == expect_normals
    assert len({(r["observation_id"], r["version"]) for r in lines}) == len(lines)

    dlq = _dead_letters(kafka_config, settings.dlq_topic, counts["dead_letter"])
    assert len(dlq) == counts["dead_letter"]
    sent = {m.value for m in msgs}
    want_reasons = collections.Counter(
        e.reason for m in msgs for e in m.expected if e.fate == "dead_letter"
    )
    assert collections.Counter(dict(d.headers())["error"].decode() for d in dlq) == want_reasons
    assert all(d.value() in sent for d in dlq)  # original bytes, unchanged
    assert all(
        dict(d.headers())["source"].startswith(settings.observations_topic.encode()) for d in dlq
    )

    # alerts: one Kafka message per alert document, same ids
    alerts_kafka = _dead_letters(kafka_config, settings.alerts_topic, 1)
    alert_index = _index(es, settings.alerts_index)
    assert alert_index, "a cohort with 20% faults and stage-2 patients should raise alerts"
    alerts_kafka = _dead_letters(kafka_config, settings.alerts_topic, len(alert_index))
    assert sorted(dict(m.headers())["alert_id"].decode() for m in alerts_kafka) == sorted(
        alert_index
    )

    # the same topic again (a fresh start without recovery replays everything): no change
    # the files exist and there is no store: the default refuses, without touching them
    before = sorted(p.read_bytes() for p in settings.normal_dir.rglob("*.jsonl"))
    with pytest.raises(Exception) as refused:
        run_monitor()
    assert "BPWATCH_NORMAL_ON_FRESH_START" in str(refused.value.__cause__)
    assert sorted(p.read_bytes() for p in settings.normal_dir.rglob("*.jsonl")) == before
    again = run_monitor("replace")
    assert again == counts
    index2 = _index(es, settings.anomalies_index)
    assert set(index2) == set(index)
    for _id, doc in index.items():
        assert {k: v for k, v in index2[_id].items() if k != "risk_score"} == {
            k: v for k, v in doc.items() if k != "risk_score"
        }
        assert index2[_id]["risk_score"] == pytest.approx(doc["risk_score"], abs=1e-12)
    lines2 = list(iter_records(settings.normal_dir))
    assert sorted(r["observation_id"] for r in lines2) == sorted(r["observation_id"] for r in lines)
    # nothing sent twice: the dead-letter and alert topics hold what they held
    assert len(_dead_letters(kafka_config, settings.dlq_topic, len(dlq))) == len(dlq)
    assert len(_dead_letters(kafka_config, settings.alerts_topic, len(alerts_kafka))) == len(
        alerts_kafka
    )
    assert set(_index(es, settings.alerts_index)) == set(alert_index)
