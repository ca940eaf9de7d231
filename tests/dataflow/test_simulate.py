"""dataflows.simulate with TestingSink: same records as lib.sim.stream.messages, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import orjson
from bytewax.testing import TestingSink, cluster_main, run_main

from dataflows import simulate
from lib.settings import Settings
from lib.sim import stream

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(sim_patients=25, sim_count=1500, sim_seed=9, sim_fault_rate=0.1)


def _run(settings: Settings, workers: int = 1) -> tuple[list, list]:
    out: list = []
    truth: list = []
    flow = simulate.build(settings, sink=TestingSink(out), truth_sink=TestingSink(truth))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out, truth


def test_flow_emits_the_generator_stream_as_kafka_records() -> None:
    out, truth = _run(SETTINGS)
    assert out == [m.kafka_record() for m in stream.messages(SETTINGS)]
    assert len(out) == SETTINGS.sim_count
    assert all(key.startswith(b"pat-9-") for key, _, _ in out)
    lines = [orjson.loads(line) for _, line in truth]
    assert len(lines) == sum(len(m.expected) for m in stream.messages(SETTINGS))
    assert {r["fate"] for r in lines} >= {"reading", "dead_letter", "duplicate", "retracted"}


def test_two_runs_are_byte_identical_and_seed_matters() -> None:
    a, ta = _run(SETTINGS)
    b, tb = _run(SETTINGS)
    c, _ = _run(replace(SETTINGS, sim_seed=10))
    assert a == b and ta == tb
    assert [v for _, v, _ in a] != [v for _, v, _ in c]


def test_workers_split_patients_without_loss_or_overlap() -> None:
    s = replace(SETTINGS, sim_count=1200)
    out, _ = _run(s, workers=3)
    assert len(out) == 1200
    # each patient's messages keep their order whichever worker produced them
    per_worker = [list(stream.messages(s, worker_index=w, worker_count=3)) for w in range(3)]
    expected = [m.kafka_record() for ms in per_worker for m in ms]
    assert sorted(out) == sorted(expected)
    for key in {k for k, _, _ in out[:30]}:
        assert [v for k, v, _ in out if k == key] == [v for k, v, _ in expected if k == key]


def test_rate_limit_paces_the_source() -> None:
    s = replace(SETTINGS, sim_count=600, sim_rate=1500.0)
    started = time.monotonic()
    out, _ = _run(s)
    took = time.monotonic() - started
    assert len(out) == 600
    assert 0.3 < took < 5.0, took  # 600 msgs at 1500/s: about 0.4 s


def test_speedup_paces_by_event_time() -> None:
    """BPWATCH_SIM_SPEEDUP: event time runs at N x the wall clock from the first message."""
    s = replace(SETTINGS, sim_count=300)
    msgs = list(stream.messages(s))
    span = (msgs[-1].emitted_at - msgs[0].emitted_at).total_seconds()
    started = time.monotonic()
    out, _ = _run(replace(s, sim_speedup=span / 1.0))  # the 300 messages in about 1 s
    took = time.monotonic() - started
    assert out == [m.kafka_record() for m in msgs]
    assert 0.9 < took < 5.0, took


def test_file_output_is_byte_identical_across_runs(tmp_path: Path) -> None:
    paths = []
    for run in ("a", "b"):
        path = tmp_path / run / "obs.jsonl"
        s = replace(SETTINGS, sim_output=str(path))
        run_main(simulate.build(s))
        paths.append(path)
    first = paths[0].read_bytes()
    assert first == paths[1].read_bytes()
    assert first.count(b"\n") == SETTINGS.sim_count
    assert first.splitlines()[:50] == [m.value for m in stream.messages(SETTINGS)][:50]


def test_runs_as_a_program_with_env_settings(tmp_path: Path) -> None:
    out, truth = tmp_path / "obs.jsonl", tmp_path / "truth.jsonl"
    env = {
        **os.environ,
        "BPWATCH_SIM_PATIENTS": "25",
        "BPWATCH_SIM_COUNT": "1500",
        "BPWATCH_SIM_SEED": "9",
        "BPWATCH_SIM_FAULT_RATE": "0.1",
        "BPWATCH_SIM_OUTPUT": str(out),
        "BPWATCH_SIM_TRUTH": str(truth),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.simulate"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes().splitlines() == [m.value for m in stream.messages(SETTINGS)]
    assert len(truth.read_bytes().splitlines()) == 1500
    assert "sim_progress" in proc.stderr and "sent=1500" in proc.stderr
    assert "Patient/" not in proc.stderr  # no PHI in logs


PROGRAMS = replace(SETTINGS, sim_patients=60, sim_postpartum_share=0.1, sim_low_adherence_share=0.1)


def test_enrolments_go_first_through_one_sink() -> None:
    """Both sinks of the routed output share one list here: it shows the order in which the
    records were written (an enrolment is confirmed before any observation is sent)."""
    written: list = []
    flow = simulate.build(
        PROGRAMS, sink=TestingSink(written), enrollment_sink=TestingSink(written),
        truth_sink=TestingSink([]),
    )  # fmt: skip
    run_main(flow)
    enrolments = [e.kafka_record() for e in stream.enrollments(PROGRAMS)]
    assert len(enrolments) == 7  # 10% of each block of 100, of which the run holds 60
    assert written[: len(enrolments)] == enrolments
    assert written[len(enrolments) :] == [m.kafka_record() for m in stream.messages(PROGRAMS)]


def test_with_workers_each_sends_its_own_enrolments_before_its_readings() -> None:
    written: list = []
    flow = simulate.build(
        PROGRAMS, sink=TestingSink(written), enrollment_sink=TestingSink(written),
        truth_sink=TestingSink([]),
    )  # fmt: skip
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    enrolments = [e.kafka_record() for e in stream.enrollments(PROGRAMS)]
    assert sorted(r for r in written if r in enrolments) == sorted(enrolments)
    for key, value, _ in enrolments:
        enrolled_at = written.index((key, value, [("content-type", b"application/json")]))
        readings = [
            i for i, (k, _, h) in enumerate(written) if k == key and h != written[enrolled_at][2]
        ]
        assert readings and enrolled_at < min(readings)


def test_file_output_puts_the_enrolments_in_a_sibling_file(tmp_path: Path) -> None:
    path = tmp_path / "obs.jsonl"
    run_main(simulate.build(replace(PROGRAMS, sim_output=str(path))))
    assert simulate.enrollments_path(path) == tmp_path / "obs.enrollments.jsonl"
    lines = [
        orjson.loads(x) for x in (tmp_path / "obs.enrollments.jsonl").read_bytes().splitlines()
    ]
    assert lines == [
        {"key": e.patient_id, "value": orjson.loads(e.value)} for e in stream.enrollments(PROGRAMS)
    ]
    assert path.read_bytes().splitlines() == [m.value for m in stream.messages(PROGRAMS)]


def test_invalid_env_stops_with_one_clear_line() -> None:
    env = {**os.environ, "BPWATCH_SIM_RATE": "fast"}
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.simulate"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0  # lib.settings.load_or_exit: SystemExit(message)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("bpwatch: configuration error: BPWATCH_SIM_RATE")
    assert "Traceback" not in proc.stderr
