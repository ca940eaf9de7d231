"""Kafka input and output. One role per file:

source      :class:`ObservationSource`, the monitor's input (retention gaps reported)
preflight   :func:`preflight`: the brokers accept the credentials, checked once at start
producer    :class:`ConfirmedProducer`: the one produce-and-confirm path of every output
sink        :class:`ConfirmedKafkaSink` (the simulator's output) and :func:`produce_all`
idempotent  :class:`IdempotentKafkaSink` (dead letters, alerts): deterministic ids, a record
            whose id was already sent is skipped, across restarts too
"""

from lib.connectors.kafka.idempotent import (
    ID_HEADER,
    RECENT_IDS,
    ExactlyOnceKafkaSink,
    IdempotentKafkaSink,
)
from lib.connectors.kafka.preflight import preflight
from lib.connectors.kafka.producer import ConfirmedProducer, KafkaRecord, producer_config
from lib.connectors.kafka.sink import ConfirmedKafkaSink, Delivered, produce_all, send_one
from lib.connectors.kafka.source import (
    SOURCE_BATCH_SIZE,
    SOURCE_FETCH_CONFIG,
    ObservationSource,
    SourceRecord,
    StartGate,
)

__all__ = [
    "ID_HEADER",
    "RECENT_IDS",
    "SOURCE_BATCH_SIZE",
    "SOURCE_FETCH_CONFIG",
    "ConfirmedKafkaSink",
    "ConfirmedProducer",
    "Delivered",
    "ExactlyOnceKafkaSink",
    "IdempotentKafkaSink",
    "KafkaRecord",
    "ObservationSource",
    "SourceRecord",
    "StartGate",
    "preflight",
    "produce_all",
    "producer_config",
    "send_one",
]
