"""The parser's fast path for the common shape gives exactly what the general path gives.

``lib.monitor.fhir.fastpath._common_outcomes`` (msgspec structs) either declines (None) or
returns the very Readings that the general path ``lib.monitor.fhir.general._parse_json``
(orjson + the FHIR rules) returns for the same bytes; and ``fhir.parse`` (fast path, else
general path) gives the same outcome list as the general path alone, dead letters included.
Checked on the simulator's own messages (faults included), the real-world shapes, crafted JSON
edge cases (UTF-8, numbers out of range, duplicate keys, nesting), seeded mutations of a
typical Observation and of a Bundle (one field deleted or replaced by a value of another type
or content, nested anywhere), byte-level mutations, and hypothesis-drawn JSON anywhere in the
message.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.domain import DeadLetter, Outcome, Reading
from lib.monitor import fhir
from lib.monitor.fhir import fastpath
from lib.monitor.fhir import general as general_path
from tests.fixtures import realworld
from tests.unit.test_fhir import bp
from tests.unit.test_fhir_fuzz import json_values

REPLACEMENTS: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1e300,
    2**70,
    10**400,
    120,
    120.0,
    80.5,
    301,
    19.9,
    "",
    "x",
    "120",
    "final",
    "amended",
    "preliminary",
    "entered-in-error",
    "Patient/",
    "Patient/p 1",
    "Patient/" + "a" * 65,
    "Patient/" + "a" * 257,
    "Group/g",
    "urn:uuid:abc",
    "85354-9",
    "55284-4",
    "8480-6",
    "8462-4",
    "96607-7",
    "http://loinc.org",
    "urn:oid:2.16.840.1.113883.6.1",
    "http://snomed.info/sct",
    "mm[Hg]",
    "mmHg",
    "mm Hg",
    "kPa",
    "<",
    "2025-03-04T10:15:30Z",
    "2025-03-04T10:15:30z",
    "2025-03-04t10:15:30Z",
    "2025-03-04T10:15:30",
    "2025-03-04T10:15:30-05:00",
    "2025-03-04T10:15:30.123456789+01:00",
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:30:00-01:00",
    "2025-03-04",
    "2025-03",
    "2025",
    "2025-13-04T10:15:30Z",
    "é",
    "\ud83d\ude00",
    [],
    {},
    [{}],
    [None],
    {"value": 120, "code": "mm[Hg]"},
    {"value": 120, "code": "mm[Hg]", "comparator": ">"},
    {"value": 120, "code": "mm[Hg]", "comparator": None},
    {"value": 16, "code": "kPa"},
    {"value": 120, "unit": "mmHg"},
    {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
    {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
    {"coding": None, "text": "BP"},
    {"reference": "Patient/p-2"},
    {"reference": "Patient/p-2", "identifier": {"value": "1"}},
    {"versionId": 3},
    {"versionId": None, "lastUpdated": "2025-01-01T00:00:00Z"},
    {"lastUpdated": 5},
    {"display": "Omron"},
    {"text": "left arm"},
    {"url": fhir.BODY_POSITION_URL, "valueCodeableConcept": {"text": "sitting"}},
    {
        "url": fhir.MEASUREMENT_SETTING_URL,
        "valueCodeableConcept": {"coding": [{"code": "264362003"}]},
    },
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


def encode(doc: Any) -> bytes:
    """JSON bytes of any Python value (the stdlib writes big integers and NaN, orjson won't)."""
    return json.dumps(doc, separators=(",", ":")).encode("utf-8", "surrogatepass")


def assert_same(value: bytes, source: str = "t:0:1") -> list[Outcome] | None:
    """parse == the general path for these bytes; the fast path declines or agrees.

    Returns the fast path's Readings (None when it declined)."""
    key, headers = b"k", (("h", b"v"),)
    general = general_path._parse_json(value, key, source, headers)
    fast = fastpath._common_outcomes(value, source)
    if fast is not None:
        assert fast and all(type(r) is Reading for r in fast)
        assert fast == general
        assert repr(fast) == repr(general)  # floats bit-identical, same types
        for r, g in zip(fast, general, strict=True):
            assert r.effective_at.tzinfo is g.effective_at.tzinfo  # type: ignore[union-attr]
    outcomes = fhir.parse(value, key, source, headers)
    assert outcomes == general
    assert repr(outcomes) == repr(general)
    return fast


def typical() -> dict[str, Any]:
    obs = bp(effectiveDateTime="2025-03-04T10:15:30.125+00:00")
    obs["bodySite"] = {"coding": [{"system": "http://snomed.info/sct", "code": "368208006"}]}
    obs["device"] = {"display": "Omron HBP-1320"}
    obs["extension"] = [
        {
            "url": fhir.MEASUREMENT_SETTING_URL,
            "valueCodeableConcept": {"coding": [{"code": "264362003"}]},
        }
    ]
    return obs


def ehr_like() -> dict[str, Any]:
    """An EHR's shape: its own code first, an absolute Patient URL, encounter, performer,
    interpretation, narrative and meta tags beside the values."""
    obs = typical()
    obs["code"]["coding"].insert(0, {"system": "urn:oid:1.2.840.114350.1", "code": "5"})
    obs["subject"] = {"reference": "https://ehr.example/fhir/R4/Patient/eX1/_history/3"}
    obs["encounter"] = {
        "reference": "Encounter/e1",
        "identifier": {"use": "usual", "system": "urn:oid:1.2", "value": "27"},
        "display": "Office Visit",
    }
    obs["performer"] = [
        {
            "reference": "Practitioner/p1",
            "type": "Practitioner",
            "extension": [{"url": "http://example.org/role", "valueString": "nurse"}],
        }
    ]
    obs["interpretation"] = [{"coding": [{"system": "urn:interp", "code": "H"}], "text": "High"}]
    obs["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"/>'}
    obs["meta"]["tag"] = [{"system": "urn:tag", "code": "t"}]
    return obs


def test_the_typical_shapes_take_the_fast_path() -> None:
    for obs in (typical(), bp(), realworld.panel(), ehr_like()):
        reading = assert_same(encode(obs))
        assert reading is not None
    (reading,) = assert_same(encode(typical())) or ()
    assert type(reading) is Reading
    assert (reading.body_site, reading.setting, reading.device) == (
        "368208006",
        "home",
        "Omron HBP-1320",
    )
    kpa = typical()
    kpa["component"][0]["valueQuantity"] = {"value": 18.9, "code": "kPa"}
    date_only = bp(effectiveDateTime="2025-03-04")
    legacy = bp()
    legacy["code"]["coding"][0]["code"] = fhir.LEGACY_BP_PANEL_CODE
    for obs in (kpa, date_only, legacy):
        assert assert_same(encode(obs)) is not None


def test_shapes_the_fast_path_leaves_to_the_general_path() -> None:
    swapped = typical()
    swapped["component"].reverse()
    three = typical()
    three["component"].append(copy.deepcopy(three["component"][0]))
    text_value = typical()
    text_value["component"][0]["valueQuantity"]["value"] = "142"
    int_version = typical()
    int_version["meta"]["versionId"] = 2
    null_comparator = typical()
    null_comparator["component"][1]["valueQuantity"]["comparator"] = None
    extra = typical()
    extra["note"] = [{"text": "after exercise"}]
    for res in (swapped, three, text_value, int_version, null_comparator, extra):
        assert fastpath._common_outcomes(encode(res), "") is None
        assert assert_same(encode(res)) is None
    # the general path still reads most of them
    assert type(fhir.parse(encode(swapped))[0]) is Reading
    assert type(fhir.parse(encode(int_version))[0]) is Reading
    assert type(fhir.parse(encode(null_comparator))[0]) is DeadLetter


def bundle_of(*resources: dict[str, Any], **over: Any) -> dict[str, Any]:
    entries = [
        {
            "fullUrl": f"urn:uuid:{r.get('id', 'x')}",
            "resource": r,
            "search": {"mode": "match", "score": 1},
        }
        for r in resources
    ]
    doc: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries)}
    doc["link"] = [{"relation": "self", "url": "https://ehr.example/Observation?code=85354-9"}]
    return doc | {"entry": entries} | over


