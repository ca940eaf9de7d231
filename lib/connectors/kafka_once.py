"""The earlier home of the idempotent Kafka sink, kept for existing imports: the code is in
:mod:`lib.connectors.kafka.idempotent`."""

from lib.connectors.kafka.idempotent import (
    ID_HEADER,
    RECENT_IDS,
    ExactlyOnceKafkaSink,
    IdempotentKafkaSink,
    OnceRecord,
    scan_consumer,
    sent_ids,
)

__all__ = [
    "ID_HEADER",
    "RECENT_IDS",
    "ExactlyOnceKafkaSink",
    "IdempotentKafkaSink",
    "OnceRecord",
    "scan_consumer",
    "sent_ids",
]
