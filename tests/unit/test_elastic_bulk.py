"""Unit tests of bulk_write's retry/error logic with a scripted stand-in for the client.

The real-service behaviour (indexing, replay, delete, unreachable host) is covered by
tests/integration/test_elastic_sink.py; here we script responses that a healthy local
cluster cannot be made to give on demand (item-level 429, 503, 401).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
import pytest
from elastic_transport import (
    ApiResponseMeta,
    ConnectionError,
    HttpHeaders,
    NodeConfig,
    TlsError,
)
from elasticsearch import ApiError, AuthenticationException

from lib.connectors.elastic import (
    BulkWriter,
    ElasticSink,
    FailureLatch,
    RetryPolicy,
    bulk_write,
    dedupe_actions,
)
from lib.errors import IndexingError, ServiceError
from lib.settings import Settings

INDEX = "t-bp-anomalies"


def api_error(status: int, body: Any = None, cls: type[ApiError] = ApiError) -> ApiError:
    meta = ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=HttpHeaders(),
        duration=0.0,
        node=NodeConfig("http", "127.0.0.1", 9200),
    )
    return cls(f"status {status}", meta=meta, body=body or {})


def ok_item(op: str, status: int = 200) -> dict:
    return {op: {"_index": INDEX, "status": status}}


def err_item(op: str, status: int, kind: str, reason: str) -> dict:
    return {op: {"_index": INDEX, "status": status, "error": {"type": kind, "reason": reason}}}


class ScriptedClient:
    """Answers each bulk call with the next scripted reply (a callable of the operations)."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.calls: list[list[dict]] = []

    def bulk(self, *, operations: bytes, filter_path: str = "") -> dict:
        # the sink sends the NDJSON body the client would have encoded from these lines
        lines = [orjson.loads(line) for line in operations.splitlines()]
        self.calls.append(lines)
        reply = self.replies.pop(0) if self.replies else all_ok
        if isinstance(reply, Exception):
            raise reply
        return reply(lines)

    def close(self) -> None:
        pass


def action_lines(operations: list[dict]) -> list[tuple[str, str]]:
    return [
        (op, meta["_id"])
        for line in operations
        for op, meta in line.items()
        if op in ("index", "update", "delete") and isinstance(meta, dict) and "_index" in meta
    ]


def all_ok(operations: list[dict]) -> dict:
    items = [
        ok_item(op, 404 if op == "delete" and _id.startswith("missing") else 200)
        for op, _id in action_lines(operations)
    ]
    return {"errors": False, "items": items}


def sink_of(client: Any, failures: FailureLatch | None = None, **settings: Any) -> ElasticSink:
    """A sink writing with ``client``; its writer's failures latch apart from every other
    test's (``failures``, or its own)."""
    return ElasticSink(
        Settings(**settings),
        INDEX,
        client_factory=lambda _s: client,
        failures=failures or FailureLatch(),
    )


def docs(n: int) -> list[tuple[str, str, dict]]:
    return [
        ("index", f"obs-{i}", {"observation_id": f"obs-{i}", "systolic": 150.0}) for i in range(n)
    ]


def test_retry_schedule_is_deterministic_exponential_and_capped():
    policy = RetryPolicy(initial_s=0.5, multiplier=2.0, max_s=3.0, budget_s=10.0)
    assert list(policy.delays()) == [0.5, 1.0, 2.0, 3.0, 3.0]
    unbounded = RetryPolicy(initial_s=1.0, max_s=4.0).delays()
    assert [next(unbounded) for _ in range(6)] == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_dedupe_keeps_last_action_per_id_in_order():
    actions = [
        ("index", "a", {"v": 1}),
        ("index", "b", {"v": 1}),
        ("delete", "a", None),
        ("index", "c", {"v": 1}),
        ("index", "b", {"v": 2}),
    ]
    kept, superseded = dedupe_actions(actions)
    assert kept == [("delete", "a", None), ("index", "c", {"v": 1}), ("index", "b", {"v": 2})]
    assert superseded == 2
    with pytest.raises(ValueError, match="unknown action"):
        dedupe_actions([("upsert", "a", {})])


