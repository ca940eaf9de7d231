"""Unit tests of the normal-case JSON Lines sink (no Bytewax run: partitions driven directly)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from lib.connectors.normal_files import NormalFileSink, day_of, iter_records, part_files
from lib.errors import SinkError


def doc(i: int, *, patient: str = "p1", when: datetime | str | None = None) -> dict:
    at = when or datetime(2026, 11, 28, 23, 0, tzinfo=UTC) + timedelta(minutes=30 * i)
    return {
        "observation_id": f"obs-{i}",
        "patient_id": patient,
        "effective_at": at,
        "systolic": 110.0 + i,
        "diastolic": 70.0,
        "category": "normal",
        "risk_score": 0.01 * i,
    }


def lines(path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_day_of_normalises_offsets_to_utc():
    assert day_of("2026-11-28T23:30:00-02:00") == "2026-11-29"
    assert day_of("2026-11-28T00:30:00Z") == "2026-11-28"
    plus_two = timezone(timedelta(hours=2))
    assert day_of(datetime(2026, 11, 29, 1, 0, tzinfo=plus_two)) == "2026-11-28"
    with pytest.raises(ValueError, match="timezone-aware"):
        day_of(datetime(2026, 11, 29, 1, 0))  # noqa: DTZ001 - the point of the test


def test_write_partitions_by_utc_day_and_keeps_order(tmp_path):
    part = NormalFileSink(tmp_path, parts=2).build_part("s", "part-1", None)
    batch = [doc(i) for i in range(4)]  # 23:00, 23:30, 00:00 (+1 day), 00:30
    part.write_batch(batch)
    state = part.snapshot()
    part.close()

    first = tmp_path / "date=2026-11-28" / "part-1.jsonl"
    second = tmp_path / "date=2026-11-29" / "part-1.jsonl"
    assert [r["observation_id"] for r in lines(first)] == ["obs-0", "obs-1"]
    assert [r["observation_id"] for r in lines(second)] == ["obs-2", "obs-3"]
    assert lines(second)[0]["effective_at"] == "2026-11-29T00:00:00Z"
    assert state == {
        "date=2026-11-28": first.stat().st_size,
        "date=2026-11-29": second.stat().st_size,
    }
    assert part_files(tmp_path) == [first, second]
    assert sorted(r["observation_id"] for r in iter_records(tmp_path)) == [
        f"obs-{i}" for i in range(4)
    ]


def test_one_write_per_file_per_batch(tmp_path, monkeypatch):
    part = NormalFileSink(tmp_path).build_part("s", "part-0", None)
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd, data):
        writes.append(fd)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    part.write_batch([doc(0), doc(1), doc(2), doc(3), doc(0)])  # two days
    assert len(writes) == 2
    part.close()


def test_resume_truncates_to_snapshot_and_removes_later_files(tmp_path):
    sink = NormalFileSink(tmp_path, parts=1)
    part = sink.build_part("s", "part-0", None)
    part.write_batch([doc(0), doc(1)])
    state = part.snapshot()
    # Written after the snapshot, then a crash (no close, no snapshot).
    part.write_batch([doc(2, when="2026-11-28T23:59:00Z"), doc(3, when="2026-12-01T08:00:00Z")])
    assert (tmp_path / "date=2026-12-01" / "part-0.jsonl").exists()

    resumed = sink.build_part("s", "part-0", state)
    assert not (tmp_path / "date=2026-12-01" / "part-0.jsonl").exists()
    # Bytewax re-emits what followed the snapshot.
    resumed.write_batch([doc(2, when="2026-11-28T23:59:00Z"), doc(3, when="2026-12-01T08:00:00Z")])
    resumed.close()
    ids = [r["observation_id"] for r in iter_records(tmp_path)]
    assert sorted(ids) == ["obs-0", "obs-1", "obs-2", "obs-3"]
    assert len(ids) == len(set(ids))


def test_resume_leaves_other_parts_alone(tmp_path):
    sink = NormalFileSink(tmp_path, parts=2)
    p0 = sink.build_part("s", "part-0", None)
    p1 = sink.build_part("s", "part-1", None)
    p0.write_batch([doc(0)])
    p1.write_batch([doc(1, patient="p2")])
    p1_state = p1.snapshot()
    p0.snapshot()
    p0.write_batch(
        [doc(5, when="2026-11-28T23:45:00Z")]
    )  # past p0's snapshot; p1 resuming must not cut it
    sink.build_part("s", "part-1", p1_state)
    assert len(lines(tmp_path / "date=2026-11-28" / "part-0.jsonl")) == 2


def test_fresh_start_appends_or_replaces_on_request(tmp_path):
    part = NormalFileSink(tmp_path, parts=1).build_part("s", "part-0", None)
    part.write_batch([doc(0), doc(1)])
    part.snapshot(), part.snapshot()  # snapshotted: these files outlive their store
    part.close()
    stray = tmp_path / "date=2026-11-28" / "notes.txt"
    stray.write_text("not ours")

    appended = NormalFileSink(tmp_path, parts=1, on_fresh_start="append").build_part(
        "s", "part-0", None
    )
    appended.write_batch([doc(2)])
    assert (
        appended.snapshot()["date=2026-11-28"]
        == (tmp_path / "date=2026-11-28" / "part-0.jsonl").stat().st_size
    )
    appended.close()
    assert len(list(iter_records(tmp_path))) == 3

    replaced = NormalFileSink(tmp_path, parts=1, on_fresh_start="replace").build_part(
        "s", "part-0", None
    )
    replaced.write_batch([doc(0)])
    replaced.close()
    assert [r["observation_id"] for r in iter_records(tmp_path)] == ["obs-0"]
    assert stray.read_text() == "not ours"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}


def test_a_fresh_start_over_snapshotted_files_refuses_and_touches_nothing(tmp_path):
    part = NormalFileSink(tmp_path, parts=1).build_part("s", "part-0", None)
    part.write_batch([doc(0), doc(1)])
    part.snapshot(), part.snapshot()
    part.close()
    before = _tree(tmp_path)
    with pytest.raises(SinkError) as err:
        NormalFileSink(tmp_path, parts=1).build_part("s", "part-0", None)
    for words in ("BPWATCH_NORMAL_ON_FRESH_START=replace", "=append", "Move the files away"):
        assert words in str(err.value)
    assert _tree(tmp_path) == before


def test_a_restart_after_a_crash_before_the_snapshots_replaces_its_own_files(tmp_path):
    part = NormalFileSink(tmp_path, parts=1).build_part("s", "part-0", None)
    part.write_batch([doc(0), doc(1)])
    part.snapshot()  # one snapshot: its epoch may not be committed yet
    # kill -9: no close; the store holds no snapshot, the input replays from the start
    again = NormalFileSink(tmp_path, parts=1).build_part("s", "part-0", None)
    again.write_batch([doc(0), doc(1)])
    again.close()
    assert [r["observation_id"] for r in iter_records(tmp_path)] == ["obs-0", "obs-1"]


def test_a_deleted_old_day_folder_does_not_stop_a_resume(tmp_path, caplog):
    sink = NormalFileSink(tmp_path, parts=1)
    part = sink.build_part("s", "part-0", None)
    part.write_batch([
        doc(0, when=datetime(2026, 11, 27, 8, tzinfo=UTC)),
        doc(1, when=datetime(2026, 11, 28, 8, tzinfo=UTC)),
    ])  # fmt: skip
    state = part.snapshot()
    part.close()
    shutil.rmtree(tmp_path / "date=2026-11-27")  # a retention job
    with caplog.at_level("WARNING"):
        resumed = sink.build_part("s", "part-0", state)
    assert set(resumed.snapshot()) == {"date=2026-11-28"}
    assert "normal_sink_forgot" in caplog.text and "days=1" in caplog.text
    # the latest day gone too (nothing newer left): that stops the restart
    shutil.rmtree(tmp_path / "date=2026-11-28")
    with pytest.raises(SinkError):
        sink.build_part("s", "part-0", state)


def test_file_shorter_than_snapshot_is_refused(tmp_path):
    sink = NormalFileSink(tmp_path, parts=1)
    part = sink.build_part("s", "part-0", None)
    part.write_batch([doc(0), doc(1)])
    state = part.snapshot()
    part.close()
    path = tmp_path / "date=2026-11-28" / "part-0.jsonl"
    os.truncate(path, 5)
    with pytest.raises(SinkError, match="recovery snapshot"):
        sink.build_part("s", "part-0", state)


def test_snapshot_fsyncs_written_files(tmp_path, monkeypatch):
    part = NormalFileSink(tmp_path).build_part("s", "part-0", None)
    part.write_batch([doc(0), doc(2)])
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    part.snapshot()
    assert len(synced) >= 2  # two day files (plus their new folders)
    synced.clear()
    part.snapshot()  # nothing written since: nothing to sync
    assert synced == []
    part.close()


def test_unwritable_directory_raises_sink_error_naming_the_variable(tmp_path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    target = not_a_dir / "normal"
    with pytest.raises(SinkError, match="BPWATCH_NORMAL_DIR") as err:
        NormalFileSink(target).build_part("s", "part-0", None)
    assert str(target) in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_directory_raises_sink_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(SinkError, match="BPWATCH_NORMAL_DIR"):
            NormalFileSink(locked).build_part("s", "part-0", None)
    finally:
        locked.chmod(stat.S_IRWXU)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_raises_sink_error_and_resume_restores_whole_lines(tmp_path):
    sink = NormalFileSink(tmp_path, parts=1)
    part = sink.build_part("s", "part-0", None)
    part.write_batch([doc(0)])
    state = part.snapshot()
    part.close()
    # The next day's file sits on a full disk.
    (tmp_path / "date=2026-11-29").mkdir()
    (tmp_path / "date=2026-11-29" / "part-0.jsonl").symlink_to("/dev/full")
    part = sink.build_part("s", "part-0", {**state, "date=2026-11-29": 0})
    with pytest.raises(SinkError, match="BPWATCH_NORMAL_DIR") as err:
        part.write_batch([doc(1), doc(3)])  # 23:30 on the 28th, 00:30 on the 29th
    assert "date=2026-11-29" in str(err.value)
    assert "No space left" in str(err.value)
    # Restart from the last snapshot: the half-done batch is cut, the symlink removed.
    sink.build_part("s", "part-0", state).close()
    assert [r["observation_id"] for r in iter_records(tmp_path)] == ["obs-0"]


def test_open_handles_are_bounded_and_closed_files_still_synced(tmp_path, monkeypatch):
    part = NormalFileSink(tmp_path, max_open_files=2).build_part("s", "part-0", None)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    part.write_batch([doc(i, when=start + timedelta(days=i)) for i in range(6)])
    assert len(part._fds) == 2
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    state = part.snapshot()
    assert len(synced) >= 6 + 6  # six files (four of them reopened) and six new folders
    part.close()
    assert len(state) == 6
    assert len(part_files(tmp_path)) == 6


def test_routing_is_stable_and_spreads_patients():
    sink = NormalFileSink("unused", parts=4)
    keys = [f"patient-{i}" for i in range(200)]
    first = [sink.part_fn(k) % 4 for k in keys]
    assert first == [NormalFileSink("other", parts=4).part_fn(k) % 4 for k in keys]
    assert set(first) == {0, 1, 2, 3}


def test_one_key_value_log_line_per_batch_and_none_for_an_empty_one(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lib.connectors.normal_files")
    part = NormalFileSink(tmp_path, parts=2).build_part("s", "part-1", None)
    caplog.clear()
    part.write_batch([doc(i) for i in range(4)])  # two days: two files, one line
    part.write_batch([])
    part.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["normal_sink_batch part=part-1 lines=4 files=2"]


def test_folder_of_a_utc_time_is_its_day_as_day_of_says():
    from lib.connectors.normal_files import _folder_of

    for text in ("2026-11-28T23:59:59.999Z", "2026-11-28T00:00:00Z", "2026-11-28T10:00:00.000Z"):
        assert _folder_of(text) == "date=" + day_of(text) == "date=2026-11-28"
    assert _folder_of("2026-11-28T23:30:00-02:00") == "date=2026-11-29"  # parsed, not cut
    with pytest.raises(ValueError):
        _folder_of("2026-13-45T00:00:00Z")


class _Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


def test_retention_deletes_old_days_while_running_and_the_snapshot_forgets_them(tmp_path, caplog):
    clock = _Clock(datetime(2026, 12, 4, 12, 0, tzinfo=UTC))
    sink = NormalFileSink(tmp_path, parts=2, retention_days=5, clock=clock)
    other = sink.build_part("s", "part-0", None)
    part = sink.build_part("s", "part-1", None)
    day = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)  # 7 days before the clock
    other.write_batch([doc(0, when=day)])
    part.write_batch([doc(i, when=day + timedelta(days=i)) for i in range(7)])
    assert len(part.snapshot()) == 7  # written: the next pass is not due yet
    other.snapshot()

    clock.now += 3600  # an hour later: the pass runs before the next batch is written
    with caplog.at_level(logging.INFO, logger="lib.connectors.normal_files"):
        part.write_batch([doc(9, when=datetime(2026, 12, 4, 11, 0, tzinfo=UTC))])
    state = part.snapshot()
    assert min(state) == "date=2026-11-29"  # 5 days before 2026-12-04, kept
    assert "date=2026-11-28" not in state and "date=2026-11-27" not in state
    assert not (tmp_path / "date=2026-11-28").exists()  # empty: removed
    assert (tmp_path / "date=2026-11-27" / "part-0.jsonl").exists()  # another part's file
    (line,) = [r.getMessage() for r in caplog.records if "normal_sink_retention" in r.getMessage()]
    assert "part=part-1 days=2 oldest=date=2026-11-27 newest=date=2026-11-28" in line
    part.close()
    other.close()

    # resume from the earlier snapshot (a crash before the pass was snapshotted): the
    # deleted days are past the retention, so they are forgotten, not an error
    old_state = {f"date=2026-11-{27 + i}": 1 for i in range(2)}
    resumed = sink.build_part("s", "part-1", {**old_state, **state})
    assert resumed.snapshot() == state
    resumed.close()
    # the other part applies the same retention at its own start
    sink.build_part("s", "part-0", {"date=2026-11-27": 1}).close()
    assert not (tmp_path / "date=2026-11-27").exists()


def test_no_retention_keeps_every_day(tmp_path):
    clock = _Clock(datetime(2030, 1, 1, tzinfo=UTC))
    part = NormalFileSink(tmp_path, parts=1, clock=clock).build_part("s", "part-0", None)
    part.write_batch([doc(0, when=datetime(2026, 1, 1, tzinfo=UTC))])
    clock.now += 10 * 3600
    part.write_batch([doc(1)])
    assert set(part.snapshot()) == {"date=2026-01-01", "date=2026-11-28"}
    part.close()
