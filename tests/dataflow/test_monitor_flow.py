"""The monitor dataflow with TestingSource / TestingSink: outcomes, rules, windows, recovery."""

from __future__ import annotations

import collections
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSource, run_main
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataflows.monitor import RecordedOutputs, build, recording_io
from lib.connectors.normal_files import NormalFileSink, iter_records
from lib.domain import FEATURE_NAMES, TIER_KEYS, Reading, RetentionGap
from lib.monitor.alerts import AlertPolicy
from lib.monitor.risk import RiskModel
from lib.settings import Settings
from lib.sim import fhir_writer as obs
from lib.sim import stream

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TOPIC = "bp.observations"


@pytest.fixture(scope="module")
def model() -> RiskModel:
    rng = np.random.default_rng(7)
    x = rng.normal(125, 20, (300, len(FEATURE_NAMES)))
    y = (x[:, FEATURE_NAMES.index("mean_sys")] > 130).astype(int)
    return RiskModel.from_pipeline(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y))


def reading(
    i: int,
    sys_: float,
    dia: float,
    *,
    patient: str = "p1",
    hours: float | None = None,
    version: str = "",
    oid: str | None = None,
    status: str = "final",
) -> Reading:
    at = T0 + timedelta(hours=i if hours is None else hours)
    return Reading(
        oid or f"{patient}-obs-{i}", patient, at, float(sys_), float(dia), status, version
    )


def fhir_msg(r: Reading, *, status: str | None = None, unit: str = "mm[Hg]") -> bytes:
    return obs.encode(obs.to_fhir(r, "Jane Testpatient", status=status, unit=unit))


def kafka(values: list[bytes | tuple[bytes | None, bytes]]) -> list[KafkaSourceMessage]:
    out = []
    for offset, v in enumerate(values):
        key, value = v if isinstance(v, tuple) else (b"p1", v)
        out.append(
            KafkaSourceMessage(
                key,
                value,
                topic=TOPIC,
                partition=0,
                offset=offset,
                headers=[("content-type", b"application/fhir+json")],
                timestamp=(1, 1_772_000_000_000 + offset),
            )
        )
    return out


