"""Bad input at scale: mutated and random messages whose fate is known *by construction*.

:func:`bad_messages` derives each message from a valid simulator Observation (or from nothing)
with one mutation that makes it unprocessable whatever the parser's details (valid FHIR that
is not a reading is skipped, so no mutation makes one): truncation,
invalid UTF-8, a required field of the wrong type, implausible or unrepresentable numbers,
nesting deeper than any JSON parser here accepts, enormous ids, Bundles with bad entries or too
many entries, random bytes and random JSON. So the number of dead letters the monitor must
produce is known without asking the parser (``expected_dead``), and every mutated message must
come back on the DLQ with its original bytes. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]

_BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82")
_WRONG_TYPES: dict[str, tuple[Any, ...]] = {
    "resourceType": (7, None, ["Observation"], "observation", "Observation?"),
    "id": (12, {}, "", "has spaces", "x" * 257, ["a"]),
    "status": (1, None, "finalized", ["final"], {"v": "final"}),
    "code": ("85354-9", [], None, {"coding": "85354-9"}, {"coding": {"code": "85354-9"}}),
    "subject": (5, None, [], {"reference": 5}, {"display": "only a name"}),
    "effectiveDateTime": (1_700_000_000, "yesterday", "2024-13-45", None, "2024-02-30T10:00Z"),
    "component": ({}, "x", [], None, [{"code": "8480-6"}]),
}
_BAD_VALUES = (
    "120 mmHg",
    None,
    [120],
    {"v": 1},
    True,
    1e308,
    -1e308,
    1e29,
    1e-320,
    301,
    0,
    -120,
    float(2**63),
)


@dataclass
class Fuzzed:
    records: list[Record]
    expected_dead: int  # dead letters the monitor must produce for these records
    kinds: Counter[str]


def _obs(template: bytes) -> dict[str, Any]:
    return orjson.loads(template)


def _set_value(obs: dict[str, Any], value: Any, rng: random.Random) -> None:
    comp = obs["component"][rng.randrange(len(obs["component"]))]
    comp["valueQuantity"]["value"] = value


def _mutate(kind: str, raw: bytes, rng: random.Random) -> tuple[bytes, int]:
    """(mutated bytes, number of dead letters it must give)."""
    if kind == "truncate":  # any proper prefix of a JSON object is invalid JSON
        return raw[: rng.randrange(0, len(raw) - 1)], 1
    if kind == "invalid_utf8":
        at = rng.randrange(0, len(raw))
        return raw[:at] + rng.choice(_BAD_UTF8) + raw[at:], 1
    if kind == "nan":
        obs = _obs(raw)
        _set_value(obs, "__NAN__", rng)
        return orjson.dumps(obs).replace(
            b'"__NAN__"', rng.choice((b"NaN", b"Infinity", b"1e999"))
        ), 1
    obs = _obs(raw)
    if kind == "wrong_type":
        name = rng.choice(sorted(_WRONG_TYPES))
        value = rng.choice(_WRONG_TYPES[name])
        if value is None:
            obs.pop(name, None)
        else:
            obs[name] = value
    elif kind == "bad_value":
        _set_value(obs, rng.choice(_BAD_VALUES), rng)
    elif kind == "bad_unit":
        comp = obs["component"][rng.randrange(len(obs["component"]))]["valueQuantity"]
        comp["code"] = rng.choice(("cm[H2O]", "Pa", "", "mm"))
        comp["unit"] = rng.choice(("cmH2O", "Pa", "", "mm"))
    elif kind == "deep_nesting":  # deeper than 1024 levels: no JSON parser here accepts it
        depth = rng.randrange(1_100, 20_000)
        text = orjson.dumps(obs)
        return text[:-1] + b',"extension":' + b"[" * depth + b"]" * depth + b"}", 1
    elif kind == "enormous":  # ~900 kB, under the broker's 1 MB limit; an id that long is invalid
        obs["id"] = "a" * rng.randrange(800_000, 950_000)
    elif kind == "bundle_bad_entries":
        n = rng.randrange(2, 6)
        entries = []
        for _ in range(n):
            e = _obs(raw)
            e["status"] = rng.choice((None, 3, "nope"))
            entries.append({"resource": e})
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        return orjson.dumps(bundle), 1  # one dead letter per message, whatever its entries
    elif kind == "bundle_too_many":
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{}] * 1_001}
        return orjson.dumps(bundle), 1
    elif kind == "bundle_empty":  # entry is not an array (an empty one is a valid searchset)
        return orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": {}}), 1
    else:
        raise ValueError(kind)
    return orjson.dumps(obs), 1


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(6 if depth < 3 else 3)
    if choice == 0:
        return rng.choice((0, -1, 2**53, 1.5e300, -0.0))
    if choice == 1:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(0, 40)))
    if choice == 2:
        return rng.choice((None, True, False))
    if choice == 3:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    obj = {f"k{rng.randrange(99)}": _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}
    if choice == 5:
        # never a valid resource type: valid FHIR that is not a reading is skipped, not dead
        obj["resourceType"] = rng.choice(("patient", "", "Dev ice", 5))
    return obj


KINDS = (
    "truncate",
    "invalid_utf8",
    "nan",
    "wrong_type",
    "bad_value",
    "bad_unit",
    "deep_nesting",
    "enormous",
    "bundle_bad_entries",
    "bundle_too_many",
    "bundle_empty",
    "random_bytes",
    "random_json",
)
# relative frequencies; enormous payloads (~900 kB each) come every ENORMOUS_EVERY messages
_WEIGHTS = (20, 15, 5, 20, 15, 5, 3, 0, 4, 1, 1, 10, 8)
ENORMOUS_EVERY = 2_000


def bad_messages(templates: list[Record], n: int, seed: int) -> Iterator[tuple[str, Record, int]]:
    """``n`` (kind, record, dead letters it must give), derived from valid ``templates``."""
    rng = random.Random(seed)
    for i in range(n):
        key, raw, headers = rng.choice(templates)
        kind = "enormous" if i % ENORMOUS_EVERY == 7 else rng.choices(KINDS, _WEIGHTS)[0]
        if kind == "random_bytes":
            value, dead = rng.randbytes(rng.randrange(0, 3000)), 1
        elif kind == "random_json":
            value, dead = orjson.dumps(_random_json(rng)), 1
        else:
            value, dead = _mutate(kind, raw, rng)
        roll = rng.random()
        if roll < 0.05:
            key = None
        elif roll < 0.10:
            key = rng.randbytes(rng.randrange(1, 40))  # keys need not be UTF-8
        yield kind, (key, value, list(headers)), dead


def mixed(clean: list[Record], n_bad: int, seed: int) -> Fuzzed:
    """``clean`` messages (in order) with ``n_bad`` bad ones interleaved at random places."""
    rng = random.Random(seed ^ 0x5EED)
    bad = list(bad_messages(clean, n_bad, seed))
    slots = sorted(rng.randrange(len(clean) + 1) for _ in bad)
    out: list[Record] = []
    kinds: Counter[str] = Counter()
    expected = 0
    bi = 0
    for i, rec in enumerate([*clean, None]):
        while bi < len(bad) and slots[bi] == i:
            kind, bad_rec, dead = bad[bi]
            out.append(bad_rec)
            kinds[kind] += 1
            expected += dead
            bi += 1
        if rec is not None:
            out.append(rec)
    return Fuzzed(out, expected, kinds)
