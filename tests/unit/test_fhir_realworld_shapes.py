"""lib.monitor.fhir on the shapes real senders use, written here in our own words.

Each fixture reproduces one shape of the conformance corpus (``../shared/fhir-realworld``,
read by tests/unit/test_conformance_realworld.py where it exists): Epic's long ids and
searchset OperationOutcome, a transaction Bundle with Patient / Encounter / weight entries,
the legacy 55284-4 panel, systolic and diastolic as separate Observations (C-CDA conversions,
``hasMember`` panels), ``dataAbsentReason``, identifier-only subjects under two systems,
athenahealth's date-only times, a create body without ``id``, the average BP, qualifiers.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from lib.domain import Average, DeadLetter, Ignored, Reading, Retraction, Skipped
from lib.monitor import fhir
from lib.monitor.window import PatientWindow
from tests.fixtures.realworld import SNOMED, bundle, coding, panel, qty, single


def parse(value: bytes | dict) -> list:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return fhir.parse(raw, key=b"k", source="t:0:1")


def kinds(out: list) -> list[str]:
    return [type(o).__name__ for o in out]


# -- ids ------------------------------------------------------------------------------------


def test_epic_style_ids_of_66_characters_and_underscores_are_accepted():
    long_id = "eA" + "x7.Q-" * 12 + "Zk4" + "p" * 1  # 66 characters of [A-Za-z0-9.-]
    assert len(long_id) == 66
    (r,) = parse(panel(long_id))
    assert isinstance(r, Reading) and r.observation_id == long_id
    (r,) = parse(panel("a_b_" + "9" * 252))  # 256, with underscores
    assert isinstance(r, Reading)
    (d,) = parse(panel("z" * 257))
    assert isinstance(d, DeadLetter) and d.reason == "missing_id"


def test_without_id_the_identifier_is_the_stable_key():
    body = panel(None, identifier=[{"system": "urn:oid:2.16.840.1.999", "value": "VS-5521"}])
    (a,) = parse(body)
    (b,) = parse(body)  # a redelivery: the same key
    assert isinstance(a, Reading) and a.observation_id == b.observation_id
    assert a.observation_id.startswith("idf-") and len(a.observation_id) == 44
    other = panel(None, identifier=[{"system": "urn:oid:2.16.840.1.888", "value": "VS-5521"}])
    assert parse(other)[0].observation_id != a.observation_id  # the system is part of it


def test_an_invalid_id_is_not_replaced_by_the_identifier():
    body = panel("has spaces", identifier=[{"system": "urn:x", "value": "VS-1"}])
    (d,) = parse(body)
    assert isinstance(d, DeadLetter) and d.reason == "missing_id"


def test_a_create_body_with_neither_id_nor_identifier_is_missing_id():
    (d,) = parse(panel(None))
    assert isinstance(d, DeadLetter) and d.reason == "missing_id"


# -- Bundles with other resources -----------------------------------------------------------


def test_searchset_with_an_operation_outcome_gives_readings_and_one_skip():
    issue = {"severity": "warning", "code": "suppressed"}
    outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
    out = parse(bundle("searchset", panel("bp-1"), panel("bp-2", 131, 85), outcome))
    assert kinds(out) == ["Reading", "Reading", "Skipped"]
    assert out[2].what == "OperationOutcome"


def test_transaction_with_patient_encounter_and_weight_is_not_dead_lettered():
    patient = {"resourceType": "Patient", "id": "pt-9", "name": [{"family": "Quist"}]}
    encounter = {"resourceType": "Encounter", "id": "enc-1", "status": "finished"}
    weight = {
        "resourceType": "Observation", "id": "wt-1", "status": "final",
        "code": {"coding": [coding("29463-7")]}, "subject": {"reference": "Patient/pt-9"},
        "valueQuantity": {"value": 71.2, "unit": "kg"},
    }  # fmt: skip
    out = parse(bundle("transaction", patient, encounter, weight, panel("bp-7"), full_urls=True))
    assert kinds(out) == ["Skipped", "Skipped", "Skipped", "Reading"]
    assert [o.what for o in out[:3]] == ["Patient", "Encounter", "Observation 29463-7"]
    assert all("Quist" not in o.what for o in out[:3])


def test_a_lone_non_bp_resource_is_skipped():
    (s,) = parse({"resourceType": "Observation", "id": "hr", "status": "final",
                  "code": {"coding": [coding("8867-4")]}})  # fmt: skip
    assert isinstance(s, Skipped) and s.what == "Observation 8867-4"
    (s,) = parse({"resourceType": "Composition", "id": "c1"})
    assert isinstance(s, Skipped) and s.what == "Composition"


def test_mean_arterial_pressure_alone_is_skipped():
    mbp = {"resourceType": "Observation", "id": "mbp", "status": "final",
           "code": {"coding": [coding("8478-0")]}, "subject": {"reference": "Patient/p"},
           "valueQuantity": qty(93)}  # fmt: skip
    assert isinstance(parse(mbp)[0], Skipped)


# -- other BP shapes -----------------------------------------------------------------------


def test_the_legacy_55284_4_panel_alone_and_beside_85354_9():
    legacy = panel("syn-1", code={"coding": [coding("55284-4", display="Blood Pressure")]})
    both = panel("ep-1", code={"coding": [coding("55284-4"), coding("85354-9")]})
    assert isinstance(parse(legacy)[0], Reading)
    assert isinstance(parse(both)[0], Reading)


def test_mdc_code_first_then_loinc_and_an_extra_mean_component():
    mdc = coding("150020", "urn:iso:std:iso:11073:10101")
    obs = panel("phd-1", code={"coding": [mdc, coding("85354-9")]})
    obs["component"].append({"code": {"coding": [coding("8478-0")]}, "valueQuantity": qty(97)})
    (r,) = parse(obs)
    assert (r.systolic, r.diastolic) == (128.0, 82.0)


def test_separate_systolic_and_diastolic_pair_by_subject_and_time():
    out = parse(bundle("batch", single("systolic", "s-1", "132"), single("diastolic", "d-1", "88"),
                       single("systolic", "s-2", 128, "2011-09-02"),
                       single("diastolic", "d-2", 80, "2011-09-02")))  # fmt: skip
    assert kinds(out) == ["Reading", "Reading"]
    first, second = out
    assert (first.systolic, first.diastolic) == (132.0, 88.0)  # decimals sent as strings
    assert first.observation_id == fhir.pair_id("s-1", "d-1")
    assert first.precision == "day" and second.effective_at == datetime(2011, 9, 2, tzinfo=UTC)
    # the same pair in the other entry order: the same id (stable across redeliveries)
    swapped = bundle("batch", single("diastolic", "d-1", "88"), single("systolic", "s-1", "132"))
    again = parse(swapped)
    assert [o.observation_id for o in again] == [first.observation_id]


def test_an_unpaired_systolic_is_one_dead_letter_and_the_rest_is_kept():
    out = parse(bundle("batch", panel("bp-1"), single("systolic", "s-9", 140),
                       single("diastolic", "d-3", 90, "2011-09-05")))  # fmt: skip
    assert kinds(out) == ["Reading", "DeadLetter"]
    dl = out[-1]
    assert dl.reason == "missing_component"
    assert (
        "entry[1] missing_component: systolic Observation without a diastolic partner" in dl.detail
    )
    assert (
        "entry[2] missing_component: diastolic Observation without a systolic partner" in dl.detail
    )


def test_a_panel_with_has_member_takes_its_members_values():
    members = [single("systolic", "m-s", 141, "2024-01-02T08:00:00Z"),
               single("diastolic", "m-d", 92, "2024-01-02T08:00:00Z")]  # fmt: skip
    refs = [{"reference": "Observation/m-s"}, {"reference": "urn:uuid:m-d"}]
    head = panel("hm-1", effectiveDateTime="2024-01-02T08:00:00Z", hasMember=refs)
    del head["component"]
    out = parse(bundle("collection", head, *members, full_urls=True))
    assert kinds(out) == ["Reading"]
    r = out[0]
    assert (r.observation_id, r.systolic, r.diastolic) == ("hm-1", 141.0, 92.0)


def test_a_has_member_panel_whose_members_are_absent_is_a_dead_letter():
    head = panel("hm-2", hasMember=[{"reference": "Observation/elsewhere"}])
    del head["component"]
    (d,) = parse(bundle("collection", head))
    assert isinstance(d, DeadLetter) and d.reason == "missing_component"


def test_average_bp_is_accepted_as_an_average():
    avg = {
        "resourceType": "Observation", "id": "avg-1", "status": "final",
        "code": {"coding": [coding("96607-7")]}, "subject": {"reference": "Patient/p"},
        "effectivePeriod": {"start": "2024-03-01", "end": "2024-03-07"},
        "component": [
            {"code": {"coding": [coding("96608-5")]}, "valueQuantity": qty(134)},
            {"code": {"coding": [coding("96609-3")]}, "valueQuantity": qty(84)},
        ],
    }  # fmt: skip
    (a,) = parse(avg)
    assert isinstance(a, Average) and (a.systolic, a.diastolic) == (134.0, 84.0)
    assert (a.start.day, a.end.day) == (1, 7)


# -- not measured --------------------------------------------------------------------------


def test_data_absent_on_a_component_or_the_whole_observation_is_ignored():
    obs = panel("dar-1")
    obs["component"][1] = {"code": {"coding": [coding("8462-4")]},
                           "dataAbsentReason": {"coding": [{"code": "unknown"}]}}  # fmt: skip
    (i,) = parse(obs)
    assert isinstance(i, Ignored) and i.reason == "data_absent"
    whole = panel(
        "dar-2", status="amended", dataAbsentReason={"coding": [{"code": "not-performed"}]}
    )
    for comp in whole["component"]:
        comp.pop("valueQuantity")
        comp["dataAbsentReason"] = {"coding": [{"code": "not-performed"}]}
    (i,) = parse(whole)
    assert isinstance(i, Ignored) and i.reason == "data_absent"
    assert i.status == "amended"


def test_a_component_without_value_and_without_a_reason_is_still_a_dead_letter():
    obs = panel("x-1")
    del obs["component"][0]["valueQuantity"]
    assert parse(obs)[0].reason == "missing_component"


# -- patient identity ----------------------------------------------------------------------


def test_identifier_only_subjects_under_two_systems_are_two_patients():
    ssin = "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/ssin"
    a = panel("be-1", subject={"identifier": {"system": ssin, "value": "79121137740"}})
    b = panel("be-2", subject={"identifier": {"system": "urn:oid:1.2.3.4", "value": "79121137740"}})
    (ra,) = parse(a)
    (rb,) = parse(b)
    assert ra.patient_id != rb.patient_id
    assert ra.patient_id.endswith("|79121137740")


# -- date-only times -----------------------------------------------------------------------


def test_date_only_times_are_day_precision_and_stay_out_of_the_slopes():
    timed = [panel(f"t{i}", 120 + 10 * i, 80, effectiveDateTime=f"2024-05-06T0{i}:00:00Z")
             for i in range(3)]  # fmt: skip
    dated = panel("d0", 200, 100, effectiveDateTime="2024-05-06")
    readings = [parse(o)[0] for o in (timed[0], dated, timed[1], timed[2])]
    assert readings[1].precision == "day" and readings[1].effective_at.hour == 0
    window = PatientWindow(12)
    features = [window.add(r) for r in readings]
    assert features[1].slope_sys_per_h == 0.0  # a date cannot make a trend of hours
    # the last reading's slope is over the three timed readings only: +10 mm[Hg] per hour
    assert features[3].slope_sys_per_h == pytest.approx(10.0)
    assert features[3].n == 4  # the dated reading still counts in the window's other features
    restored = PatientWindow.from_state(window.state())
    later = parse(panel("t3", 150, 80, effectiveDateTime="2024-05-06T03:00:00Z"))[0]
    assert restored.add(later).slope_sys_per_h == pytest.approx(10.0)


# -- qualifiers ----------------------------------------------------------------------------


def test_qualifiers_are_kept():
    obs = panel(
        "q-1",
        bodySite={"coding": [coding("368209003", SNOMED, "Right arm")]},
        device={"display": "Upper-arm cuff BP-7"},
        extension=[
            {
                "url": fhir.BODY_POSITION_URL,
                "valueCodeableConcept": {"coding": [coding("33586001", SNOMED, "Sitting")]},
            },
            {
                "url": fhir.MEASUREMENT_SETTING_URL,
                "valueCodeableConcept": {"coding": [coding("264362003", SNOMED, "Home")]},
            },
        ],
    )  # fmt: skip
    (r,) = parse(obs)
    assert (r.body_site, r.device, r.body_position, r.setting) == (
        "Right arm", "Upper-arm cuff BP-7", "Sitting", "home",
    )  # fmt: skip


def test_status_of_a_pair_follows_its_members():
    s = single("systolic", "s-1", 130, status="entered-in-error")
    d = single("diastolic", "d-1", 85)
    (out,) = parse(bundle("batch", s, d))
    assert isinstance(out, Retraction) and out.observation_id == fhir.pair_id("s-1", "d-1")
