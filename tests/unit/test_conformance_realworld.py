"""Conformance: every file of the real-world FHIR corpus, when the corpus is there.

The corpus (``../shared/fhir-realworld/``, provenance in its SOURCES.md) is real FHIR from EHR
sandboxes, implementation guides, Synthea and a C-CDA conversion. It is not part of the
repository: a user's clone has no ``../shared``, and then these tests skip.

The expectations do not come from the parser: an independent count, by walking the JSON,
of the complete blood-pressure measurements each file holds (a BP panel with both values, or
a systolic and a diastolic Observation of one subject at one time), of the ones "not
measured" (``dataAbsentReason``), of average BP Observations, and of everything else.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import orjson
import pytest

from lib.domain import Average, DeadLetter, Ignored, Reading, Skipped
from lib.monitor import fhir

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "fhir-realworld"
FILES = sorted(CORPUS.glob("*.json")) if CORPUS.is_dir() else []

pytestmark = pytest.mark.skipif(
    not FILES, reason=f"conformance corpus not found at {CORPUS} (a clone has none: fine)"
)

PANELS = {"85354-9", "55284-4"}
BP_PARTS = {"8480-6", "8462-4"}


def _codes(concept: Any) -> set[str]:
    return {c.get("code") for c in (concept or {}).get("coding", []) if isinstance(c, dict)}


def _has_value(comp: dict) -> bool:
    return "valueQuantity" in comp and "value" in comp["valueQuantity"]


def expected(doc: dict) -> collections.Counter:
    """What a careful reader finds in one file, counted without the parser."""
    resources = (
        [e.get("resource") for e in doc.get("entry", [])]
        if doc.get("resourceType") == "Bundle"
        else [doc]
    )
    found: collections.Counter = collections.Counter()
    singles: dict[tuple, set[str]] = collections.defaultdict(set)
    for res in resources:
        codes = _codes(res.get("code")) if res.get("resourceType") == "Observation" else set()
        if codes & PANELS:
            comps = [c for c in res.get("component", []) if _codes(c.get("code")) & BP_PARTS]
            valued = {frozenset(_codes(c.get("code"))) for c in comps if _has_value(c)}
            if res.get("status") in ("cancelled", "preliminary", "registered", "unknown"):
                found["ignored"] += 1
            elif len(valued) == 2:
                keyed = "id" in res or "identifier" in res
                found["complete" if keyed else "complete_without_key"] += 1
            else:
                found["not_measured"] += 1
        elif "96607-7" in codes:
            found["average"] += 1
        elif codes & {"8480-6", "8462-4"} and "valueQuantity" in res:
            key = (str(res.get("subject")), res.get("effectiveDateTime"))
            singles[key] |= codes & {"8480-6", "8462-4"}
        else:
            found["other"] += 1
    found["complete"] += sum(1 for kinds in singles.values() if kinds == {"8480-6", "8462-4"})
    return found


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_measurement_in_the_file_is_read_and_the_rest_accounted_for(path: Path) -> None:
    raw = path.read_bytes()
    want = expected(orjson.loads(raw))
    out = fhir.parse(raw, key=b"k", source="corpus:0:0")
    got = collections.Counter(type(o).__name__ for o in out)
    assert got["Reading"] == want["complete"], path.name
    assert got["Average"] == want["average"]
    ignored = [o for o in out if isinstance(o, Ignored)]
    assert sorted(o.reason for o in ignored) == sorted(
        ["data_absent"] * want["not_measured"] + ["status"] * want["ignored"]
    )
    assert got["Skipped"] == want["other"]
    dead = [o for o in out if isinstance(o, DeadLetter)]
    # the only dead letter of the corpus: a create body with neither id nor identifier
    assert len(dead) == (1 if want["complete_without_key"] else 0)
    for d in dead:
        assert d.reason == "missing_id" and d.raw == raw


def test_the_corpus_as_a_whole() -> None:
    """The totals, read off SOURCES.md and the files: 72 complete BP measurements (71 with a
    stable key), 3 not measured or cancelled, 1 average, no more than one dead letter."""
    totals: collections.Counter = collections.Counter()
    for path in FILES:
        for o in fhir.parse(path.read_bytes(), key=b"k", source="corpus:0:0"):
            totals[type(o).__name__] += 1
            if isinstance(o, Reading):
                assert o.observation_id and len(o.observation_id) <= fhir.MAX_ID_LENGTH
                assert 40 <= o.systolic <= 300 and 20 <= o.diastolic <= 200
    assert totals["Reading"] == 71
    assert totals["DeadLetter"] == 1
    assert totals["Average"] == 1
    assert totals["Ignored"] == 4
    assert totals["Skipped"] > 100 and not set(totals) - {
        "Reading", "DeadLetter", "Average", "Ignored", "Skipped",
    }  # fmt: skip


def test_ids_patients_and_dates_of_the_ehr_sandboxes() -> None:
    by_name = {p.name: p for p in FILES}
    epic = fhir.parse(by_name["epic-sandbox-vital-signs-searchset.json"].read_bytes())
    epic_readings = [o for o in epic if isinstance(o, Reading)]
    assert len(epic_readings) == 50 and {len(o.observation_id) for o in epic_readings} == {66}
    assert [o.what for o in epic if isinstance(o, Skipped)] == ["OperationOutcome"]
    athena = fhir.parse(by_name["athena-sandbox-observation-searchset.json"].read_bytes())
    assert {o.precision for o in athena if isinstance(o, Reading)} == {"day"}
    be = [
        fhir.parse(by_name[f"be-monitoring-BloodPressureExample{n}.json"].read_bytes())[0]
        for n in ("", "2")
    ]
    assert be[0].patient_id != be[1].patient_id  # same value, two identifier systems
    average = fhir.parse(by_name["uscore-average-blood-pressure.json"].read_bytes())[0]
    assert isinstance(average, Average) and average.end > average.start
