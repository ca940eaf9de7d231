"""The monitor's state at patient scale, through the production dataflow: the recovery store
holds one key per patient, a store of an earlier layout is refused with the fix, and the wake-up
wheel opens a ``no_data`` episode while the input is quiet."""

from __future__ import annotations

import pickle
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSource, run_main

from dataflows.monitor import build, monitor_flow, recording_io
from lib.domain import Reading
from lib.monitor.alerts import AlertPolicy, EpisodeTracker, NoDataRule
from lib.monitor.patient import PatientContext, PatientSnapshot
from lib.monitor.rules import get_ruleset
from lib.monitor.state import one_reading_scorer
from lib.settings import Settings
from tests.dataflow.test_monitor_flow import fhir_msg, kafka, model

__all__ = ["model"]  # the fixture, shared with test_monitor_flow


def _store(path: Path, parts: int = 3) -> RecoveryConfig:
    path.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(path), str(parts)], check=True)
    return RecoveryConfig(str(path))


def _rows(path: Path, step: str) -> list[tuple[str, bytes | None]]:
    rows: list[tuple[str, bytes | None]] = []
    for db in sorted(path.glob("*.sqlite3")):
        with sqlite3.connect(db) as conn:
            rows += conn.execute(
                "SELECT state_key, ser_change FROM snaps WHERE step_id LIKE ?", (f"%{step}",)
            ).fetchall()
    return rows


def _run(items: list[Any], model: Any, recovery: RecoveryConfig | None = None) -> None:
    io, _ = recording_io(TestingSource(items, batch_size=4))
    run_main(build(Settings(), io=io, model=model), epoch_interval=timedelta(0),
             recovery_config=recovery)  # fmt: skip


def _readings(patients: list[str], n: int) -> list[Any]:
    t0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
    rs = [
        Reading(f"{p}-{k}", p, t0 + timedelta(hours=k), 125.0 + k, 80.0)
        for k in range(n)
        for p in patients
    ]
    return [(r.patient_id.encode(), fhir_msg(r)) for r in rs]


def test_the_recovery_store_holds_one_key_per_patient(model, tmp_path):
    patients = [f"pat-{i}" for i in range(5)]
    items = kafka([*_readings(patients, 3), (b"x", b"not json")])
    _run(items, model, _store(tmp_path / "db"))
    rows = _rows(tmp_path / "db", "patient_windows")
    kept = {key: pickle.loads(blob) for key, blob in rows if blob is not None}
    assert set(kept) == set(patients)  # the dead letter's key holds nothing: discarded
    for key, stored in kept.items():
        snap = PatientSnapshot.read(stored)
        assert snap.patient_id == key
        assert snap.window is not None
        assert len(snap.window[1]) == 3 * 8  # three event times of this patient alone


def test_a_store_of_the_sharded_layout_is_refused_with_what_to_do(model, tmp_path):
    items = kafka(_readings(["p1"], 2))
    recovery = _store(tmp_path / "db", parts=1)
    _run(items, model, recovery)
    # the row an earlier bpwatch wrote: shard "7" holding a positional tuple of its patients
    old = pickle.dumps((12, 259200.0, 0.0, 0.0, {"p1": (12, b"", b"", b"", (), (), ())}, {}))
    (db,) = (tmp_path / "db").glob("*.sqlite3")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE snaps SET state_key = '7', ser_change = ? WHERE step_id LIKE "
            "'%patient_windows' AND state_key = 'p1'",
            (old,),
        )
    with pytest.raises(Exception, match="32 shards") as err:
        _run(kafka(_readings(["p1"], 3)), model, recovery)
    assert "python -m bytewax.recovery" in str(err.value)


def test_a_resume_restores_only_the_patients_whose_input_arrives(model, tmp_path, monkeypatch):
    """Resuming builds no patient objects up front: a resumed patient is restored when its
    input first arrives, and the others keep their stored snapshot unchanged."""
    from lib.monitor import patient as patient_module

    patients = [f"pat-{i}" for i in range(6)]
    recovery = _store(tmp_path / "db", parts=2)
    first = _readings(patients, 2)
    _run(kafka(first), model, recovery)
    before = dict(_rows(tmp_path / "db", "patient_windows"))
    restored: list[str] = []
    real = patient_module.Patient.restore.__func__  # type: ignore[attr-defined]

    def counting(cls: Any, stored: Any) -> Any:
        restored.append(stored[2])
        return real(cls, stored)

    monkeypatch.setattr(patient_module.Patient, "restore", classmethod(counting))
    at_first_input: list[list[str]] = []
    process = patient_module.Patient.process

    def recording(self: Any, *args: Any) -> Any:
        at_first_input.append(list(restored))
        return process(self, *args)

    monkeypatch.setattr(patient_module.Patient, "process", recording)
    t = datetime(2026, 3, 2, 8, tzinfo=UTC)
    more = [Reading("pat-0-9", "pat-0", t, 131.0, 82.0)]
    items = kafka([*first, *((r.patient_id.encode(), fhir_msg(r)) for r in more)])
    _run(items, model, recovery)  # resumes after the first run's offsets
    # when the input reached the patient step, only its patient had been restored; the end
    # of a bounded run then wakes every key (on_eof): each is restored once
    assert at_first_input[0] == ["pat-0"]
    assert sorted(restored) == sorted(patients)
    after = dict(_rows(tmp_path / "db", "patient_windows"))
    held = PatientSnapshot.read(pickle.loads(after["pat-0"]))
    assert held.window is not None and "pat-0-9" in held.window[4]
    assert pickle.loads(after["pat-1"]) == pickle.loads(before["pat-1"])


def test_the_wheel_opens_no_data_while_the_input_is_quiet(model):
    """A silent patient is woken by its minute bucket's timer, not by the end of the run: the
    episode opens during the pause and the patient's next reading resolves it."""
    now = datetime.now(UTC)
    quiet = [Reading(f"q-{k}", "q", now - timedelta(seconds=30 - k), 118.0, 76.0) for k in range(3)]
    back = Reading("q-back", "q", now + timedelta(seconds=3), 119.0, 77.0)
    items = kafka(
        [(r.patient_id.encode(), fhir_msg(r)) for r in quiet]
    )  # fmt: skip
    later = kafka([(b"q", fhir_msg(back))])[0]
    ctx = PatientContext(
        ruleset=get_ruleset("aha2017"),
        score=one_reading_scorer(model),
        tracker=EpisodeTracker(AlertPolicy()),
        # silent after 30 s of wall clock, no catch-up grace beyond 0.5 s
        no_data=NoDataRule(30 / 3600, 7.0, 3, catch_up_grace_s=0.5),
        expiry_s=3600.0,
    )
    io, out = recording_io(
        TestingSource([*items, TestingSource.PAUSE(timedelta(seconds=4)), later])
    )
    run_main(monitor_flow(io, ctx))
    events = [(d["condition"], d["event"]) for _, _, d in out.alerts_es]
    assert events == [("no_data", "opened"), ("no_data", "resolved")]
