"""Elasticsearch output: bulk writes with retries and backpressure, idempotent by ``_id``;
and :func:`make_client`, the one Elasticsearch client factory (sinks, tools, tests).

An *action* (:func:`write` takes ``(key, action)`` items)::

    ("index", _id, doc)    create or overwrite the document ``_id``
    ("delete", _id, None)  remove it (a missing document is fine: 404 = already gone)

:func:`bulk_write` does the work and needs no Bytewax (tools and tests use it directly);
:class:`ElasticSink` and :func:`write` make it a dataflow step: a stateful step keyed like the
step that made the actions (patient shards), whose keys hand their batches to one background
:class:`BulkWriter` per process (thread and client), so the dataflow keeps computing while
Elasticsearch indexes and no document crosses between workers.

Guarantee: **at-least-once; idempotent by ``_id``**, so a replay overwrites and never
duplicates. Within one bulk round only the last action per ``_id`` is sent (an ``index``
followed by a ``delete`` of the same id ends deleted); rounds go in the order the batches came.
A key's snapshot, taken by Bytewax at the end of every epoch it wrote in, returns only once
Elasticsearch has acknowledged every action it queued (and so does the end of a bounded run),
so no epoch is committed to the recovery store before its documents are written:

* transient failures (connection refused/reset, timeouts, HTTP 429 and 5xx, for the whole
  request or for single items) are retried, only the failed actions, on a deterministic
  exponential schedule (:class:`RetryPolicy`, no jitter). By default there is no retry
  budget: during an outage the writer keeps retrying and the worker blocks once
  ``PENDING_BATCHES x BPWATCH_ES_BATCH_SIZE`` actions (8,000) wait, which stops it reading its input
  (backpressure); memory stays bounded. With a budget,
  :class:`~lib.errors.IndexingError` is raised when it is spent (by the worker's next
  write or snapshot); the flow stops before that epoch commits and a restart with recovery
  replays it. Nothing is ever dropped.
* write blocks (``cluster_block_exception``: ``index.blocks.write``, ``index.blocks.read_only``,
  or the flood-stage disk watermark's ``index.blocks.read_only_allow_delete``; HTTP 403 or 429,
  for the whole request or for single items) are retried like an outage, whatever the status,
  until an operator lifts the block. Instead of one ``es_retry`` line per retry they log one
  ``es_write_blocked`` line at most every :data:`BLOCK_LOG_EVERY_S` seconds, naming the blocked
  index, the block and the fix, then one ``es_write_unblocked`` line once writes go through.
* permanent refusals (400 mapping errors such as ``mapper_parsing_exception`` or
  ``strict_dynamic_mapping_exception``, 404 on index, 413, other 4xx) raise
  :class:`~lib.errors.IndexingError` naming the index and the reason (field values are cut
  from the reason: no PHI in errors or logs).
* wrong credentials (401/403) raise :class:`~lib.errors.ServiceError` naming
  ``BPWATCH_ES_API_KEY`` / ``BPWATCH_ES_USERNAME`` / ``BPWATCH_ES_PASSWORD``, at once: no
  retry storm; so does a failed TLS handshake (naming ``BPWATCH_ES_CA_CERTS``).

Each bulk round of the writer logs one line, however many requests it took (so does each
:func:`bulk_write` call): ``docs=500 index=bp-anomalies took=0.040s retries=0 ...``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from lib.connectors.elastic_months import MonthRouter
from lib.errors import IndexingError, ServiceError
from lib.settings import Settings

__all__ = [
    "BLOCK_LOG_EVERY_S",
    "MAX_BULK_BYTES",
    "TOOL_RETRIES",
    "Action",
    "BulkStats",
    "BulkWriter",
    "ElasticSink",
    "ElasticWriteLogic",
    "Encoded",
    "RetryPolicy",
    "WriteBlock",
    "bulk_write",
    "chunks",
    "dedupe_actions",
    "encode_actions",
    "make_client",
    "write",
]

logger = logging.getLogger(__name__)

Action = tuple[str, str, Mapping[str, Any] | None]

_OPS = ("index", "delete")
TOOL_RETRIES = 3  # client-side retries of the command-line tools (elasticsearch-py's default)
# Largest bulk request body sent by ElasticSink, well below Elasticsearch's
# http.max_content_length (100 MB): a batch of large documents is split by bytes as well as
# by settings.es_batch_size actions.
MAX_BULK_BYTES = 10 * 1024 * 1024
# Bulk requests' worth of actions that may wait for the writer before the worker blocks: a
# Kafka activation brings several thousand readings at once; 8,000 documents are ~25 MB.
PENDING_BATCHES = 16
_CREDENTIALS_HINT = (
    "set BPWATCH_ES_API_KEY, or BPWATCH_ES_USERNAME and BPWATCH_ES_PASSWORD, to credentials "
    "allowed to write this index"
)
# A write block is reported once when first met, then at most once per this many seconds.
BLOCK_LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Deterministic exponential backoff: ``initial_s * multiplier**k``, capped at ``max_s``.

    ``budget_s`` bounds the *sum of backoff delays* for one bulk request (not wall time, so
    the schedule is reproducible); ``None`` retries until Elasticsearch answers (backpressure).
    """

    initial_s: float = 0.5
    multiplier: float = 2.0
    max_s: float = 30.0
    budget_s: float | None = None

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        spent = 0.0
        while self.budget_s is None or spent + delay <= self.budget_s + 1e-9:
            yield delay
            spent += delay
            delay = min(delay * self.multiplier, self.max_s)


