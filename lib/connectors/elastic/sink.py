"""The Bytewax side: :class:`ElasticSink` and :func:`write`, the dataflow step that writes
``(key, action)`` items.

The step is stateful and keyed like the step that made the actions (the monitor keys them by
patient shard), so it runs on the worker that already holds them. Each key's
:class:`ElasticWriteLogic` hands its batches to the one writer of its sink and process
(:class:`~.writer.BulkWriter`: a thread and a client), and its snapshot, which Bytewax takes
at the end of every epoch the key wrote in, returns only once Elasticsearch has acknowledged
everything the key queued (and so does the end of a bounded run). So no epoch is committed to
the recovery store before its documents are written, and the dataflow's CPU work overlaps
Elasticsearch's.

The writer is the one seam below the step: ``ElasticSink(..., writer_factory=...)`` puts
another writer behind the very same step (:class:`~.testing.TestingElasticSink` records the
actions instead of sending them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from lib.connectors.elastic.bulk import Action, RetryPolicy
from lib.connectors.elastic.client import make_client
from lib.connectors.elastic.writer import PROCESS_FAILURES, BulkWriter, FailureLatch, Writer
from lib.connectors.elastic_months import MonthRouter
from lib.connectors.shared import Shared
from lib.settings import Settings

__all__ = ["ElasticSink", "ElasticWriteLogic", "write"]


class ElasticWriteLogic(StatefulBatchLogic[Action, None, None]):
    """The writing step's logic for one key (a patient shard): queues its batches to the
    sink's writer; its snapshot (the end of each epoch) returns once they are acknowledged,
    and so does ``on_eof`` (the end of a bounded run)."""

    def __init__(self, sink: ElasticSink) -> None:
        self._sink = sink
        self._writer = sink._writers.acquire()
        self._ticket = 0

    def on_batch(self, values: list[Action]) -> tuple[Iterable[None], bool]:
        self._ticket = self._writer.submit(values)
        return (), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[None], bool]:
        try:
            self._writer.finish(self._ticket)
        finally:
            self._sink._writers.release()
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

    Unit of parallelism: one writer per sink and process (thread and client, made when the
    first key's logic is built, from ``settings.es_client_kwargs()``), shared by the keys of
    every worker of the process and closed when the last key ends. Requests of at most
    ``settings.es_batch_size`` actions and :data:`~.bulk.MAX_BULK_BYTES` bytes; ``router``
    writes an alias as monthly indices (:mod:`lib.connectors.elastic_months`).
    Delivery guarantee: at-least-once; idempotent by ``_id``; blocks (backpressure) while
    Elasticsearch is unreachable unless ``retry.budget_s`` is set. The snapshots hold no
    state (``None``).

    :arg failures: the latch the sink's writers share with the other writers of the process
        (:class:`~.writer.FailureLatch`), so that only the first failure is raised; default
        the process's own.
    :arg writer_factory: makes the process's writer instead of a :class:`BulkWriter` (then
        ``retry``, ``client_factory``, ``router`` and ``failures`` are not used).
    """

    def __init__(
        self,
        settings: Settings,
        index: str,
        *,
        retry: RetryPolicy | None = None,
        client_factory: Callable[[Settings], Any] | None = None,
        router: MonthRouter | None = None,
        failures: FailureLatch = PROCESS_FAILURES,
        writer_factory: Callable[[], Writer] | None = None,
    ) -> None:
        self._settings = settings
        self._index = index
        self._router = router
        self._retry = retry or RetryPolicy()
        self._client_factory = client_factory or make_client
        self._failures = failures
        self._writers: Shared[Writer] = Shared(writer_factory or self._bulk_writer, _close)

    def logic(self, resume_state: None = None) -> ElasticWriteLogic:
        """The builder of :func:`write`'s stateful step (the snapshots hold nothing)."""
        return ElasticWriteLogic(self)

    def _bulk_writer(self) -> BulkWriter:
        return BulkWriter(
            self._client_factory(self._settings),
            self._index,
            self._settings.es_batch_size,
            self._retry,
            router=self._router,
            failures=self._failures,
        )


def _close(writer: Writer) -> None:
    writer.close()