def two_readings() -> dict[str, Any]:
    second = typical()
    second["id"] = "obs-2"
    second["subject"] = {"reference": "Patient/p-8"}
    del second["extension"]
    return bundle_of(typical(), second)


def test_bundles_of_common_observations_take_the_fast_path() -> None:
    fast = assert_same(encode(two_readings()))
    assert fast is not None and [r.observation_id for r in fast] == ["obs-1", "obs-2"]  # type: ignore[union-attr]
    many = bundle_of(*[realworld.panel(f"o{i}") for i in range(fhir.MAX_BUNDLE_ENTRIES)])
    assert len(encode(many)) < fhir.MAX_MESSAGE_BYTES
    assert assert_same(encode(many)) is not None
    huge = bundle_of(*[typical() | {"id": f"o{i}"} for i in range(fhir.MAX_BUNDLE_ENTRIES)])
    assert len(encode(huge)) > fhir.MAX_MESSAGE_BYTES
    assert assert_same(encode(huge)) is None  # too_large, as in the general path
    transaction = bundle_of(typical(), type="transaction")
    transaction["entry"][0]["request"] = {"method": "POST", "url": "Observation"}
    assert assert_same(encode(transaction)) is not None


def test_bundles_the_fast_path_leaves_to_the_general_path() -> None:
    too_many = bundle_of(*[typical() | {"id": f"o{i}"} for i in range(fhir.MAX_BUNDLE_ENTRIES + 1)])
    mixed = bundle_of(typical(), {"resourceType": "Patient", "id": "p-7"})
    one_bad = two_readings()
    one_bad["entry"][1]["resource"]["component"].pop()
    no_resource = two_readings()
    del no_resource["entry"][1]["resource"]
    for doc in (
        too_many,
        mixed,
        one_bad,
        no_resource,
        bundle_of(),
        bundle_of(entry=None),
        bundle_of(typical(), typical() | {"status": "entered-in-error"}),
        {"entry": two_readings()["entry"], "resourceType": "Bundle"},  # tag not first: fine
    ):
        assert_same(encode(doc))
    assert fastpath._common_outcomes(encode(mixed), "") is None
    outcomes = fhir.parse(encode(one_bad))
    assert [type(o) for o in outcomes] == [Reading, DeadLetter]
    (dead,) = fhir.parse(encode(too_many))
    assert type(dead) is DeadLetter and dead.reason == "too_large"