@dataclass(slots=True)
class BulkStats:
    """What one :func:`bulk_write` call did."""

    docs: int = 0  # distinct actions sent (after keeping the last per _id)
    indexed: int = 0
    deleted: int = 0
    not_found: int = 0  # deletes of documents that were not there
    superseded: int = 0  # earlier actions on an _id replaced by a later one in the batch
    requests: int = 0
    retries: int = 0
    took_s: float = 0.0

    def add(self, other: BulkStats) -> None:
        for name in BulkStats.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def dedupe_actions(actions: Iterable[Action]) -> tuple[list[Action], int]:
    """Keep the last action per ``_id`` (in the order of those last actions); count the rest."""
    last: dict[str, Action] = {}
    total = 0
    for action in actions:
        op, _id, doc = action
        if op not in _OPS:
            raise ValueError(f"unknown action {op!r}: use 'index' or 'delete'")
        if op == "index" and doc is None:
            raise ValueError(f"index action for _id={_id!r} has no document")
        total += 1
        last.pop(_id, None)
        last[_id] = action
    return list(last.values()), total - len(last)


def _safe_reason(error: Any) -> str:
    """``type: reason`` of an Elasticsearch error, with any field value preview cut off."""
    if not isinstance(error, Mapping):
        return str(error)[:300]
    kind = error.get("type", "error")
    reason = str(error.get("reason", ""))
    reason = reason.split(". Preview of field's value", 1)[0]
    reason = reason.split(" Preview of field's value", 1)[0]
    cause = error.get("caused_by")
    if isinstance(cause, Mapping) and cause.get("type"):
        reason += f" (caused by {cause['type']})"
    return f"{kind}: {reason}"[:500]


def _is_transient(status: int) -> bool:
    return status == 429 or status >= 500


def _credentials_error(index: str, status: int) -> ServiceError:
    word = "rejected the credentials" if status == 401 else "forbids writing"
    return ServiceError(
        f"Elasticsearch {word} (HTTP {status}) for index={index}: {_CREDENTIALS_HINT}"
    )


# Elasticsearch's blocks that stop writes, by the id in a cluster_block_exception's reason
# ("index [bp-anomalies-v1] blocked by: [FORBIDDEN/8/index write (api)];"), and the setting
# that sets (and lifts) each. Other blocks (no master, index closed...) keep their status's
# meaning: 503 is retried, 403 is a permanent refusal.
_WRITE_BLOCKS = {
    5: "index.blocks.read_only",
    6: "cluster.blocks.read_only",
    8: "index.blocks.write",
    12: "index.blocks.read_only_allow_delete",  # set by the flood-stage disk watermark
    13: "cluster.blocks.read_only_allow_delete",
}
_BLOCK_IDS = re.compile(r"\b[A-Z_]+/(\d+)/")
_BLOCKED_INDEX = re.compile(r"^index \[([^\]\s]+)\] blocked by")
_FLOOD_STAGE = "index.blocks.read_only_allow_delete"


