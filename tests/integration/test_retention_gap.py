"""Downtime longer than the input topic's retention, against the REAL Kafka and Elasticsearch,
with the monitor run as production runs it (``python -m bytewax.run dataflows.monitor -r``).

The broker's retention is played by ``DeleteRecords`` (what retention does: it moves the
partition's earliest offset forward). The resumed monitor must report each partition's gap
once (an error line, the ``gap`` counter, one ``retention_gap`` dead letter per partition),
read on from the earliest offset still held, and not report it again on the next resume."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from lib.settings import Settings
from lib.sim import stream
from tests.reliability.harness import ROOT, init_recovery, monitor, namespace, read_topic, send

pytestmark = pytest.mark.integration


def _counters(log: Path) -> dict[str, int]:
    """The last counters line of a monitor log."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if " counters " in ln]
    assert lines, f"no counters line in {log}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1].split(" counters ")[1])}


def _watermarks(s: Settings) -> dict[int, tuple[int, int]]:
    from confluent_kafka import Consumer

    c = Consumer({**s.kafka_client_config(), "group.id": "gap-test"})
    try:
        topic = s.observations_topic
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            for p in range(s.kafka_partitions)
        }
    finally:
        c.close()


def test_a_retention_gap_is_reported_once_counted_and_dead_lettered(
    services: Settings, tmp_path: Path
) -> None:
    base = replace(services, model_path=(ROOT / services.model_path).resolve())
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    with namespace(base, tmp_path) as s:
        s = replace(s, sim_patients=30, sim_count=300, sim_seed=5, sim_start=start)
        records = [m.kafka_record() for m in stream.messages(s)]
        first, later = records[:120], records[120:]
        send(s, first)
        store = init_recovery(tmp_path / "store")
        assert monitor(s, store, tmp_path / "run1.log").start().wait(300) == 0
        read = _watermarks(s)  # where the snapshot stands: the end of each partition

        # the monitor is down; more readings arrive; retention deletes some of them
        send(s, later)
        ends = _watermarks(s)
        cut = {p: read[p][1] + (ends[p][1] - read[p][1]) // 2 for p in ends}
        deleted = {p: cut[p] - read[p][1] for p in cut if cut[p] > read[p][1]}
        assert sum(deleted.values()) > 10, deleted
        admin = AdminClient(s.kafka_client_config())
        futures = admin.delete_records(
            [TopicPartition(s.observations_topic, p, cut[p]) for p in deleted]
        )
        for fut in futures.values():
            fut.result(timeout=30)

        log2 = tmp_path / "run2.log"
        assert monitor(s, store, log2).start().wait(300) == 0
        text = log2.read_text(errors="replace")
        gap_lines = [ln for ln in text.splitlines() if "retention_gap topic=" in ln]
        assert len(gap_lines) == len(deleted), gap_lines
        assert all(" ERROR " in ln for ln in gap_lines)
        for p, n in deleted.items():
            assert any(f"partition={p} " in ln and f"skipped={n}:" in ln for ln in gap_lines)
        counts = _counters(log2)
        assert counts["gap"] == sum(deleted.values())
        # every message still held was read: the input is accounted for, less the gap
        assert counts["in"] == len(records) - sum(deleted.values())

        gaps = [
            m
            for m in read_topic(s, s.dlq_topic)
            if dict(m.headers() or ()).get("error") == b"retention_gap"
        ]
        assert sorted(orjson.loads(m.value())["partition"] for m in gaps) == sorted(deleted)
        for m in gaps:
            value = orjson.loads(m.value())
            p = value["partition"]
            assert (value["from_offset"], value["to_offset"]) == (read[p][1], cut[p])
            assert value["skipped"] == deleted[p] and m.key() is None

        # the next resume, with nothing new: no second report, no second dead letter
        log3 = tmp_path / "run3.log"
        assert monitor(s, store, log3).start().wait(300) == 0
        assert "retention_gap topic=" not in log3.read_text(errors="replace")
        assert _counters(log3) == counts
        again = [
            m
            for m in read_topic(s, s.dlq_topic)
            if dict(m.headers() or ()).get("error") == b"retention_gap"
        ]
        assert len(again) == len(gaps)
