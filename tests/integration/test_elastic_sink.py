"""ElasticSink / bulk_write against the REAL local Elasticsearch (no mocks).

Each test writes into its own namespaced ``bp-anomalies`` write alias (``settings`` fixture),
or for partial updates its ``bp-episodes`` alias.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from elasticsearch import AuthenticationException, Elasticsearch

from lib.connectors.elastic import ElasticSink, RetryPolicy, bulk_write, make_client, write
from lib.domain import utc_iso
from lib.errors import IndexingError, ServiceError
from tests.reliability.relay import Relay

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


def anomaly(i: int, *, systolic: float = 165.0) -> dict[str, Any]:
    return {
        "observation_id": f"obs-{i:06d}",
        "patient_id": f"patient-{i % 37}",
        "effective_at": utc_iso(START + timedelta(minutes=i)),
        "ingested_at": utc_iso(START + timedelta(minutes=i, seconds=2)),
        "systolic": systolic + i % 20,
        "diastolic": 95.0,
        "category": "hypertension_stage_2",
        "anomaly_types": ["systolic_hypertension"],
        "severity": "high",
        "risk_score": round((i % 97) / 97, 4),
        "ruleset": "aha2017",
    }


def actions(n: int, **kw: Any) -> list[tuple[str, str, dict]]:
    return [("index", f"obs-{i:06d}", anomaly(i, **kw)) for i in range(n)]


def count(es: Elasticsearch, index: str) -> int:
    es.indices.refresh(index=index)
    return int(es.count(index=index)["count"])


def run_sink(settings, items: list, **sink_kw: Any) -> None:
    flow = Dataflow("es_sink_test")
    stream = op.input("inp", flow, TestingSource(items, batch_size=250))
    keyed_actions = op.key_on("by_shard", stream, lambda a: str(zlib.crc32(a[1].encode()) % 8))
    write("es_out", keyed_actions, ElasticSink(settings, settings.anomalies_index, **sink_kw))
    run_main(flow)


def test_flow_indexes_documents_readable_by_id(settings, es):
    index = settings.anomalies_index
    items = actions(1200)
    run_sink(settings, items)
    assert count(es, index) == 1200
    got = es.mget(index=index, ids=["obs-000000", "obs-000777", "obs-001199"])["docs"]
    assert [d["found"] for d in got] == [True, True, True]
    assert got[1]["_source"]["systolic"] == items[777][2]["systolic"]
    assert got[1]["_source"]["patient_id"] == "patient-" + str(777 % 37)


def test_replay_overwrites_and_never_duplicates(settings, es):
    index = settings.anomalies_index
    run_sink(settings, actions(500))
    # Replay the same ids with a changed value (e.g. an amended Observation).
    run_sink(settings, actions(500, systolic=170.0))
    assert count(es, index) == 500
    doc = es.get(index=index, id="obs-000003")["_source"]
    assert doc["systolic"] == 173.0


def test_delete_removes_and_missing_delete_is_fine(settings, es):
    index = settings.anomalies_index
    client = make_client(settings)
    bulk_write(client, index, actions(100))
    stats = bulk_write(
        client,
        index,
        [("delete", f"obs-{i:06d}", None) for i in range(0, 100, 10)]
        + [("delete", "never-indexed", None)],
    )
    assert (stats.deleted, stats.not_found) == (10, 1)
    assert count(es, index) == 90
    assert not es.exists(index=index, id="obs-000010")
    assert es.exists(index=index, id="obs-000011")
    client.close()


def test_index_then_delete_of_same_id_in_one_batch_ends_deleted(settings, es):
    index = settings.anomalies_index
    items = [*actions(20), ("delete", "obs-000005", None), ("index", "obs-000006", anomaly(6))]
    run_sink(settings, items)
    assert count(es, index) == 19
    assert not es.exists(index=index, id="obs-000005")


def test_mapping_error_raises_naming_index_and_reason(settings, es):
    index = settings.anomalies_index
    bad = {**anomaly(1), "patient_name": "Jane Doe"}  # the template's mapping is strict
    client = make_client(settings)
    with pytest.raises(IndexingError) as err:
        bulk_write(client, index, [("index", "obs-000000", anomaly(0)), ("index", "obs-1", bad)])
    text = str(err.value)
    assert index in text and "strict_dynamic_mapping_exception" in text
    assert "Jane Doe" not in text
    assert count(es, index) == 1  # the valid document of the batch is written
    client.close()


def test_unreachable_host_with_budget_raises_and_does_not_pretend(settings):
    client = make_client(settings, hosts=["http://127.0.0.1:1"], request_timeout=2)
    policy = RetryPolicy(initial_s=0.05, max_s=0.2, budget_s=0.6)
    started = time.monotonic()
    with pytest.raises(IndexingError, match="did not accept 50 of 50") as err:
        bulk_write(client, settings.anomalies_index, actions(50), retry=policy)
    assert time.monotonic() - started >= sum(policy.delays()) - 1e-3  # it really backed off
    assert "ConnectionError" in str(err.value)
    client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_outage_blocks_then_catches_up_without_loss(settings, es):
    """No budget: the writer blocks while the endpoint is down and finishes once it is up."""
    index = settings.anomalies_index
    es_url = settings.es_url.removeprefix("http://").removeprefix("https://")
    host, _, port = es_url.partition(":")
    # nothing listens on the relay's port until start(): an outage of Elasticsearch
    relay = Relay(host, int(port or 9200), listen_port=_free_port())
    client = make_client(settings, hosts=[f"http://127.0.0.1:{relay.port}"], request_timeout=5)
    result: dict[str, Any] = {}

    def write() -> None:
        try:
            result["stats"] = bulk_write(
                client, index, actions(300), retry=RetryPolicy(initial_s=0.1, max_s=0.4)
            )
        except Exception as exc:  # surfaced by the assertions below
            result["error"] = exc

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    time.sleep(1.5)
    assert writer.is_alive(), f"the writer gave up during the outage: {result}"
    assert count(es, index) == 0
    relay.start()
    writer.join(timeout=30)
    relay.close()
    client.close()
    assert not writer.is_alive()
    assert "error" not in result, result.get("error")
    assert result["stats"].retries >= 3 and result["stats"].indexed == 300
    assert count(es, index) == 300


def test_wrong_credentials_give_a_clear_error_and_no_retry_storm(settings):
    client = make_client(settings, basic_auth=("bpwatch-nobody", "wrong"), api_key=None)
    try:
        client.cluster.health()
    except AuthenticationException:
        pass
    else:
        client.close()
        pytest.skip("the local Elasticsearch runs without security; covered by unit tests")
    sleeps: list[float] = []
    with pytest.raises(ServiceError, match="BPWATCH_ES_PASSWORD"):
        bulk_write(client, settings.anomalies_index, actions(5), sleep=sleeps.append)
    assert sleeps == []
    client.close()


def test_bulk_throughput(settings, es, record_property):
    """Measured, not asserted tightly: docs/s of ElasticSink-sized bulks into the real ES."""
    index = settings.anomalies_index
    client = make_client(settings)
    n, batch = 20_000, settings.es_batch_size
    docs = actions(n)
    bulk_write(client, index, docs[:batch])  # warm-up (same ids, overwritten below)
    started = time.perf_counter()
    for i in range(0, n, batch):
        bulk_write(client, index, docs[i : i + batch])
    elapsed = time.perf_counter() - started
    rate = n / elapsed
    record_property("es_bulk_docs_per_s", round(rate))
    print(f"\nes_bulk_throughput docs={n} batch={batch} took={elapsed:.2f}s rate={rate:.0f}/s")
    assert count(es, index) == n
    assert rate > 500
    client.close()


# One alert episode's history as the partial updates of its bp-episodes document, in event
# order (docs/contract.md, "What each event writes").
EPISODE_UPDATES: list[dict[str, Any]] = [
    {  # opened
        "episode_id": "ep-1", "patient_id": "patient-1", "condition": "hypertensive_crisis",
        "severity": "high", "tier": "review", "status": "open",
        "opened_at": "2026-11-28T06:00:00.000Z", "last_event_at": "2026-11-28T06:00:00.000Z",
        "resolved_at": None, "acknowledged": False, "acknowledged_by": None,
        "acknowledged_at": None, "ack_note": None, "overdue": False, "overdue_at": None,
        "observation_ids": ["obs-1"], "systolic": 182.0, "diastolic": 121.0,
        "risk_score": 0.4, "ruleset": "aha2025",
    },
    {"overdue": True, "overdue_at": "2026-11-28T06:15:00.000Z"},  # overdue
    {  # escalated: a new level, to acknowledge again
        "severity": "critical", "tier": "urgent", "observation_ids": ["obs-2"],
        "systolic": 195.0, "diastolic": 125.0, "risk_score": 0.7,
        "last_event_at": "2026-11-28T06:20:00.000Z", "acknowledged": False,
        "acknowledged_by": None, "acknowledged_at": None, "ack_note": None, "overdue": False,
        "overdue_at": None,
    },
    {  # acknowledged
        "acknowledged": True, "acknowledged_by": "user-7",
        "acknowledged_at": "2026-11-28T06:25:00.000Z", "ack_note": "called the patient",
    },
    {  # resolved
        "status": "resolved", "resolved_at": "2026-11-28T09:00:00.000Z",
        "last_event_at": "2026-11-28T09:00:00.000Z",
    },
]  # fmt: skip
# ... and the document they leave, field by field from the updates above
EPISODE_AFTER = {
    "episode_id": "ep-1", "patient_id": "patient-1", "condition": "hypertensive_crisis",
    "severity": "critical", "tier": "urgent", "status": "resolved",
    "opened_at": "2026-11-28T06:00:00.000Z", "last_event_at": "2026-11-28T09:00:00.000Z",
    "resolved_at": "2026-11-28T09:00:00.000Z", "acknowledged": True,
    "acknowledged_by": "user-7", "acknowledged_at": "2026-11-28T06:25:00.000Z",
    "ack_note": "called the patient", "overdue": False, "overdue_at": None,
    "observation_ids": ["obs-2"], "systolic": 195.0, "diastolic": 125.0, "risk_score": 0.7,
    "ruleset": "aha2025",
}  # fmt: skip


def _episode(es: Elasticsearch, index: str, _id: str) -> dict[str, Any]:
    es.indices.refresh(index=index)
    (hit,) = es.search(index=index, query={"ids": {"values": [_id]}})["hits"]["hits"]
    return dict(hit["_source"])


def test_partial_updates_end_in_the_merged_document_and_a_replay_changes_nothing(settings, es):
    """``update`` actions on the real Elasticsearch (the ``bp-episodes`` alias): applied one
    request at a time, or merged by the bulk core into one request, the history ends in the
    same document; the same history again (a replay) leaves it as it is."""
    index = settings.episodes_index
    client = make_client(settings)
    try:
        for fields in EPISODE_UPDATES:  # one request per event: Elasticsearch merges
            assert bulk_write(client, index, [("update", "ep-1", fields)]).updated == 1
        assert _episode(es, index, "ep-1") == EPISODE_AFTER
        # all of it in one call: the bulk core merges the updates into one
        stats = bulk_write(client, index, [("update", "ep-2", f) for f in EPISODE_UPDATES])
        assert (stats.docs, stats.updated, stats.superseded) == (1, 1, len(EPISODE_UPDATES) - 1)
        ep2 = {**EPISODE_AFTER, "episode_id": "ep-1"}
        assert _episode(es, index, "ep-2") == ep2
        # a replay of the history, event by event and all at once, onto the documents
        for fields in EPISODE_UPDATES:
            bulk_write(client, index, [("update", "ep-1", fields)])
        bulk_write(client, index, [("update", "ep-2", f) for f in EPISODE_UPDATES])
        assert _episode(es, index, "ep-1") == EPISODE_AFTER
        assert _episode(es, index, "ep-2") == ep2
        assert count(es, index) == 2
    finally:
        client.close()
