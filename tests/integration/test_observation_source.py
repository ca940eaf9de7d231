"""ObservationSource against the real broker: the same messages, fields, end and resume as
bytewax's stock KafkaSource, as lean SourceRecord tuples."""

from __future__ import annotations

from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from confluent_kafka import OFFSET_BEGINNING

from lib.connectors.kafka import ObservationSource, SourceRecord, produce_all
from lib.tools import admin

FIELDS = ("key", "value", "headers", "topic", "partition", "offset", "timestamp")


def _read(settings, source_cls, recovery=None):
    out: list = []
    flow = Dataflow("source_test")
    source = source_cls(
        settings.kafka_brokers.split(","),
        [settings.observations_topic],
        tail=False,
        starting_offset=OFFSET_BEGINNING,
        batch_size=7,
    )
    op.output("out", op.input("inp", flow, source), TestingSink(out))
    run_main(flow, epoch_interval=None, recovery_config=recovery)
    return out


def _records(n: int):
    return [
        (f"patient-{i % 5}".encode(), f'{{"n": {i}}}'.encode(), [("h", str(i).encode())])
        for i in range(n)
    ]


def test_same_messages_and_fields_as_the_stock_source(settings):
    admin.ensure_topics(settings)
    produce_all(settings, settings.observations_topic, _records(60))
    lean = _read(settings, ObservationSource)
    stock = _read(settings, KafkaSource)
    assert len(lean) == len(stock) == 60
    assert all(type(m) is SourceRecord for m in lean)
    key = lambda m: (m.partition, m.offset)  # noqa: E731
    assert [tuple(getattr(m, f) for f in FIELDS) for m in sorted(lean, key=key)] == [
        tuple(getattr(m, f) for f in FIELDS) for m in sorted(stock, key=key)
    ]
    assert sorted(int(dict(m.headers)["h"]) for m in lean) == list(range(60))


def test_resume_reads_only_what_came_after_the_snapshot(settings, tmp_path):
    admin.ensure_topics(settings)
    db = tmp_path / "rec"
    db.mkdir()
    init_db_dir(db, 1)
    recovery = RecoveryConfig(str(db))
    produce_all(settings, settings.observations_topic, _records(30))
    first = _read(settings, ObservationSource, recovery)
    produce_all(settings, settings.observations_topic, _records(45)[30:])
    second = _read(settings, ObservationSource, recovery)
    assert len(first) == 30
    assert sorted(m.value for m in second) == sorted(v for _, v, _ in _records(45)[30:])