def test_index_then_delete_in_one_request_ends_deleted():
    client = ScriptedClient()
    stats = bulk_write(client, INDEX, [("index", "x", {"a": 1}), ("delete", "x", None)])
    assert action_lines(client.calls[0]) == [("delete", "x")]
    assert (stats.docs, stats.deleted, stats.superseded) == (1, 1, 1)


def test_delete_of_missing_document_is_fine():
    stats = bulk_write(ScriptedClient(), INDEX, [("delete", "missing-1", None)])
    assert (stats.deleted, stats.not_found) == (0, 1)


def test_connection_errors_back_off_then_succeed_without_loss():
    sleeps: list[float] = []
    client = ScriptedClient(ConnectionError("refused"), api_error(503), ConnectionError("refused"))
    stats = bulk_write(
        client, INDEX, docs(5), retry=RetryPolicy(initial_s=0.1), sleep=sleeps.append
    )
    assert sleeps == [0.1, 0.2, 0.4]
    assert stats.retries == 3 and stats.indexed == 5
    assert all(action_lines(c) == action_lines(client.calls[0]) for c in client.calls)


def test_item_level_429_retries_only_the_rejected_items():
    def partial(operations: list[dict]) -> dict:
        items = []
        for op, _id in action_lines(operations):
            if _id in ("obs-1", "obs-3"):
                items.append(err_item(op, 429, "es_rejected_execution_exception", "queue full"))
            else:
                items.append(ok_item(op, 201))
        return {"errors": True, "items": items}

    sleeps: list[float] = []
    client = ScriptedClient(partial)
    stats = bulk_write(client, INDEX, docs(5), sleep=sleeps.append)
    assert action_lines(client.calls[1]) == [("index", "obs-1"), ("index", "obs-3")]
    assert stats.indexed == 5 and stats.retries == 1 and sleeps == [0.5]


def test_outage_with_budget_raises_instead_of_dropping(caplog):
    client = ScriptedClient(*[ConnectionError("refused")] * 50)
    sleeps: list[float] = []
    with pytest.raises(IndexingError, match="did not accept 5 of 5") as err:
        bulk_write(
            client,
            INDEX,
            docs(5),
            retry=RetryPolicy(initial_s=1.0, max_s=4.0, budget_s=10.0),
            sleep=sleeps.append,
        )
    assert sleeps == [1.0, 2.0, 4.0]  # the next 4.0 would exceed the budget
    assert INDEX in str(err.value)
    assert len(client.calls) == 4


def test_mapping_error_raises_naming_index_and_reason_without_values():
    reason = (
        "failed to parse field [systolic] of type [float] in document with id 'obs-2'. "
        "Preview of field's value: 'Jane Doe'"
    )

    def mapping_error(operations: list[dict]) -> dict:
        items = [
            err_item(op, 400, "document_parsing_exception", reason)
            if _id == "obs-2"
            else ok_item(op, 201)
            for op, _id in action_lines(operations)
        ]
        return {"errors": True, "items": items}

    with pytest.raises(IndexingError) as err:
        bulk_write(ScriptedClient(mapping_error), INDEX, docs(4), sleep=lambda _s: None)
    text = str(err.value)
    assert INDEX in text and "document_parsing_exception" in text and "systolic" in text
    assert "Jane Doe" not in text


def test_wrong_credentials_raise_at_once_without_retry():
    client = ScriptedClient(api_error(401, cls=AuthenticationException))
    sleeps: list[float] = []
    with pytest.raises(ServiceError, match="BPWATCH_ES_USERNAME") as err:
        bulk_write(client, INDEX, docs(3), sleep=sleeps.append)
    assert "BPWATCH_ES_API_KEY" in str(err.value)
    assert sleeps == [] and len(client.calls) == 1


