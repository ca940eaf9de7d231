"""lib.sim.stream: each fault kind, expected fates, determinism and worker split of the stream."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

import orjson
import pytest

from lib.settings import Settings
from lib.sim import stream as sim
from lib.sim.stream import FaultKind

BASE = Settings(sim_patients=40, sim_count=8000, sim_seed=5, sim_fault_rate=0.25)


@pytest.fixture(scope="module")
def stream() -> list[sim.SimMessage]:
    return list(sim.messages(BASE))


def _by_kind(stream: list[sim.SimMessage]) -> dict[FaultKind, list[sim.SimMessage]]:
    out: dict[FaultKind, list[sim.SimMessage]] = {k: [] for k in FaultKind}
    for m in stream:
        for e in m.expected:
            if e.fault is not None:
                out[e.fault].append(m)
    return out


def _json(m: sim.SimMessage) -> dict:
    return orjson.loads(m.value)


def _components(obs: dict) -> dict[str, dict]:
    return {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in obs.get("component", [])}


def test_every_kind_occurs_at_about_the_configured_rate(stream: list) -> None:
    kinds = _by_kind(stream)
    assert all(len(v) > 40 for v in kinds.values()), {k: len(v) for k, v in kinds.items()}
    clean_readings = sum(1 for m in stream for e in m.expected if e.truth is not None)
    # one fault per clean reading with probability 0.25
    assert 0.2 < sum(len(v) for v in kinds.values()) / clean_readings < 0.3


def test_no_faults_at_rate_zero() -> None:
    msgs = list(sim.messages(replace(BASE, sim_fault_rate=0.0, sim_count=2000)))
    assert not any(m.is_fault for m in msgs)
    assert {e.fate for m in msgs for e in m.expected} == {"reading"}


def test_same_seed_same_bytes_other_seed_differs() -> None:
    s = replace(BASE, sim_count=3000)
    a = [(m.key, m.value) for m in sim.messages(s)]
    assert a == [(m.key, m.value) for m in sim.messages(s)]
    assert a != [(m.key, m.value) for m in sim.messages(replace(s, sim_seed=6))]


def test_workers_split_patients_and_keep_each_patient_stream() -> None:
    s = replace(BASE, sim_count=0)
    whole = list(itertools.islice(sim.messages(s, hours=24), 100_000))
    parts = [list(sim.messages(s, worker_index=w, worker_count=3, hours=24)) for w in range(3)]
    assert sum(len(p) for p in parts) == len(whole)
    keys = [{m.key for m in p} for p in parts]
    assert not (keys[0] & keys[1]) and not (keys[1] & keys[2])
    for pid in [b"pat-5-00007", b"pat-5-00012"]:
        mine = [m.value for p in parts for m in p if m.key == pid]
        assert mine == [m.value for m in whole if m.key == pid]


def test_count_bound_is_split_over_workers() -> None:
    s = replace(BASE, sim_count=1001)
    sizes = [len(list(sim.messages(s, worker_index=w, worker_count=4))) for w in range(4)]
    assert sizes == [251, 250, 250, 250]
    with pytest.raises(ValueError):
        next(sim.messages(s, worker_index=4, worker_count=4))


def test_key_is_the_patient_id_of_the_subject(stream: list) -> None:
    for m in stream[:3000]:
        if m.expected[0].fate in ("dead_letter", "skipped"):
            continue
        assert _json(m)["subject"]["reference"] == f"Patient/{m.key.decode()}"


def test_faulty_kinds_are_extra_messages_with_expected_fates(stream: list) -> None:
    kinds = _by_kind(stream)
    clean_ids = {e.observation_id for m in stream for e in m.expected if e.truth is not None}
    for kind in (FaultKind.NOT_OBSERVATION, FaultKind.WRONG_LOINC):  # valid FHIR, not BP
        for m in kinds[kind]:
            (e,) = m.expected
            assert e.fate == "skipped" and e.observation_id not in clean_ids
    for kind in (
        FaultKind.MALFORMED_JSON,
        FaultKind.MISSING_DIASTOLIC,
        FaultKind.SYS_BELOW_DIA,
        FaultKind.IMPLAUSIBLE_HIGH,
    ):
        for m in kinds[kind]:
            (e,) = m.expected
            assert e.fate == "dead_letter" and e.reason == sim.EXPECTED[kind][1]
            assert e.observation_id not in clean_ids  # a clean reading is never replaced
    for m in kinds[FaultKind.MALFORMED_JSON]:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(m.value)
    assert {_json(m)["resourceType"] for m in kinds[FaultKind.NOT_OBSERVATION]} == {"Patient"}
    for m in kinds[FaultKind.WRONG_LOINC]:
        assert _json(m)["code"]["coding"][0]["code"] != "85354-9"
    for m in kinds[FaultKind.MISSING_DIASTOLIC]:
        assert set(_components(_json(m))) == {"8480-6"}
    for m in kinds[FaultKind.SYS_BELOW_DIA]:
        c = _components(_json(m))
        assert c["8480-6"]["value"] < c["8462-4"]["value"]
    for m in kinds[FaultKind.IMPLAUSIBLE_HIGH]:
        assert _components(_json(m))["8480-6"]["value"] == 400


def test_kpa_is_a_valid_reading_in_kilopascal(stream: list) -> None:
    for m in _by_kind(stream)[FaultKind.KPA_UNITS]:
        (e,) = m.expected
        assert e.fate == "reading" and e.truth is not None
        c = _components(_json(m))
        assert c["8480-6"]["code"] == "kPa"
        assert c["8480-6"]["value"] / 0.133322 == pytest.approx(e.reading.systolic, abs=0.1)


def test_duplicate_is_the_same_bytes_again(stream: list) -> None:
    earlier: dict[bytes, int] = {}
    for i, m in enumerate(stream):
        if m.expected[0].fault is FaultKind.DUPLICATE:
            assert m.value in earlier, "a duplicate must repeat an earlier message"
            assert m.expected[0].fate == "duplicate"
        else:
            earlier.setdefault(m.value, i)


def test_out_of_order_arrives_after_a_later_reading_of_the_patient(stream: list) -> None:
    late = 0
    last_seen: dict[bytes, object] = {}
    for m in stream:
        e = m.expected[0]
        if e.reading is None:
            continue
        prev = last_seen.get(m.key)
        if e.fault is FaultKind.OUT_OF_ORDER:
            assert prev is not None and e.reading.effective_at < prev
            assert e.fate == "reading" and e.truth is not None
            late += 1
        if e.fault is not FaultKind.AMENDED:
            last_seen[m.key] = max(e.reading.effective_at, prev) if prev else e.reading.effective_at
    assert late > 40


def test_amended_and_retracted_refer_to_earlier_delivered_readings(stream: list) -> None:
    delivered: dict[str, int] = {}  # observation id -> latest version seen
    retracted: set[str] = set()
    n_amended = n_retracted = 0
    for m in stream:
        e = m.expected[0]
        if e.fate in ("dead_letter", "skipped"):
            continue
        obs = _json(m)
        oid, version = obs["id"], int(obs["meta"]["versionId"])
        if e.fault is FaultKind.AMENDED:
            assert obs["status"] == "amended" and oid in delivered and oid not in retracted
            assert version == delivered[oid] + 1
            assert e.fate == "reading" and e.reading is not None and e.reading.status == "amended"
            n_amended += 1
        elif e.fault is FaultKind.ENTERED_IN_ERROR:
            assert obs["status"] == "entered-in-error" and oid in delivered
            assert oid not in retracted and e.fate == "retracted"
            retracted.add(oid)
            n_retracted += 1
        elif e.fault is FaultKind.PRELIMINARY:
            assert obs["status"] == "preliminary" and e.fate == "ignored"
        if e.fate != "duplicate":
            delivered[oid] = version
    assert n_amended > 40 and n_retracted > 40


def test_truth_record_is_json_ready(stream: list) -> None:
    m = next(m for m in stream if m.expected[0].truth is not None)
    rec = sim.truth_record(m, m.expected[0])
    line = orjson.loads(orjson.dumps(rec))
    assert line["fate"] == "reading" and line["profile"] in {
        "normotensive", "elevated", "stage1", "stage2", "hypotension_prone", "labile"
    }  # fmt: skip
    assert line["effective_at"].endswith("Z")
    assert isinstance(line["event_within_horizon"], bool)


def test_parser_gives_each_message_its_expected_fate(stream: list) -> None:
    """Reconciliation with the monitor's parser and window (other owners' modules)."""
    _reconcile(stream)


def test_parser_gives_each_bundle_entry_its_expected_fate() -> None:
    s = replace(BASE, sim_count=3000)
    _reconcile(list(sim.messages(s, bundle_size=3, bundle_type="transaction")))


def _reconcile(stream: list) -> None:
    fhir = pytest.importorskip("lib.monitor.fhir")
    window = pytest.importorskip("lib.monitor.window")
    windows: dict[str, object] = {}
    got: Counter = Counter()
    want: Counter = Counter()
    mismatches = []
    for m in stream:
        outcomes = fhir.parse(m.value, m.key, source="test:0:0")
        assert len(outcomes) == len(m.expected)
        for out, exp in zip(outcomes, m.expected, strict=True):
            want[exp.fate] += 1
            kind = type(out).__name__
            if kind == "DeadLetter":
                fate = "dead_letter"
                if exp.reason and out.reason != exp.reason:
                    mismatches.append((exp.fault, exp.reason, out.reason))
            elif kind == "Retraction":
                w = windows.setdefault(out.patient_id, window.PatientWindow(12))
                w.retract(out.observation_id)
                fate = "retracted"
            elif kind == "Ignored":
                fate = "ignored"
            elif kind == "Skipped":
                fate = "skipped"
            else:
                w = windows.setdefault(out.patient_id, window.PatientWindow(12))
                fate = "reading" if w.add(out) is not None else "duplicate"
                assert out.systolic == pytest.approx(exp.reading.systolic, abs=0.5)
                assert out.effective_at == exp.reading.effective_at
            got[fate] += 1
            if fate != exp.fate:
                mismatches.append((exp.fault, exp.fate, fate))
    assert not mismatches, mismatches[:10]
    assert got == want


@pytest.mark.parametrize("kind", ["collection", "transaction"])
def test_bundles_carry_the_same_observations_in_order(kind: str) -> None:
    s = replace(BASE, sim_count=0)
    single = list(sim.messages(s, hours=12))
    grouped = list(sim.messages(s, hours=12, bundle_size=4, bundle_type=kind))
    assert len(grouped) < len(single) * 0.6
    flat = lambda msgs, pid: [e.observation_id for m in msgs if m.key == pid for e in m.expected]  # noqa: E731
    for pid in {m.key for m in single[:50]}:
        assert flat(grouped, pid) == flat(single, pid)
    bundles = [m for m in grouped if len(m.expected) > 1]
    assert bundles and max(len(m.expected) for m in bundles) == 4
    for m in bundles[:50]:
        doc = _json(m)
        assert doc["resourceType"] == "Bundle" and doc["type"] == kind
        assert [en["resource"]["id"] for en in doc["entry"]] == [
            e.observation_id for e in m.expected
        ]
        assert {en["resource"]["subject"]["reference"] for en in doc["entry"]} == {
            f"Patient/{m.key.decode()}"
        }


def test_a_patients_messages_do_not_depend_on_the_cohorts_size() -> None:
    """Patients 0-99 send the same bytes in a cohort of 1,000 as in one of 100,000 (faults,
    the home cohort and the event chains included), so a small run samples a large one."""
    base = Settings(sim_seed=42, sim_count=0, sim_fault_rate=0.1, sim_home_share=0.02)

    def first_hundred(patients: int) -> dict[str, list[tuple[bytes, tuple]]]:
        out: dict[str, list[tuple[bytes, tuple]]] = {}
        for m in sim.messages(replace(base, sim_patients=patients), hours=1.1):
            if int(m.patient_id.rsplit("-", 1)[1]) < 100:
                out.setdefault(m.patient_id, []).append((m.value, m.expected))
        return out

    small, large = first_hundred(1_000), first_hundred(100_000)
    assert len(small) == 100 and small == large
    homes = {m for m, msgs in small.items() if msgs[0][1][0].reading.setting}
    assert homes and sum(len(small[m]) for m in homes) > 2 * len(homes)
