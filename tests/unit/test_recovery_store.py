"""Backup and restore of the recovery store (``lib.tools.recovery_store``).

The pure checks (resume point, partition set, copies made one after the other), the file
operations on real SQLite partitions made by ``bytewax.recovery.init_db_dir``, and, with
small in-process Bytewax runs, the two resume behaviours of Bytewax 0.21.1 that make an
ordinary file-by-file copy unsafe.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from lib.errors import RecoveryError
from lib.tools import recovery_store as rs
from lib.tools.recovery_store import PartitionInfo, ResumePoint

P = Path("store")


def part(index: int, count: int = 2, *, exs=(), fronts=(), commit=None) -> PartitionInfo:
    return PartitionInfo(P / f"part-{index}.sqlite3", index, count, exs, fronts, commit)


# ----------------------------------------------------------------------------- pure logic
def test_resume_point_is_bytewax_resume_from():
    """The cases of ``resume_from_*`` in Bytewax 0.21.1's ``src/recovery.rs``."""
    assert rs.resume_point([part(0, 1)]) == ResumePoint(0, 1)
    explicit = part(0, 1, exs=((1, 3, 11),), fronts=((1, 0, 13), (1, 1, 12), (1, 2, 13)))
    assert rs.resume_point([explicit]) == ResumePoint(2, 12)
    default = part(0, 1, exs=((1, 3, 11),), fronts=((1, 0, 13), (1, 2, 13)))
    assert rs.resume_point([default]) == ResumePoint(2, 11)  # worker 1: the execution's start
    # rows spread over partitions, an older execution ignored
    spread = [
        part(0, exs=((0, 1, 1),), fronts=((1, 0, 40),)),
        part(1, exs=((1, 1, 30),), fronts=((0, 0, 30),)),
    ]
    assert rs.resume_point(spread) == ResumePoint(2, 40)


