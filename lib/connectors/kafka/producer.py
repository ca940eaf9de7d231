"""The one way bpwatch writes to Kafka: produce a batch, then wait until the broker confirmed it.

Both Kafka sinks (:class:`~.sink.ConfirmedKafkaSink` and
:class:`~.idempotent.IdempotentKafkaSink`) and :func:`~.sink.produce_all` send through
:class:`ConfirmedProducer`: ``acks=all`` and the idempotent producer are forced
(:func:`producer_config`), a full local queue is waited out (backpressure, never a drop), and
:meth:`ConfirmedProducer.send` returns only once every message of the batch is acknowledged;
otherwise it raises :class:`lib.errors.KafkaDeliveryError`, which stops the dataflow. The
idempotent sink produces with :meth:`ConfirmedProducer.queue` and waits with
:meth:`ConfirmedProducer.confirm` at each snapshot instead of each batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from lib.errors import KafkaDeliveryError
from lib.settings import Settings

Headers = list[tuple[str, str | bytes | None]]
KafkaRecord = tuple[bytes | None, bytes, Headers]

# Defaults that BPWATCH_KAFKA_CONFIG may override ...
_DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "message.timeout.ms": 30_000,
    "queue.buffering.max.messages": 200_000,
}
# ... and the ones it may not: they are what "confirmed" means.
_REQUIRED: dict[str, Any] = {"acks": "all", "enable.idempotence": True}


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka producer settings: defaults < BPWATCH_KAFKA_CONFIG < ``extra`` < required."""
    return {**_DEFAULTS, **settings.kafka_client_config(), **extra, **_REQUIRED}


def produce(producer: Producer, topic: str, value: bytes, key: bytes | None, **kw: Any) -> None:
    """``producer.produce`` that waits while the local queue is full (backpressure, no drop)
    and turns a refusal into :class:`KafkaDeliveryError`."""
    while True:
        try:
            producer.produce(topic, value, key, **kw)
            return
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(0.05)
        except KafkaException as exc:
            raise KafkaDeliveryError(
                f"could not produce to topic {topic}: {exc.args[0].str()}"
            ) from None


class ConfirmedProducer:
    """A producer that confirms every delivery: per batch (:meth:`send`), or for everything
    queued since the last confirmation (:meth:`queue`, then :meth:`confirm`).

    ``last_offset`` is the highest offset the broker has confirmed so far (-1 before the
    first), which a sink pinned to one partition snapshots to resume after.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        # every message is delivered or failed within message.timeout.ms
        self._flush_timeout = float(config.get("message.timeout.ms", 30_000)) / 1000.0 + 5.0
        self._failed: list[KafkaError] = []
        self._queued = 0  # produced since the last confirmation
        self._confirmed = 0  # of those, confirmed by the broker
        self._target = ""  # topic[partition] of the last records queued, for the error
        self.last_offset = -1

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._confirmed += 1
            self.last_offset = max(self.last_offset, msg.offset() or 0)
        else:
            self._failed.append(err)

    def send(self, topic: str, records: Iterable[KafkaRecord], partition: int | None = None) -> int:
        """Produce every record (to ``partition``, or by key), wait for the broker; the
        confirmed count, or :class:`KafkaDeliveryError` if any message is not confirmed."""
        self.queue(topic, records, partition)
        return self.confirm()

    def queue(
        self, topic: str, records: Iterable[KafkaRecord], partition: int | None = None
    ) -> int:
        """Produce every record without waiting for the broker (librdkafka sends them at once,
        after ``linger.ms``); the count queued. :meth:`confirm` waits for them; a delivery
        already reported failed raises :class:`KafkaDeliveryError` here."""
        where = {} if partition is None else {"partition": partition}
        self._target = topic if partition is None else f"{topic}[{partition}]"
        queued = 0
        for key, value, headers in records:
            produce(
                self._producer,
                topic,
                value,
                key,
                headers=headers,
                on_delivery=self._on_delivery,
                **where,
            )
            queued += 1
            self._producer.poll(0)
        self._queued += queued
        if self._failed:
            self.confirm()  # raises, naming the first failure
        return queued

    def confirm(self) -> int:
        """Wait until the broker confirmed every record queued since the last confirmation;
        their count, or :class:`KafkaDeliveryError` if any is not confirmed."""
        pending = self._producer.flush(self._flush_timeout)
        queued, confirmed, failed = self._queued, self._confirmed, list(self._failed)
        self._queued = self._confirmed = 0
        self._failed.clear()
        if failed or pending or confirmed != queued:
            first = failed[0].str() if failed else "no confirmation in time"
            raise KafkaDeliveryError(
                f"broker did not confirm {queued - confirmed} of {queued} messages to topic "
                f"{self._target} ({first}); check that the topic exists (make setup) and "
                "BPWATCH_KAFKA_BROKERS is reachable"
            )
        return confirmed

    def close(self) -> None:
        self._producer.flush(self._flush_timeout)