def test_tls_failure_is_a_configuration_error_not_an_outage():
    client = ScriptedClient(TlsError("certificate verify failed"))
    with pytest.raises(ServiceError, match="BPWATCH_ES_CA_CERTS"):
        bulk_write(client, INDEX, docs(2), sleep=lambda _s: pytest.fail("retried"))
    assert len(client.calls) == 1


def test_bad_request_for_the_whole_bulk_is_permanent():
    client = ScriptedClient(api_error(400, {"error": {"type": "illegal_argument_exception"}}))
    with pytest.raises(IndexingError, match="illegal_argument_exception"):
        bulk_write(client, INDEX, docs(2), sleep=lambda _s: None)
    assert len(client.calls) == 1


def test_one_log_line_per_request_without_documents(caplog):
    caplog.set_level(logging.INFO, logger="lib.connectors.elastic")
    doc = {"observation_id": "obs-0", "patient_name": "Jane Doe", "systolic": 190.0}
    bulk_write(ScriptedClient(), INDEX, [("index", "obs-0", doc)])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith(f"docs=1 index={INDEX} took=") and "retries=0" in lines[0]
    assert "Jane" not in lines[0]


def test_sink_splits_batches_by_settings_and_dedupes_across_them():
    client = ScriptedClient()
    sink = sink_of(client, es_batch_size=3)
    part = sink.logic()
    items = [*docs(7), ("delete", "obs-0", None)]
    part.on_batch(items)
    part.snapshot()
    sent = [action_lines(c) for c in client.calls]
    assert [len(s) for s in sent] == [3, 3, 1]
    flat = [a for s in sent for a in s]
    assert flat.count(("delete", "obs-0")) == 1 and ("index", "obs-0") not in flat
    assert len({_id for _op, _id in flat}) == 7


def test_sink_logs_one_line_per_batch_however_many_requests(caplog):
    caplog.set_level(logging.INFO, logger="lib.connectors.elastic")
    client = ScriptedClient()
    part = sink_of(client, es_batch_size=3).logic()
    part.on_batch([*docs(7), ("delete", "obs-0", None)])
    part.on_batch([])
    part.snapshot()
    assert len(client.calls) == 3
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith(f"docs=7 index={INDEX} took=")
    assert "retries=0 indexed=6 updated=0 deleted=1 not_found=0 superseded=1" in lines[0]


def test_encoded_body_is_what_the_client_would_have_sent():
    from datetime import UTC, datetime

    import numpy as np

    from lib.connectors.elastic import encode_actions, orjson_serializers

    actions = [
        ("index", 'obs-"1"', {"sys": np.float64(150.5), "at": datetime(2026, 1, 2, tzinfo=UTC)}),
        ("delete", "obs-2", None),
        ("index", "obs-é", {"nested": {"a": [1, 2.5, None]}, "name": "ünï", "nan": float("nan")}),
        ("update", "ep-ü", {"risk": np.float32(0.5), "at": datetime(2026, 1, 3, tzinfo=UTC)}),
    ]
    lines: list[dict] = []
    for op, _id, doc in actions:  # the operations the client used to encode itself
        if op == "update":
            lines.append({op: {"_index": INDEX, "_id": _id, "retry_on_conflict": 3}})
            lines.append({"doc": doc, "doc_as_upsert": True})
            continue
        lines.append({op: {"_index": INDEX, "_id": _id}})
        if doc is not None:
            lines.append(doc)
    client_body = orjson_serializers()["application/x-ndjson"].dumps(lines)
    assert b"".join(line for _, line in encode_actions(INDEX, actions)) == client_body


def test_unserialisable_document_is_a_permanent_error_naming_the_index():
    with pytest.raises(IndexingError, match=f"index={INDEX}: a document cannot be serialised"):
        bulk_write(ScriptedClient(), INDEX, [("index", "x", {"v": object()})])


