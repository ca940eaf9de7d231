"""The monitor's chain: parsing and grouping (lib.monitor.shards), one patient's processing
(lib.monitor.patient.Patient, lib.monitor.engine.Monitor), window expiry, documents, DLQ,
scoring."""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.domain import (
    DEAD_LETTER_REASONS,
    FEATURE_NAMES,
    Assessment,
    DeadLetter,
    Duplicate,
    Reading,
    Retraction,
    Skipped,
)
from lib.monitor import documents, shards
from lib.monitor.engine import Monitor
from lib.monitor.patient import Patient, PatientContext
from lib.monitor.risk import RiskModel
from lib.monitor.rules import AHA2017
from lib.monitor.state import Results
from lib.settings import Settings
from lib.sim import fhir_writer as obs
from lib.sim import stream

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


@dataclass
class Msg:
    value: bytes
    key: bytes | None = b"p1"
    headers: tuple = ()
    topic: str | None = "bp.observations"
    partition: int | None = 0
    offset: int | None = 0
    timestamp: tuple[int, int] | None = None


@pytest.fixture(scope="module")
def sk_pipeline():
    rng = np.random.default_rng(3)
    x = rng.normal(125, 20, (300, len(FEATURE_NAMES)))
    y = (x[:, 1] + rng.normal(0, 10, 300) > 130).astype(int)
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)


@pytest.fixture(scope="module")
def model(sk_pipeline) -> RiskModel:
    return RiskModel.from_pipeline(sk_pipeline)


def rd(i: float, sys_: float = 150, dia: float = 95, patient: str = "p1") -> Reading:
    return Reading(f"{patient}-{i}", patient, T0 + timedelta(hours=i), float(sys_), float(dia))


def entries(*outcomes):
    return [(o, None, 1) for o in outcomes]


NOW = (T0 + timedelta(days=1)).timestamp()  # the wall clock of processing (no_data only)


def context(model, window_size: int = 12, idle_expiry_hours: float = 72) -> PatientContext:
    """What every patient shares, as the monitor builds it (rule set AHA 2017)."""
    return Monitor(model, AHA2017, window_size=window_size, idle_expiry_hours=idle_expiry_hours).ctx


def process(ctx: PatientContext, patients: dict[str, Patient], *outcomes) -> Results:
    """Outcomes of one patient through its Patient (made on first use), as the patient step
    does for each key."""
    (pid,) = {o.patient_id for o in outcomes}
    patient = patients.setdefault(pid, Patient())
    return patient.process(ctx, entries(*outcomes), NOW)