@dataclass(frozen=True, slots=True)
class WriteBlock:
    """Elasticsearch refuses writes until an operator lifts a block: what to log and retry."""

    index: str  # the blocked (concrete) index, "" for a cluster-wide block
    settings: tuple[str, ...]  # the block settings in force, e.g. ("index.blocks.write",)

    def fix(self) -> str:
        """What an operator does so that writes go through again."""
        body = ", ".join(f'"{name}": null' for name in self.settings)
        if self.index:
            put = f"PUT {self.index}/_settings {{{body}}}"
        else:
            put = f'PUT _cluster/settings {{"persistent": {{{body}}}}}'
        if _FLOOD_STAGE in self.settings:
            return (
                "free disk space on the Elasticsearch data nodes or raise "
                f"cluster.routing.allocation.disk.watermark.flood_stage, then {put}"
            )
        return put

    def __str__(self) -> str:
        where = f"index {self.index}" if self.index else "the cluster"
        return f"write block {'+'.join(self.settings)} on {where}: {self.fix()}"


def _is_cluster_block(error: Any) -> bool:
    return isinstance(error, Mapping) and error.get("type") == "cluster_block_exception"


def _write_block(error: Any) -> WriteBlock | None:
    """The write block an Elasticsearch error reports, or None if it reports none."""
    if not _is_cluster_block(error):
        return None
    reason = str(error.get("reason", ""))
    ids = {int(found) for found in _BLOCK_IDS.findall(reason)}
    settings = tuple(name for block, name in sorted(_WRITE_BLOCKS.items()) if block in ids)
    if not settings:
        return None
    named = _BLOCKED_INDEX.match(reason)
    return WriteBlock(named.group(1) if named else "", settings)


