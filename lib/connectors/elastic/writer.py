"""The background writer: bulk writes on a thread of their own, so that the dataflow keeps
computing while Elasticsearch indexes.

:class:`Writer` is what the sink's step talks to (``submit`` / ``wait`` / ``finish`` /
``close``); :class:`BulkWriter` is the one that writes, through the bulk core
(:func:`~.bulk.write_actions`), and :class:`~.testing.RecordingWriter` the one that records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from lib.connectors.elastic.blocks import BlockNotice
from lib.connectors.elastic.bulk import (
    MAX_BULK_BYTES,
    Action,
    Encoded,
    RetryPolicy,
    encode_routed,
    write_actions,
)
from lib.connectors.elastic_months import MonthRouter
from lib.errors import IndexingError, ServiceError

__all__ = ["PENDING_BATCHES", "PROCESS_FAILURES", "BulkWriter", "FailureLatch", "Writer"]

logger = logging.getLogger("lib.connectors.elastic")  # one logger for the whole package

# Bulk requests' worth of actions that may wait for the writer before the worker blocks: a
# Kafka activation brings several thousand readings at once; 8,000 documents are ~25 MB.
PENDING_BATCHES = 16


class Writer(Protocol):
    """What the writing step needs of a writer (one per sink and process)."""

    def submit(self, actions: list[Action]) -> int:
        """Queue ``actions``; a ticket to wait for (the last one if ``actions`` is empty)."""
        ...

    def wait(self, ticket: int | None = None) -> None:
        """Return once every batch up to ``ticket`` (default: all) is acknowledged."""
        ...

    def finish(self, ticket: int | None = None) -> None:
        """:meth:`wait`, at the end of a run."""
        ...

    def close(self) -> None:
        """Release the writer's resources (once its last user ended)."""
        ...


class FailureLatch:
    """Set once a writer's failure has been raised to the dataflow: the process is stopping,
    and the other writers' ends (which Bytewax runs while it unwinds) must not raise a second
    error, which would abort the process before the first is shown.

    Every step of a process unwinds together, so the writers of a process share one latch by
    default (:data:`PROCESS_FAILURES`); a test gives its writers a latch of their own.
    """

    __slots__ = ("_raised",)

    def __init__(self) -> None:
        self._raised = threading.Event()

    def set(self) -> None:
        self._raised.set()

    def is_set(self) -> bool:
        return self._raised.is_set()


PROCESS_FAILURES = FailureLatch()


class BulkWriter:
    """Bulk writes on a background thread, so the dataflow computes while Elasticsearch indexes.

    :meth:`submit` queues a batch of actions and returns a ticket at once; :meth:`wait` returns
    once every batch up to that ticket is acknowledged. Batches are written in the order they
    were submitted: what is queued when the thread is free is deduplicated together (one action
    per ``_id``: the last, with partial updates merged, :func:`~.bulk.dedupe_actions`) and
    sent as requests of at most ``batch_size`` actions and ``max_bytes`` bytes (default
    :data:`~.bulk.MAX_BULK_BYTES`) by the bulk core (:func:`~.bulk.write_actions`), with its
    retries, logging one line per round.
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
        max_bytes: int = MAX_BULK_BYTES,
        failures: FailureLatch = PROCESS_FAILURES,
    ) -> None:
        self._client = client
        self._index = index
        self._router = router
        self._batch_size = batch_size
        self._retry = retry
        self._sleep = sleep
        self._notice = BlockNotice(clock)
        self._max_bytes = max_bytes
        self._failures = failures
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
            if not self._failures.is_set():  # else: stopping already (the error is logged)
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
            self._failures.set()
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
        write_actions(
            self._client,
            self._index,
            items,
            retry=self._retry,
            notice=self._notice,
            encode=self._encode if self._router is not None else None,
            max_count=self._batch_size,
            max_bytes=self._max_bytes,
            sleep=self._sleep,
        )

    def _encode(self, actions: list[Action]) -> list[Encoded]:
        assert self._router is not None
        return encode_routed(self._router, actions, self._alias_indices)

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
