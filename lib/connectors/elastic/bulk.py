"""The bulk protocol: actions in, acknowledged writes out, with retries; no Bytewax here.

An *action*::

    ("index", _id, doc)    create or overwrite the document ``_id``
    ("update", _id, doc)   set the fields of ``doc`` on the document ``_id``, creating it
                           from ``doc`` when missing (a partial update with upsert:
                           ``doc_as_upsert``, ``retry_on_conflict`` 3)
    ("delete", _id, None)  remove it (a missing document is fine: 404 = already gone)

:func:`write_actions` is the one bulk core, as elasticsearch-py's ``streaming_bulk``: it
reduces the actions to one per ``_id`` (:func:`dedupe_actions`: an ``index`` followed by a
``delete`` of the same id ends deleted; successive updates merge into one), encodes each
action once as NDJSON (:func:`encode_actions`, or :func:`encode_routed` for an alias of
monthly indices, which takes no updates), cuts requests of at most a count and a byte size
(:func:`chunks`), sends each with its retries, and logs one line:
``docs=500 index=bp-anomalies took=0.040s retries=0 ...``. :func:`bulk_write` (tools and
tests) and the background writer (:mod:`.writer`) are thin wrappers around it.

Guarantee: **at-least-once; idempotent by ``_id``**, so a replay overwrites and never
duplicates (a replay of the same updates, in the same order, ends in the same document: each
sets its fields to the same values). A call returns once Elasticsearch has acknowledged every
action:

* transient failures (connection refused/reset, timeouts, HTTP 429 and 5xx, for the whole
  request or for single items; and 409, a version conflict that outlasted an update's own
  ``retry_on_conflict``) are retried, only the failed actions, on a deterministic
  exponential schedule (:class:`RetryPolicy`, no jitter). By default there is no retry
  budget: during an outage the call keeps retrying (the writer's queue then fills and the
  worker blocks: backpressure). With a budget, :class:`~lib.errors.IndexingError` is raised
  when it is spent. Nothing is ever dropped.
* write blocks (:mod:`.blocks`) are retried like an outage, whatever the status, until an
  operator lifts the block, and logged at most once a minute.
* permanent refusals (400 mapping errors such as ``mapper_parsing_exception`` or
  ``strict_dynamic_mapping_exception``, 404 on index, 413, other 4xx) raise
  :class:`~lib.errors.IndexingError` naming the index and the reason (field values are cut
  from the reason: no PHI in errors or logs).
* wrong credentials (401/403) raise :class:`~lib.errors.ServiceError` naming
  ``BPWATCH_ES_API_KEY`` / ``BPWATCH_ES_USERNAME`` / ``BPWATCH_ES_PASSWORD``, at once: no
  retry storm; so does a failed TLS handshake (naming ``BPWATCH_ES_CA_CERTS``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from lib.connectors.elastic.blocks import BlockNotice, WriteBlock, is_cluster_block, write_block
from lib.connectors.elastic.client import json_default
from lib.connectors.elastic_months import MonthRouter
from lib.errors import IndexingError, ServiceError

__all__ = [
    "MAX_BULK_BYTES",
    "Action",
    "BulkStats",
    "Encoded",
    "RetryPolicy",
    "bulk_write",
    "chunks",
    "dedupe_actions",
    "encode_actions",
    "encode_routed",
    "write_actions",
]

logger = logging.getLogger("lib.connectors.elastic")  # one logger for the whole package

Action = tuple[str, str, Mapping[str, Any] | None]

_OPS = ("index", "update", "delete")
# Elasticsearch retries an update this many times itself when the document changed between
# its read and its write (another writer); then the item fails with 409 and is retried here.
RETRY_ON_CONFLICT = 3
_TAILS = {  # what follows the _id in each action's line
    "index": b"}}\n",
    "update": b',"retry_on_conflict":' + str(RETRY_ON_CONFLICT).encode() + b"}}\n",
    "delete": b"}}\n",
}
# Largest bulk request body the writer sends, well below Elasticsearch's
# http.max_content_length (100 MB): a batch of large documents is split by bytes as well as
# by settings.es_batch_size actions.
MAX_BULK_BYTES = 10 * 1024 * 1024
_CREDENTIALS_HINT = (
    "set BPWATCH_ES_API_KEY, or BPWATCH_ES_USERNAME and BPWATCH_ES_PASSWORD, to credentials "
    "allowed to write this index"
)


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
    """What one :func:`write_actions` call did."""

    docs: int = 0  # distinct actions sent (after reducing them to one per _id)
    indexed: int = 0
    updated: int = 0  # partial updates (with upsert) applied
    deleted: int = 0
    not_found: int = 0  # deletes of documents that were not there
    superseded: int = 0  # earlier actions on an _id replaced by, or merged into, a later one
    requests: int = 0
    retries: int = 0
    took_s: float = 0.0

    def add(self, other: BulkStats) -> None:
        for name in BulkStats.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def dedupe_actions(actions: Iterable[Action]) -> tuple[list[Action], int]:
    """One action per ``_id``, with the effect of all of them in order; the count of the
    others (superseded or merged).

    An ``index`` or a ``delete`` replaces what came before it. An ``update`` merges into it
    (:func:`_merged`): into an earlier update as one update of the union of their fields
    (the later value of a field wins), into an ``index`` as the index of the merged document,
    after a ``delete`` as the index of its own fields (the upsert would create just that).
    The actions kept are in the order of each ``_id``'s last action.
    """
    last: dict[str, Action] = {}
    total = 0
    for action in actions:
        op, _id, doc = action
        if op not in _OPS:
            raise ValueError(f"unknown action {op!r}: use 'index', 'update' or 'delete'")
        if op != "delete" and doc is None:
            raise ValueError(f"{op} action for _id={_id!r} has no document")
        total += 1
        before = last.pop(_id, None)
        last[_id] = action if before is None or op != "update" else _merged(before, action)
    return list(last.values()), total - len(last)


def _merged(before: Action, update: Action) -> Action:
    """The one action that has the effect of ``before`` then the partial ``update`` of the
    same ``_id`` (shallow: a field of the update replaces the field, objects are not merged)."""
    op, _id, doc = before
    fields = update[2]
    assert fields is not None
    if op == "delete":
        return ("index", _id, dict(fields))
    assert doc is not None
    return (op, _id, {**doc, **fields})  # an update stays an update, an index an index


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


# One action as the bytes of its NDJSON lines, kept beside the action so that a retry resends
# exactly the failed ones without encoding them again.
Encoded = tuple[Action, bytes]

# What a bulk response is cut down to (Elasticsearch's ``filter_path``): the per-item status
# and error, the only fields read here; the rest (ids, versions, shards) is never built.
_RESPONSE_FIELDS = "errors,items.*.status,items.*.error"
_NEWLINE = orjson.OPT_APPEND_NEWLINE


def encode_actions(index: str, actions: Iterable[Action]) -> list[Encoded]:
    """Each action with its NDJSON lines, encoded with orjson exactly as the client's
    serializer would: the action line, then for ``index`` the document and for ``update``
    ``{"doc": ..., "doc_as_upsert": true}``; an unserialisable document raises
    :class:`IndexingError`."""
    heads = {op: orjson.dumps({op: {"_index": index}})[:-2] + b',"_id":' for op in _OPS}
    dumps = orjson.dumps
    default = json_default()
    out: list[Encoded] = []
    for action in actions:
        op, _id, doc = action
        line = heads[op] + dumps(_id) + _TAILS[op]
        if op == "index":
            line += _document(index, doc, default, _NEWLINE)
        elif op == "update":
            line += b'{"doc":' + _document(index, doc, default) + b',"doc_as_upsert":true}\n'
        out.append((action, line))
    return out


def _document(index: str, doc: Any, default: Callable[[Any], Any], option: int = 0) -> bytes:
    """A document as JSON (``option``: orjson's); :class:`IndexingError` naming the index
    when it cannot be."""
    try:
        return orjson.dumps(doc, default=default, option=option)
    except orjson.JSONEncodeError as exc:
        raise IndexingError(
            f"index={index}: a document cannot be serialised to JSON ({type(exc).__name__})"
        ) from None


def encode_routed(
    router: MonthRouter, actions: Iterable[Action], indices: Callable[[], list[str]]
) -> list[Encoded]:
    """:func:`encode_actions` for an alias backed by monthly indices
    (:mod:`lib.connectors.elastic_months`): an ``index`` action goes to the month of its
    document's time; a ``delete`` goes to each index of the alias (``indices()``, asked once
    per call and only when needed), and so does a delete of an amended document (version
    above 1) from the months other than its own, in case its time moved.

    An ``update`` raises :class:`ValueError`: a partial document may lack the time that
    chooses the month, and a document updated over months would need to be found in each;
    an index written by updates is one index behind its alias (``bp-episodes``), written
    without a router."""
    dumps = orjson.dumps
    default = json_default()
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
        if op == "update":
            raise ValueError(
                f"an update action for {router.alias}, an alias of monthly indices: partial "
                "updates need one index behind the alias (as bp-episodes); write them "
                "without a MonthRouter"
            )
        tail = dumps(_id) + b"}}\n"
        if op == "index":
            assert doc is not None
            target = router.index_of(dict(doc))
            if _amended(doc):
                known = indices() if known is None else known
                delete = ("delete", _id, None)
                out.extend((delete, head("delete", i) + tail) for i in known if i != target)
            line = head("index", target) + tail + _document(target, doc, default, _NEWLINE)
            out.append((action, line))
        else:
            known = indices() if known is None else known
            out.extend((action, head("delete", i) + tail) for i in known)
    return out


def _amended(doc: Mapping[str, Any]) -> bool:
    version = doc.get("version")
    return type(version) is str and version.isdigit() and int(version) > 1


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


def write_actions(
    client: Any,
    index: str,
    actions: Iterable[Action],
    *,
    retry: RetryPolicy,
    notice: BlockNotice,
    encode: Callable[[list[Action]], list[Encoded]] | None = None,
    max_count: int = sys.maxsize,
    max_bytes: int = sys.maxsize,
    sleep: Callable[[float], None] = time.sleep,
) -> BulkStats:
    """The bulk core: dedupe, encode, chunk, write with retries, one log line.

    Reduces ``actions`` to one per ``_id`` first (:func:`dedupe_actions`, across all of
    them, so that no chunk splits an id's history), encodes them (``encode``, default
    :func:`encode_actions` for ``index``), and sends them in order as requests of at most
    ``max_count`` actions and ``max_bytes`` bytes, each with :class:`RetryPolicy`'s
    retries. Returns once every action is acknowledged; raises :class:`IndexingError` or
    :class:`ServiceError` otherwise (see the module docstring). Logs one line for the call
    (none without documents) and, while a write block lasts, ``notice``'s throttled line.
    """
    unique, superseded = dedupe_actions(actions)
    encoded = encode(unique) if encode is not None else encode_actions(index, unique)
    stats = BulkStats(superseded=superseded)
    for chunk in chunks(encoded, max_count, max_bytes):
        stats.add(_write(client, index, chunk, retry, sleep, notice))
    _log_stats(index, stats)
    return stats


def bulk_write(
    client: Any,
    index: str,
    actions: Iterable[Action],
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BulkStats:
    """:func:`write_actions` in ONE bulk request (plus retries of failed actions), for tools
    and tests; a write block is logged once per :data:`~.blocks.BLOCK_LOG_EVERY_S` of
    ``clock``. Callers split large inputs themselves (the writer cuts by
    ``settings.es_batch_size`` and :data:`MAX_BULK_BYTES`)."""
    notice = BlockNotice(clock)
    policy = retry or RetryPolicy()
    return write_actions(client, index, actions, retry=policy, notice=notice, sleep=sleep)


def _write(
    client: Any,
    index: str,
    pending: list[Encoded],
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    notice: BlockNotice,
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
    block = write_block(error)
    if block is not None:
        return block
    if status in (401, 403) and not is_cluster_block(error):
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
    notice: BlockNotice,
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
        "docs=%d index=%s took=%.3fs retries=%d indexed=%d updated=%d deleted=%d not_found=%d "
        "superseded=%d",
        stats.docs,
        index,
        stats.took_s,
        stats.retries,
        stats.indexed,
        stats.updated,
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
            elif op == "update":
                stats.updated += 1
            else:
                stats.deleted += 1
        elif op == "delete" and status == 404:
            stats.not_found += 1
        elif (block := write_block(error)) is not None:
            failed.append(encoded)
            problem = block  # reported rather than a 429 of other items: it needs an operator
        elif status in (401, 403) and not is_cluster_block(error):
            raise _credentials_error(index, status)
        elif _is_transient(status) or (op == "update" and status == 409):
            failed.append(encoded)
            if not isinstance(problem, WriteBlock):
                problem = f"item_{status}"
        else:
            raise IndexingError(
                f"index={index} refused _id={action[1]} ({op}, HTTP {status}): "
                f"{_safe_reason(error)}"
            )
    return failed, problem