@pytest.mark.parametrize(
    ("found", "message"),
    [
        ([], "create a store with `python -m bytewax.recovery"),
        ([part(0, 2), part(1, 3)], "mixes partitions of stores of [2, 3]"),
        ([part(0), part(0), part(1)], "holds partition 0 of 2 twice"),
        ([part(0, 3), part(2, 3)], "misses partitions [1] of 3"),
    ],
)
def test_an_incomplete_set_of_partitions_is_refused_with_the_fix(found, message):
    with pytest.raises(RecoveryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        rs.check_partitions(found, P)


def test_a_complete_set_gives_its_count():
    assert rs.check_partitions([part(1, 2), part(0, 2)], P) == 2


def test_copy_order_puts_the_frontier_first():
    parts = [part(0, 3, exs=((2, 1, 5),)), part(1, 3), part(2, 3, fronts=((2, 0, 9),))]
    assert [p.index for p in rs.copy_order(parts)] == [2, 0, 1]


def test_one_worker_copied_frontier_first_may_move_on_during_the_copy():
    before = ResumePoint(3, 10)
    copies = [part(0, fronts=((2, 0, 12),), exs=((2, 1, 4),)), part(1, commit=11)]
    assert rs.copy_problem(before, copies, first_copied=0) is None


def test_frontiers_in_two_partitions_must_not_move_during_the_copy():
    copies = [
        part(0, exs=((2, 2, 4),), fronts=((2, 0, 12),)),
        part(1, fronts=((2, 1, 12),)),
    ]
    assert rs.copy_problem(ResumePoint(3, 12), copies, first_copied=0) is None
    problem = rs.copy_problem(ResumePoint(3, 11), copies, first_copied=0)
    assert problem is not None and "from epoch 11 to 12" in problem


def test_a_restart_during_the_copy_is_a_problem():
    copies = [part(0, exs=((3, 1, 20),)), part(1)]
    problem = rs.copy_problem(ResumePoint(3, 19), copies, first_copied=0)
    assert problem is not None and "started execution 3" in problem


def test_a_copy_collected_up_to_the_resume_epoch_is_a_problem():
    """Bytewax accepts ``commit_epoch == resume epoch`` (see the test below); the tool not."""
    front = part(0, exs=((1, 1, 1),), fronts=((1, 0, 12),), commit=11)
    assert rs.copy_problem(ResumePoint(2, 12), [front, part(1, commit=11)], 0) is None
    problem = rs.copy_problem(ResumePoint(2, 12), [front, part(1, commit=12)], 0)
    assert problem is not None and "partitions [1] were garbage-collected up to epoch 12" in problem


def test_manifest_of_another_version_is_refused(tmp_path):
    with pytest.raises(RecoveryError, match="version 2"):
        rs.Manifest.from_json(orjson.dumps({"version": 2}), tmp_path / "manifest.json")
    with pytest.raises(RecoveryError, match="not a readable backup manifest"):
        rs.Manifest.from_json(b"{", tmp_path / "manifest.json")


# ----------------------------------------------------------------------------- with Bytewax
def _store(path: Path, partitions: int) -> Path:
    path.mkdir(parents=True)
    init_db_dir(path, partitions)
    return path


def _counting_flow(items: list, out: list) -> Dataflow:
    flow = Dataflow("count")
    keyed = op.input("in", flow, TestingSource(items, batch_size=1))
    counts = op.stateful_map("count", keyed, lambda n, v: ((n or 0) + v, (n or 0) + v))
    op.output("out", counts, TestingSink(out))
    return flow


def _run(items: list, store: Path, backup_interval: timedelta = timedelta(0)) -> dict[str, int]:
    """One execution over ``items`` up to the next EOF; the last count of each key."""
    out: list[tuple[str, int]] = []
    run_main(
        _counting_flow(items, out),
        epoch_interval=timedelta(0),  # one epoch per item
        recovery_config=RecoveryConfig(store, backup_interval),
    )
    return dict(out)


KEYS = [f"k{i:02d}" for i in range(24)]
ITEMS = [
    *((k, 1) for k in KEYS),
    TestingSource.EOF(),
    *((k, 10) for k in KEYS),
    TestingSource.EOF(),
    *((k, 100) for k in KEYS),
]


def test_backup_then_restore_resumes_where_the_backup_was(tmp_path):
    store = _store(tmp_path / "store", 3)
    _run(ITEMS, store)
    report = rs.backup(store, tmp_path / "backup")
    assert report.partitions == 3 and report.attempts == 1
    assert report.resume == rs.resume_point(rs.read_store(tmp_path / "backup")[0])
    assert _run(ITEMS, store) == dict.fromkeys(KEYS, 11)  # the store goes on

    restored = tmp_path / "restored"
    rs.restore(tmp_path / "backup", restored)
    assert _run(ITEMS, restored) == dict.fromkeys(KEYS, 11)  # from the backup, not the end
    assert not list(restored.glob("*.restoring"))


def test_bytewax_resumes_a_partition_collected_at_the_resume_epoch_without_its_state(tmp_path):
    """Bytewax 0.21.1 refuses a partition garbage-collected *past* the resume epoch, but not
    one collected *at* it: a key that changed in that very epoch then resumes empty."""
    store = _store(tmp_path / "store", 1)
    _run([("a", 1), ("b", 1), ("a", 1), ("b", 1), ("a", 1)], store, timedelta(days=1))
    db = sqlite3.connect(store / "part-0.sqlite3")
    a_epochs = [e for (e,) in db.execute("SELECT snap_epoch FROM snaps WHERE state_key = 'a'")]
    resume = sorted(a_epochs)[-2]  # an epoch in which "a" changed, "b" did not
    # as a copy would look: frontier read at `resume`, collection done up to it meanwhile
    db.execute("UPDATE fronts SET worker_frontier = ?", (resume,))
    db.execute(
        """WITH newest AS (SELECT step_id, state_key, MAX(snap_epoch) AS snap_epoch FROM snaps
           WHERE snap_epoch <= ?1 GROUP BY step_id, state_key)
           DELETE FROM snaps WHERE (step_id, state_key, snap_epoch) IN (
           SELECT step_id, state_key, snaps.snap_epoch FROM snaps JOIN newest
           USING (step_id, state_key) WHERE snaps.snap_epoch < newest.snap_epoch)""",
        (resume,),
    )
    db.execute("INSERT OR REPLACE INTO commits (part_index, commit_epoch) VALUES (0, ?)", [resume])
    db.commit()
    db.close()

    with pytest.raises(RecoveryError, match="collected up to the resume epoch"):
        rs.verify_backup(store)
    after = _run([("a", 100), ("b", 100)], store, timedelta(days=1))  # no error from Bytewax
    assert after == {"a": 100, "b": 102}  # "a" lost its 2; "b" kept its 2


def test_bytewax_resumes_a_partition_copied_before_the_frontier_stale_and_silently(tmp_path):
    """Partitions copied one by one: a copy older than the frontier's lacks the last epochs,
    and Bytewax resumes its keys from older snapshots without a word. Only the order of the
    copies (``backup``) prevents it; nothing in the files shows it."""
    store = _store(tmp_path / "store", 4)
    _run(ITEMS, store)
    early = tmp_path / "early"
    shutil.copytree(store, early)  # the store stopped: a consistent copy after execution 0
    _run(ITEMS, store)  # execution 1
    parts = {p.index: p for p in rs.read_store(store)[0]}
    progress = {i for i, p in parts.items() if any(r[0] == 1 for r in p.executions + p.frontiers)}
    stale = next(
        i for i in parts if i not in progress and not _keys(parts[i].path, "count.in")
    )  # neither the frontier nor the input's offsets: only counting keys
    keys = _keys(parts[stale].path, "count.count.%")
    assert keys, "the stale partition holds no counting key: use more keys"
    shutil.copy(early / parts[stale].path.name, parts[stale].path)  # an older copy of one part

    rs.verify_backup(store)  # passes: nothing in the files shows it
    after = _run(ITEMS, store)
    assert {k: after[k] for k in keys} == dict.fromkeys(keys, 101)  # 111 without the stale copy
    assert {k: v for k, v in after.items() if k not in keys} == {
        k: 111 for k in KEYS if k not in keys
    }


def _keys(partition: Path, step_like: str) -> list[str]:
    conn = sqlite3.connect(partition)
    try:
        query = "SELECT DISTINCT state_key FROM snaps WHERE step_id LIKE ? ORDER BY 1"
        return [k for (k,) in conn.execute(query, (step_like,))]
    finally:
        conn.close()


# ----------------------------------------------------------------------------- file operations
def test_backup_while_a_writer_commits_copies_whole_transactions(tmp_path):
    """The online backup API copies one snapshot of a WAL database that another connection
    keeps writing: every copy holds whole transactions and passes the integrity check."""
    store = _store(tmp_path / "store", 2)
    stop = threading.Event()

    def write() -> None:
        conn = sqlite3.connect(store / "part-1.sqlite3", timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        n = 0
        while not stop.is_set():
            n += 1
            with conn:  # two rows per transaction
                for key in ("x", "y"):
                    conn.execute(
                        "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) "
                        "VALUES ('s', ?, ?, zeroblob(2000))",
                        (key, n),
                    )
        conn.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for i in range(5):
            rs.backup(store, tmp_path / f"b{i}")
    finally:
        stop.set()
        writer.join()
    for i in range(5):
        copy = sqlite3.connect(tmp_path / f"b{i}" / "part-1.sqlite3")
        per_key = dict(copy.execute("SELECT state_key, COUNT(*) FROM snaps GROUP BY state_key"))
        assert per_key.get("x") == per_key.get("y")
        assert not list((tmp_path / f"b{i}").glob("*-wal"))


def test_backup_never_overwrites(tmp_path):
    store = _store(tmp_path / "store", 2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RecoveryError, match="name a new folder"):
        rs.backup(store, tmp_path / "full")
    (tmp_path / "empty").mkdir()
    assert rs.backup(store, tmp_path / "empty").partitions == 2


def test_backup_of_an_incomplete_store_names_the_missing_partition(tmp_path):
    store = _store(tmp_path / "store", 3)
    (store / "part-1.sqlite3").unlink()
    with pytest.raises(RecoveryError, match=r"misses partitions \[1\] of 3"):
        rs.backup(store, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_backup_gives_up_after_its_attempts_and_names_the_fix(tmp_path, monkeypatch):
    store = _store(tmp_path / "store", 2)
    monkeypatch.setattr(rs, "copy_problem", lambda *a: "the monitor moved on")
    with pytest.raises(RecoveryError, match=r"in 2 attempts: the monitor moved on.*\(-b"):
        rs.backup(store, tmp_path / "b", attempts=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no partial backup left


def test_restore_refuses_a_non_empty_folder_unless_forced(tmp_path):
    store = _store(tmp_path / "store", 2)
    rs.backup(store, tmp_path / "b")
    with pytest.raises(RecoveryError, match="add --force"):
        rs.restore(tmp_path / "b", store)
    # a crashed store's companions must go with it: a stale -wal would meet the new file
    (store / "part-0.sqlite3-wal").write_bytes(b"stale")
    (store / "part-9.sqlite3-shm").write_bytes(b"orphan")
    report = rs.restore(tmp_path / "b", store, force=True)
    assert "part-0.sqlite3-wal" in report.removed and "part-9.sqlite3-shm" in report.removed
    assert sorted(p.name for p in store.iterdir()) == ["part-0.sqlite3", "part-1.sqlite3"]


def test_restore_refuses_a_store_a_process_has_open(tmp_path):
    store = _store(tmp_path / "store", 2)
    rs.backup(store, tmp_path / "b")
    monitor = sqlite3.connect(store / "part-1.sqlite3")  # as Bytewax keeps it, in WAL mode
    monitor.execute("PRAGMA journal_mode=WAL").fetchall()
    monitor.execute("SELECT COUNT(*) FROM snaps").fetchall()
    try:
        with pytest.raises(RecoveryError, match="stop the monitor"):
            rs.restore(tmp_path / "b", store, force=True)
    finally:
        monitor.close()
    assert (store / "part-1.sqlite3").exists()


def test_restore_checks_the_backup_against_its_manifest(tmp_path):
    store = _store(tmp_path / "store", 2)
    rs.backup(store, tmp_path / "b")
    damaged = tmp_path / "b" / "part-0.sqlite3"
    conn = sqlite3.connect(damaged)
    conn.execute("INSERT INTO commits (part_index, commit_epoch) VALUES (0, 1)")
    conn.commit()
    conn.close()
    with pytest.raises(RecoveryError, match="differs from the file the backup recorded"):
        rs.restore(tmp_path / "b", tmp_path / "new")
    damaged.unlink()
    with pytest.raises(RecoveryError, match=r"misses partitions \[0\]"):
        rs.restore(tmp_path / "b", tmp_path / "new")
    assert not (tmp_path / "new").exists()  # checked before anything is written


def test_command_line_prints_progress_and_one_summary_line(tmp_path, capsys, caplog):
    store = _store(tmp_path / "store", 2)
    caplog.set_level(logging.INFO, logger=rs.__name__)
    assert rs.main(["backup", str(store), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("backup ok partitions=2 ")
    copied = [r.getMessage() for r in caplog.records if "recovery_store_copy" in r.getMessage()]
    assert len(copied) == 2
    assert rs.main(["restore", str(tmp_path / "b"), str(store)]) == 1
    assert "add --force" in capsys.readouterr().err
    assert rs.main(["restore", str(tmp_path / "b"), str(store), "--force"]) == 0
    assert capsys.readouterr().out.startswith("restore ok partitions=2 ")