class _BlockNotice:
    """Logs a write block when first met and then at most once per ``every_s`` of ``clock``
    (not once per retry), and its end; one per writer, so the line is one per index."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, every_s: float = BLOCK_LOG_EVERY_S
    ) -> None:
        self._clock = clock
        self._every_s = every_s
        self._since: float | None = None  # when the current block was first met
        self._logged_at = 0.0

    def blocked(self, index: str, block: WriteBlock, pending: int) -> None:
        now = self._clock()
        if self._since is not None and now - self._logged_at < self._every_s:
            return
        if self._since is None:
            self._since = now
        self._logged_at = now
        logger.warning(
            "es_write_blocked index=%s blocked_index=%s block=%s pending=%d blocked_for=%.0fs: "
            "Elasticsearch refuses writes; the documents wait and are retried, none is "
            "dropped. Fix: %s",
            index,
            block.index or "_cluster",
            "+".join(block.settings),
            pending,
            now - self._since,
            block.fix(),
        )

    def clear(self, index: str) -> None:
        """Every action of a request was acknowledged: log the end of a block if one lasted."""
        if self._since is None:
            return
        logger.warning(
            "es_write_unblocked index=%s blocked_for=%.0fs", index, self._clock() - self._since
        )
        self._since = None


# One action as the bytes of its NDJSON lines, kept beside the action so that a retry resends
# exactly the failed ones without encoding them again.
Encoded = tuple[Action, bytes]

# What a bulk response is cut down to (Elasticsearch's ``filter_path``): the per-item status
# and error, the only fields read here; the rest (ids, versions, shards) is never built.
_RESPONSE_FIELDS = "errors,items.*.status,items.*.error"
_NEWLINE = orjson.OPT_APPEND_NEWLINE


def encode_actions(index: str, actions: Iterable[Action]) -> list[Encoded]:
    """Each action with its NDJSON lines (the action line, then the document for ``index``),
    encoded with orjson exactly as the client's serializer would; an unserialisable document
    raises :class:`IndexingError`."""
    heads = {op: orjson.dumps({op: {"_index": index}})[:-2] + b',"_id":' for op in _OPS}
    dumps = orjson.dumps
    default = _json_default()
    out: list[Encoded] = []
    for action in actions:
        op, _id, doc = action
        line = heads[op] + dumps(_id) + b"}}\n"
        if op == "index":
            try:
                line += dumps(doc, default=default, option=_NEWLINE)
            except orjson.JSONEncodeError as exc:
                raise IndexingError(
                    f"index={index}: a document cannot be serialised to JSON ({type(exc).__name__})"
                ) from None
        out.append((action, line))
    return out


def encode_routed(
    router: MonthRouter, actions: Iterable[Action], indices: Callable[[], list[str]]
) -> list[Encoded]:
    """:func:`encode_actions` for an alias backed by monthly indices
    (:mod:`lib.connectors.elastic_months`): an ``index`` action goes to the month of its
    document's time; a ``delete`` goes to each index of the alias (``indices()``, asked once
    per call and only when needed), and so does a delete of an amended document (version
    above 1) from the months other than its own, in case its time moved."""
    dumps = orjson.dumps
    default = _json_default()
    out: list[Encoded] = []
    known: list[str] | None = None
    heads: dict[tuple[str, str], bytes] = {}

    def head(op: str, index: str) -> bytes:
        h = heads.get((op, index))
        if h is None:
            h = heads[op, index] = orjson.dumps({op: {"_index": index}})[:-2] + b',"_id":'
        return h

    for action in actions:
        op, _id, doc = action
        tail = dumps(_id) + b"}}\n"
        if op == "index":
            assert doc is not None
            target = router.index_of(dict(doc))
            if _amended(doc):
                known = indices() if known is None else known
                delete = ("delete", _id, None)
                out.extend((delete, head("delete", i) + tail) for i in known if i != target)
            try:
                line = head("index", target) + tail + dumps(doc, default=default, option=_NEWLINE)
            except orjson.JSONEncodeError as exc:
                raise IndexingError(
                    f"index={target}: a document cannot be serialised to JSON "
                    f"({type(exc).__name__})"
                ) from None
            out.append((action, line))
        else:
            known = indices() if known is None else known
            out.extend((action, head("delete", i) + tail) for i in known)
    return out


def _amended(doc: Mapping[str, Any]) -> bool:
    version = doc.get("version")
    return type(version) is str and version.isdigit() and int(version) > 1


def _json_default() -> Callable[[Any], Any]:
    """The client's fallback for types orjson does not know (numpy scalars, Decimal...)."""
    from elasticsearch.serializer import JsonSerializer

    return JsonSerializer().default


