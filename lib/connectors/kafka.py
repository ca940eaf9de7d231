"""Kafka output that confirms every delivery.

Bytewax's stock ``KafkaSink`` only logs messages the broker did not accept; bpwatch must never
lose a reading, so :class:`ConfirmedKafkaSink` waits, at the end of every batch, until the broker
has acknowledged each message (``acks=all``, idempotent producer) and raises
:class:`lib.errors.KafkaDeliveryError` otherwise, which stops the dataflow instead of dropping
data. Delivery guarantee: at-least-once (a restart may resend a batch).

:func:`preflight` checks once, in about a second, that the brokers answer and accept the
credentials of ``BPWATCH_KAFKA_CONFIG``: wrong SASL credentials give one
:class:`lib.errors.ServiceError` naming that variable, instead of librdkafka's endless
reconnect-and-log loop (a retry storm against the broker). The sinks here call it in
``build()``; entry points that build a ``KafkaSource`` should call it first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from lib.errors import ConfigError, KafkaDeliveryError, ServiceError
from lib.settings import Settings

log = logging.getLogger(__name__)

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


def preflight(settings: Settings, timeout: float = 5.0) -> int | None:
    """Check that the brokers accept the credentials: the number of topics seen, or None.

    One client, polled every 0.25 s: an authentication or TLS failure raises
    :class:`ServiceError` naming ``BPWATCH_KAFKA_CONFIG`` at its first occurrence (about
    0.3 s, no retry storm); an unknown librdkafka setting raises :class:`ConfigError`.
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


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka producer settings: defaults < BPWATCH_KAFKA_CONFIG < ``extra`` < required."""
    config = {**_DEFAULTS, **settings.kafka_client_config(), **extra, **_REQUIRED}
    return config


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


class _Delivery:
    """Producer with delivery bookkeeping for one batch at a time."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._flush_timeout = float(config.get("message.timeout.ms", 30_000)) / 1000.0 + 5.0
        self._failed: list[KafkaError] = []
        self._confirmed = 0

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self._confirmed += 1
        else:
            self._failed.append(err)

    def send(self, topic: str, records: Iterable[KafkaRecord]) -> int:
        """Produce all records, wait for the broker; the confirmed count, or raise."""
        self._failed.clear()
        self._confirmed = 0
        sent = 0
        for key, value, headers in records:
            produce(
                self._producer, topic, value, key, headers=headers, on_delivery=self._on_delivery
            )
            sent += 1
            self._producer.poll(0)
        pending = self._producer.flush(self._flush_timeout)
        if self._failed or pending or self._confirmed != sent:
            first = self._failed[0].str() if self._failed else "no confirmation in time"
            raise KafkaDeliveryError(
                f"broker did not confirm {sent - self._confirmed} of {sent} messages to topic "
                f"{topic} ({first}); check that the topic exists (make setup) and "
                "BPWATCH_KAFKA_BROKERS is reachable"
            )
        return self._confirmed

    def close(self) -> None:
        self._producer.flush(self._flush_timeout)


class _ConfirmedKafkaPartition(StatelessSinkPartition[KafkaRecord]):
    def __init__(self, config: dict[str, Any], topic: str, worker_index: int) -> None:
        self._delivery = _Delivery(config)
        self._topic = topic
        self._worker = worker_index

    def write_batch(self, items: list[KafkaRecord]) -> None:
        started = time.monotonic()
        confirmed = self._delivery.send(self._topic, items)
        log.debug(
            "kafka_batch worker=%d topic=%s msgs=%d took=%.3fs",
            self._worker,
            self._topic,
            confirmed,
            time.monotonic() - started,
        )

    def close(self) -> None:
        self._delivery.close()


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
    delivery = _Delivery(producer_config(settings, **producer_overrides))
    try:
        return delivery.send(topic, items)
    finally:
        delivery.close()