def test_shard_of_is_stable_and_spread():
    # pinned: a patient's shard keys the write steps' state in every process, run and version
    ids = ["pat-1", "pat-2", "Patient/abc", ""]
    assert [shards.shard_of(p) for p in ids] == ["13", "23", "16", "0"]
    other_process = subprocess.run(
        [sys.executable, "-c", f"from lib.monitor import shards; "
         f"print(*[shards.shard_of(p) for p in {ids!r}])"],
        env={**os.environ, "PYTHONHASHSEED": "12345"}, cwd=Path(__file__).resolve().parents[2],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert other_process.stdout.split() == ["13", "23", "16", "0"]
    spread = collections.Counter(shards.shard_of(f"pat-{i}") for i in range(3200))
    assert len(spread) == shards.SHARDS
    assert max(spread.values()) < 2 * 3200 / shards.SHARDS


def test_parse_messages_groups_by_patient_in_order_and_flags_first_outcomes():
    readings = [rd(i, patient=f"p{i % 3}") for i in range(9)]
    bundle = obs.encode(obs.bundle([obs.to_fhir(r, "N") for r in readings[:2]], bundle_id="b"))
    msgs = [Msg(bundle)] + [Msg(obs.encode(obs.to_fhir(r, "N"))) for r in readings[2:]]
    grouped = shards.parse_messages(msgs)
    assert sum(first for _, es in grouped for _, _, first in es) == len(msgs)
    assert sorted(key for key, _ in grouped) == ["p0", "p1", "p2"]
    for key, es in grouped:
        assert all(o.patient_id == key for o, _, _ in es)
        ids = [o.observation_id for o, _, _ in es]
        assert ids == sorted(ids, key=lambda x: float(x.split("-")[1]))


def test_unparseable_messages_are_dead_letters_and_empty_bundles_skipped():
    (_, es), *_ = shards.parse_messages([Msg(b"not json", key=None)])
    dead = es[0][0]
    assert isinstance(dead, DeadLetter) and dead.raw == b"not json"
    assert dead.source == "bp.observations:0:0"
    empty = obs.encode({"resourceType": "Bundle", "type": "collection", "entry": []})
    outcome = shards.parse_message(Msg(empty))
    assert len(outcome) == 1 and isinstance(outcome[0], Skipped)


def test_reasons_made_around_the_parser_are_in_the_one_list(monkeypatch):
    (tombstone,) = shards.parse_message(Msg(None))  # type: ignore[arg-type]
    assert tombstone.reason == "no_value"

    def broken(*_args, **_kw):
        raise RuntimeError("defect")

    monkeypatch.setattr(shards.fhir, "parse", broken)
    (defect,) = shards.parse_message(Msg(b"{}"))
    assert defect.reason == "parser_error" and defect.raw == b"{}"
    assert {tombstone.reason, defect.reason} <= set(DEAD_LETTER_REASONS)


def test_process_scores_in_order_with_duplicates_and_retractions(model):
    patient = Patient()
    a, b = rd(0), rd(1, 118, 70)
    res = patient.process(
        context(model), entries(a, a, b, Retraction(a.observation_id, "p1"), rd(2)), NOW
    )
    kinds = [type(o).__name__ for o in res.outcomes]
    assert kinds == ["Assessment", "Duplicate", "Assessment", "Retraction", "Assessment"]
    assert res.counts() == {
        "in": 5, "normal": 1, "anomaly": 2, "dead_letter": 0,
        "ignored": 0, "retracted": 1, "duplicate": 1, "skipped": 0, "gap": 0,
        "ack_in": 0, "acknowledged": 0, "ack_repeat": 0, "ack_dead_letter": 0,
        "overdue": 0, "enroll_in": 0, "enrolled": 0, "enroll_dead_letter": 0,
        # one bp-adherence document: all on one day, which b and rd(2) keep after a's
        # retraction
        "adherence": 1,
    }  # fmt: skip
    last = res.outcomes[-1]
    assert isinstance(last, Assessment) and last.features.n == 2  # a was retracted
    assert isinstance(res.outcomes[1], Duplicate)


def test_retraction_before_its_reading_is_kept_until_the_patient_is_reclaimed(model):
    ctx = context(model, idle_expiry_hours=10)
    patients: dict[str, Patient] = {}
    early = rd(1, patient="q")
    res = process(ctx, patients, Retraction(early.observation_id, "q"), early)
    assert [type(o).__name__ for o in res.outcomes] == ["Retraction", "Duplicate"]
    # a tombstone-only window has no reading to expire on in event time: the wall clock
    # reclaims it with the patient, which then holds nothing and is discarded
    q = patients["q"]
    q.wake(ctx, NOW + 10 * 3600 - 1)
    assert q.window is not None and not q.is_empty()
    q.wake(ctx, NOW + 10 * 3600)
    assert q.window is None and q.is_empty()


def test_risk_equals_predict_proba_one_and_sklearn(model, sk_pipeline):
    ctx = context(model)
    patients: dict[str, Patient] = {}
    readings = [rd(i / 4, 110 + 9 * np.sin(i), 70 + 5 * np.cos(i), f"p{i % 4}") for i in range(40)]
    outcomes = [o for r in readings for o in process(ctx, patients, r).outcomes]
    assert len(outcomes) == 40 and {o.features.n for o in outcomes} == set(range(1, 11))
    got = [o.risk_score for o in outcomes]
    one = [model.predict_proba_one(o.features) for o in outcomes]
    matrix = np.array([o.features.vector() for o in outcomes])
    ref = sk_pipeline.predict_proba(matrix)[:, 1]
    assert np.allclose(got, one, atol=1e-9, rtol=0)
    assert np.allclose(got, ref, atol=1e-9, rtol=0)
    # a bare sklearn estimator is accepted too ((n, 2) probabilities, one row at a time)
    bare_ctx, bare = context(sk_pipeline), dict[str, Patient]()
    res2 = [o for r in readings for o in process(bare_ctx, bare, r).outcomes]
    assert np.allclose([o.risk_score for o in res2], ref, atol=1e-12, rtol=0)


def test_a_window_expires_on_its_own_patients_event_time(model):
    """A reading more than the idle expiry after the patient's latest one starts a new window;
    other patients' readings, however much later, never expire it."""
    ctx = context(model, idle_expiry_hours=10)
    patients: dict[str, Patient] = {}

    def n(r: Reading) -> int:
        (a,) = process(ctx, patients, r).outcomes
        assert isinstance(a, Assessment)
        return a.features.n

    assert [n(rd(0, patient="old")), n(rd(0, patient="young"))] == [1, 1]
    assert [n(rd(10, patient="young")), n(rd(40, patient="young"))] == [2, 1]  # 10 h: kept
    assert n(rd(9, patient="old")) == 2  # young's clock is 31 h later: old's window stays
    assert n(rd(19.5, patient="old")) == 1  # idle 10.5 h > 10 h: a new window


def test_a_future_dated_reading_expires_nobody_else(model):
    ctx = context(model, idle_expiry_hours=10)
    patients: dict[str, Patient] = {}
    process(ctx, patients, rd(0, patient="a"))
    # a device clock a year ahead
    process(ctx, patients, rd(24 * 365, patient="b"))
    (a,) = process(ctx, patients, rd(1, patient="a")).outcomes
    assert isinstance(a, Assessment) and a.features.n == 2
    # nor its own patient's window: a reading on time is a late one for it, not an idle gap
    (b,) = process(ctx, patients, rd(2, patient="b")).outcomes
    assert isinstance(b, Assessment) and b.features.n == 1  # judged by what preceded it: none
    assert patients["b"].window is not None and len(patients["b"].window) == 2


def test_snapshot_restore_continues_identically(model):
    ctx = context(model, window_size=5)
    a: dict[str, Patient] = {}
    readings = [rd(i, 120 + 3 * i, 80, f"p{i % 3}") for i in range(12)]
    for r in readings[:8]:
        process(ctx, a, r)
    b = {k: Patient.restore(pickle.loads(pickle.dumps(p.snapshot()))) for k, p in a.items()}
    ra = [o for r in readings[8:] for o in process(ctx, a, r).outcomes]
    rb = [o for r in readings[8:] for o in process(ctx, b, r).outcomes]
    assert ra == rb and len(ra) == 4
    assert {k: p.snapshot() for k, p in a.items()} == {k: p.snapshot() for k, p in b.items()}


def test_documents_follow_the_contract(model):
    res = Patient().process(context(model), [(rd(0, 185, 100), 1_772_000_000.5, 1)], NOW)
    (assessment,) = res.outcomes
    doc = documents.anomaly_doc(assessment, datetime.fromtimestamp(1_772_000_000.5, UTC))
    for field in (
        "observation_id", "patient_id", "effective_at", "systolic", "diastolic", "category",
        "anomaly_types", "severity", "risk_score", "ruleset", "ingested_at",
    ):  # fmt: skip
        assert field in doc
    assert doc["effective_at"] == "2026-03-01T08:00:00.000Z"
    assert doc["ingested_at"] == "2026-02-25T06:13:20.500Z"
    assert (
        doc["category"] == "hypertensive_crisis" and "hypertensive_crisis" in doc["anomaly_types"]
    )
    ((action, _id, body),) = documents.elastic_actions([("0", res)])
    assert (action, _id) == ("index", "p1-0") and body == doc
    rec = documents.normal_record(assessment)
    assert {"observation_id", "patient_id", "effective_at", "category", "risk_score"} <= set(rec)


def test_dlq_message_keeps_the_original_and_adds_reason_headers():
    dead = DeadLetter(b"\x00raw", b"k", "invalid_json", "bad", "t:1:2", (("trace", b"x"),))
    key, value, headers = documents.dlq_message(dead)
    assert (key, value) == (b"k", b"\x00raw")
    assert headers == [
        ("trace", b"x"), ("error", b"invalid_json"), ("error.detail", b"bad"), ("source", b"t:1:2")
    ]  # fmt: skip


def test_monitor_reconciles_a_simulated_stream(model):
    sim = Settings(sim_patients=30, sim_count=800, sim_fault_rate=0.3, sim_seed=2)
    msgs = list(stream.messages(sim))
    mon = Monitor(model)
    totals: collections.Counter[str] = collections.Counter()
    for i in range(0, len(msgs), 64):
        for _, res in mon.process(
            [Msg(m.value, m.key, offset=j) for j, m in enumerate(msgs[i : i + 64])]
        ):
            totals.update(res.counts())
    expected = collections.Counter(e.fate for m in msgs for e in m.expected)
    assert totals["in"] == len(msgs)
    assert totals["normal"] + totals["anomaly"] == expected["reading"]
    for fate in ("dead_letter", "ignored", "retracted", "duplicate"):
        assert totals[fate] == expected[fate]
