"""Property tests: lib.monitor.fhir.parse never raises and accounts for every message.

Three generators: arbitrary bytes, arbitrary JSON documents, and valid Observations / Bundles
with one part replaced by arbitrary JSON or deleted (the mutations real senders produce). Each
message also gives the same outcomes as the general path alone (the fast path's oracle).
"""

from __future__ import annotations

import copy
from datetime import UTC
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.domain import Average, DeadLetter, Ignored, Reading, Retraction, Skipped
from lib.monitor import fhir
from lib.monitor.fhir import general
from tests.unit.test_fhir import bp

OUTCOME_TYPES = (Reading, Retraction, Ignored, Average, Skipped, DeadLetter)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "final",
            "entered-in-error",
            "Patient/x",
            "urn:uuid:",
            "85354-9",
            "8480-6",
            "8462-4",
            "http://loinc.org",
            "mm[Hg]",
            "kPa",
            "2025-03-04T10:00:00Z",
            "2025-03-04T10:00:00",
            "2025",
            "Observation",
            "Bundle",
        ]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def check(value: bytes, entries: int | None = None) -> list[Any]:
    outcomes = fhir.parse(value, key=b"k", source="t:0:1")
    assert isinstance(outcomes, list) and len(outcomes) >= 1
    # the fast path takes a message only to give what the general path gives
    assert repr(outcomes) == repr(general._parse_json(value, b"k", "t:0:1", ()))
    dead = [o for o in outcomes if isinstance(o, DeadLetter)]
    assert len(dead) <= 1 and (not dead or outcomes[-1] is dead[0])  # one, after the others
    if entries is not None:
        # every entry is accounted for: an outcome of its own, a share of the message's single
        # dead letter, or (a mutated code can make a lone systolic or diastolic) half a pair
        good = len(outcomes) - len(dead)
        assert good + len(dead) <= entries
        assert 2 * good + (entries if dead else 0) >= entries
    for out in outcomes:
        assert isinstance(out, OUTCOME_TYPES)
        if isinstance(out, DeadLetter):
            assert out.reason in fhir.REASONS
            assert out.reason != "internal_error", out.detail  # a defect, not a bad message
            assert out.raw == value and out.key == b"k" and out.source == "t:0:1"
            assert out.detail
        elif isinstance(out, Reading):
            assert out.effective_at.tzinfo is UTC
            assert 40.0 <= out.systolic <= 300.0 and 20.0 <= out.diastolic <= 200.0
            assert out.systolic > out.diastolic
            assert out.observation_id and out.patient_id
        elif isinstance(out, Skipped):
            assert out.what and out.key == b"k" and out.source == "t:0:1"
        else:
            assert out.observation_id and out.patient_id
    return outcomes


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indexes) into a JSON document."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


def mutate(doc: Any, path: tuple, replacement: Any, delete: bool) -> Any:
    if not path:
        return replacement
    doc = copy.deepcopy(doc)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return doc


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes(value):
    check(value)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_any_json_document(doc):
    check(orjson.dumps(doc))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(bp())), json_values, max_size=6))
def test_observation_with_fields_replaced(fields):
    check(orjson.dumps(bp(**fields)), entries=1)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_observation_with_one_part_mutated(data):
    base = bp(status=data.draw(st.sampled_from(["final", "amended", "entered-in-error"])))
    path = data.draw(st.sampled_from(paths(base)))
    delete = bool(path) and data.draw(st.booleans())
    doc = mutate(base, path, data.draw(json_values), delete)
    check(orjson.dumps(doc), entries=1)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_bundle_of_mutated_entries_gives_one_outcome_per_entry(data):
    n = data.draw(st.integers(min_value=1, max_value=6))
    entries = []
    for i in range(n):
        base = bp(id=f"o{i}")
        path = data.draw(st.sampled_from(paths(base)))
        entries.append({"resource": mutate(base, path, data.draw(json_values), False)})
    value = orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    check(value, entries=n)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=2000))
def test_truncated_or_corrupted_valid_message(noise, cut):
    value = orjson.dumps(bp())
    check(value[:cut])
    check(value[:cut] + noise + value[cut:])


def test_deep_nesting_and_huge_numbers():
    # 1000 levels: within orjson's depth limit (1024), so the parser walks a deep document
    check(b'{"resourceType":"Observation","x":' + b'{"x":' * 998 + b"{}" + b"}" * 999)
    check(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    huge = orjson.dumps(bp()).replace(b'"value":142', b'"value":' + b"9" * 400)
    check(huge)
    check(orjson.dumps(bp()).replace(b'"value":142', b'"value":1e308'))
