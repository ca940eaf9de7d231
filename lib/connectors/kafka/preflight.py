"""The credentials preflight: before any data moves, check once that the brokers answer and
accept the credentials of ``BPWATCH_KAFKA_CONFIG``.

Wrong SASL credentials give one :class:`lib.errors.ServiceError` naming that variable, instead
of librdkafka's endless reconnect-and-log loop (a retry storm against the broker). The sinks
call it in ``build()``; entry points that build a ``KafkaSource`` call it first.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException

from lib.errors import ConfigError, ServiceError
from lib.settings import Settings

__all__ = ["preflight"]

log = logging.getLogger("lib.connectors.kafka")  # one logger for the whole package

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