class Run:
    """What a run of the production graph wrote (:func:`dataflows.monitor.recording_io`)."""

    def __init__(self, outputs: RecordedOutputs | None = None) -> None:
        self.out = outputs or RecordedOutputs()

    @property
    def es(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        """The ``bp-anomalies`` actions, in the order the write step submitted them."""
        return self.out.anomalies  # type: ignore[return-value]

    @property
    def normals(self) -> list[tuple[str, dict[str, Any]]]:
        return self.out.normals

    @property
    def dlq(self) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
        """The dead letters as ``(key, value, headers)`` (their ids: ``out.dead_letters``)."""
        return [(key, value, headers) for _, (_id, key, value, headers) in self.out.dead_letters]

    @property
    def stats(self) -> list[dict[str, int]]:
        return self.out.stats

    @property
    def alerts_kafka(self) -> list[tuple[str, tuple[str, bytes | None, bytes, list]]]:
        return self.out.alerts_kafka

    @property
    def alerts_es(self) -> list[tuple[str, str, dict[str, Any]]]:
        return self.out.alerts_es  # type: ignore[return-value]

    @property
    def alert_ids(self) -> set[str]:
        return {_id for _, _id, _ in self.alerts_es}

    @property
    def counts(self) -> dict[str, int]:
        return self.stats[-1]

    def indexed(self) -> dict[str, dict[str, Any]]:
        """The index after applying the actions in order (what Elasticsearch would hold)."""
        state: dict[str, dict[str, Any]] = {}
        for action, _id, doc in self.es:
            if action == "index":
                assert doc is not None
                state[_id] = doc
            else:
                state.pop(_id, None)
        return state

    def docs(self) -> list[dict[str, Any]]:
        return [doc for action, _, doc in self.es if action == "index" and doc]


def run_flow(items: list, model: RiskModel, settings: Settings | None = None, **kw: Any) -> Run:
    """The production graph over ``items``: ``build`` with :func:`recording_io`."""
    io, out = recording_io(
        TestingSource(items, batch_size=kw.pop("batch_size", 7)),
        normal_sink=kw.pop("normal_sink", None),
    )
    flow = build(
        settings or Settings(), io=io, model=model, alert_policy=kw.pop("alert_policy", None)
    )
    run_main(flow, **kw)
    return Run(out)


def reconciles(run: Run, n_messages: int) -> None:
    c = run.counts
    assert c["in"] == n_messages
    outcomes = sum(
        c[k] for k in ("normal", "anomaly", "dead_letter", "ignored", "retracted", "skipped")
    )
    assert outcomes + c["duplicate"] >= n_messages  # a Bundle carries several Observations
    assert c["normal"] == len(run.normals)
    assert c["anomaly"] == sum(1 for a, _, _ in run.es if a == "index")
    deletes = sum(1 for a, _, _ in run.es if a == "delete")
    superseding = sum(
        1
        for _, r in run.normals
        if r["status"] != "final" or (r["version"].isdigit() and int(r["version"]) > 1)
    )
    assert deletes == c["retracted"] + superseding
    assert c["dead_letter"] == len(run.dlq)
    assert c["adherence"] == len(run.out.adherence)
    assert c["enroll_in"] == c["enrolled"] + c["enroll_dead_letter"]
    assert c["enroll_dead_letter"] == len(run.out.enroll_dead_letters)


# -- the graph under test is the production graph ----------------------------------------------
def _steps(step: Any) -> list[tuple[str, str]]:
    """Every step of a flow, nested ones included: (step id, operator)."""
    out = []
    for sub in step.substeps:
        out += [(sub.step_id, type(sub).__name__), *_steps(sub)]
    return out


def test_the_tests_run_the_production_graph(model, monkeypatch, tmp_path):
    """``recording_io`` changes the sinks behind the steps, not the steps: the Elasticsearch
    write steps (keyed by patient shard) and ``dead_letter_ids`` run in every test here."""
    from bytewax.testing import TestingSink

    from dataflows.monitor import production_io
    from lib.connectors import kafka as kafka_connector

    monkeypatch.setattr(kafka_connector, "preflight", lambda settings: None)  # no broker here
    settings = Settings(normal_dir=tmp_path)
    production = build(settings, io=production_io(settings, TestingSink([])), model=model)
    io, _ = recording_io(TestingSource([]))
    tested = build(settings, io=io, model=model)
    assert _steps(tested) == _steps(production)
    ids = {step_id.rsplit(".", 1)[-1] for step_id, _ in _steps(tested)}
    assert {"dead_letter_ids", "write_anomalies", "index_alerts", "write_home_averages"} <= ids


# -- parsing cases and statuses ------------------------------------------------------------
def test_each_message_kind_reaches_its_output(model):
    ok = reading(0, 118, 76)
    high = reading(1, 150, 95)
    kpa = reading(2, 150, 97.5, patient="p2")  # 20 / 13 kPa
    bundled = [reading(3, 119, 70, patient="p3"), reading(4, 182, 100, patient="p3")]
    bundle = obs.encode(
        obs.bundle([obs.to_fhir(r, "X") for r in bundled], bundle_id="b-1", kind="transaction")
    )
    not_obs = orjson.dumps({"resourceType": "Patient", "id": "p1"})
    items = kafka(
        [
            fhir_msg(ok),
            fhir_msg(high),
            (b"p2", fhir_msg(kpa, unit="kPa")),
            (b"p3", bundle),
            (b"p9", b'{"resourceType": "Observation", '),  # truncated JSON
            (None, not_obs),
        ]
    )
    run = run_flow(items, model)
    reconciles(run, 6)
    assert run.counts == {
        "in": 6, "normal": 2, "anomaly": 3, "dead_letter": 1,
        "ignored": 0, "retracted": 0, "duplicate": 0, "skipped": 1, "gap": 0,
        "ack_in": 0, "acknowledged": 0, "ack_repeat": 0, "ack_dead_letter": 0,
        "overdue": 0, "enroll_in": 0, "enrolled": 0, "enroll_dead_letter": 0,
        "adherence": 3,  # one bp-adherence document per patient with scored readings
    }  # fmt: skip
    assert {r["observation_id"] for _, r in run.normals} == {ok.observation_id, "p3-obs-3"}
    assert all(pid == rec["patient_id"] for pid, rec in run.normals)
    docs = {d["observation_id"]: d for d in run.docs()}
    assert set(docs) == {high.observation_id, kpa.observation_id, "p3-obs-4"}
    assert docs["p2-obs-2"]["systolic"] == pytest.approx(150.0, abs=0.5)
    assert docs["p3-obs-4"]["category"] == "hypertensive_crisis"
    assert docs["p3-obs-4"]["severity"] == "critical"
    # ingested_at is the broker timestamp of the message, not a wall clock
    assert docs[high.observation_id]["ingested_at"] == "2026-02-25T06:13:20.001Z"
    assert 0.0 <= docs[high.observation_id]["risk_score"] <= 1.0
    # dead letters: original key and value unchanged, reason + source headers
    by_value = {v: (k, dict(h)) for k, v, h in run.dlq}
    key, headers = by_value[b'{"resourceType": "Observation", ']
    assert key == b"p9"
    assert headers["error"] == b"invalid_json" and headers["source"] == f"{TOPIC}:0:4".encode()
    assert headers["content-type"] == b"application/fhir+json" and headers["error.detail"]
    assert not_obs not in by_value  # a Patient is valid FHIR: skipped, never a dead letter
    # each dead letter reaches its sink with its deterministic id, routed by its original key
    ((route, (dead_id, *_)),) = run.out.dead_letters
    assert route == "p9" and dead_id.startswith(f"{TOPIC}:0:4#")


@pytest.mark.parametrize("status", ["preliminary", "registered", "cancelled", "unknown"])
def test_unscored_statuses_are_counted_not_scored(model, status):
    r = reading(0, 200, 130)
    run = run_flow(kafka([fhir_msg(r, status=status)]), model)
    assert run.counts["ignored"] == 1 and run.counts["in"] == 1
    assert run.es == [] and run.normals == [] and run.dlq == []


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_scored_statuses(model, status):
    run = run_flow(kafka([fhir_msg(reading(0, 150, 85, status=status))]), model)
    assert run.counts["anomaly"] == 1
    assert run.docs()[0]["status"] == status


def test_amended_version_replaces_the_reading_and_its_document(model):
    first = reading(0, 150, 95, version="1")
    amended = replace(first, systolic=118.0, diastolic=75.0, status="amended", version="2")
    stale = first  # version 1 delivered again after version 2
    items = kafka([fhir_msg(first), fhir_msg(amended), fhir_msg(stale)])
    run = run_flow(items, model)
    reconciles(run, 3)
    assert (run.counts["anomaly"], run.counts["normal"], run.counts["duplicate"]) == (1, 1, 1)
    # the amendment cleared the anomaly: its document is removed, the normal line is version 2
    assert run.es[1] == ("delete", first.observation_id, None)
    assert run.indexed() == {}
    assert run.normals[0][1]["version"] == "2"


def test_entered_in_error_retracts_from_elasticsearch_and_the_window(model):
    readings = [reading(i, 150, 95) for i in range(4)]
    items = [fhir_msg(r) for r in readings]
    items.append(fhir_msg(readings[1], status="entered-in-error"))
    items.append(fhir_msg(reading(4, 150, 95)))
    run = run_flow(kafka(items), model)
    reconciles(run, 6)
    assert run.counts["retracted"] == 1
    assert run.es[4] == ("delete", readings[1].observation_id, None)
    assert set(run.indexed()) == {r.observation_id for r in readings if r is not readings[1]} | {
        "p1-obs-4"
    }
    # the retracted reading has left the window: the next one sees 4 readings, not 5
    assert run.docs()[-1]["features"]["n"] == 4


def test_duplicates_are_counted_once(model):
    r = reading(0, 150, 95)
    run = run_flow(kafka([fhir_msg(r), fhir_msg(r), fhir_msg(r)]), model)
    reconciles(run, 3)
    assert run.counts["anomaly"] == 1 and run.counts["duplicate"] == 2
    assert len(run.es) == 1


# -- rules through the flow (both sides of a few thresholds; full tables in test_rules) ----
@pytest.mark.parametrize(
    ("sys_", "dia", "category", "is_anomaly"),
    [
        (119, 79, "normal", False),
        (120, 79, "elevated", False),
        (129, 79, "elevated", False),
        (130, 79, "hypertension_stage_1", True),
        (129, 80, "hypertension_stage_1", True),
        (139, 89, "hypertension_stage_1", True),
        (140, 89, "hypertension_stage_2", True),
        (180, 100, "hypertension_stage_2", True),
        (181, 100, "hypertensive_crisis", True),
        (170, 120, "hypertension_stage_2", True),
        (170, 121, "hypertensive_crisis", True),
        (90, 60, "normal", False),
        (89, 60, "hypotension", True),
        (95, 59, "hypotension", True),
    ],
)
def test_rule_boundaries_through_the_flow(model, sys_, dia, category, is_anomaly):
    run = run_flow(kafka([fhir_msg(reading(0, sys_, dia))]), model)
    if is_anomaly:
        (doc,) = run.docs()
        assert doc["category"] == category and doc["anomaly_types"]
        assert run.normals == []
    else:
        ((_, rec),) = run.normals
        assert rec["category"] == category
        assert run.es == []


@pytest.mark.parametrize(
    ("sys_", "dia", "score", "sink"),
    [(89, 58, 3, "es"), (95, 65, 2, "normal"), (105, 70, 1, "normal"), (112, 72, 0, "normal"),
     (221, 100, 3, "es")],
)  # fmt: skip
def test_news2_systolic_on_every_output(model, sys_, dia, score, sink):
    run = run_flow(kafka([fhir_msg(reading(0, sys_, dia))]), model)
    out = run.docs()[0] if sink == "es" else run.normals[0][1]
    assert out["news2_systolic"] == score


def test_esh_ruleset_is_selectable(model):
    r = reading(0, 135, 85)  # AHA stage 1; ESH high-normal (elevated, no anomaly)
    aha = run_flow(kafka([fhir_msg(r)]), model)
    esh = run_flow(kafka([fhir_msg(r)]), model, Settings(ruleset="esh2023"))
    assert aha.docs()[0]["ruleset"] == "aha2025"  # the default
    assert aha.docs()[0]["category_label"] == "stage 1 hypertension"
    assert esh.normals[0][1]["category"] == "elevated"
    assert esh.normals[0][1]["category_label"] == "high-normal"
    assert esh.normals[0][1]["ruleset"] == "esh2023"


def test_aha2025_names_severe_hypertension_in_its_own_words(model):
    r = reading(0, 185, 100)
    run = run_flow(kafka([fhir_msg(r)]), model)
    (doc,) = run.docs()
    assert (doc["category"], doc["category_label"]) == (
        "hypertensive_crisis",
        "severe hypertension",
    )
    old = run_flow(kafka([fhir_msg(r)]), model, Settings(ruleset="aha2017")).docs()[0]
    assert (old["category"], old["category_label"]) == (
        "hypertensive_crisis",
        "hypertensive crisis",
    )


# -- window features through the flow -------------------------------------------------------
def test_window_features_of_a_known_line(model):
    # systolic rises 3 mm[Hg]/h from 140, one reading every 20 minutes
    readings = [reading(k, 140 + 3 * (k / 3), 92, hours=k / 3) for k in range(8)]
    run = run_flow(kafka([fhir_msg(r) for r in readings]), model)
    docs = run.docs()
    assert len(docs) == 8
    last = docs[-1]
    assert last["features"]["slope_sys_per_h"] == pytest.approx(3.0, abs=1e-9)
    assert last["features"]["n"] == 8
    assert last["features"]["mean_sys"] == pytest.approx(140 + 3 * (3.5 / 3))


def test_out_of_order_reading_is_inserted_in_event_time(model):
    late = reading(1, 160, 100)
    items = kafka([fhir_msg(reading(0, 140, 90)), fhir_msg(reading(2, 150, 95)), fhir_msg(late)])
    run = run_flow(items, model)
    docs = {d["observation_id"]: d for d in run.docs()}
    assert docs[late.observation_id]["features"]["n"] == 2  # as of its own time: obs-0 and itself
    assert docs[late.observation_id]["features"]["mean_sys"] == pytest.approx(150.0)


def test_patients_do_not_share_windows(model):
    items = kafka(
        [
            (f"p{k}".encode(), fhir_msg(reading(i, 150, 95, patient=f"p{k}")))
            for i in range(3)
            for k in range(5)
        ]
    )
    run = run_flow(items, model)
    by_patient = collections.defaultdict(list)
    for d in run.docs():  # per patient in order; across patients the order is per shard
        by_patient[d["patient_id"]].append(d["features"]["n"])
    assert by_patient == {f"p{k}": [1, 2, 3] for k in range(5)}


# -- reconciliation with the simulator's faults ---------------------------------------------
def test_simulated_stream_with_faults_reconciles_exactly(model):
    sim = Settings(sim_patients=40, sim_count=1500, sim_fault_rate=0.3, sim_seed=11)
    msgs = list(stream.messages(sim))
    items = [
        KafkaSourceMessage(m.key, m.value, topic=TOPIC, partition=0, offset=i)
        for i, m in enumerate(msgs)
    ]
    run = run_flow(items, model, batch_size=50)
    expected = collections.Counter(e.fate for m in msgs for e in m.expected)
    c = run.counts
    assert c["in"] == len(msgs)
    assert c["normal"] + c["anomaly"] == expected["reading"]
    for fate in ("dead_letter", "ignored", "retracted", "duplicate", "skipped"):
        assert c[fate] == expected[fate], fate
    reconciles(run, len(msgs))
    want_reasons = collections.Counter(
        e.reason for m in msgs for e in m.expected if e.fate == "dead_letter"
    )
    got_reasons = collections.Counter(dict(h)["error"].decode() for _, _, h in run.dlq)
    assert got_reasons == want_reasons
    scored = {r["observation_id"] for _, r in run.normals} | {
        d["observation_id"] for d in run.docs()
    }
    assert scored == {e.observation_id for m in msgs for e in m.expected if e.fate == "reading"}
    retracted = {_id for a, _id, _ in run.es if a == "delete"}
    assert not retracted & set(run.indexed())


# -- recovery: abort mid-stream, resume, compare with an uninterrupted run ----------------
def _recovery_db(path: Path) -> RecoveryConfig:
    path.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(path), "1"], check=True)
    return RecoveryConfig(str(path))


