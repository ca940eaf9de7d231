"""lib.monitor.fhir.parse: every accepted shape, every status, every dead-letter reason."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from lib.domain import DeadLetter, Ignored, Reading, Retraction, Skipped
from lib.monitor import fhir

LOINC = "http://loinc.org"
NAME = "Zelda Quixote-Marchetti"  # a patient name that must never reach a detail


def bp(**over: Any) -> dict[str, Any]:
    """A valid BP Observation (written here by hand, independent of the simulator)."""
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": {"versionId": "2", "lastUpdated": "2025-01-01T00:00:00Z"},
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/p-7", "display": NAME},
        "effectiveDateTime": "2025-03-04T10:15:30+02:00",
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {
                    "value": 142,
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {
                    "value": 91.5,
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
        ],
    }
    obs.update(over)
    return obs


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def enc(obj: Any) -> bytes:
    return orjson.dumps(obj)


def one(value: bytes, **kw: Any):
    outcomes = fhir.parse(value, **kw)
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def reading(obj: Any) -> Reading:
    out = one(enc(obj))
    assert isinstance(out, Reading), out
    return out


def dead(obj: Any) -> DeadLetter:
    value = obj if isinstance(obj, bytes) else enc(obj)
    out = one(value, key=b"p-7", source="bp.observations:3:99", headers=[("h", b"v")])
    assert isinstance(out, DeadLetter), out
    assert out.raw == value  # the original bytes, unchanged
    assert out.key == b"p-7"
    assert out.source == "bp.observations:3:99"
    assert out.headers == (("h", b"v"),)
    assert out.reason in fhir.REASONS
    assert NAME not in out.detail and "p-7" not in out.detail
    return out


def set_value(obs: dict[str, Any], index: int, **quantity: Any) -> dict[str, Any]:
    obs = copy.deepcopy(obs)
    obs["component"][index]["valueQuantity"] = quantity
    return obs


# -- the typical message ----------------------------------------------------------------


# reasons that only lib.monitor.shards (around the parser) or a parser defect produce
# reasons given around the parser, and by the input source (a gap: not a message)
AROUND_THE_PARSER = {"internal_error", "parser_error", "no_value", "empty_bundle", "retention_gap"}


def test_typical_observation_gives_a_utc_reading_with_all_fields():
    r = one(enc(bp()), key=b"p-7", source="t:1:2")
    assert r == Reading(
        observation_id="obs-1",
        patient_id="p-7",
        effective_at=datetime(2025, 3, 4, 8, 15, 30, tzinfo=UTC),
        systolic=142.0,
        diastolic=91.5,
        status="final",
        version="2",
        source="t:1:2",
        utc_offset=120,  # the sender's +02:00
    )
    assert r.effective_at.tzinfo is UTC
    assert type(r.systolic) is float and type(r.diastolic) is float


def test_simulator_messages_parse_back_to_the_same_reading():
    from lib.sim.fhir_writer import encode, to_fhir

    base = Reading(
        "o-42", "pat-1", datetime(2025, 6, 1, 23, 59, 1, 123000, tzinfo=UTC), 131.0, 85.0
    )
    for unit in ("mm[Hg]", "kPa"):
        for offset in (0, 120, -300):
            msg = encode(to_fhir(base, NAME, utc_offset_min=offset, unit=unit))
            r = one(msg)
            assert isinstance(r, Reading)
            assert (r.observation_id, r.patient_id) == ("o-42", "pat-1")
            assert r.effective_at == base.effective_at
            assert (r.systolic, r.diastolic) == (131.0, 85.0), unit


# -- codes and components -----------------------------------------------------------------


def test_components_in_any_order_with_extra_codings_and_extra_components():
    obs = bp()
    sys_c, dia_c = obs["component"]
    for c in (sys_c, dia_c):
        c["code"]["coding"].insert(0, {"system": "http://snomed.info/sct", "code": "271649006"})
    mean_arterial = {
        "code": {"coding": [{"system": "http://loinc.org", "code": "8478-0"}]},
        "valueQuantity": {"value": 108, "code": "mm[Hg]"},
    }
    obs["component"] = [dia_c, mean_arterial, sys_c]
    r = reading(obs)
    assert (r.systolic, r.diastolic) == (142.0, 91.5)


def test_panel_code_found_among_other_codings_and_by_loinc_oid():
    obs = bp(
        code={
            "coding": [
                {"system": "http://snomed.info/sct", "code": "75367002"},
                {"system": "urn:oid:2.16.840.1.113883.6.1", "code": "85354-9"},
            ],
            "text": "BP",
        }
    )
    assert reading(obs).systolic == 142.0


def test_repeated_component_with_the_same_value_is_accepted():
    obs = bp()
    obs["component"].append(copy.deepcopy(obs["component"][0]))
    assert reading(obs).systolic == 142.0


# -- units --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ({"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}, 120.0),
        ({"value": 120.5, "unit": "mmHg"}, 120.5),  # unit only, no code
        ({"value": 121, "unit": "mm[Hg]"}, 121.0),
        ({"value": 122, "code": "mmHg"}, 122.0),
        ({"value": 16, "unit": "kPa", "code": "kPa"}, 120.0),  # 16 * 7.50062 = 120.0099
        ({"value": 17.33, "unit": "kPa"}, 130.0),  # 129.99 without rounding: a category flip
        ({"value": 18.67, "code": "kPa"}, 140.0),
    ],
)
def test_mmhg_and_kpa_values_are_returned_in_mmhg(quantity, expected):
    r = reading(set_value(bp(), 0, **quantity))
    assert r.systolic == expected


def test_kpa_conversion_factor():
    r = reading(set_value(bp(), 0, value=20.0, code="kPa"))
    assert r.systolic == pytest.approx(20.0 * 7.50062, abs=0.05)


def test_kpa_with_two_decimals_round_trips_every_whole_mmhg_value():
    for mmhg in range(41, 301):
        kpa = round(mmhg * 0.133322, 2)
        obs = set_value(bp(), 0, value=kpa, code="kPa")
        r = reading(set_value(obs, 1, value=2.67, code="kPa"))  # 20 mm[Hg]
        assert (r.systolic, r.diastolic) == (float(mmhg), 20.0)


# -- subject ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "patient_id"),
    [
        ({"reference": "Patient/p-7"}, "p-7"),
        ({"reference": "Patient/p-7/_history/3"}, "p-7"),
        ({"reference": "https://fhir.example.org/r4/Patient/abc.9"}, "abc.9"),
        ({"reference": "https://fhir.example.org/r4/Patient/abc/_history/12"}, "abc"),
        (
            {"reference": "urn:uuid:6f1c2a3e-0b7d-4e0a-9f51-2d1b7e6c8a90"},
            "6f1c2a3e-0b7d-4e0a-9f51-2d1b7e6c8a90",
        ),
        (
            {"identifier": {"system": "urn:oid:1.2.3", "value": "MRN-0042"}},
            "urn:oid:1.2.3|MRN-0042",
        ),
        ({"identifier": {"value": " 0042 "}, "display": NAME}, "0042"),
        ({"reference": "#contained-1", "identifier": {"value": "MRN-1"}}, "MRN-1"),
    ],
)
def test_subject_forms(subject, patient_id):
    assert reading(bp(subject=subject)).patient_id == patient_id


# -- time -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("effectiveDateTime", "2025-03-04T10:15:30Z", utc(2025, 3, 4, 10, 15, 30)),
        ("effectiveDateTime", "2025-03-04T10:15:30+00:00", utc(2025, 3, 4, 10, 15, 30)),
        ("effectiveDateTime", "2025-03-04T10:15:30-05:30", utc(2025, 3, 4, 15, 45, 30)),
        ("effectiveDateTime", "2025-03-04T01:00:00+14:00", utc(2025, 3, 3, 11, 0, 0)),
        (
            "effectiveDateTime",
            "2025-03-04T10:15:30.123+01:00",
            utc(2025, 3, 4, 9, 15, 30, 123000),
        ),
        (
            "effectiveDateTime",
            "2025-03-04T10:15:30.1234567Z",  # FHIR allows any number of digits
            utc(2025, 3, 4, 10, 15, 30, 123456),
        ),
        ("effectiveDateTime", "2025-03-04T10:15Z", utc(2025, 3, 4, 10, 15)),  # no seconds
        ("effectiveDateTime", "2025-03-04", utc(2025, 3, 4)),  # date: midnight UTC
        ("effectiveDateTime", "2025-03", utc(2025, 3, 1)),
        ("effectiveDateTime", "2025", utc(2025, 1, 1)),
        (
            "effectiveInstant",
            "2025-03-04T10:15:30.5+02:00",
            utc(2025, 3, 4, 8, 15, 30, 500000),
        ),
        (
            "effectivePeriod",
            {"start": "2025-03-04T10:00:00+01:00", "end": "2025-03-04T10:05:00+01:00"},
            utc(2025, 3, 4, 9, 0),
        ),
        ("effectivePeriod", {"end": "2025-03-04T10:05:00+01:00"}, utc(2025, 3, 4, 9, 5)),
    ],
)
def test_effective_time_forms_are_normalised_to_utc(field, value, expected):
    obs = bp()
    del obs["effectiveDateTime"]
    obs[field] = value
    r = reading(obs)
    assert r.effective_at == expected
    assert r.effective_at.utcoffset() == timedelta(0)
    assert r.effective_at.tzinfo is UTC


def test_same_instant_in_different_offsets_gives_the_same_time_and_its_own_local_day():
    from lib.monitor.adherence import local_day

    a = reading(bp(effectiveDateTime="2025-03-04T23:30:00-02:00"))
    b = reading(bp(effectiveDateTime="2025-03-05T01:30:00Z"))
    assert a.effective_at == b.effective_at
    assert (a.utc_offset, b.utc_offset) == (-120, 0)
    assert local_day(a.effective_at, a.utc_offset) == date(2025, 3, 4)  # the sender's evening
    assert local_day(b.effective_at, b.utc_offset) == date(2025, 3, 5)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("2025-03-04T08:00:00+05:30", 330),
        ("2025-03-04T08:00:00.250-04:00", -240),
        ("2025-03-04T08:00:00-0400", -240),
        ("2025-03-04", None),  # a date only: its own date
        ("2025-03", None),
    ],
)
def test_the_utc_offset_the_sender_gave_is_kept(text, offset):
    r = reading(bp(effectiveDateTime=text))
    assert r.utc_offset == offset


# -- status and version -------------------------------------------------------------------


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_scored_statuses_give_a_reading(status):
    assert reading(bp(status=status)).status == status


@pytest.mark.parametrize("status", ["preliminary", "registered", "cancelled", "unknown"])
def test_unscored_statuses_are_ignored_and_need_no_values(status):
    obs = bp(status=status)
    del obs["component"], obs["effectiveDateTime"]
    out = one(enc(obs), source="s:0:1")
    assert out == Ignored(observation_id="obs-1", patient_id="p-7", status=status, source="s:0:1")


def test_entered_in_error_retracts_even_with_bad_values_and_no_time():
    obs = bp(status="entered-in-error")
    del obs["effectiveDateTime"]
    obs["component"] = obs["component"][:1]
    out = one(enc(obs), source="s:0:2")
    assert out == Retraction(observation_id="obs-1", patient_id="p-7", source="s:0:2")


def test_retraction_still_needs_the_bp_code_and_a_subject():
    # without a BP code it is not about a BP reading: skipped, never a retraction
    assert isinstance(one(enc(bp(status="entered-in-error", code={"coding": []}))), Skipped)
    assert dead(bp(status="entered-in-error", subject={})).reason == "missing_subject"


@pytest.mark.parametrize(
    ("meta", "version"),
    [
        ({"versionId": "7", "lastUpdated": "2025-01-01T00:00:00Z"}, "7"),
        ({"versionId": 8}, "8"),
        ({"lastUpdated": "2025-01-02T03:04:05.6Z"}, "2025-01-02T03:04:05.6Z"),
        ({}, ""),
        (None, ""),
        ("junk", ""),
    ],
)
def test_version_from_meta(meta, version):
    obs = bp(meta=meta)
    if meta is None:
        del obs["meta"]
    assert reading(obs).version == version


# -- Bundles ----------------------------------------------------------------------------


def test_bundle_gives_one_outcome_per_entry_in_order():
    entries = [
        {"resource": bp(id="a1")},
        {"resource": bp(id="a2", status="preliminary")},
        {"resource": bp(id="a3", status="entered-in-error")},
        {"fullUrl": "urn:uuid:0b5e7c5e-1d7e-4c43-9a55-5c7c8d8f9a01", "resource": bp(id=None)},
        {"fullUrl": "https://h/fhir/Observation/a5/_history/1", "resource": bp(id=None)},
    ]
    for e in entries[3:]:
        del e["resource"]["id"]
    out = fhir.parse(enc({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    assert [type(o) for o in out] == [Reading, Ignored, Retraction, Reading, Reading]
    assert [o.observation_id for o in out] == [
        "a1",
        "a2",
        "a3",
        "0b5e7c5e-1d7e-4c43-9a55-5c7c8d8f9a01",
        "a5",
    ]


def test_bundle_bad_entries_give_one_dead_letter_after_the_good_outcomes():
    entries = [
        {"resource": bp(id="ok1")},
        {"resource": {"resourceType": "Patient", "id": "p-7", "name": [{"text": NAME}]}},
        {"resource": bp(id="bad", component=[])},
        {"request": {"method": "DELETE", "url": "Observation/x"}},
        "not an object",
        {"resource": bp(id="ok2")},
    ]
    value = enc({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    out = fhir.parse(value, key=b"k", source="t:0:5")
    assert [type(o) for o in out] == [Reading, Skipped, Skipped, Reading, DeadLetter]
    assert [o.observation_id for o in out if isinstance(o, Reading)] == ["ok1", "ok2"]
    assert [o.what for o in out if isinstance(o, Skipped)] == [
        "Patient",
        "Bundle entry without resource",
    ]
    dl = out[-1]
    assert dl.reason == "missing_component"  # the first problem's reason
    assert dl.detail.startswith("entry[2] missing_component: ")
    assert "; entry[4] not_observation: entry is not an object" in dl.detail
    assert dl.raw == value and dl.key == b"k" and dl.source == "t:0:5"
    assert NAME not in dl.detail


def test_dead_letter_detail_names_a_bounded_number_of_entries():
    entries = [{"resource": bp(id=f"bad{i}", component=[])} for i in range(30)]
    (dl,) = fhir.parse(enc({"resourceType": "Bundle", "type": "batch", "entry": entries}))
    assert dl.detail.count("missing_component") == fhir.MAX_DETAIL_ENTRIES
    assert dl.detail.endswith(f"and {30 - fhir.MAX_DETAIL_ENTRIES} more")


@pytest.mark.parametrize(
    "bundle",
    [
        {"resourceType": "Bundle", "type": "searchset", "total": 0},
        {"resourceType": "Bundle", "type": "collection", "entry": []},
    ],
)
def test_bundle_without_entries_is_skipped(bundle):
    assert isinstance(one(enc(bundle)), Skipped)


def test_bundle_whose_entry_is_not_an_array_is_one_dead_letter():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": {"resource": {}}}
    assert dead(bundle).reason == "not_observation"


def test_bundle_with_too_many_entries_is_one_dead_letter():
    entry = {"resource": bp()}
    bundle = {"resourceType": "Bundle", "entry": [entry] * (fhir.MAX_BUNDLE_ENTRIES + 1)}
    value = enc(bundle)
    if len(value) > fhir.MAX_MESSAGE_BYTES:  # keep the test about the entry limit
        bundle["entry"] = [{"resource": {"resourceType": "Observation"}}] * len(bundle["entry"])
        value = enc(bundle)
    assert dead(value).reason == "too_large"
    ok = {"resourceType": "Bundle", "entry": [entry] * fhir.MAX_BUNDLE_ENTRIES}
    assert len(fhir.parse(enc(ok))) == fhir.MAX_BUNDLE_ENTRIES


# -- dead letters: one case (at least) per reason -----------------------------------------


def _without(key: str, **over: Any) -> dict[str, Any]:
    obs = bp(**over)
    del obs[key]
    return obs


def _only_component(index: int) -> dict[str, Any]:
    obs = bp()
    obs["component"] = [obs["component"][index]]
    return obs


DEAD_LETTER_CASES: list[tuple[str, Any]] = [
    ("too_large", enc(bp()) + b" " * fhir.MAX_MESSAGE_BYTES),
    ("invalid_json", b""),
    ("invalid_json", b"{"),
    ("invalid_json", enc(bp())[:-1]),
    ("invalid_json", b"\xff\xfe{}"),
    ("invalid_json", b"\xef\xbb\xbf" + enc(bp())),  # BOM
    ("invalid_json", b'{"a": NaN}'),
    ("invalid_json", b"[" * 5000 + b"]" * 5000),
    ("not_observation", b"[]"),
    ("not_observation", b"42"),
    ("not_observation", b'"Observation"'),
    ("not_observation", _without("resourceType")),
    ("not_observation", bp(resourceType=["Observation"])),
    ("missing_id", _without("id")),
    ("missing_id", bp(id="")),
    ("missing_id", bp(id="has space")),
    ("missing_id", bp(id="x" * 257)),
    ("missing_id", bp(id=17)),
    ("bad_status", _without("status")),
    ("bad_status", bp(status="done")),
    ("bad_status", bp(status=["final"])),
    ("bad_status", bp(status="FINAL")),
    ("wrong_code", _without("code")),
    ("wrong_code", bp(code={"coding": "85354-9"})),
    ("wrong_code", bp(code="85354-9")),
    ("missing_subject", _without("subject")),
    ("missing_subject", bp(subject={"display": NAME})),
    ("missing_subject", bp(subject={"reference": "Group/g1"})),
    ("missing_subject", bp(subject={"reference": "#p1"})),
    ("missing_subject", bp(subject={"reference": "Patient?identifier=123"})),
    ("missing_subject", bp(subject={"reference": "Patient/"})),
    ("missing_subject", bp(subject={"reference": "Patient/a b"})),
    ("missing_subject", bp(subject={"identifier": {"system": "urn:x"}})),
    ("missing_subject", bp(subject="Patient/p-7")),
    ("missing_time", _without("effectiveDateTime")),
    ("missing_time", _without("effectiveDateTime", effectivePeriod={})),
    ("missing_time", _without("effectiveDateTime", effectiveTiming={"event": ["2025-01-01"]})),
    ("bad_time", bp(effectiveDateTime="yesterday")),
    ("bad_time", bp(effectiveDateTime="2025-13-01")),
    ("bad_time", bp(effectiveDateTime="2025-02-30T10:00:00Z")),
    ("bad_time", bp(effectiveDateTime="2025-03-04T25:00:00Z")),
    ("bad_time", bp(effectiveDateTime="2025-03-04T10:00:00+25:00")),
    ("bad_time", bp(effectiveDateTime="0001-01-01T00:00:00+01:00")),  # before datetime.min UTC
    ("bad_time", bp(effectiveDateTime="\uff12\uff10\uff12\uff15")),  # non-ASCII digits
    ("bad_time", bp(effectiveDateTime="")),
    ("bad_time", bp(effectiveDateTime=20250304)),
    ("missing_timezone", bp(effectiveDateTime="2025-03-04T10:15:30")),
    ("missing_timezone", bp(effectiveDateTime="2025-03-04T10:15")),
    (
        "missing_timezone",
        _without("effectiveDateTime", effectivePeriod={"start": "2025-03-04T10:00"}),
    ),
    ("missing_component", _only_component(0)),
    ("missing_component", _only_component(1)),
    ("missing_component", _without("component")),
    ("missing_component", bp(component={"code": "8480-6"})),
    ("missing_component", bp(valueQuantity={"value": 120, "code": "mm[Hg]"}, component=[])),
    ("missing_component", set_value(bp(), 0, value="142 mmHg", code="mm[Hg]")),
    ("missing_component", set_value(bp(), 1, value=True, code="mm[Hg]")),
    ("missing_component", set_value(bp(), 1, value=None, code="mm[Hg]")),
    ("bad_unit", set_value(bp(), 0, value=142, code="cm[H2O]")),
    ("bad_unit", set_value(bp(), 1, value=90)),
    ("bad_unit", set_value(bp(), 1, value=90, unit="mmhg")),
    ("bad_unit", set_value(bp(), 1, value=90, code=["mm[Hg]"])),
    ("implausible_value", set_value(bp(), 0, value=400, code="mm[Hg]")),
    ("implausible_value", set_value(bp(), 0, value=39.9, code="mm[Hg]")),
    ("implausible_value", set_value(bp(), 0, value=300.1, code="mm[Hg]")),
    ("implausible_value", set_value(bp(), 1, value=19.9, code="mm[Hg]")),
    ("implausible_value", set_value(bp(), 0, value=91.5, code="mm[Hg]")),  # systolic == diastolic
    ("implausible_value", set_value(bp(), 0, value=80, code="mm[Hg]")),  # systolic < diastolic
    ("implausible_value", set_value(bp(), 0, value=1e308, code="mm[Hg]")),
    ("implausible_value", set_value(bp(), 0, value=40.1, code="kPa")),  # 300.8 mm[Hg]
    ("implausible_value", set_value(bp(), 0, value=150, code="mm[Hg]", comparator=">")),
]


@pytest.mark.parametrize(
    ("reason", "obj"),
    DEAD_LETTER_CASES,
    ids=[f"{r}-{i}" for i, (r, _) in enumerate(DEAD_LETTER_CASES)],
)
def test_dead_letter_reason(reason, obj):
    out = dead(obj)
    assert out.reason == reason, out.detail
    assert out.detail


def test_every_reason_code_is_exercised_except_internal_error():
    assert {r for r, _ in DEAD_LETTER_CASES} == set(fhir.REASONS) - AROUND_THE_PARSER


def test_conflicting_repeated_component_is_implausible():
    obs = bp()
    twin = copy.deepcopy(obs["component"][0])
    twin["valueQuantity"]["value"] = 150
    obs["component"].append(twin)
    assert dead(obs).reason == "implausible_value"


@pytest.mark.parametrize(
    ("systolic", "diastolic"), [(40, 20), (300, 200), (300, 20), (40, 39.9), (201, 200)]
)
def test_plausibility_bounds_are_inclusive(systolic, diastolic):
    obs = set_value(bp(), 0, value=systolic, code="mm[Hg]")
    obs = set_value(obs, 1, value=diastolic, code="mm[Hg]")
    r = reading(obs)
    assert (r.systolic, r.diastolic) == (systolic, diastolic)


def test_checks_run_in_the_documented_order():
    # several problems at once: the first in REASONS order is reported
    obs = bp(status="done", code={}, subject={})
    del obs["id"]
    assert dead(obs).reason == "wrong_code"
    obs["code"] = bp()["code"]
    assert dead(obs).reason == "missing_id"
    obs["id"] = "x1"
    assert dead(obs).reason == "bad_status"
    obs["status"] = "final"
    assert dead(obs).reason == "missing_subject"


@pytest.mark.parametrize(
    "value",
    [None, bytearray(enc(bp())), memoryview(enc(bp())), enc(bp()).decode()],
)
def test_non_bytes_input_does_not_raise(value):
    out = fhir.parse(value)  # type: ignore[arg-type]
    assert len(out) == 1
    if value is None:
        assert isinstance(out[0], DeadLetter) and out[0].raw == b""
    else:
        assert isinstance(out[0], Reading)


def test_details_never_carry_patient_names_ids_or_payload_text():
    secret = "Ms Privacy Bloggs"
    cases = [
        bp(subject={"reference": f"Group/{secret}"}),
        bp(status=secret),
        bp(effectiveDateTime=secret),
        set_value(bp(), 0, value=120, unit=secret),
        {"resourceType": secret},
        {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": secret}}]},
    ]
    for obj in cases:
        (out,) = fhir.parse(enc(obj))
        assert isinstance(out, DeadLetter)
        assert secret not in out.detail and "Privacy" not in out.detail, out.detail
    for code in (secret, "Bloggs"):  # a skipped Observation names LOINC-shaped codes only
        (skipped,) = fhir.parse(enc(bp(code={"coding": [{"system": LOINC, "code": code}]})))
        assert isinstance(skipped, Skipped) and skipped.what == "Observation <code>"


def test_the_hand_written_fixture_is_valid_fhir_r4():
    from fhir.resources.R4B.observation import Observation

    obs = Observation.model_validate(bp())
    assert obs.code.coding[0].code == "85354-9"


@pytest.mark.parametrize("bundle_size", [1, 5])
def test_simulator_fault_stream_parses_to_the_expected_fate_of_every_observation(bundle_size):
    """Cross-check with lib.sim.stream: every Observation gets exactly the outcome it was sent for
    (duplicates parse as readings: the window, not the parser, recognises them)."""
    from lib.settings import Settings
    from lib.sim.stream import messages

    cfg = Settings(sim_patients=30, sim_count=3000, sim_seed=7, sim_fault_rate=0.3)
    fate_of = {Reading: "reading", Retraction: "retracted", Ignored: "ignored"}
    seen_faults = set()
    for msg in messages(cfg, bundle_size=bundle_size):
        outcomes = fhir.parse(msg.value, msg.key, "t:0:0")
        assert len(outcomes) == len(msg.expected)
        for out, exp in zip(outcomes, msg.expected, strict=True):
            seen_faults.add(exp.fault)
            if isinstance(out, DeadLetter):
                assert (exp.fate, out.reason) == ("dead_letter", exp.reason), out.detail
                continue
            if isinstance(out, Skipped):
                assert exp.fate == "skipped"
                continue
            assert out.observation_id == exp.observation_id
            expected_fate = "reading" if exp.fate == "duplicate" else exp.fate
            assert fate_of[type(out)] == expected_fate
            if exp.reading is not None and isinstance(out, Reading):
                assert out.patient_id == exp.reading.patient_id
                assert out.effective_at == exp.reading.effective_at
                assert (out.systolic, out.diastolic) == (
                    exp.reading.systolic,
                    exp.reading.diastolic,
                )
                assert out.status == exp.reading.status
    assert len(seen_faults) >= 10  # the sample exercised (nearly) every fault kind
