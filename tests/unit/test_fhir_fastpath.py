"""The parser's fast path for the common shape gives exactly what the general path gives.

``lib.monitor.fhir._common_reading`` either declines (None) or returns the very Reading that
``lib.monitor.fhir._observation`` returns for the same resource. Checked on the simulator's own
messages (faults included) and on many seeded mutations of a typical Observation: one field
deleted or replaced by a value of another type or content, nested anywhere.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.domain import Reading
from lib.monitor import fhir
from tests.unit.test_fhir import bp
from tests.unit.test_fhir_fuzz import json_values

REPLACEMENTS: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1e300,
    2**70,
    120,
    80.5,
    301,
    19.9,
    "",
    "x",
    "final",
    "amended",
    "preliminary",
    "entered-in-error",
    "Patient/",
    "Patient/p 1",
    "Patient/" + "a" * 65,
    "Group/g",
    "urn:uuid:abc",
    "85354-9",
    "8480-6",
    "8462-4",
    "http://loinc.org",
    "urn:oid:2.16.840.1.113883.6.1",
    "http://snomed.info/sct",
    "mm[Hg]",
    "mmHg",
    "kPa",
    "<",
    "2025-03-04T10:15:30Z",
    "2025-03-04T10:15:30",
    "2025-03-04T10:15:30-05:00",
    "0001-01-01T00:30:00+01:00",
    "2025-03-04",
    "2025-13-04T10:15:30Z",
    [],
    {},
    [{}],
    {"value": 120, "code": "mm[Hg]"},
    {"value": 120, "code": "mm[Hg]", "comparator": ">"},
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys / indexes) to a value inside a JSON document."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: dict[str, Any], path: tuple, value: Any, delete: bool) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(value)
    return doc


def assert_same(res: dict[str, Any], source: str = "t:0:1") -> Reading | None:
    """The fast path declines or agrees with the general path; what it returned."""
    try:
        general: Any = fhir._observation(res, source, None)
    except fhir._Bad as bad:
        general = ("dead", bad.reason)
    except Exception as exc:
        general = ("defect", type(exc).__name__)
    try:
        fast = fhir._common_reading(res, source)
    except Exception as exc:
        fast = None
        assert general == ("defect", type(exc).__name__)
    if fast is not None:
        assert type(fast) is Reading
        assert fast == general
        assert fast.effective_at.tzinfo is general.effective_at.tzinfo
        assert repr(fast) == repr(general)  # floats bit-identical, same types
    return fast


def typical() -> dict[str, Any]:
    return bp(effectiveDateTime="2025-03-04T10:15:30.125+00:00")


def test_the_typical_shapes_take_the_fast_path() -> None:
    assert assert_same(typical()) is not None
    assert assert_same(bp()) is not None  # +02:00 offset: converted to UTC
    # and the whole parser agrees on them
    for obs in (typical(), bp()):
        (outcome,) = fhir.parse(orjson.dumps(obs), b"k", "t:0:1")
        assert outcome == fhir._observation(obs, "t:0:1", None)


def test_shapes_the_fast_path_leaves_to_the_general_path() -> None:
    kpa = typical()
    kpa["component"][0]["valueQuantity"] = {"value": 18.9, "code": "kPa"}
    swapped = typical()
    swapped["component"].reverse()
    no_version = typical()
    del no_version["meta"]
    for res in (kpa, swapped, no_version):
        assert fhir._common_reading(res, "") is None
        assert type(fhir._observation(res, "", None)) is Reading


def test_every_single_mutation_of_a_typical_observation() -> None:
    base = typical()
    paths = _paths(base)
    fast_taken = checked = 0
    for path in paths:
        variants = [_mutate(base, path, None, delete=True)]
        variants += [_mutate(base, path, v, delete=False) for v in REPLACEMENTS]
        for res in variants:
            checked += 1
            fast_taken += assert_same(res) is not None
    assert checked > 1500
    assert 0 < fast_taken < checked


def test_random_double_mutations() -> None:
    rng = random.Random(20250304)
    base = typical()
    for _ in range(3000):
        res = base
        for _ in range(2):
            paths = _paths(res)
            if not paths:
                break
            path = rng.choice(paths)
            res = _mutate(res, path, rng.choice(REPLACEMENTS), delete=rng.random() < 0.2)
        assert_same(res)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_arbitrary_json_anywhere(data: st.DataObject) -> None:
    base = typical()
    path = data.draw(st.sampled_from(_paths(base)))
    assert_same(_mutate(base, path, data.draw(json_values), delete=False))


@pytest.mark.parametrize("fault_rate", [0.0, 0.2])
def test_simulator_messages_agree(fault_rate: float) -> None:
    from dataclasses import replace

    from lib.settings import Settings
    from lib.sim import stream

    sim = replace(Settings(), sim_patients=20, sim_count=400, sim_seed=3)
    sim = replace(sim, sim_fault_rate=fault_rate)
    fast_taken = 0
    for msg in stream.messages(sim):
        try:
            doc = orjson.loads(msg.value)
        except orjson.JSONDecodeError:
            continue
        if type(doc) is not dict:
            continue
        resources = [doc] if doc.get("resourceType") == "Observation" else []
        if doc.get("resourceType") == "Bundle" and type(doc.get("entry")) is list:
            resources = [
                e["resource"]
                for e in doc["entry"]
                if type(e) is dict and type(e.get("resource")) is dict
            ]
        for res in resources:
            fast_taken += assert_same(res) is not None
    assert fast_taken > 300