def _without_risk(index: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in doc.items() if f != "risk_score"} for k, doc in index.items()}


def _rounded(record: dict[str, Any]) -> dict[str, Any]:
    return record | {"risk_score": round(record["risk_score"], 12)}


def test_abort_and_resume_equals_an_uninterrupted_run(model, tmp_path):
    sim = Settings(sim_patients=12, sim_count=600, sim_fault_rate=0.2, sim_seed=5)
    items = [
        KafkaSourceMessage(m.key, m.value, topic=TOPIC, partition=0, offset=i)
        for i, m in enumerate(stream.messages(sim))
    ]
    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crash"
    epoch = timedelta(0)
    clean = run_flow(
        items, model, normal_sink=NormalFileSink(clean_dir), epoch_interval=epoch,
        recovery_config=_recovery_db(tmp_path / "db-clean"),
    )  # fmt: skip

    recovery = _recovery_db(tmp_path / "db-crash")
    # One fresh ABORT per execution: TestingSource counts only real items in its resume
    # index, so an already-triggered ABORT earlier in the list would shift the replay by one.
    executions = [
        [*items[:250], TestingSource.ABORT(), *items[250:]],
        [*items[:400], TestingSource.ABORT(), *items[400:]],
        items,
    ]
    crashed = Run()
    for source_items in executions:  # crash, crash, run to the end
        io, _ = recording_io(
            TestingSource(source_items, batch_size=7),
            outputs=crashed.out,
            normal_sink=NormalFileSink(crash_dir),
        )
        run_main(build(Settings(), io=io, model=model), epoch_interval=epoch,
                 recovery_config=recovery)  # fmt: skip

    # counters come back with the state: nothing counted twice, nothing missed
    assert crashed.counts == clean.counts
    assert crashed.counts["in"] == len(items)
    # Elasticsearch ends identical (idempotent by _id; window state restored, so even the
    # window features in the documents are equal)
    assert _without_risk(crashed.indexed()) == _without_risk(clean.indexed())
    # risk scores to 1e-12: lib.monitor.risk's matmul rounds the last bit differently with the batch
    # size (a resumed run cuts batches elsewhere); see the monitor's report
    for _id, doc in clean.indexed().items():
        assert crashed.indexed()[_id]["risk_score"] == pytest.approx(doc["risk_score"], abs=1e-12)
    # normal lines: exactly once
    clean_lines = sorted(orjson.dumps(_rounded(r)) for r in iter_records(clean_dir))
    crash_lines = sorted(orjson.dumps(_rounded(r)) for r in iter_records(crash_dir))
    assert crash_lines == clean_lines
    assert len(crash_lines) == clean.counts["normal"]
    # dead letters: at-least-once through a replay, the same set
    assert {v for _, v, _ in crashed.dlq} == {v for _, v, _ in clean.dlq}
    # alerts: the same deterministic ids as the uninterrupted run (the Kafka sink drops the
    # replayed ones by id: tests/integration/test_kafka_once.py; Elasticsearch overwrites)
    assert clean.alert_ids, "the scenario should raise alerts"
    assert crashed.alert_ids == clean.alert_ids
    assert {i for _, (i, *_rest) in crashed.alerts_kafka} == clean.alert_ids