def test_every_single_mutation_of_a_bundle() -> None:
    base = two_readings()
    fast_taken = checked = 0
    for path in _paths(base):
        variants = [_mutate(base, path, None, delete=True)]
        variants += [_mutate(base, path, v, delete=False) for v in REPLACEMENTS[::3]]
        for doc in variants:
            checked += 1
            fast_taken += assert_same(encode(doc)) is not None
    assert checked > 2000
    assert 0 < fast_taken < checked


def test_every_single_mutation_of_a_typical_observation() -> None:
    base = typical()
    fast_taken = checked = 0
    for path in _paths(base):
        variants = [_mutate(base, path, None, delete=True)]
        variants += [_mutate(base, path, v, delete=False) for v in REPLACEMENTS]
        for res in variants:
            checked += 1
            fast_taken += assert_same(encode(res)) is not None
    assert checked > 4000
    assert 0 < fast_taken < checked


def test_every_single_mutation_of_an_ehr_shaped_observation() -> None:
    base = ehr_like()
    fast_taken = checked = 0
    for path in _paths(base):
        variants = [_mutate(base, path, None, delete=True)]
        variants += [_mutate(base, path, v, delete=False) for v in REPLACEMENTS[::2]]
        for res in variants:
            checked += 1
            fast_taken += assert_same(encode(res)) is not None
    assert checked > 3000
    assert 0 < fast_taken < checked


def test_random_double_mutations() -> None:
    rng = random.Random(20250304)
    base = typical()
    fast_taken = 0
    for _ in range(3000):
        res = base
        for _ in range(2):
            paths = _paths(res)
            if not paths:
                break
            path = rng.choice(paths)
            res = _mutate(res, path, rng.choice(REPLACEMENTS), delete=rng.random() < 0.2)
        fast_taken += assert_same(encode(res)) is not None
    assert fast_taken > 100


