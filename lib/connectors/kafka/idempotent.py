"""Kafka output idempotent by id: no duplicates across a crash and a Bytewax recovery resume.

A resumed dataflow re-emits everything after its last snapshot, so a plain producer would send
those alerts (or dead letters) a second time, and a clinician would be paged twice.
:class:`IdempotentKafkaSink` prevents that without Kafka transactions:

* every record carries a deterministic id (header ``bpwatch-id``: the alert id, or the source
  ``topic:partition:offset#entry`` of a dead letter);
* it is a ``FixedPartitionedSink`` with one Bytewax partition per Kafka partition, routed by a
  stable hash (``zlib.crc32``) of the routing key, so a key always lands in the same partition;
* the state snapshotted with each epoch is the partition's next offset after the last
  *confirmed* write;
* it skips an id it has already sent among the partition's most recent ``RECENT_IDS``
  records, so the same alert computed twice (e.g. from a late or amended copy of the reading
  that opened a since-resolved episode) is published once;
* that window does not depend on restarts: on resume, the partition reads its Kafka partition
  back from ``RECENT_IDS`` records before the snapshotted offset to the end, and remembers the
  ids found there. Reading from the snapshotted offset alone would skip the records re-emitted
  after the snapshot, but not an id computed once before and once after a restart (found by
  ``tests/integration/test_recovery_backup.py``: seed 33 computes such ids in both runs).

Delivery guarantee: at-least-once delivery, idempotent by id: a record whose id is among the
recent ones is skipped, so each id is on the topic once, for one writer per topic (the
monitor). (Not Kafka's exactly-once: no transactions; an id older than the window would be
sent again.) A batch's
records are produced at once (librdkafka sends them after ``linger.ms``, so an alert is on its
topic within milliseconds) and their deliveries are confirmed at the end of the epoch: the
partition's snapshot, and ``close``, return only once the broker has confirmed every record
produced so far (``acks=all``, idempotent producer: the produce-and-confirm path of
:mod:`.producer`), so a snapshot never points past an unconfirmed record.
A failed delivery raises :class:`lib.errors.KafkaDeliveryError` (at the next batch or at the
snapshot), which stops the flow before that epoch is committed; the resume then reads back what
did arrive and skips it, as above. Each non-empty batch logs one line
(``topic=bp.alerts partition=2 sent=3 skipped_already_sent=0 took=0.004s``, ``sent`` being the
records produced).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import OrderedDict
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import Consumer, KafkaError, TopicPartition

from lib.connectors.kafka.producer import ConfirmedProducer, KafkaRecord, producer_config
from lib.connectors.shared import Shared
from lib.errors import ServiceError
from lib.settings import Settings

__all__ = [
    "ID_HEADER",
    "RECENT_IDS",
    "ExactlyOnceKafkaSink",
    "IdempotentKafkaSink",
    "OnceRecord",
    "scan_consumer",
    "sent_ids",
]

log = logging.getLogger("lib.connectors.kafka")  # one logger for the whole package

ID_HEADER = "bpwatch-id"
RECENT_IDS = 50_000  # records per partition whose ids are remembered, across restarts too
# (an alert topic at a million patients gets ~20k records per partition a day: ~2.5 days; a
# resume reads them back: 0.10 s for 50k 400-byte records on the local broker)
# (id, key, value, headers)
OnceRecord = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


def scan_consumer(consumer_config: dict[str, Any]) -> Consumer:
    """A consumer for :func:`sent_ids` (one per sink and process: connecting costs ~60 ms)."""
    return Consumer(
        {
            **consumer_config,
            "group.id": "bpwatch-once-scan",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )


def sent_ids(consumer: Consumer, topic: str, partition: int, start: int) -> list[str]:
    """Ids (header ``bpwatch-id``) of the records at offsets ``start..end`` of one partition,
    oldest first, read with ``consumer`` (:func:`scan_consumer`), which is left without an
    assignment."""
    ids: list[str] = []
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
    start = max(start, low)
    if start >= high:
        return ids
    consumer.assign([TopicPartition(topic, partition, start)])
    try:
        while True:
            msg = consumer.poll(10)
            if msg is None:
                raise ServiceError(f"reading back {topic}[{partition}] timed out")
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    break
                raise ServiceError(f"reading back {topic}[{partition}]: {err.str()}")
            for name, value in msg.headers() or []:  # type: ignore[str-unpack]
                if name == ID_HEADER and isinstance(value, bytes):
                    ids.append(value.decode())
            offset = msg.offset()
            if offset is None or offset + 1 >= high:
                break
    finally:
        consumer.unassign()
    return ids


class _OncePartition(StatefulSinkPartition[OnceRecord, int]):
    def __init__(
        self, sink: IdempotentKafkaSink, partition: int, resume_offset: int | None
    ) -> None:
        settings, topic = sink._settings, sink._topic
        self._sink = sink
        self._topic = topic
        self._partition = partition
        self._producer = ConfirmedProducer(producer_config(settings))
        # Without a snapshot (first run, or a crash before the first snapshot) the whole
        # partition is read back: correctness first; alert and dead-letter topics are small.
        self._next_offset = resume_offset or 0
        read_from = max(0, self._next_offset - RECENT_IDS) if resume_offset else 0
        self._skip: OrderedDict[str, None] = OrderedDict.fromkeys(
            sink._sent_ids(partition, read_from)
        )
        if self._skip:
            log.info(
                "resume topic=%s partition=%d from_offset=%d read_back_from=%d remembered=%d",
                topic,
                partition,
                self._next_offset,
                read_from,
                len(self._skip),
            )

    def _unsent(self, values: list[OnceRecord]) -> list[KafkaRecord]:
        """The records whose id was not sent before, with the id header; remembers the ids."""
        fresh: list[KafkaRecord] = []
        for rec_id, key, value, headers in values:
            if rec_id not in self._skip:
                fresh.append((key, value, [*headers, (ID_HEADER, rec_id.encode())]))
                self._remember(rec_id)
        return fresh

    def write_batch(self, values: list[OnceRecord]) -> None:
        if not values:
            return
        started = time.perf_counter()
        fresh = self._unsent(values)
        if fresh:  # confirmed at the epoch's snapshot (see the module docstring)
            self._producer.queue(self._topic, fresh, partition=self._partition)
        log.info(
            "topic=%s partition=%d sent=%d skipped_already_sent=%d took=%.3fs",
            self._topic,
            self._partition,
            len(fresh),
            len(values) - len(fresh),
            time.perf_counter() - started,
        )

    def _remember(self, rec_id: str) -> None:
        self._skip[rec_id] = None
        if len(self._skip) > RECENT_IDS:
            self._skip.popitem(last=False)

    def _confirm(self) -> None:
        """Wait for the broker to confirm every record queued so far; the offset after them."""
        if self._producer.confirm():
            self._next_offset = self._producer.last_offset + 1

    def snapshot(self) -> int:
        self._confirm()
        return self._next_offset

    def close(self) -> None:
        try:
            self._confirm()
        finally:
            self._producer.close()
            self._sink._scanners.release()


class IdempotentKafkaSink(FixedPartitionedSink[OnceRecord, int]):
    """Items ``(routing_key, (id, key, value, headers))``; see the module docstring.

    Unit of parallelism: one Bytewax partition per Kafka partition, each with its producer;
    one scan consumer per process, shared by the partitions while they resume.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._scan_lock = threading.Lock()  # one partition at a time reads back its ids
        self._scanners: Shared[Consumer] = Shared(self._scan_consumer, Consumer.close)

    def _partition_count(self) -> int:
        from confluent_kafka.admin import AdminClient

        md = AdminClient(self._settings.kafka_client_config()).list_topics(self._topic, timeout=30)
        info = md.topics.get(self._topic)
        if info is None or info.error is not None or not info.partitions:
            raise ServiceError(
                f"topic {self._topic} does not exist: run `make setup` "
                "(python -m lib.tools.admin setup)"
            )
        return len(info.partitions)

    def list_parts(self) -> list[str]:
        return [f"{p:05d}" for p in range(self._partition_count())]

    def part_fn(self, item_key: str) -> int:
        return zlib.crc32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _OncePartition:
        return _OncePartition(self, int(for_part), resume_state)

    def _scan_consumer(self) -> Consumer:
        return scan_consumer(self._settings.kafka_client_config())

    def _sent_ids(self, partition: int, start: int) -> list[str]:
        """:func:`sent_ids` with this process's one scan consumer (kept until the last
        partition closes)."""
        scanner = self._scanners.acquire()
        with self._scan_lock:
            return sent_ids(scanner, self._topic, partition, start)


# The earlier name, kept for existing imports.
ExactlyOnceKafkaSink = IdempotentKafkaSink