# -- alerts through the monitor ---------------------------------------------------------------
def _alert_docs(run: Run) -> list[dict[str, Any]]:
    return [doc for _, _, doc in run.alerts_es]


def test_fifty_crisis_readings_page_once_and_resolution_once(model):
    crisis = [fhir_msg(reading(i, 195, 125)) for i in range(50)]
    calm = [fhir_msg(reading(50 + i, 112, 72)) for i in range(4)]
    # the toy model's risk stays high after the crisis: keep the high-risk family out of it
    run = run_flow(kafka(crisis + calm), model, alert_policy=AlertPolicy(risk_threshold=1.0))
    events = [(d["event"], d["condition"]) for d in _alert_docs(run)]
    assert [e for e, _ in events].count("opened") == 1
    assert [e for e, _ in events].count("resolved") == 1
    assert len(events) <= 3  # opened, possibly one escalation to combined_critical, resolved
    # the Kafka and Elasticsearch outputs carry the same alerts
    assert {i for _, (i, *_r) in run.alerts_kafka} == run.alert_ids
    # Kafka messages are keyed by patient and carry the documented JSON
    _, (_id, key, value, _headers) = run.alerts_kafka[0]
    assert key == b"p1" and orjson.loads(value)["alert_id"] == _id


def test_escalation_is_one_event_and_replay_gives_the_same_ids(model):
    values = [fhir_msg(reading(i, 150, 85)) for i in range(5)]  # stage 2
    values += [fhir_msg(reading(5 + i, 185, 100)) for i in range(5)]  # crisis
    first = run_flow(kafka(values), model)
    events = [d["event"] for d in _alert_docs(first)]
    assert events.count("opened") == 1
    assert events.count("escalated") == 1
    again = run_flow(kafka(values), model)
    assert again.alert_ids == first.alert_ids


