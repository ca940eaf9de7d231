"""ExactlyOnceKafkaSink against the real broker: a crash + resume re-emits nothing already sent."""

from __future__ import annotations

import uuid

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main
from confluent_kafka import Consumer

from lib.connectors.kafka_once import ID_HEADER, ExactlyOnceKafkaSink


def _consume_all(kafka_config, topic, expect_at_least):
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    consumer.subscribe([topic])
    out = []
    idle = 0
    while idle < 3 or len(out) < expect_at_least:
        msg = consumer.poll(2)
        if msg is None:
            idle += 1
            if idle > 15:
                break
            continue
        assert msg.error() is None
        out.append(
            (msg.key(), msg.value(), dict(msg.headers())[ID_HEADER].decode(), msg.partition())
        )
    consumer.close()
    return out


def _flow(settings, items):
    flow = Dataflow("once_test")
    s = op.input("inp", flow, TestingSource(items, batch_size=5))
    keyed = op.map(
        "route",
        s,
        lambda i: (f"p{i % 4}", (f"alert-{i}", f"p{i % 4}".encode(), f"v{i}".encode(), [])),
    )
    op.output("out", keyed, ExactlyOnceKafkaSink(settings, settings.alerts_topic))
    return flow


def test_resume_after_abort_sends_each_id_once(settings, kafka_config, tmp_path):
    n = 40
    db = tmp_path / "rec"
    db.mkdir()
    init_db_dir(db, 1)
    recovery = RecoveryConfig(str(db))
    items = list(range(n))
    aborting = [*items[:23], TestingSource.ABORT(), *items[23:]]
    # epoch every batch of 5 items; abort after 23 -> the last epoch's items are re-emitted
    from datetime import timedelta

    run_main(_flow(settings, aborting), epoch_interval=timedelta(0), recovery_config=recovery)
    first = _consume_all(kafka_config, settings.alerts_topic, 20)
    assert 20 <= len(first) <= 23
    run_main(_flow(settings, aborting), epoch_interval=timedelta(0), recovery_config=recovery)
    got = _consume_all(kafka_config, settings.alerts_topic, n)
    ids = [g[2] for g in got]
    assert sorted(ids) == sorted(f"alert-{i}" for i in range(n)), "lost or duplicated ids"
    # one key -> one partition
    by_key = {}
    for key, _, _, part in got:
        by_key.setdefault(key, set()).add(part)
    assert all(len(v) == 1 for v in by_key.values())


def test_without_recovery_a_rerun_still_sends_nothing_twice(settings, kafka_config):
    items = list(range(12))
    run_main(_flow(settings, items))
    run_main(_flow(settings, items))
    got = _consume_all(kafka_config, settings.alerts_topic, 12)
    assert sorted(g[2] for g in got) == sorted(f"alert-{i}" for i in range(12))


def test_an_id_computed_twice_in_one_run_is_published_once(settings, kafka_config):
    flow = Dataflow("once_dupes")
    items = [0, 1, 2, 1, 3, 0, 4]  # ids 0 and 1 computed twice
    s = op.input("inp", flow, TestingSource(items, batch_size=3))
    keyed = op.map("route", s, lambda i: ("p", (f"alert-{i}", b"p", f"v{i}".encode(), [])))
    op.output("out", keyed, ExactlyOnceKafkaSink(settings, settings.alerts_topic))
    run_main(flow)
    got = _consume_all(kafka_config, settings.alerts_topic, 5)
    assert sorted(g[2] for g in got) == [f"alert-{i}" for i in range(5)]
