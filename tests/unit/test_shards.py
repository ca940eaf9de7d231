"""``shards.parse_messages`` gives what a plain loop over ``parse_message`` gives: the entries
grouped by patient (outcomes without a patient under a no-patient key of their message key).

The oracle below is the straightforward version (one ``isinstance`` per outcome, a dict of
lists); the production loop is trimmed for speed and must group, order and flag the very
same entries, for the simulator's messages (faults included), Bundles, messages without a
value, topic or timestamp.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any

import orjson

from lib.domain import DeadLetter, Reading, Skipped
from lib.monitor import shards
from lib.settings import Settings
from lib.sim import stream
from tests.fixtures import realworld


@dataclass
class Msg:
    value: Any
    key: bytes | None = b"p1"
    headers: Any = ()
    topic: str | None = "bp.observations"
    partition: int | None = 0
    offset: int | None = 0
    timestamp: tuple[int, int] | None = (1, 1_700_000_000_000)


@dataclass
class Bare:
    """A message with only a key and a value (no topic, partition, offset or timestamp)."""

    value: Any
    key: bytes | None = None


def reference(messages: list[Any]) -> list[tuple[str, list[shards.Entry]]]:
    by_key: dict[str, list[shards.Entry]] = {}
    for msg in messages:
        ingested = shards.ingested_at_of(msg)
        first = 1
        for outcome in shards.parse_message(msg):
            if isinstance(outcome, DeadLetter | Skipped):
                key = f"\x1fno-patient/{zlib.crc32(outcome.key or b'') % shards.SHARDS}"
            else:
                key = outcome.patient_id
            by_key.setdefault(key, []).append((outcome, ingested, first))
            first = 0
    return list(by_key.items())


def batch() -> list[Any]:
    sim = replace(Settings(), sim_patients=30, sim_count=600, sim_seed=5, sim_fault_rate=0.2)
    msgs: list[Any] = [
        Msg(m.value, m.key, topic="t", partition=i % 3, offset=i, timestamp=(1, i * 1000))
        for i, m in enumerate(stream.messages(sim))
    ]
    stream_msgs, _ = realworld.realistic_stream()
    msgs += [Msg(value, key, offset=i) for i, (key, value) in enumerate(stream_msgs)]
    msgs += [
        Msg(None),
        Msg(bytearray(orjson.dumps(realworld.panel()))),
        Msg(b"not json", key=None, timestamp=(0, 5)),
        Msg(b"{}", timestamp=(1, -1)),
        Msg(orjson.dumps(realworld.panel("bp-h")), headers=iter([("h", b"v")])),
        Bare(orjson.dumps(realworld.panel("bp-bare"))),
        Bare(b"[]", key=b"k"),
    ]
    return msgs


def test_parse_messages_equals_the_plain_loop() -> None:
    msgs = batch()
    expected = reference(batch())  # fresh messages: one has a one-shot headers iterator
    got = shards.parse_messages(msgs)
    assert [key for key, _ in got] == [key for key, _ in expected]
    assert got == expected
    assert repr(got) == repr(expected)
    outcomes = [o for _, entries in got for o, _, _ in entries]
    assert sum(type(o) is Reading for o in outcomes) > 400
    assert any(type(o) is DeadLetter for o in outcomes)
    assert sum(first for _, entries in got for _, _, first in entries) == len(msgs)


def test_sources_and_ingestion_times() -> None:
    ((_, [(reading, ingested, first)]),) = shards.parse_messages(
        [Msg(orjson.dumps(realworld.panel()), topic="bp", partition=2, offset=41)]
    )
    assert type(reading) is Reading and first == 1
    assert reading.source == "bp:2:41" and ingested == 1_700_000_000.0
    ((_, [(bare, no_time, _)]),) = shards.parse_messages([Bare(orjson.dumps(realworld.panel()))])
    assert bare.source == "" and no_time is None
