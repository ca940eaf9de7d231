"""No PHI in logs: run the simulator and the monitor with named patients, read every log line.

The simulator puts each patient's (fake but realistic) name in ``subject.display`` and, for its
``not_observation`` fault, a whole Patient resource; the monitor's logs at DEBUG, from every
logger (bytewax, bpwatch, third parties), must hold neither a name nor any raw payload. The
real-service runs are checked too: every reliability scenario scans the monitor subprocess's
log for the cohort's names (``tests/reliability/harness.phi_leaks``).

The tampered-model check lives in ``tests/unit/test_risk.py``
(``test_tampered_artifact_is_refused_before_unpickling``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows import monitor
from lib.connectors.elastic.bulk import _safe_reason
from lib.monitor import fhir, shards
from lib.monitor.risk import RiskModel
from lib.settings import Settings
from lib.sim import cohort, stream
from tests.reliability.harness import phi_leaks

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "bp.observations"


@pytest.fixture(scope="module")
def sim() -> Settings:
    return Settings(sim_patients=30, sim_count=1_500, sim_fault_rate=0.3, sim_seed=4)


@pytest.fixture(scope="module")
def names(sim: Settings) -> list[str]:
    return [p.name for p in cohort.cohort(sim.sim_patients, sim.sim_seed)]


def test_monitor_logs_hold_no_names_and_no_payloads(
    sim: Settings, names: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    msgs = list(stream.messages(sim))
    sent = b"".join(m.value for m in msgs).decode("utf-8", "replace")
    # the input really carries the names (else this test could not fail)
    assert sum(name in sent for name in names) == len(names)
    assert any(e.fate == "skipped" for m in msgs for e in m.expected)  # Patient resources

    items = [
        KafkaSourceMessage(m.key, m.value, topic=TOPIC, partition=0, offset=i)
        for i, m in enumerate(msgs)
    ]
    settings = Settings(normal_dir=tmp_path / "normal")
    caplog.set_level(logging.DEBUG)
    io, out = monitor.recording_io(TestingSource(items, batch_size=100))
    model = RiskModel.load(ROOT / "models" / "bp_risk.joblib")
    run_main(monitor.build(settings, io=io, model=model))
    assert out.stats[-1]["in"] == len(msgs)
    assert out.dead_letters and out.anomalies and out.normals
    text = caplog.text
    assert "counters" in text  # the monitor did log
    assert phi_leaks(text, names) == []
    # dead-letter details travel in Kafka headers: no names there either
    details = b" ".join(dict(h)["error.detail"] for _, (_id, _k, _v, h) in out.dead_letters)
    assert phi_leaks(details.decode("utf-8", "replace"), names) == []


def test_simulator_logs_hold_no_names(
    sim: Settings, names: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    from dataflows import simulate

    caplog.set_level(logging.DEBUG)
    records: list = []
    run_main(simulate.build(sim, sink=TestingSink(records)))
    assert len(records) == sim.sim_count
    assert phi_leaks(caplog.text, names) == []


def test_a_parser_failure_is_logged_without_its_payload(
    names: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    payload = f'{{"resourceType":"Observation","subject":{{"display":"{names[0]}"}}}}'.encode()

    def explode(value: bytes, *args: object, **kw: object) -> list:
        raise ValueError(f"cannot handle {value.decode()}")  # an exception quoting the payload

    monkeypatch.setattr(fhir, "parse", explode)
    caplog.set_level(logging.DEBUG)
    msg = KafkaSourceMessage(b"pat-1", payload, topic=TOPIC, partition=0, offset=9)
    (dead,) = shards.parse_message(msg)
    assert dead.raw == payload  # the DLQ keeps the bytes ...
    assert "parser_error" in caplog.text
    assert phi_leaks(caplog.text + dead.detail, names) == []  # ... the log does not


def test_elasticsearch_refusals_are_reported_without_the_field_value(names: list[str]) -> None:
    error = {
        "type": "document_parsing_exception",
        "reason": "[1:42] failed to parse field [patient_id] of type [keyword] in document with "
        f"id 'obs-1'. Preview of field's value: '{names[1]}'",
        "caused_by": {"type": "illegal_argument_exception", "reason": names[1]},
    }
    reason = _safe_reason(error)
    assert "document_parsing_exception" in reason
    assert names[1] not in reason