# JSON that orjson and msgspec might read differently: each is spliced in at every value
JSON_EDGES: tuple[bytes, ...] = (
    b"1e400",  # out of double range: orjson refuses it
    b"-1e309",
    b"1e-400",
    b"0e99999",
    b"9" * 400,
    b"9" * 309,
    b"9" * 308,
    b"18446744073709551616",
    b"-9223372036854775809",
    b"120.00000000000001",
    b"1.2e2",
    b"-0",
    b"NaN",
    b"Infinity",
    b"01",
    b"1.",
    b"true",
    b"null",
    b'"\\ud800"',
    b'"\\udc00x"',
    b'"\\ud83d\\ude00"',
    b'"\\u0000"',
    b'"\\/"',
    b'"\\q"',
    b'"\xff"',
    b'"\xc0\xaf"',  # overlong
    b'"\xed\xa0\x80"',  # an encoded surrogate
    b'"\xf4\x90\x80\x80"',  # above U+10FFFF
    b'"\xc3\xa9"',
    b'"a\nb"',
    b'"\x7f"',
    b"[" * 600 + b"]" * 600,
    b"[" * 1100 + b"]" * 1100,
    b'{"a":[1,{"b":null}]}',
    b"[1,]",
    b'{"a":1,}',
)


def _spliced(doc: dict[str, Any]) -> list[bytes]:
    """The document with each value in turn replaced by each raw JSON edge case."""
    out = []
    for path in _paths(doc):
        marker = "\x00MARK\x00"
        text = encode(_mutate(doc, path, marker, delete=False))
        for edge in JSON_EDGES:
            out.append(text.replace(encode(marker), edge))
    return out


def test_json_edge_cases_anywhere_give_the_same_outcomes() -> None:
    fast_taken = checked = 0
    for value in _spliced(typical()):
        checked += 1
        fast_taken += assert_same(value) is not None
    assert checked > 2000 and fast_taken > 0


def test_duplicate_keys_and_whitespace() -> None:
    text = encode(typical())
    cases = [
        text.replace(b'"status":"final"', b'"status":"preliminary","status":"final"'),
        text.replace(b'"status":"final"', b'"status":"final","status":"preliminary"'),
        text.replace(b'"status":"final"', b'"status":5,"status":"final"'),
        text.replace(b'"id":"obs-1"', b'"id":"obs-1","id":"obs-2"'),
        text.replace(b'"value":142', b'"value":142,"value":150'),
        text.replace(b'"value":142', b'"value":142,"value":"150"'),
        text.replace(b'"device":', b'"device":{"display":"A"},"device":'),
        text.replace(b'"device":', b'"device":{"display":"A"},"device":null,"device":'),
        b" \t\r\n" + text + b" \n",
        b"\xef\xbb\xbf" + text,  # BOM
        b"\x0c" + text,
        text + b"x",
        text + b"\x00",
        text[:-1],
        text.replace(b"{", b"{ ", 3).replace(b":", b" : ", 5),
        text.replace(b'"id"', b'"\\u0069d"'),
        text.replace(b'"obs-1"', b'"obs\\u002d1"'),
        b"[" + text + b"]",
        b"null",
        b"",
        text.replace(b'"status"', b'"resourceType":"Observation","status"'),
        text.replace(b'"status"', b'"resourceType":"Bundle","status"'),
        text.replace(b'"resourceType":"Observation"', b'"resourceType":"\\u004fbservation"'),
        text.replace(b'"resourceType":"Observation"', b'"resourceType":"observation"'),
        text.replace(b'"resourceType":"Observation"', b'"resourceType":null'),
        text.replace(b'"resourceType":"Observation"', b'"resourceType":"Patient"'),
        text.replace(b'"resourceType":"Observation",', b""),
    ]
    taken = [assert_same(value) is not None for value in cases]
    assert taken[0] and taken[3] and taken[4] and taken[8] and taken[14] and taken[15]
    assert not taken[1] and not taken[9] and not taken[11]
    assert taken[20:] == [True, False, True, False, False, False, False]


