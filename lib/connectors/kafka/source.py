"""The monitor's Kafka input: :class:`ObservationSource`, Bytewax's ``KafkaSource`` emitting
lean :class:`SourceRecord` tuples and reporting retention gaps, and the fetch settings its
consumers read with.

Entry points that build it call :func:`~.preflight.preflight` first (wrong credentials: one
clear error, not the consumers' endless retries).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, NamedTuple, cast

from bytewax.connectors.kafka import KafkaSource, _KafkaSourcePartition, _list_parts
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from lib.domain import RetentionGap

__all__ = [
    "SOURCE_BATCH_SIZE",
    "SOURCE_FETCH_CONFIG",
    "ObservationSource",
    "SourceRecord",
    "StartGate",
]

log = logging.getLogger("lib.connectors.kafka")  # one logger for the whole package

# What the monitor's KafkaSource reads at once: messages per batch, and the librdkafka fetch
# settings of its consumers (added to the client configuration; see production_io in
# dataflows/monitor.py). The I/O ceiling benchmark reads with the very same values.
SOURCE_BATCH_SIZE = 1000
SOURCE_FETCH_CONFIG: dict[str, str] = {}


class SourceRecord(NamedTuple):
    """One consumed message: the fields of ``KafkaSourceMessage`` the monitor reads."""

    key: bytes | None
    value: bytes | None
    headers: Any  # list of (str, bytes | None), as confluent-kafka gives them
    topic: str | None
    partition: int | None
    offset: int | None
    timestamp: tuple[int, int] | None


class StartGate:
    """At start, one input (the *lead*: ``bp.enrollments``) is read up to the offsets its
    broker held at start before another (the *follower*: ``bp.observations``) emits anything,
    so that an enrolment sent before a reading is applied before it even after a backlog.

    Per process: the lead partitions this process reads hold the gate until they reach the
    end offsets they found at start (or the end of a bounded run); a follower partition
    emits nothing while it is held, for at most :data:`MAX_WAIT_S` (then a warning and
    on). A follower waits :data:`REGISTER_S` for lead partitions to be built (workers are
    threads; a process may read no lead partition at all).
    """

    MAX_WAIT_S = 120.0
    REGISTER_S = 2.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[tuple[str, int]] = set()
        self._registered = False
        self._since: float | None = None
        self._warned = False

    def hold(self, topic: str, partition: int) -> None:
        with self._lock:
            self._held.add((topic, partition))
            self._registered = True

    def release(self, topic: str, partition: int) -> None:
        with self._lock:
            self._registered = True
            if (topic, partition) in self._held:
                self._held.discard((topic, partition))
                if not self._held:
                    log.info("start_gate open: the enrolments found at start are read")

    def closed(self) -> bool:
        """Must a follower still wait?"""
        now = time.monotonic()
        with self._lock:
            if self._since is None:
                self._since = now
            waited = now - self._since
            if not self._registered:
                return waited < self.REGISTER_S
            if not self._held:
                return False
            if waited < self.MAX_WAIT_S:
                return True
            if not self._warned:
                self._warned = True
                log.warning(
                    "start_gate timeout after %.0fs: %d enrolment partition(s) not read up to "
                    "their offsets at start; readings go on without waiting (check the "
                    "enrolment topic's consumers)",
                    waited, len(self._held),
                )  # fmt: skip
            return False


class ObservationSource(KafkaSource):
    """Bytewax's ``KafkaSource`` (pinned 0.21.1: same consumers, configuration, offsets, end
    of partition and resume state) whose partitions emit :class:`SourceRecord` tuples instead
    of frozen ``KafkaSourceMessage`` dataclasses, ~2 µs less per message. A consumer error
    raises, as the stock source does with ``raise_on_errors`` (the only mode supported).

    Retention gaps: a resumed partition whose next offset the broker has already deleted
    (downtime longer than the topic's retention) reads on from the earliest offset still held
    (``auto.offset.reset=earliest``, always: librdkafka's default, ``latest``, would skip
    everything to the end) and emits one :class:`lib.domain.RetentionGap` before its first
    message, logged as an error. The same holds when the consumer falls behind retention while
    running (an offset jump that the broker's earliest offset explains).

    ``gate`` and ``lead``: a :class:`StartGate` this source holds (``lead=True``: its
    partitions are read up to their offsets at start first) or waits for (``lead=False``).
    """

    def __init__(
        self,
        brokers: list[str],
        topics: list[str],
        gate: StartGate | None = None,
        lead: bool = False,
        **kwargs: Any,
    ) -> None:
        add_config = {**(kwargs.pop("add_config", None) or {}), "auto.offset.reset": "earliest"}
        super().__init__(brokers, topics, add_config=add_config, **kwargs)
        self._gate = gate
        self._lead = lead

    def list_parts(self) -> list[str]:
        """``KafkaSource.list_parts`` without the consumer-only ``auto.offset.reset`` in its
        admin client's configuration (librdkafka warns about it on every start otherwise)."""
        config = {"bootstrap.servers": ",".join(self._brokers), **self._add_config}
        config.pop("auto.offset.reset")
        return list(_list_parts(AdminClient(config), self._topics))

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _KafkaSourcePartition:
        part = super().build_part(step_id, for_part, resume_state)
        part.__class__ = _RecordPartition  # the same object, a leaner next_batch
        cast(_RecordPartition, part).start(resume_state, self._gate, self._lead)
        return part


class _RecordPartition(_KafkaSourcePartition):
    _pending: list[Any]  # RetentionGap items to emit before the next messages
    _expect: int  # the next offset expected (-1: unknown), to see offset jumps
    _gate: StartGate | None  # a follower's gate (None: does not wait)
    _lead_gate: StartGate | None  # a lead's gate, until it reached _lead_until
    _lead_until: int

    def start(
        self, resume_state: int | None, gate: StartGate | None = None, lead: bool = False
    ) -> None:
        self._pending = []
        self._expect = -1
        self._gate = None if lead else gate
        self._lead_gate = None
        self._lead_until = -1
        if lead and gate is not None:
            self._hold(gate, resume_state)
        low = self._earliest()
        if resume_state is None or resume_state < 0:
            if low is not None and low > 0:
                log.warning(
                    "kafka_fresh_start topic=%s partition=%d earliest_offset=%d: offsets "
                    "before it were deleted by retention and are not read (no recovery "
                    "snapshot: see docs/operations.md)",
                    self._topic, self._part_idx, low,
                )  # fmt: skip
            return
        self._expect = resume_state
        if low is not None and low > resume_state:
            self._gap(resume_state, low)

    def _hold(self, gate: StartGate, resume_state: int | None) -> None:
        """Hold ``gate`` until this partition has read what the broker holds now."""
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._part_idx), timeout=10.0, cached=False
            )
        except KafkaException:
            gate.release(self._topic, self._part_idx)  # no answer: do not hold anyone
            return
        start = resume_state if resume_state is not None and resume_state >= 0 else low
        if high > max(start, 0):
            self._lead_gate, self._lead_until = gate, int(high)
            gate.hold(self._topic, self._part_idx)
        else:
            gate.release(self._topic, self._part_idx)

    def _earliest(self) -> int | None:
        """The earliest offset the broker holds for this partition (None: no answer)."""
        try:
            low, _high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._part_idx), timeout=10.0, cached=False
            )
        except KafkaException as exc:
            log.warning(
                "kafka_watermarks topic=%s partition=%d error=%s: retention gaps cannot be "
                "checked now",
                self._topic, self._part_idx, exc.args[0].name(),
            )  # fmt: skip
            return None
        return int(low) if low >= 0 else None

    def _gap(self, from_offset: int, to_offset: int) -> None:
        gap = RetentionGap(self._topic, self._part_idx, from_offset, to_offset)
        log.error(
            "retention_gap topic=%s partition=%d from_offset=%d to_offset=%d skipped=%d: the "
            "broker deleted these messages before the monitor read them (downtime longer than "
            "the topic's retention.ms); they are lost to bpwatch. Re-send them from the source "
            "system if it still holds them; see docs/operations.md",
            gap.topic, gap.partition, from_offset, to_offset, gap.skipped,
        )  # fmt: skip
        self._pending.append(gap)
        self._expect = to_offset
        if self._offset < to_offset:
            self._offset = to_offset  # the snapshot moves past the reported gap

    def _jump(self, expected: int, offset: int) -> None:
        """An offset after ``expected``: a retention gap if the broker no longer holds
        ``expected``; else transaction markers or compaction (nothing lost)."""
        low = self._earliest()
        if low is not None and low > expected:
            self._gap(expected, min(low, offset))

    def next_batch(self) -> list[Any]:
        # mirrors bytewax.connectors.kafka._KafkaSourcePartition.next_batch (0.21.1)
        if self._eof:
            raise StopIteration()
        if self._gate is not None:
            if self._gate.closed():
                return []
            self._gate = None
        batch: list[Any] = []
        append = batch.append
        last_offset = None
        expect = self._expect
        for msg in self._consumer.consume(self._batch_size, 0.001):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._eof = True  # StopIteration at the next call: emit this batch first
                    break
                raise RuntimeError(f"error consuming from Kafka topic `{self._topic!r}`: {error}")
            last_offset = cast(int, msg.offset())
            if last_offset != expect and expect >= 0:
                if last_offset > expect:
                    self._jump(expect, last_offset)
                else:
                    log.warning(
                        "kafka_offset_back topic=%s partition=%d expected=%d got=%d: the "
                        "topic was recreated or truncated; reading it again (the outputs are "
                        "idempotent)",
                        self._topic, self._part_idx, expect, last_offset,
                    )  # fmt: skip
            expect = last_offset + 1
            append(SourceRecord(msg.key(), msg.value(), msg.headers() or [], msg.topic(),
                                msg.partition(), last_offset, msg.timestamp()))  # fmt: skip
        self._expect = expect
        if last_offset is not None:
            self._offset = last_offset + 1  # resume after the last message, not at it
        lead = self._lead_gate
        if lead is not None and (self._offset >= self._lead_until or self._eof):
            lead.release(self._topic, self._part_idx)
            self._lead_gate = None
        if self._pending:
            batch[:0] = self._pending  # a gap goes before the messages that follow it
            self._pending = []
        return batch
