"""lib.sim.fhir_writer: FHIR R4 validity (fhir.resources R4B) and the BP profile's parts."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from lib.domain import Reading
from lib.settings import Settings
from lib.sim import cohort, fhir_writer, stream

READING = Reading(
    observation_id="bp-1-00001-000007",
    patient_id="pat-1-00001",
    effective_at=datetime(2025, 3, 3, 7, 30, 15, 250000, tzinfo=UTC),
    systolic=142.0,
    diastolic=91.0,
    version="1",
)


def _codes(concept: dict) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept["coding"]}


def test_observation_follows_the_bp_profile() -> None:
    obs = fhir_writer.to_fhir(READING, "Greta Okafor", utc_offset_min=60, device="X", arm="left")
    Observation.model_validate(obs)
    assert obs["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/bp"]
    assert obs["meta"]["versionId"] == "1"
    assert ("http://loinc.org", "85354-9") in _codes(obs["code"])
    cat = obs["category"][0]
    assert (fhir_writer.CATEGORY_SYSTEM, "vital-signs") in _codes(cat)
    comps = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in obs["component"]}
    assert comps["8480-6"] == {
        "value": 142,
        "unit": "mmHg",
        "system": "http://unitsofmeasure.org",
        "code": "mm[Hg]",
    }
    assert comps["8462-4"]["value"] == 91
    assert obs["subject"] == {"reference": "Patient/pat-1-00001", "display": "Greta Okafor"}
    assert obs["identifier"][0]["value"] == obs["id"] == READING.observation_id
    assert obs["bodySite"]["coding"][0]["code"] == "368208006"


def test_effective_time_carries_the_site_offset_and_the_same_instant() -> None:
    obs = fhir_writer.to_fhir(READING, "A B", utc_offset_min=-300)
    assert obs["effectiveDateTime"] == "2025-03-03T02:30:15.250-05:00"
    parsed = datetime.fromisoformat(obs["effectiveDateTime"])
    assert parsed == READING.effective_at


def test_kpa_values_convert_back_to_the_reading() -> None:
    obs = fhir_writer.to_fhir(READING, "A B", unit="kPa")
    Observation.model_validate(obs)
    q = obs["component"][0]["valueQuantity"]
    assert q["code"] == "kPa" and q["system"] == "http://unitsofmeasure.org"
    assert q["value"] / fhir_writer.KPA_PER_MMHG == pytest.approx(142, abs=0.1)
    with pytest.raises(ValueError):
        fhir_writer.to_fhir(READING, "A B", unit="cmH2O")


@pytest.mark.parametrize("kind", ["collection", "transaction"])
def test_bundle_is_valid_and_keeps_entries(kind: str) -> None:
    obs = [
        fhir_writer.to_fhir(READING, "A B"),
        fhir_writer.to_fhir(READING, "A B", status="amended"),
    ]
    b = fhir_writer.bundle(obs, bundle_id="b-1", kind=kind, timestamp=READING.effective_at)
    Bundle.model_validate(b)
    assert [e["resource"]["status"] for e in b["entry"]] == ["final", "amended"]
    if kind == "transaction":
        assert b["entry"][0]["request"] == {
            "method": "PUT",
            "url": f"Observation/{READING.observation_id}",
        }


def test_encode_is_compact_and_stable() -> None:
    obs = fhir_writer.to_fhir(READING, "A B")
    raw = fhir_writer.encode(obs)
    assert b"\n" not in raw and b": " not in raw
    assert orjson.loads(raw) == obs
    assert raw == fhir_writer.encode(fhir_writer.to_fhir(READING, "A B"))


def test_large_sample_of_simulator_output_is_valid_fhir() -> None:
    """Every BP message that is not a deliberate dead letter validates as an R4 Observation."""
    s = Settings(sim_patients=80, sim_count=6000, sim_seed=3, sim_fault_rate=0.2)
    checked = 0
    statuses = set()
    for msg in stream.messages(s):
        if msg.expected[0].fate in ("dead_letter", "skipped"):
            continue
        obs = Observation.model_validate_json(msg.value)
        statuses.add(obs.status)
        assert obs.effectiveDateTime.tzinfo is not None
        assert {c.code.coding[0].code for c in obs.component} == {"8480-6", "8462-4"}
        checked += 1
    assert checked > 5000
    assert statuses == {"final", "amended", "entered-in-error", "preliminary"}


def test_observation_json_is_the_bytes_of_the_dict_writer() -> None:
    """The simulator's fast writer splices fields into orjson's fragments: the same bytes."""
    rnd = random.Random(7)
    for i in range(3000):
        ms = rnd.randrange(-40 * 86_400_000, 400 * 86_400_000) + 1_741_000_000_000
        issued_ms = None if i % 3 else ms + rnd.randrange(0, 86_400_000)
        sys_v = float(rnd.randrange(40, 300)) if i % 7 else rnd.uniform(40, 300)
        r = Reading(
            observation_id=f"bp-{i}-00001-{i:06d}",
            patient_id=f"pat-{i}-00001",
            effective_at=cohort.at_ms(ms),
            systolic=sys_v,
            diastolic=float(rnd.randrange(20, 200)),
            status=rnd.choice(("final", "amended")),
            version=str(rnd.randrange(1, 4)),
        )
        kw = {
            "utc_offset_min": rnd.choice((0, 60, 120, -300, -480, 330, -570)),
            "device": rnd.choice((None, "Omron HBP-1320", 'Odd "device" \u00e9')),
            "arm": rnd.choice((None, "left", "right")),
            "unit": rnd.choice(("mm[Hg]", "kPa")),
            "setting": rnd.choice((None, "home", "clinic")),
        }
        status = rnd.choice((None, "preliminary", "entered-in-error"))
        name = rnd.choice(("Greta Okafor", 'Zoë "Q" Xu'))
        issued = None if issued_ms is None else cohort.at_ms(issued_ms)
        want = fhir_writer.encode(fhir_writer.to_fhir(r, name, status=status, issued=issued, **kw))
        got = fhir_writer.observation_json(
            r.observation_id,
            r.patient_id,
            name,
            ms,
            r.systolic,
            r.diastolic,
            status=status or r.status,
            version=r.version,
            issued_ms=issued_ms,
            **kw,
        )
        assert got == want, (got, want)
        assert fhir_writer.fhir_time_ms(ms, kw["utc_offset_min"]) == fhir_writer.fhir_datetime(
            r.effective_at, kw["utc_offset_min"]
        )