def test_normal_patient_raises_no_alert(model):
    run = run_flow(kafka([fhir_msg(reading(i, 112, 72)) for i in range(20)]), model)
    assert run.alerts_es == [] and run.alerts_kafka == []


def test_a_retention_gap_from_the_source_is_counted_and_dead_lettered_once(model):
    """The source reports offsets the broker deleted before they were read: the production
    graph counts them as ``gap`` (not as messages) and writes one dead letter describing them,
    keyless, after which the readings go on as usual."""
    items = kafka([fhir_msg(reading(i, 120 + i, 80)) for i in range(4)])
    gap = RetentionGap(TOPIC, 0, 100, 137)
    run = run_flow([items[0], gap, *items[1:]], model)
    assert run.counts["in"] == 4 and run.counts["normal"] + run.counts["anomaly"] == 4
    assert run.counts["gap"] == 37 and run.counts["dead_letter"] == 0
    ((key, value, headers),) = run.dlq
    h = dict(headers)
    assert key is None and h["error"] == b"retention_gap"
    assert h["source"] == f"{TOPIC}:0:100".encode()
    assert orjson.loads(value) == {
        "topic": TOPIC, "partition": 0, "from_offset": 100, "to_offset": 137, "skipped": 37,
    }  # fmt: skip


def test_a_re_sent_dead_letter_keeps_its_earlier_reason_under_a_prefix(model):
    """A message dead-lettered before and sent again (an operator's replay of the DLQ) keeps
    the headers it carried: ``original.error`` etc., beside this run's own."""
    (msg,) = kafka([b'{"resourceType": "Observation", '])
    earlier = [("error", b"bad_unit"), ("source", b"bp.observations:3:9"), ("x-site", b"A")]
    run = run_flow([replace(msg, headers=msg.headers + earlier)], model)
    ((_, _, headers),) = run.dlq
    names = [name for name, _ in headers]
    assert names.count("error") == 1 and dict(headers)["error"] == b"invalid_json"
    assert dict(headers)["original.error"] == b"bad_unit"
    assert dict(headers)["original.source"] == b"bp.observations:3:9"
    assert dict(headers)["x-site"] == b"A"


