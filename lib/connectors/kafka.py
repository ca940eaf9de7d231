"""Kafka output that confirms every delivery, the credentials preflight, and the monitor's
Kafka input (:class:`ObservationSource`).

Bytewax's stock ``KafkaSink`` only logs messages the broker did not accept; bpwatch must never
lose a reading, so :class:`ConfirmedKafkaSink` waits, at the end of every batch, until the broker
has acknowledged each message (``acks=all``, idempotent producer; the produce-and-confirm path
of :mod:`lib.connectors.kafka_produce`) and raises :class:`lib.errors.KafkaDeliveryError`
otherwise, which stops the dataflow instead of dropping data. Delivery guarantee:
at-least-once (a restart may resend a batch). Each batch logs one line
(``kafka_batch worker=0 topic=bp.observations msgs=1000 took=0.012s``).

:func:`preflight` checks once, before any data moves, that the brokers answer and accept the
credentials of ``BPWATCH_KAFKA_CONFIG``: wrong SASL credentials give one
:class:`lib.errors.ServiceError` naming that variable, instead of librdkafka's endless
reconnect-and-log loop (a retry storm against the broker). The sinks here call it in
``build()``; entry points that build a ``KafkaSource`` should call it first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, NamedTuple, cast

from bytewax.connectors.kafka import KafkaSource, _KafkaSourcePartition, _list_parts
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from lib.connectors.kafka_produce import ConfirmedProducer, KafkaRecord, producer_config
from lib.domain import RetentionGap
from lib.errors import ConfigError, ServiceError
from lib.settings import Settings

log = logging.getLogger(__name__)

# librdkafka errors that no retry can fix: the credentials or the security setup are wrong.
_FATAL_SETUP = {
    KafkaError._AUTHENTICATION: "refused the credentials",
    KafkaError.SASL_AUTHENTICATION_FAILED: "refused the credentials",
    KafkaError.UNSUPPORTED_SASL_MECHANISM: "does not support the SASL mechanism",
    KafkaError.ILLEGAL_SASL_STATE: "rejected the SASL handshake",
    KafkaError._SSL: "failed the TLS handshake",
}
_CONFIG_HINT = (
    "fix security.protocol / sasl.mechanism / sasl.username / sasl.password in "
    "BPWATCH_KAFKA_CONFIG (a JSON object or @path/to/file.json)"
)
_quiet_librdkafka = logging.getLogger("bpwatch.kafka.preflight.librdkafka")
_quiet_librdkafka.setLevel(logging.CRITICAL)  # the preflight reports the one error itself
_quiet_librdkafka.propagate = False

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
    """

    def __init__(self, brokers: list[str], topics: list[str], **kwargs: Any) -> None:
        add_config = {**(kwargs.pop("add_config", None) or {}), "auto.offset.reset": "earliest"}
        super().__init__(brokers, topics, add_config=add_config, **kwargs)

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
        cast(_RecordPartition, part).start(resume_state)
        return part


class _RecordPartition(_KafkaSourcePartition):
    _pending: list[Any]  # RetentionGap items to emit before the next messages
    _expect: int  # the next offset expected (-1: unknown), to see offset jumps

    def start(self, resume_state: int | None) -> None:
        self._pending = []
        self._expect = -1
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
        if self._pending:
            batch[:0] = self._pending  # a gap goes before the messages that follow it
            self._pending = []
        return batch


def preflight(settings: Settings, timeout: float = 5.0) -> int | None:
    """Check that the brokers accept the credentials: the number of topics seen, or None.

    One client, polled every 0.25 s: an authentication or TLS failure raises
    :class:`ServiceError` naming ``BPWATCH_KAFKA_CONFIG`` at its first occurrence (no retry
    storm); an unknown librdkafka setting raises :class:`ConfigError`.
    Brokers that do not answer within ``timeout`` are *not* an error here (they may be
    restarting): one warning, None, and the caller's own delivery timeouts decide.
    Messages never hold the password.
    """
    from confluent_kafka.admin import AdminClient

    errors: list[KafkaError] = []
    config = {
        **settings.kafka_client_config(),
        "error_cb": errors.append,
        "logger": _quiet_librdkafka,
    }
    try:
        admin = AdminClient(config)
    except KafkaException as exc:
        raise ConfigError(
            f"BPWATCH_KAFKA_CONFIG is not a valid librdkafka configuration "
            f"({exc.args[0].str()}): {_CONFIG_HINT}"
        ) from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            topics = len(admin.list_topics(timeout=0.25).topics)
        except KafkaException:
            pass
        else:
            admin.poll(0)
            return topics
        admin.poll(0)  # serves error_cb
        for err in errors:
            problem = _FATAL_SETUP.get(err.code())
            if problem is not None:
                raise ServiceError(
                    f"Kafka at {settings.kafka_brokers} {problem} ({err.name()}): {_CONFIG_HINT}"
                )
        if time.monotonic() >= deadline:
            log.warning(
                "kafka_preflight brokers=%s answer=none after=%.0fs last_error=%s",
                settings.kafka_brokers,
                timeout,
                errors[-1].name() if errors else "none",
            )
            return None


class _ConfirmedKafkaPartition(StatelessSinkPartition[KafkaRecord]):
    def __init__(self, config: dict[str, Any], topic: str, worker_index: int) -> None:
        self._producer = ConfirmedProducer(config)
        self._topic = topic
        self._worker = worker_index

    def write_batch(self, items: list[KafkaRecord]) -> None:
        if not items:
            return
        started = time.monotonic()
        confirmed = self._producer.send(self._topic, items)
        log.info(
            "kafka_batch worker=%d topic=%s msgs=%d took=%.3fs",
            self._worker,
            self._topic,
            confirmed,
            time.monotonic() - started,
        )

    def close(self) -> None:
        self._producer.close()


class ConfirmedKafkaSink(DynamicSink[KafkaRecord]):
    """Write ``(key, value, headers)`` items to one topic; every message is confirmed.

    Unit of parallelism: one producer per worker. Delivery guarantee: at-least-once; a batch
    returns only after the broker acknowledged every message of it (``acks=all``,
    ``enable.idempotence=true``), and any failure raises :class:`KafkaDeliveryError`.
    """

    def __init__(self, settings: Settings, topic: str, **producer_overrides: Any) -> None:
        self._settings = settings
        self._config = producer_config(settings, **producer_overrides)
        self._topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ConfirmedKafkaPartition:
        preflight(self._settings)  # wrong credentials: one clear error, not a retry storm
        return _ConfirmedKafkaPartition(self._config, self._topic, worker_index)


def produce_all(
    settings: Settings, topic: str, items: Iterable[KafkaRecord], **producer_overrides: Any
) -> int:
    """Produce every ``(key, value, headers)`` item and wait for the broker: the confirmed count.

    Raises :class:`KafkaDeliveryError` if any message is not confirmed. For tests and tools.
    """
    preflight(settings)
    producer = ConfirmedProducer(producer_config(settings, **producer_overrides))
    try:
        return producer.send(topic, items)
    finally:
        producer.close()
