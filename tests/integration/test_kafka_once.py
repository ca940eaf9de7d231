"""IdempotentKafkaSink against the real broker: a crash + resume re-emits nothing already sent."""

from __future__ import annotations

import logging
import re

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from lib.connectors.kafka import ID_HEADER, IdempotentKafkaSink
from tests.reliability.harness import read_topic


def _consume_all(settings):
    """``(key, value, id, partition)`` of every message on the alerts topic."""
    return [
        (m.key(), m.value(), dict(m.headers())[ID_HEADER].decode(), m.partition())
        for m in read_topic(settings, settings.alerts_topic)
    ]


def _flow(settings, items):
    flow = Dataflow("once_test")
    s = op.input("inp", flow, TestingSource(items, batch_size=5))
    keyed = op.map(
        "route",
        s,
        lambda i: (f"p{i % 4}", (f"alert-{i}", f"p{i % 4}".encode(), f"v{i}".encode(), [])),
    )
    op.output("out", keyed, IdempotentKafkaSink(settings, settings.alerts_topic))
    return flow


def test_resume_after_abort_sends_each_id_once(settings, tmp_path):
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
    first = _consume_all(settings)
    assert 20 <= len(first) <= 23
    run_main(_flow(settings, aborting), epoch_interval=timedelta(0), recovery_config=recovery)
    got = _consume_all(settings)
    ids = [g[2] for g in got]
    assert sorted(ids) == sorted(f"alert-{i}" for i in range(n)), "lost or duplicated ids"
    # one key -> one partition
    by_key = {}
    for key, _, _, part in got:
        by_key.setdefault(key, set()).add(part)
    assert all(len(v) == 1 for v in by_key.values())


def test_without_recovery_a_rerun_still_sends_nothing_twice(settings):
    items = list(range(12))
    run_main(_flow(settings, items))
    run_main(_flow(settings, items))
    got = _consume_all(settings)
    assert sorted(g[2] for g in got) == sorted(f"alert-{i}" for i in range(12))


def test_an_id_computed_twice_in_one_run_is_published_once(settings):
    flow = Dataflow("once_dupes")
    items = [0, 1, 2, 1, 3, 0, 4]  # ids 0 and 1 computed twice
    s = op.input("inp", flow, TestingSource(items, batch_size=3))
    keyed = op.map("route", s, lambda i: ("p", (f"alert-{i}", b"p", f"v{i}".encode(), [])))
    op.output("out", keyed, IdempotentKafkaSink(settings, settings.alerts_topic))
    run_main(flow)
    got = _consume_all(settings)
    assert sorted(g[2] for g in got) == [f"alert-{i}" for i in range(5)]


def test_each_batch_logs_one_key_value_line(settings, caplog):
    caplog.set_level(logging.INFO, logger="lib.connectors.kafka")
    for _ in range(2):  # the second run finds every id already sent
        run_main(_flow(settings, list(range(12))))
    pattern = re.compile(
        rf"topic={re.escape(settings.alerts_topic)} partition=\d+ sent=(\d+) "
        r"skipped_already_sent=(\d+) took=\d+\.\d{3}s"
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "lib.connectors.kafka"]
    batches = [pattern.fullmatch(line) for line in lines if line.startswith("topic=")]
    assert batches and all(batches) and len(batches) <= 2 * 12
    assert sum(int(m[1]) for m in batches) == 12
    assert sum(int(m[2]) for m in batches) == 12


def test_the_earlier_import_paths_name_the_same_sink():
    from lib.connectors.kafka_once import ExactlyOnceKafkaSink

    assert ExactlyOnceKafkaSink is IdempotentKafkaSink
