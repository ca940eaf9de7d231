"""The Elasticsearch writing step (lib.connectors.elastic.write) in a real Bytewax flow, with a
scripted client: every epoch's snapshot returns only once its actions are acknowledged, and a
bounded run ends only once everything is written. (Against the real Elasticsearch:
tests/integration/test_elastic_sink.py.)"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from lib.connectors import elastic
from lib.connectors.elastic import ElasticSink, ElasticWriteLogic
from lib.connectors.elastic.testing import TestingElasticSink
from lib.settings import Settings
from tests.unit.test_elastic_bulk import INDEX, ScriptedClient, action_lines

KEYS = 4


def _flow(items: list, sink: ElasticSink, batch_size: int = 10) -> Dataflow:
    flow = Dataflow("es_write_step")
    stream = op.input("inp", flow, TestingSource(items, batch_size=batch_size))
    keyed = op.key_on("shard", stream, lambda a: str(int(a[1].split("-")[1]) % KEYS))
    elastic.write("write", keyed, sink)
    return flow


class SlowClient(ScriptedClient):
    """Acknowledges each bulk request a few milliseconds after it came, and only then counts
    its ids as written, so a snapshot that did not wait would find them missing."""

    def __init__(self) -> None:
        super().__init__()
        self.acknowledged: set[str] = set()
        self.closed = False
        self._lock = threading.Lock()

    def bulk(self, *, operations: bytes, filter_path: str = "") -> dict:
        time.sleep(0.005)
        reply = super().bulk(operations=operations, filter_path=filter_path)
        with self._lock:
            self.acknowledged.update(_id for _op, _id in action_lines(self.calls[-1]))
        return reply

    def close(self) -> None:
        self.closed = True


def test_each_snapshot_returns_after_its_actions_are_acknowledged(monkeypatch, tmp_path: Path):
    client = SlowClient()
    queued: dict[int, set[str]] = defaultdict(set)  # per key's logic: the ids it queued
    missing_at_snapshot: list[set[str]] = []  # per snapshot: queued ids not yet acknowledged
    on_batch, snapshot = ElasticWriteLogic.on_batch, ElasticWriteLogic.snapshot

    def recording_on_batch(self: ElasticWriteLogic, values: list[Any]) -> Any:
        queued[id(self)].update(_id for _op, _id, _doc in values)
        return on_batch(self, values)

    def checking_snapshot(self: ElasticWriteLogic) -> None:
        snapshot(self)
        missing_at_snapshot.append(queued[id(self)] - client.acknowledged)

    monkeypatch.setattr(ElasticWriteLogic, "on_batch", recording_on_batch)
    monkeypatch.setattr(ElasticWriteLogic, "snapshot", checking_snapshot)
    sink = ElasticSink(Settings(es_batch_size=7), INDEX, client_factory=lambda _s: client)
    items = [("index", f"obs-{i}", {"i": i}) for i in range(200)]
    db = tmp_path / "rec"
    db.mkdir()
    init_db_dir(db, 1)
    run_main(
        _flow(items, sink),
        epoch_interval=timedelta(seconds=0),
        recovery_config=RecoveryConfig(str(db)),
    )
    # one snapshot per key and epoch it wrote in: an epoch per input batch of 10 (epoch
    # interval 0), each batch holding actions of all 4 keys
    assert len(missing_at_snapshot) == len(items) // 10 * KEYS
    assert all(missing == set() for missing in missing_at_snapshot)
    assert client.acknowledged == {f"obs-{i}" for i in range(200)}


def test_a_bounded_run_ends_only_once_everything_is_written():
    client = SlowClient()
    made: list[Any] = []

    def client_factory(_settings: Settings) -> SlowClient:
        made.append(client)
        return client

    sink = ElasticSink(Settings(es_batch_size=50), INDEX, client_factory=client_factory)
    items = [("index", f"obs-{i}", {"i": i}) for i in range(1000)]
    run_main(_flow(items, sink))
    sent = [a for call in client.calls for a in action_lines(call)]
    assert len(sent) == 1000 and {i for _, i in sent} == {f"obs-{i}" for i in range(1000)}
    assert client.acknowledged == {f"obs-{i}" for i in range(1000)}
    # one writer (and client) for the keys of the process, closed once every key ended
    assert len(made) == 1 and client.closed


def test_the_testing_sink_records_what_the_step_submits_in_order():
    """The recording writer stands behind the very same step: per key, the actions in the
    order they came; nothing deduplicated (that is the bulk core's job, tested apart)."""
    recorded: list[Any] = []
    items = [("index", f"obs-{i}", {"i": i}) for i in range(40)]
    items.append(("delete", "obs-4", None))
    run_main(_flow(items, TestingElasticSink(recorded), batch_size=7))
    assert sorted(recorded, key=repr) == sorted(items, key=repr)
    for key in range(KEYS):
        mine = [a for a in items if int(a[1].split("-")[1]) % KEYS == key]
        assert [a for a in recorded if a in mine] == mine
