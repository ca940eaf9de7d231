"""Elasticsearch output: idempotent bulk writes with retries and backpressure, and the one
client factory of every sink, tool and test. One role per file:

bulk      the bulk protocol: actions, dedupe, NDJSON encoding, chunks, the request and its
          retries, item failures (:func:`write_actions`, the one bulk core; :func:`bulk_write`)
blocks    write blocks (``cluster_block_exception``): recognised, retried, logged once a minute
client    :func:`make_client` and its orjson serializers
writer    :class:`BulkWriter`: the bulk core on a background thread, with backpressure
sink      :class:`ElasticSink` and :func:`write`: the dataflow step, keyed by patient shard
testing   :class:`~.testing.TestingElasticSink`: the same step with a recording writer

Guarantee: **at-least-once; idempotent by ``_id``**, so a replay overwrites and never
duplicates; a key's snapshot returns only once Elasticsearch acknowledged what it wrote.
Each bulk round logs one line: ``docs=500 index=bp-anomalies took=0.040s retries=0 ...``.
"""

from lib.connectors.elastic.blocks import BLOCK_LOG_EVERY_S, WriteBlock
from lib.connectors.elastic.bulk import (
    MAX_BULK_BYTES,
    Action,
    BulkStats,
    Encoded,
    RetryPolicy,
    bulk_write,
    chunks,
    dedupe_actions,
    encode_actions,
    encode_routed,
    write_actions,
)
from lib.connectors.elastic.client import TOOL_RETRIES, make_client, orjson_serializers
from lib.connectors.elastic.sink import ElasticSink, ElasticWriteLogic, write
from lib.connectors.elastic.writer import BulkWriter, FailureLatch

__all__ = [
    "BLOCK_LOG_EVERY_S",
    "MAX_BULK_BYTES",
    "TOOL_RETRIES",
    "Action",
    "BulkStats",
    "BulkWriter",
    "ElasticSink",
    "ElasticWriteLogic",
    "Encoded",
    "FailureLatch",
    "RetryPolicy",
    "WriteBlock",
    "bulk_write",
    "chunks",
    "dedupe_actions",
    "encode_actions",
    "encode_routed",
    "make_client",
    "orjson_serializers",
    "write",
    "write_actions",
]