def test_writer_splits_requests_by_bytes_as_well_as_count():
    from lib.connectors.elastic import encode_actions

    client = ScriptedClient()
    one = len(encode_actions(INDEX, docs(1))[0][1])
    writer = BulkWriter(client, INDEX, 100, RetryPolicy(), max_bytes=3 * one + 1)
    writer.wait(writer.submit(docs(7)))
    writer.close()
    assert [len(action_lines(c)) for c in client.calls] == [3, 3, 1]


def test_large_documents_are_cut_at_the_sinks_byte_limit():
    from lib.connectors.elastic import MAX_BULK_BYTES

    client = ScriptedClient()
    part = sink_of(client, es_batch_size=100).logic()
    big = "x" * (MAX_BULK_BYTES // 3)  # three such documents do not fit one request
    part.on_batch([("index", f"obs-{i}", {"note": big}) for i in range(4)])
    part.on_eof()
    assert [len(action_lines(c)) for c in client.calls] == [2, 2]


# -- the background writer: asynchronous within an epoch, complete at its end ---------------


class GatedClient(ScriptedClient):
    """A client whose bulk calls wait until the test opens the gate."""

    def __init__(self, *replies: Any) -> None:
        super().__init__(*replies)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.closed = False

    def bulk(self, *, operations: bytes, filter_path: str = "") -> dict:
        self.entered.set()
        assert self.gate.wait(10), "test never opened the gate"
        return super().bulk(operations=operations, filter_path=filter_path)

    def close(self) -> None:
        self.closed = True


def gated_part(client: GatedClient, **settings: Any) -> Any:
    sink = sink_of(client, **settings)
    return sink, sink.logic()


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a thread; the list gets "done" or the exception it raised."""
    out: list[Any] = []

    def run() -> None:
        try:
            fn()
            out.append("done")
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_on_batch_returns_before_the_bulk_is_acknowledged_and_snapshot_waits_for_it():
    client = GatedClient()
    _, part = gated_part(client)
    part.on_batch(docs(5))  # returns while the request is still held at the gate
    assert client.entered.wait(5)
    thread, out = in_thread(part.snapshot)
    thread.join(0.3)
    assert out == [], "snapshot returned before Elasticsearch acknowledged the batch"
    client.gate.set()
    thread.join(5)
    assert out == ["done"]
    assert [len(action_lines(c)) for c in client.calls] == [5]
    part.on_eof()
    assert client.closed


def test_a_permanent_refusal_in_the_writer_is_raised_by_the_next_snapshot():
    refusal = err_item("index", 400, "strict_dynamic_mapping_exception", "field [x] not allowed")
    client = ScriptedClient(lambda ops: {"errors": True, "items": [refusal]})
    part = sink_of(client).logic()
    part.on_batch(docs(1))
    with pytest.raises(IndexingError, match=f"index={INDEX} refused _id=obs-0"):
        part.snapshot()
    with pytest.raises(IndexingError):  # and by every later write: the epoch never commits
        part.on_batch(docs(1))


def test_writer_blocks_the_worker_once_max_pending_actions_wait():
    from lib.connectors.elastic import BulkWriter

    client = GatedClient()
    writer = BulkWriter(client, INDEX, 10, RetryPolicy(), max_pending=6)
    writer.submit(docs(4))
    assert client.entered.wait(5)  # the first round is in flight, held at the gate
    thread, out = in_thread(lambda: writer.submit(docs(4)))  # 4 + 4 > 6: must wait
    thread.join(0.3)
    assert out == [], "submit did not apply backpressure"
    client.gate.set()
    thread.join(5)
    assert out == ["done"]
    writer.close()
    assert sum(len(action_lines(c)) for c in client.calls) == 8


def test_rounds_keep_the_order_of_batches_so_a_later_delete_wins():
    client = ScriptedClient()
    sink = sink_of(client, es_batch_size=2)
    a, b = sink.logic(), sink.logic()
    a.on_batch(docs(3))
    b.on_batch([("delete", "obs-1", None)])
    a.on_batch([("index", "obs-9", {"v": 1})])
    b.snapshot()
    a.on_eof()
    b.on_eof()
    index: set[str] = set()  # what Elasticsearch holds after the requests, in their order
    for op, _id in (act for c in client.calls for act in action_lines(c)):
        (index.add if op == "index" else index.discard)(_id)
    assert index == {"obs-0", "obs-2", "obs-9"}


def test_keys_of_one_sink_share_one_writer_closed_by_the_last():
    client = GatedClient()
    client.gate.set()
    clients: list[GatedClient] = []

    def client_factory(_settings: Settings) -> GatedClient:
        clients.append(client)
        return client

    sink = ElasticSink(Settings(), INDEX, client_factory=client_factory)
    parts = [sink.logic() for _ in range(8)]
    assert len(clients) == 1  # one writer (thread and client) for every key of the process
    for p in parts[:-1]:
        p.on_eof()
    assert not client.closed
    parts[-1].on_eof()
    assert client.closed


def _refusing_sink(failures: FailureLatch | None = None) -> tuple[ElasticSink, ScriptedClient]:
    client = ScriptedClient(api_error(401, cls=AuthenticationException))
    return sink_of(client, failures), client


def test_a_failure_raised_once_is_not_raised_again_by_the_partitions_close(caplog):
    # Bytewax closes every partition while it stops for the first error; a second error
    # raised there aborts the process before the first one is shown.
    caplog.set_level(logging.ERROR, logger="lib.connectors.elastic")
    sink, _ = _refusing_sink()
    parts = [sink.logic() for _ in range(2)]
    parts[0].on_batch(docs(1))
    with pytest.raises(ServiceError, match="BPWATCH_ES_PASSWORD"):
        parts[0].snapshot()
    for p in parts:
        p.on_eof()  # quiet now
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"es_writer_failed index={INDEX}")
    assert "BPWATCH_ES_PASSWORD" in lines[0]


def test_a_failure_first_seen_at_close_is_raised_by_one_close_only():
    sink, _ = _refusing_sink()
    parts = [sink.logic() for _ in range(2)]
    parts[1].on_batch(docs(2))
    with pytest.raises(ServiceError):
        parts[1].on_eof()  # the end of a bounded run: the writes are not lost silently
    parts[0].on_eof()


def test_after_one_sink_failed_another_sinks_close_does_not_raise_a_second_error():
    process = FailureLatch()  # the writers of one process share one latch
    first, _ = _refusing_sink(process)
    second, _ = _refusing_sink(process)
    a, b = first.logic(), second.logic()
    a.on_batch(docs(1))
    b.on_batch(docs(1))
    with pytest.raises(ServiceError):
        a.snapshot()  # the error that stops the dataflow
    b.on_eof()  # closed while it unwinds: logged by b's writer, not raised
    a.on_eof()


# -- partial updates with upsert ("update", _id, fields) -----------------------------------


def test_dedupe_merges_updates_into_what_came_before_them():
    first_a = {"status": "open", "acknowledged": False}
    actions = [
        ("update", "a", first_a),
        ("index", "b", {"v": 1, "w": 1}),
        ("update", "b", {"w": 2}),  # b: the index of the merged document
        ("update", "a", {"acknowledged": True, "by": "u1"}),  # a: one update, later keys win
        ("update", "c", {"s": "open"}),
        ("index", "c", {"s": "new"}),  # c: the index replaces the update
        ("update", "d", {"k": 1}),
        ("delete", "d", None),  # d: a delete ends it
        ("delete", "e", None),
        ("update", "e", {"k": 2}),  # e: after a delete the upsert makes just these fields
    ]
    kept, superseded = dedupe_actions(actions)
    assert kept == [
        ("index", "b", {"v": 1, "w": 2}),
        ("update", "a", {"status": "open", "acknowledged": True, "by": "u1"}),
        ("index", "c", {"s": "new"}),
        ("delete", "d", None),
        ("index", "e", {"k": 2}),
    ]
    assert superseded == 5
    assert first_a == {"status": "open", "acknowledged": False}  # the caller's documents kept


def test_dedupe_of_an_episode_history_is_the_document_the_updates_leave():
    history = [
        ("update", "ep", {"status": "open", "severity": "high", "acknowledged": False}),
        ("update", "ep", {"severity": "critical", "acknowledged": False, "ack_by": None}),
        ("update", "ep", {"acknowledged": True, "ack_by": "u7"}),
        ("delete", "ep", None),
        ("update", "ep", {"status": "open", "severity": "low"}),
        ("update", "ep", {"status": "resolved"}),
    ]
    assert dedupe_actions(history) == (
        [("index", "ep", {"status": "resolved", "severity": "low"})],
        5,
    )
    assert dedupe_actions(history[:3]) == (
        [("update", "ep", {"status": "open", "severity": "critical", "acknowledged": True,
                           "ack_by": "u7"})],
        2,
    )  # fmt: skip


def test_an_update_needs_a_document():
    with pytest.raises(ValueError, match="update action for _id='a' has no document"):
        dedupe_actions([("update", "a", None)])


def test_update_is_encoded_as_a_partial_document_with_upsert():
    from lib.connectors.elastic import encode_actions

    ((_, line),) = encode_actions(INDEX, [("update", "ep-1", {"status": "open", "by": None})])
    assert line == (
        b'{"update":{"_index":"t-bp-anomalies","_id":"ep-1","retry_on_conflict":3}}\n'
        b'{"doc":{"status":"open","by":null},"doc_as_upsert":true}\n'
    )


def test_updates_are_counted_and_logged(caplog):
    caplog.set_level(logging.INFO, logger="lib.connectors.elastic")
    client = ScriptedClient()
    stats = bulk_write(
        client,
        INDEX,
        [("update", "ep-1", {"a": 1}), ("update", "ep-2", {"a": 1}), ("update", "ep-1", {"b": 2}),
         ("index", "x", {"a": 1})],
    )  # fmt: skip
    assert action_lines(client.calls[0]) == [("update", "ep-2"), ("update", "ep-1"), ("index", "x")]
    assert client.calls[0][3] == {"doc": {"a": 1, "b": 2}, "doc_as_upsert": True}
    assert (stats.docs, stats.updated, stats.indexed, stats.superseded) == (3, 2, 1, 1)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "indexed=1 updated=2 deleted=0 not_found=0 superseded=1" in line


def test_an_update_that_kept_conflicting_is_retried_alone():
    def conflict(operations: list[dict]) -> dict:
        items = [
            err_item(op, 409, "version_conflict_engine_exception", "version conflict")
            if _id == "ep-2"
            else ok_item(op)
            for op, _id in action_lines(operations)
        ]
        return {"errors": True, "items": items}

    sleeps: list[float] = []
    client = ScriptedClient(conflict)
    updates = [("update", f"ep-{i}", {"status": "open"}) for i in range(3)]
    stats = bulk_write(client, INDEX, updates, sleep=sleeps.append)
    assert action_lines(client.calls[1]) == [("update", "ep-2")]
    assert (stats.updated, stats.retries, sleeps) == (3, 1, [0.5])


def test_a_conflict_of_an_index_action_is_still_a_refusal():
    def conflict(operations: list[dict]) -> dict:
        item = err_item("index", 409, "version_conflict_engine_exception", "version conflict")
        return {"errors": True, "items": [item]}

    with pytest.raises(IndexingError, match="HTTP 409"):
        bulk_write(ScriptedClient(conflict), INDEX, docs(1), sleep=lambda _s: None)


def test_an_alias_of_monthly_indices_refuses_updates():
    from lib.connectors.elastic import encode_routed
    from lib.connectors.elastic_months import MonthRouter

    router = MonthRouter("t-bp-alerts", "event_at")
    actions = [("index", "a1", {"event_at": "2026-01-02T00:00:00Z"}), ("update", "a1", {"x": 1})]
    with pytest.raises(ValueError, match="t-bp-alerts, an alias of monthly indices"):
        encode_routed(router, actions, lambda: [])