@pytest.mark.parametrize(("hours", "reminders"), [(0, 0), (2, 2)])
def test_alert_reminder_hours_turns_reminders_on(model, hours, reminders):
    """``BPWATCH_ALERT_REMINDER_HOURS`` reaches the episode policy: a crisis lasting 5 h of
    readings gives reminders at 2 and 4 h with it set to 2, none by default."""
    items = kafka([fhir_msg(reading(i, 190, 125, hours=i / 2)) for i in range(11)])
    run = run_flow(items, model, Settings(alert_reminder_hours=hours))
    events = [doc["event"] for _, _, doc in run.alerts_es]
    assert events[0] == "opened" and events.count("reminder") == reminders


def test_tiers_and_confirmation_follow_the_settings(model):
    """The production graph's default alert policy comes from the settings: by default
    systolic hypotension pages (``urgent``) on its confirming reading, after opening as
    ``review``; with ``BPWATCH_ALERT_URGENT=all`` and ``BPWATCH_ALERT_CONFIRM_READINGS=1``, it
    pages on the first reading, as before tiers."""
    values = [fhir_msg(reading(i, 112, 72)) for i in range(4)]  # the patient's baseline
    values += [fhir_msg(reading(4 + i, 84, 58)) for i in range(3)]  # 28 below it

    def events(settings: Settings) -> list[tuple[str, str, str]]:
        run = run_flow(kafka(values), model, settings)
        docs = [d for d in _alert_docs(run) if d["condition"] != "high_risk"]
        assert {i for _, (i, *_r) in run.alerts_kafka} == run.alert_ids
        return [(d["event"], d["condition"], d["tier"]) for d in docs]

    assert events(Settings()) == [
        ("opened", "hypotension", "review"),
        ("escalated", "hypotension", "urgent"),  # the second reading confirms: the page
    ]
    before = Settings(alert_urgent=TIER_KEYS, alert_confirm_readings=1)
    assert events(before) == [("opened", "hypotension", "urgent")]
