"""bpwatch's exceptions. Third-party errors are translated at the boundary.

BpwatchError
├── ConfigError          an environment variable is invalid (message names the fix)
├── ModelError           the risk model is missing, tampered with or incompatible
├── ServiceError         Kafka or Elasticsearch cannot be used
│   ├── KafkaDeliveryError   a produced message was not confirmed by the broker
│   └── IndexingError        Elasticsearch refused documents after all retries
├── SinkError            a local output (e.g. the normal-case folder) cannot be written
└── RecoveryError        the recovery store cannot be resumed, backed up or restored
"""

from __future__ import annotations


class BpwatchError(Exception):
    """Base of every bpwatch error."""


class ConfigError(BpwatchError):
    """An invalid setting; the message names the variable and the fix."""


class ModelError(BpwatchError):
    """The risk model cannot be used; the message names the command that fixes it."""


class ServiceError(BpwatchError):
    """Kafka or Elasticsearch cannot be used."""


class KafkaDeliveryError(ServiceError):
    """The broker did not confirm a produced message."""


class IndexingError(ServiceError):
    """Elasticsearch refused documents after all retries."""


class SinkError(BpwatchError):
    """A local output cannot be written."""


class RecoveryError(BpwatchError):
    """The recovery store cannot be resumed by this version, or a backup or restore of it
    failed its checks; the message names the fix."""
