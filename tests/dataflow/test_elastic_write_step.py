"""The Elasticsearch writing step (lib.connectors.elastic.write) in a real Bytewax flow, with a
scripted client: every epoch's snapshot returns only once its actions are acknowledged, and a
bounded run ends only once everything is written. (Against the real Elasticsearch:
tests/integration/test_elastic_sink.py.)"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from lib.connectors import elastic
from lib.connectors.elastic import ElasticSink, ElasticWriteLogic
from lib.settings import Settings
from tests.unit.test_elastic_bulk import INDEX, ScriptedClient, action_lines


def _flow(items: list, sink: ElasticSink) -> Dataflow:
    flow = Dataflow("es_write_step")
    stream = op.input("inp", flow, TestingSource(items, batch_size=10))
    keyed = op.key_on("shard", stream, lambda a: str(int(a[1].split("-")[1]) % 4))
    elastic.write("write", keyed, sink)
    return flow


def test_each_snapshot_returns_after_its_actions_are_acknowledged(monkeypatch, tmp_path: Path):
    seen: list[tuple[int, int]] = []  # (acknowledged batches, this key's last batch) at snapshots
    original = ElasticWriteLogic.snapshot

    def snapshot(self: ElasticWriteLogic) -> None:
        original(self)
        seen.append((self._writer._done, self._ticket))

    monkeypatch.setattr(ElasticWriteLogic, "snapshot", snapshot)
    client = ScriptedClient()
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
    assert len(seen) >= 4  # one per key and epoch it wrote in
    assert all(done >= ticket for done, ticket in seen)
    sent = {_id for call in client.calls for _op, _id in action_lines(call)}
    assert sent == {f"obs-{i}" for i in range(200)}


def test_a_bounded_run_ends_only_once_everything_is_written():
    client = ScriptedClient()
    sink = ElasticSink(Settings(es_batch_size=50), INDEX, client_factory=lambda _s: client)
    items = [("index", f"obs-{i}", {"i": i}) for i in range(1000)]
    run_main(_flow(items, sink))
    sent = [a for call in client.calls for a in action_lines(call)]
    assert len(sent) == 1000 and {i for _, i in sent} == {f"obs-{i}" for i in range(1000)}
    assert sink._writer is None  # every key ended: the writer and its client are closed
