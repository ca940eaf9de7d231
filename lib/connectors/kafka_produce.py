"""The earlier home of the produce-and-confirm path, kept for existing imports: the code is in
:mod:`lib.connectors.kafka.producer`."""

from lib.connectors.kafka.producer import (
    ConfirmedProducer,
    Headers,
    KafkaRecord,
    produce,
    producer_config,
)

__all__ = ["ConfirmedProducer", "Headers", "KafkaRecord", "produce", "producer_config"]
