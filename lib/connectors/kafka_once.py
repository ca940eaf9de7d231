"""The earlier home of the idempotent Kafka sink, kept for existing imports: the code is in
:mod:`lib.connectors.kafka.idempotent`."""

from lib.connectors.kafka.idempotent import *  # noqa: F403 (its __all__)
from lib.connectors.kafka.idempotent import __all__ as __all__