def chunks(encoded: Sequence[Encoded], max_count: int, max_bytes: int) -> Iterator[list[Encoded]]:
    """Consecutive runs of at most ``max_count`` actions and ``max_bytes`` bytes (an action
    larger than ``max_bytes`` goes alone)."""
    chunk: list[Encoded] = []
    size = 0
    for item in encoded:
        n = len(item[1])
        if chunk and (len(chunk) >= max_count or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += n
    if chunk:
        yield chunk


def bulk_write(
    client: Any,
    index: str,
    actions: Iterable[Action],
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BulkStats:
    """Send ``actions`` to ``index`` in ONE bulk request (plus retries of failed actions).

    Returns once every action is acknowledged; raises :class:`IndexingError` or
    :class:`ServiceError` otherwise (see the module docstring). Logs one line (and, while a
    write block lasts, one ``es_write_blocked`` line per :data:`BLOCK_LOG_EVERY_S` of
    ``clock``). Callers split large inputs into batches (:class:`ElasticSink` uses
    ``settings.es_batch_size`` and :data:`MAX_BULK_BYTES`).
    """
    pending, superseded = dedupe_actions(actions)
    encoded = encode_actions(index, pending)
    notice = _BlockNotice(clock)
    stats = _write(client, index, encoded, retry or RetryPolicy(), sleep, notice)
    stats.superseded = superseded
    _log_stats(index, stats)
    return stats


def _write(
    client: Any,
    index: str,
    pending: list[Encoded],
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    notice: _BlockNotice,
) -> BulkStats:
    """One bulk request of deduplicated, encoded actions, then retries of the failed ones."""
    stats = BulkStats(docs=len(pending))
    if not pending:
        return stats
    delays = policy.delays()
    started = time.monotonic()
    while pending:
        stats.requests += 1
        failed, problem = _send(client, index, pending, stats)
        if failed:
            _back_off(index, delays, len(failed), problem, stats, sleep, notice)
        else:
            notice.clear(index)
        pending = failed
    stats.took_s = time.monotonic() - started
    return stats


# Why actions wait for a retry: a short name (``ConnectionError``, ``http_503``, ``item_429``)
# or the write block that refused them.
Problem = str | WriteBlock


def _send(
    client: Any, index: str, actions: list[Encoded], stats: BulkStats
) -> tuple[list[Encoded], Problem]:
    """One bulk request: the actions to retry and why; raises on a permanent failure."""
    from elastic_transport import TlsError, TransportError
    from elasticsearch import ApiError

    body = b"".join([line for _, line in actions])
    try:
        response = client.bulk(operations=body, filter_path=_RESPONSE_FIELDS)
    except ApiError as exc:
        return actions, _transient_refusal(index, exc)
    except TlsError:
        raise ServiceError(
            f"index={index}: TLS handshake with Elasticsearch failed: check BPWATCH_ES_URL "
            "and set BPWATCH_ES_CA_CERTS to the CA that signed the server certificate"
        ) from None
    except TransportError as exc:  # connection refused/reset, timeout
        return actions, type(exc).__name__
    return _item_failures(index, actions, response, stats)


def _transient_refusal(index: str, exc: Any) -> Problem:
    """Why a whole request was refused for now (a write block, 429, 5xx); raises for the rest."""
    status = int(exc.status_code)
    error = _error_of(exc.body)
    block = _write_block(error)
    if block is not None:
        return block
    if status in (401, 403) and not _is_cluster_block(error):
        raise _credentials_error(index, status) from None
    if status == 413:
        raise IndexingError(
            f"index={index}: bulk request too large (HTTP 413): lower BPWATCH_ES_BATCH_SIZE"
        ) from None
    if not _is_transient(status):
        raise IndexingError(
            f"index={index} refused the bulk request (HTTP {status}): {_safe_reason(error)}"
        ) from None
    return f"http_{status}"


def _back_off(
    index: str,
    delays: Iterator[float],
    failed: int,
    problem: Problem,
    stats: BulkStats,
    sleep: Callable[[float], None],
    notice: _BlockNotice,
) -> None:
    """Sleep the next delay of the schedule before a retry; raise once the budget is spent.

    Logs one ``es_retry`` line per retry, or for a write block the throttled line of
    ``notice`` (a block lasts until an operator acts: a line per retry would flood the log).
    """
    delay = next(delays, None)
    if delay is None:
        raise IndexingError(
            f"index={index}: Elasticsearch did not accept {failed} of {stats.docs} "
            f"actions after {stats.retries} retries (last problem: {problem}); "
            "nothing was acknowledged as written for them"
        )
    stats.retries += 1
    if isinstance(problem, WriteBlock):
        notice.blocked(index, problem, failed)
    else:
        logger.warning(
            "es_retry index=%s attempt=%d delay=%.2fs pending=%d problem=%s",
            index,
            stats.retries,
            delay,
            failed,
            problem,
        )
    sleep(delay)


def _log_stats(index: str, stats: BulkStats) -> None:
    """The one key=value line of a bulk write or a sink batch (nothing for no documents)."""
    if not stats.docs:
        return
    logger.info(
        "docs=%d index=%s took=%.3fs retries=%d indexed=%d deleted=%d not_found=%d superseded=%d",
        stats.docs,
        index,
        stats.took_s,
        stats.retries,
        stats.indexed,
        stats.deleted,
        stats.not_found,
        stats.superseded,
    )


def _error_of(body: Any) -> Any:
    if isinstance(body, Mapping) and "error" in body:
        return body["error"]
    return body


def _item_failures(
    index: str, sent: Sequence[Encoded], response: Any, stats: BulkStats
) -> tuple[list[Encoded], Problem]:
    """Count acknowledged items; return the transiently failed ones; raise on permanent ones."""
    body = response.body if hasattr(response, "body") else response
    items = body.get("items", [])
    if len(items) != len(sent):
        raise IndexingError(
            f"index={index}: bulk response has {len(items)} items for {len(sent)} actions"
        )
    failed: list[Encoded] = []
    problem: Problem = ""
    for encoded, item in zip(sent, items, strict=True):
        action = encoded[0]
        op = action[0]
        result = item.get(op) or next(iter(item.values()))
        status = int(result.get("status", 500))
        error = result.get("error")
        if 200 <= status < 300:
            if op == "index":
                stats.indexed += 1
            else:
                stats.deleted += 1
        elif op == "delete" and status == 404:
            stats.not_found += 1
        elif (block := _write_block(error)) is not None:
            failed.append(encoded)
            problem = block  # reported rather than a 429 of other items: it needs an operator
        elif status in (401, 403) and not _is_cluster_block(error):
            raise _credentials_error(index, status)
        elif _is_transient(status):
            failed.append(encoded)
            if not isinstance(problem, WriteBlock):
                problem = f"item_{status}"
        else:
            raise IndexingError(
                f"index={index} refused _id={action[1]} ({op}, HTTP {status}): "
                f"{_safe_reason(error)}"
            )
    return failed, problem


def orjson_serializers() -> dict[str, Any]:
    """Serializers for the client that encode and decode with orjson instead of stdlib json.

    Bulk bodies and their responses are most of the sink's CPU time; orjson is several times
    faster on them. (It writes NaN as null where stdlib json writes an invalid ``NaN``.)
    """
    import orjson
    from elasticsearch.serializer import (
        CompatibilityModeJsonSerializer,
        CompatibilityModeNdjsonSerializer,
        JsonSerializer,
        NdjsonSerializer,
    )

    class _Orjson:
        def json_dumps(self, data: Any) -> bytes:
            return orjson.dumps(data, default=self.default)  # type: ignore[attr-defined]

        def json_loads(self, data: bytes) -> Any:
            return orjson.loads(data)

    classes = (
        JsonSerializer,
        CompatibilityModeJsonSerializer,
        NdjsonSerializer,
        CompatibilityModeNdjsonSerializer,
    )
    return {cls.mimetype: type(f"Orjson{cls.__name__}", (_Orjson, cls), {})() for cls in classes}


def make_client(settings: Settings, **overrides: Any) -> Any:
    """The Elasticsearch client of every sink and tool: URL, credentials and CA from the
    settings (``settings.es_client_kwargs()``), JSON encoded and decoded with orjson
    (:func:`orjson_serializers`), requests time out after 30 s.

    The client does not retry by itself: :func:`bulk_write` owns the retry schedule. The
    command-line tools pass ``max_retries=TOOL_RETRIES`` to ride over a brief 429/5xx or a
    dropped connection. ``overrides`` are further ``Elasticsearch`` arguments (``hosts``...).
    """
    from elasticsearch import Elasticsearch

    kwargs: dict[str, Any] = {
        **settings.es_client_kwargs(),
        "max_retries": 0,
        "retry_on_timeout": False,
        "request_timeout": 30,
        "serializers": orjson_serializers(),
    }
    kwargs.update(overrides)
    return Elasticsearch(**kwargs)


# Set once a writer's failure has been raised to the dataflow: the process is stopping, and
# the other sinks' steps (ended while Bytewax unwinds) must not raise a second error.
_FAILURE_RAISED = threading.Event()


class BulkWriter:
    """Bulk writes on a background thread, so the dataflow computes while Elasticsearch indexes.

    :meth:`submit` queues a batch of actions and returns a ticket at once; :meth:`wait` returns
    once every batch up to that ticket is acknowledged. Batches are written in the order they
    were submitted: what is queued when the thread is free is deduplicated together (the last
    action per ``_id``) and sent as requests of at most ``batch_size`` actions and
    :data:`MAX_BULK_BYTES` bytes, with :func:`_write`'s retries, logging one line per round.
    At most ``max_pending`` actions wait (a larger batch is taken alone): beyond that
    :meth:`submit` blocks, so an outage still stops the input (backpressure). An error of the
    thread (permanent refusal, spent retry budget, credentials) is raised by the next
    :meth:`submit` or :meth:`wait`, and the writer takes nothing more.
    """

    def __init__(
        self,
        client: Any,
        index: str,
        batch_size: int,
        retry: RetryPolicy,
        *,
        max_pending: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        router: MonthRouter | None = None,
    ) -> None:
        self._client = client
        self._index = index
        self._router = router
        self._batch_size = batch_size
        self._retry = retry
        self._sleep = sleep
        self._notice = _BlockNotice(clock)
        self._max_pending = max_pending or PENDING_BATCHES * batch_size
        self._cv = threading.Condition()
        self._queue: deque[list[Action]] = deque()
        self._pending = 0  # actions submitted and not yet acknowledged
        self._submitted = 0  # tickets issued
        self._done = 0  # tickets acknowledged
        self._error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"es-bulk:{index}", daemon=True)
        self._thread.start()

    def submit(self, actions: list[Action]) -> int:
        """Queue ``actions``; the ticket to :meth:`wait` for (the last one if empty)."""
        with self._cv:
            self._raise()
            if not actions:
                return self._submitted
            while self._pending and self._pending + len(actions) > self._max_pending:
                self._cv.wait()
                self._raise()
            self._queue.append(actions)
            self._pending += len(actions)
            self._submitted += 1
            self._cv.notify_all()
            return self._submitted

    def wait(self, ticket: int | None = None) -> None:
        """Block until every batch up to ``ticket`` (default: all) is acknowledged."""
        with self._cv:
            self._settle(ticket)
            self._raise()

    def finish(self, ticket: int | None = None) -> None:
        """:meth:`wait`, for the end of a run: once a writer's failure has been raised
        to the dataflow, a failure is not raised again (Bytewax ends the other steps while it
        stops for the first error, and a second error there aborts the process before the
        first is shown); the writer's thread logged it (``es_writer_failed``)."""
        with self._cv:
            self._settle(ticket)
            if not _FAILURE_RAISED.is_set():  # else: stopping already (the error is logged)
                self._raise()

    def close(self) -> None:
        """Stop the thread once the queue is written (or the writer failed), close the
        client. Raises nothing: failures surface through :meth:`wait` / :meth:`finish`."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        self._client.close()

    def _settle(self, ticket: int | None) -> None:
        """Under the lock: until the batches up to ``ticket`` are acknowledged or it failed."""
        target = self._submitted if ticket is None else ticket
        while self._done < target and self._error is None:
            self._cv.wait()

    def _raise(self) -> None:
        if self._error is not None:
            _FAILURE_RAISED.set()
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                taken = list(self._queue)
                self._queue.clear()
            items = [a for batch in taken for a in batch]
            try:
                self._write_round(items)
            except BaseException as exc:  # raised in the dataflow's thread (submit / wait)
                # our errors name the index and the fix, never field values; others: type only
                known = isinstance(exc, IndexingError | ServiceError)
                logger.error("es_writer_failed index=%s error=%s", self._index,
                             exc if known else type(exc).__name__)  # fmt: skip
                with self._cv:
                    self._error = exc
                    self._cv.notify_all()
                return
            with self._cv:
                self._done += len(taken)
                self._pending -= len(items)
                self._cv.notify_all()

    def _write_round(self, items: list[Action]) -> None:
        # Dedupe across the whole round first, so that chunks never split an id's history.
        actions, superseded = dedupe_actions(items)
        stats = BulkStats(superseded=superseded)
        if self._router is None:
            encoded = encode_actions(self._index, actions)
        else:
            encoded = encode_routed(self._router, actions, self._alias_indices)
        for chunk in chunks(encoded, self._batch_size, MAX_BULK_BYTES):
            stats.add(
                _write(self._client, self._index, chunk, self._retry, self._sleep, self._notice)
            )
        _log_stats(self._index, stats)

    def _alias_indices(self) -> list[str]:
        """The indices behind the alias now (none before the first write), retried like a
        bulk request while Elasticsearch does not answer."""
        from elastic_transport import TransportError
        from elasticsearch import ApiError, NotFoundError

        delays = self._retry.delays()
        while True:
            try:
                return sorted(self._client.indices.get_alias(name=self._index).body)
            except NotFoundError:
                return []
            except (ApiError, TransportError) as exc:
                delay = next(delays, None)
                if delay is None:
                    raise ServiceError(
                        f"index={self._index}: Elasticsearch did not list the alias's indices "
                        f"({type(exc).__name__}) within the retry budget"
                    ) from None
                logger.warning(
                    "es_retry index=%s what=get_alias error=%s retry_in=%.1fs",
                    self._index, type(exc).__name__, delay,
                )  # fmt: skip
                self._sleep(delay)


class ElasticWriteLogic(StatefulBatchLogic[Action, None, None]):
    """The writing step's logic for one key (a patient shard): queues its batches to the
    process's :class:`BulkWriter`; its snapshot (the end of each epoch) returns once they are
    acknowledged, and so does ``on_eof`` (the end of a bounded run)."""

    def __init__(self, sink: ElasticSink) -> None:
        self._sink = sink
        self._writer = sink._acquire()
        self._ticket = 0

    def on_batch(self, values: list[Action]) -> tuple[Iterable[None], bool]:
        self._ticket = self._writer.submit(values)
        return (), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[None], bool]:
        try:
            self._writer.finish(self._ticket)
        finally:
            self._sink._release()
        return (), StatefulBatchLogic.DISCARD

    def snapshot(self) -> None:
        self._writer.wait(self._ticket)


def write(step_id: str, actions: Stream[tuple[str, Action]], sink: ElasticSink) -> None:
    """The dataflow step that writes ``(key, action)`` items with ``sink``.

    A stateful step keyed like the step that made the actions (the monitor keys them by
    patient shard, as ``patient_windows`` is keyed), so Bytewax runs it on the worker that
    already holds them: no document crosses between workers or processes. It emits nothing.
    """
    written = op.stateful_batch(step_id, actions, sink.logic)
    op.inspect(f"{step_id}_end", written, _nothing)  # a flow's branch must end in an output


def _nothing(step_id: str, item: Any) -> None:
    return None


class ElasticSink:
    """Bulk-write actions to one Elasticsearch index (or write alias), through :func:`write`.

    Writes are asynchronous within an epoch and complete at its end: each process has one
    :class:`BulkWriter` (thread and client, created when the first key's logic is built,
    from ``settings.es_client_kwargs()``) per sink; a key's ``on_batch`` queues and returns,
    and its ``snapshot``, which Bytewax takes at the end of every epoch the key wrote in,
    returns only once Elasticsearch has acknowledged everything it queued. So an epoch is
    never committed to the recovery store before its documents are written, and the
    dataflow's CPU work overlaps Elasticsearch's. Requests of at most
    ``settings.es_batch_size`` actions and :data:`MAX_BULK_BYTES` bytes, their bodies encoded
    once by :func:`encode_actions`. At-least-once; idempotent by ``_id``; blocks
    (backpressure) while Elasticsearch is unreachable unless ``retry.budget_s`` is set. The
    snapshots hold no state (``None``). See the module docstring.
    """

    def __init__(
        self,
        settings: Settings,
        index: str,
        *,
        retry: RetryPolicy | None = None,
        client_factory: Callable[[Settings], Any] | None = None,
        router: MonthRouter | None = None,
    ) -> None:
        self._settings = settings
        self._index = index
        self._router = router
        self._retry = retry or RetryPolicy()
        self._client_factory = client_factory or make_client
        self._lock = threading.Lock()  # workers are threads of one process
        self._writer: BulkWriter | None = None
        self._users = 0

    def logic(self, resume_state: None = None) -> ElasticWriteLogic:
        """The builder of :func:`write`'s stateful step (the snapshots hold nothing)."""
        return ElasticWriteLogic(self)

    def _acquire(self) -> BulkWriter:
        with self._lock:
            if self._writer is None:
                self._writer = BulkWriter(
                    self._client_factory(self._settings),
                    self._index,
                    self._settings.es_batch_size,
                    self._retry,
                    router=self._router,
                )
            self._users += 1
            return self._writer

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            writer = self._writer
            if self._users or writer is None:
                return
            self._writer = None
        writer.close()
