"""Home-BP readings -> REAL Kafka -> monitor -> REAL Elasticsearch ``bp-home-averages`` and
``bp-alerts``: the protocol's cases, a replay that changes nothing, and a resume from a
recovery snapshot mid-series that ends where one uninterrupted run ends."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSink, run_main

from dataflows.monitor import build, production_io
from lib.connectors.kafka import produce_all
from lib.domain import Reading
from lib.sim import fhir_writer as obs
from tests.dataflow.test_home_flow import protocol
from tests.integration.test_monitor_e2e import _index, _model

pytestmark = pytest.mark.integration


def _record(r: Reading, setting: str) -> tuple[bytes, bytes, list]:
    value = obs.encode(obs.to_fhir(r, "Jane Testpatient", setting=setting))
    return (r.patient_id.encode(), value, [("content-type", b"application/fhir+json")])


def _cohort() -> list[tuple[bytes, bytes, list]]:
    readings = [
        *((r, "home") for r in protocol("home-128", (150, 95), [(126, 76), (130, 80)])),
        *((r, "home") for r in protocol("home-138", (138, 88), [(138, 88), (138, 88)])),
        *((r, "clinic") for r in protocol("clinic-138", (138, 88), [(138, 88), (138, 88)])),
    ]
    # interleaved by time, as the patients' devices would send them
    readings.sort(key=lambda item: item[0].effective_at)
    return [_record(r, setting) for r, setting in readings]


def _run(settings: Any, model: Any, **kw: Any) -> dict[str, int]:
    stats: list[dict[str, int]] = []
    run_main(build(settings, io=production_io(settings, TestingSink(stats)), model=model), **kw)
    return stats[-1]


def _home_alerts(es: Any, settings: Any) -> dict[str, dict[str, Any]]:
    alerts = _index(es, settings.alerts_index)
    return {k: v for k, v in alerts.items() if v["condition"] == "home_hypertension"}


def test_home_averages_through_kafka_and_elasticsearch(settings_factory, es):
    settings = settings_factory(kafka_tail=False)
    records = _cohort()
    assert produce_all(settings, settings.observations_topic, records) == len(records)
    model = _model()
    counts = _run(settings, model)
    assert counts["in"] == len(records) == counts["normal"] + counts["anomaly"]

    homes = _index(es, settings.home_averages_index)
    by_patient = {doc["patient_id"]: doc for doc in homes.values()}
    assert set(by_patient) == {"home-128", "home-138"}  # clinic readings: no home average
    low, high = by_patient["home-128"], by_patient["home-138"]
    assert (low["mean_systolic"], low["mean_diastolic"], low["readings_used"]) == (128, 78, 24)
    assert low["home_hypertension"] is False and high["home_hypertension"] is True
    assert set(homes) == {f"{p}|{d['series_start']}" for p, d in by_patient.items()}
    alerts = _home_alerts(es, settings)
    assert [(a["patient_id"], a["event"]) for a in alerts.values()] == [("home-138", "opened")]

    # the same topic again, without recovery: the operator chooses to rewrite the files
    again = _run(dataclasses.replace(settings, normal_on_fresh_start="replace"), model)
    assert again == counts
    assert _index(es, settings.home_averages_index) == homes
    assert _home_alerts(es, settings) == alerts


def test_resume_from_a_snapshot_mid_series_gives_the_same_averages(settings_factory, es, tmp_path):
    records = _cohort()
    half = len(records) // 2
    model = _model()
    whole = settings_factory(kafka_tail=False)
    produce_all(whole, whole.observations_topic, records)
    _run(whole, model)

    split = settings_factory(kafka_tail=False)
    db = tmp_path / "recovery"
    db.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(db), "1"], check=True)
    produce_all(split, split.observations_topic, records[:half])
    _run(split, model, recovery_config=RecoveryConfig(str(db)))
    produce_all(split, split.observations_topic, records[half:])
    counts = _run(split, model, recovery_config=RecoveryConfig(str(db)))
    assert counts["in"] == len(records)  # resumed: the counters too

    assert _index(es, split.home_averages_index) == _index(es, whole.home_averages_index)
    split_alerts, whole_alerts = _home_alerts(es, split), _home_alerts(es, whole)
    assert set(split_alerts) == set(whole_alerts) and len(whole_alerts) == 1


def test_kill9_and_resume_give_the_same_averages_and_alert_ids(settings_factory, es, tmp_path):
    """The monitor as a process with recovery, killed with SIGKILL while it writes, restarted
    until it ends: its home averages and home alert ids are those of one uninterrupted run."""
    from lib.monitor.risk import RiskModel
    from tests.reliability import harness

    readings = []
    for i in range(150):
        rest = [(138, 88), (140, 90)] if i % 3 == 0 else [(126, 76), (130, 80)]
        readings += [(r, "home") for r in protocol(f"home-{i:03d}", (150, 95), rest)]
    readings.sort(key=lambda item: (item[0].effective_at, item[0].patient_id))
    records = [_record(r, setting) for r, setting in readings]

    whole = settings_factory(kafka_tail=False)
    produce_all(whole, whole.observations_topic, records)
    _run(whole, RiskModel.load(whole.model_path))

    crashed = settings_factory(kafka_tail=False)
    produce_all(crashed, crashed.observations_topic, records)
    recovery = harness.init_recovery(tmp_path / "recovery")
    logs = tmp_path / "monitor.log"
    kills = 0
    for _ in range(6):
        offset = logs.stat().st_size if logs.exists() else 0
        mon = harness.monitor(crashed, recovery, logs).start()
        if kills < 2 and _wrote_a_batch(logs, offset, mon):
            mon.kill9()  # in the middle of writing outputs
            kills += 1
            continue
        assert mon.wait(300) == 0, logs.read_text()[-2000:]
        break
    assert kills >= 1, "the monitor ended before it could be killed: make the cohort larger"
    homes = _index(es, whole.home_averages_index)
    assert len(homes) == 150
    assert _index(es, crashed.home_averages_index) == homes
    whole_alerts = _home_alerts(es, whole)
    assert len(whole_alerts) == 50  # every third patient: home hypertension opened once
    assert set(_home_alerts(es, crashed)) == set(whole_alerts)


def _wrote_a_batch(logs: Any, offset: int, mon: Any, timeout: float = 120.0) -> bool:
    """Wait for the first sink batch line (``took=``) after ``offset``; False if it ended."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and mon.poll() is None:
        with logs.open("rb") as fh:
            fh.seek(offset)
            if b" took=" in fh.read():
                return mon.poll() is None
        time.sleep(0.05)
    return False
