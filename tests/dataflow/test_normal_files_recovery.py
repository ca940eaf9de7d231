"""Crash and resume a real Bytewax flow writing through NormalFileSink: no duplicate, no loss."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from lib.connectors.normal_files import NormalFileSink, iter_records, part_files

START = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
N = 240


def readings(n: int = N) -> list[dict]:
    """n normal readings of 7 patients over ~2.5 days (crosses two day boundaries)."""
    return [
        {
            "observation_id": f"obs-{i:04d}",
            "patient_id": f"patient-{i % 7}",
            "effective_at": START + timedelta(minutes=15 * i),
            "systolic": 100.0 + i % 19,
            "diastolic": 60.0 + i % 17,
            "category": "normal",
            "risk_score": round((i % 100) / 1000, 3),
        }
        for i in range(n)
    ]


def build_flow(inp: list, out_dir: Path, seen: list[str], stall_at: str = "") -> Dataflow:
    def count(d: dict) -> dict:
        seen.append(d["observation_id"])
        if d["observation_id"] == stall_at:
            time.sleep(0.4)  # lets the epoch (and its snapshot) close here
        return d

    flow = Dataflow("normal_files_recovery")
    docs = op.input("inp", flow, TestingSource(inp, batch_size=10))
    docs = op.map("count", docs, count)
    keyed = op.key_on("key_on_patient", docs, lambda d: d["patient_id"])
    # (patient_id, reading dict)
    op.output("normal_out", keyed, NormalFileSink(out_dir, parts=3))
    return flow


def file_lines(out_dir: Path) -> dict[str, list[bytes]]:
    return {str(p.relative_to(out_dir)): p.read_bytes().splitlines() for p in part_files(out_dir)}


@pytest.mark.parametrize("abort_at", [35, 121, 200])
@pytest.mark.parametrize("epoch_ms", [0, 30_000])
def test_abort_and_resume_equals_uninterrupted_run(tmp_path, abort_at, epoch_ms):
    data = readings()
    epoch = timedelta(milliseconds=epoch_ms)

    reference_dir = tmp_path / "reference"
    run_main(build_flow(data, reference_dir, []), epoch_interval=epoch)
    expected = file_lines(reference_dir)
    assert sum(len(v) for v in expected.values()) == N

    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)
    recovery = RecoveryConfig(str(db))
    out_dir = tmp_path / "out"
    inp = [*data[:abort_at], TestingSource.ABORT(), *data[abort_at:]]

    first: list[str] = []
    # ABORT stops the execution abruptly: no close(), no final snapshot.
    run_main(build_flow(inp, out_dir, first), epoch_interval=epoch, recovery_config=recovery)
    assert len(first) == abort_at
    written_before_crash = sum(len(v) for v in file_lines(out_dir).values())
    assert written_before_crash == abort_at  # the aborted run really wrote its lines

    second: list[str] = []
    run_main(build_flow(inp, out_dir, second), epoch_interval=epoch, recovery_config=recovery)

    # The resumed run replayed some lines already on disk (those after the last snapshot),
    # so without truncation there would be duplicates whenever this overlap is positive.
    overlap = written_before_crash + len(second) - N
    assert overlap >= 0
    if epoch_ms:
        assert overlap == abort_at  # no snapshot before the crash: everything replayed

    got = file_lines(out_dir)
    assert got == expected
    ids = [r["observation_id"] for r in iter_records(out_dir)]
    assert len(ids) == len(set(ids)) == N


def test_resume_replays_past_the_snapshot_and_does_not_duplicate(tmp_path):
    """A snapshot mid-stream, then more writes, then a crash: the tail is replayed, not doubled."""
    data = readings()
    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)
    recovery = RecoveryConfig(str(db))
    out_dir = tmp_path / "out"
    epoch = timedelta(milliseconds=100)
    # A stall lets an epoch (and its snapshot) close around item 60; later items are written
    # after that snapshot, then the crash. (TestingSource.PAUSE would shift its resume index.)
    inp = [*data[:150], TestingSource.ABORT(), *data[150:]]
    first: list[str] = []
    run_main(
        build_flow(inp, out_dir, first, stall_at="obs-0060"),
        epoch_interval=epoch,
        recovery_config=recovery,
    )
    assert len(first) == 150
    assert len(list(iter_records(out_dir))) == 150
    second: list[str] = []
    run_main(build_flow(inp, out_dir, second), epoch_interval=epoch, recovery_config=recovery)
    replayed = set(second) & {d["observation_id"] for d in data[:150]}
    assert replayed, "the resumed run should have re-emitted items written before the crash"
    assert {d["observation_id"] for d in data[:50]}.isdisjoint(second)
    ids = [r["observation_id"] for r in iter_records(out_dir)]
    assert sorted(ids) == [d["observation_id"] for d in data]

    # A third run with the same recovery store has nothing left to do and changes nothing.
    # (Its input omits the spent ABORT: TestingSource counts sentinels when it fast-forwards.)
    before = file_lines(out_dir)
    third: list[str] = []
    run_main(build_flow(data, out_dir, third), epoch_interval=epoch, recovery_config=recovery)
    assert third == []
    assert file_lines(out_dir) == before
