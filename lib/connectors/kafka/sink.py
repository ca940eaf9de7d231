"""Kafka output that confirms every delivery: :class:`ConfirmedKafkaSink` (the simulator's
output) and :func:`produce_all` (tests and tools).

Bytewax's stock ``KafkaSink`` only logs messages the broker did not accept; bpwatch must never
lose a reading, so :class:`ConfirmedKafkaSink` waits, at the end of every batch, until the broker
has acknowledged each message (``acks=all``, idempotent producer; the produce-and-confirm path
of :mod:`.producer`) and raises :class:`lib.errors.KafkaDeliveryError` otherwise, which stops
the dataflow instead of dropping data. Delivery guarantee: at-least-once (a restart may resend
a batch). Each batch logs one line
(``kafka_batch worker=0 topic=bp.observations msgs=1000 took=0.012s``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from lib.connectors.kafka.preflight import preflight
from lib.connectors.kafka.producer import ConfirmedProducer, KafkaRecord, producer_config
from lib.settings import Settings

__all__ = ["ConfirmedKafkaSink", "Delivered", "produce_all", "send_one"]

log = logging.getLogger("lib.connectors.kafka")  # one logger for the whole package


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


class Delivered(NamedTuple):
    """Where the broker put a message :func:`send_one` produced."""

    topic: str
    partition: int
    offset: int


def send_one(
    settings: Settings,
    topic: str,
    key: bytes,
    value: bytes,
    *,
    preflight_timeout: float = 5.0,
    message_timeout_ms: int = 15_000,
) -> Delivered:
    """Produce one message and wait for the broker (``acks=all``): where it went,
    or :class:`~lib.errors.KafkaDeliveryError`. For the command-line tools: a broker that
    does not answer fails the command after ``message_timeout_ms`` (unless
    ``BPWATCH_KAFKA_CONFIG`` sets ``message.timeout.ms``)."""
    where = [(-1, -1)]

    class Recording(ConfirmedProducer):
        def _on_delivery(self, err: Any, msg: Any) -> None:
            super()._on_delivery(err, msg)
            if err is None:
                where[0] = (msg.partition() or 0, msg.offset() or 0)

    preflight(settings, timeout=preflight_timeout)
    extra: dict[str, Any] = {}
    if "message.timeout.ms" not in settings.kafka_client_config():
        extra["message.timeout.ms"] = message_timeout_ms
    producer = Recording(producer_config(settings, **extra))
    try:
        producer.send(topic, [(key, value, [])])
    finally:
        producer.close()
    return Delivered(topic, *where[0])