def test_values_msgspec_skips_unchecked_are_never_taken_unread() -> None:
    """msgspec skips unknown fields without orjson's checks: 1e400 or bad UTF-8 there is not
    JSON for orjson (invalid_json), so the fast path must not skip such a field."""
    text = encode(typical())
    for hidden in (b"1e400", b"9" * 400, b'"\xff"', b'["\xc0\xaf"]'):
        for field in (b'"note"', b'"valueString"', b'"x"'):
            value = text.replace(b'"status"', field + b":" + hidden + b',"status"', 1)
            assert fastpath._common_outcomes(value, "") is None
            assert assert_same(value) is None
        inside = text.replace(b'"device":{', b'"device":{"x":' + hidden + b",", 1)
        assert assert_same(inside) is None
    (dead,) = fhir.parse(text.replace(b'"status"', b'"note":1e400,"status"', 1))
    assert type(dead) is DeadLetter and dead.reason == "invalid_json"


def test_byte_level_mutations() -> None:
    rng = random.Random(7)
    text = encode(typical())
    alphabet = b'{}[]:,"\\0123456789eE+-.tfnul \xff\xc3\xa9'
    for _ in range(3000):
        value = bytearray(text)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(value))
            op = rng.random()
            if op < 0.4:
                value[i] = rng.choice(alphabet)
            elif op < 0.7:
                del value[i]
            else:
                value.insert(i, rng.choice(alphabet))
        assert_same(bytes(value))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_arbitrary_json_anywhere(data: st.DataObject) -> None:
    base = typical()
    path = data.draw(st.sampled_from(_paths(base)))
    assert_same(encode(_mutate(base, path, data.draw(json_values), delete=False)))


decimals = st.from_regex(
    r"-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,2})?", fullmatch=True
)


@settings(max_examples=500, deadline=None)
@given(systolic=decimals, diastolic=decimals)
def test_numbers_are_read_to_the_same_double(systolic: str, diastolic: str) -> None:
    text = encode(typical())
    value = text.replace(b'"value":142', b'"value":' + systolic.encode())
    value = value.replace(b'"value":91.5', b'"value":' + diastolic.encode())
    assert_same(value)


@pytest.mark.parametrize("fault_rate", [0.0, 0.2])
def test_simulator_messages_agree(fault_rate: float) -> None:
    from dataclasses import replace

    from lib.settings import Settings
    from lib.sim import stream

    sim = replace(Settings(), sim_patients=20, sim_count=400, sim_seed=3)
    sim = replace(sim, sim_fault_rate=fault_rate)
    fast_taken = total = 0
    for msg in stream.messages(sim):
        total += 1
        fast_taken += assert_same(msg.value) is not None
    assert fast_taken > 300
    if fault_rate == 0.0:
        assert fast_taken == total  # every clean simulator message takes the fast path


def test_real_world_shapes_agree() -> None:
    messages, _ = realworld.realistic_stream()
    assert len(messages) == 8
    for _, value in messages:
        assert_same(value)
    shapes = [
        realworld.panel(),
        realworld.panel(None),
        realworld.panel(sys_="132", dia="85"),
        realworld.panel(sys_=True),
        realworld.panel(effectiveDateTime="2024-05-06"),
        realworld.panel(effectiveDateTime="2024-05-06T07:45:00"),
        realworld.panel(status="entered-in-error"),
        realworld.panel(subject={"identifier": {"system": "urn:mrn", "value": "1"}}),
        realworld.single("systolic", "s-1", 120),
    ]
    taken = [assert_same(encode(obs)) is not None for obs in shapes]
    # the first and the date-only panel are of the common shape
    assert taken == [True, False, False, False, True, False, False, False, False]


CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "fhir-realworld"


def _observations(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict):
        return []
    found = [doc] if doc.get("resourceType") == "Observation" else []
    entries = doc.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            found += _observations(entry.get("resource"))
    return found


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"conformance corpus not found at {CORPUS}")
def test_the_real_world_corpus_agrees() -> None:
    """Every file, and every Observation of it alone: the same outcomes on both paths."""
    fast_taken = 0
    for path in sorted(p for p in CORPUS.rglob("*") if p.suffix in (".json", ".ndjson")):
        raw = path.read_bytes()
        for value in raw.splitlines() if path.suffix == ".ndjson" else [raw]:
            assert_same(value)
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            for obs in _observations(doc):
                fast_taken += assert_same(orjson.dumps(obs)) is not None
    assert fast_taken >= 50  # the EHR panels of the corpus take the fast path
