"""Normal readings as JSON Lines under ``BPWATCH_NORMAL_DIR``, exactly once with recovery.

Layout: one folder per UTC day of ``effective_at`` and one file per part inside it::

    <dir>/date=2026-11-28/part-0.jsonl
    <dir>/date=2026-11-28/part-1.jsonl
    <dir>/date=2026-11-29/part-0.jsonl

Each line is one reading (``orjson``, datetimes as ISO 8601 with ``Z``). A part is the unit
of parallelism: :class:`NormalFileSink` is a Bytewax ``FixedPartitionedSink`` whose
partitions are the parts ``part-0 .. part-<parts-1>``; an item is routed to a part by a
stable hash (``zlib.crc32``) of its key, which must be the patient id, so all of a patient's
readings land in one part, in the order the flow emits them.

Delivery guarantee (with a Bytewax ``RecoveryConfig`` and a replayable, deterministic input
such as Kafka with Bytewax-kept offsets):

* **Exactly once per line after a crash and restart.** A part's snapshot is the byte length
  of each of its files. Snapshots are taken at the end of an epoch, after ``fsync`` of every
  file written in that epoch (and of any folder that gained a file), so a snapshot never
  points past durable data. On resume the part truncates each of its files back to the
  snapshotted length and removes its files that the snapshot does not know (created after
  it). Bytewax then re-emits exactly the items after that snapshot, so each line is written
  once. A write that fails half-way leaves at most a partial tail past the snapshot, which
  the same truncation removes.
* **Fresh start** (no resume state: a new recovery directory, or no recovery at all) over
  existing files: by default (``on_fresh_start="refuse"``, ``BPWATCH_NORMAL_ON_FRESH_START``)
  the part refuses to start with :class:`lib.errors.SinkError` naming the choices, and
  touches nothing: the input starts again from its beginning, and Kafka no longer holds what
  is older than its retention, so rewriting the files would lose those readings for good.
  ``"replace"`` removes the part's files and rewrites them (a rerun over the same input
  gives the same files); ``"append"`` keeps them and appends (for inputs that do not replay;
  at-least-once if the run crashes before its first snapshot). Without existing files all
  three start the same way. A run that crashed before its recovery store held a snapshot
  left its own files: a part marks its fresh start with ``.part-<k>.fresh`` in the folder
  and removes the mark at its second snapshot (the first epoch is committed by then) or when
  it closes after a snapshot (a bounded run's end), so a restart that finds the mark replaces
  the files instead of refusing.
* **Retention** (``retention_days``, ``BPWATCH_NORMAL_RETENTION_DAYS``; 0 keeps every day):
  each part deletes its files in day folders older than the retention, by the wall clock's
  UTC date, at start and then once an hour, and removes a folder left empty; its snapshot
  forgets those days. A day past the retention that is missing on resume, or whose file is
  gone, is simply forgotten. One log line per pass (``normal_sink_retention``). A reading
  older than the retention (a late or replayed one) is written, then deleted at the next
  pass.
* Only the files of this sink's parts (``part-<k>.jsonl``) are touched. Readers must not
  rely on a file's tail before the next snapshot: it may still be truncated by a resume.
* A day folder deleted outside bpwatch (a retention job) is forgotten on resume with one log
  line (``normal_sink_forgot``) when a newer day folder is still there; a day folder gone
  that is not older than every folder left (the latest days, or all of them), and a file
  shorter than its snapshot (edited outside bpwatch), stop the restart with
  :class:`lib.errors.SinkError` rather than guessing. An
  unwritable directory raises :class:`~lib.errors.SinkError` naming ``BPWATCH_NORMAL_DIR``
  and the path: never silent loss.

Writes are batched: one ``write`` per file per batch, and one log line per non-empty batch
(``normal_sink_batch part=part-0 lines=250 files=1``). At most ``max_open_files`` handles are
kept open per part (the least recently written are closed).
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from lib.errors import SinkError
from lib.memo import remember

__all__ = ["NormalFileSink", "day_of", "iter_records", "part_files"]

logger = logging.getLogger(__name__)

_DAY_PREFIX = "date="
_SUFFIX = ".jsonl"
_OPTS = orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)

# Snapshot of one part: day folder name ("date=2026-11-28") -> byte length of its file.
ShardState = dict[str, int]

RETENTION_CHECK_S = 3600.0  # how often a part applies the retention while it runs


def retention_cutoff(now: float, retention_days: float) -> str:
    """The folder name of the oldest day kept: folders that sort before it are deleted
    (``""`` when ``retention_days`` is 0: none is)."""
    if retention_days <= 0:
        return ""
    day = (datetime.fromtimestamp(now, UTC) - timedelta(days=retention_days)).date()
    return _DAY_PREFIX + day.isoformat()


def day_of(effective_at: datetime | str) -> str:
    """UTC calendar day (``YYYY-MM-DD``) of an aware datetime or an ISO 8601 string."""
    value = effective_at
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"effective_at must be timezone-aware, got {effective_at!r}")
    return value.astimezone(UTC).date().isoformat()


_folders: dict[str, str] = {}  # "YYYY-MM-DD" of a UTC "...Z" time -> its folder name
_FOLDERS_MAX = 4096  # days; cleared when full (the result never depends on it)


def _folder_of(effective_at: datetime | str) -> str:
    """``date=<UTC day>`` of a reading: :func:`day_of`, without parsing a time already in UTC
    (``YYYY-MM-DDTHH:MM:SS...Z``, what the monitor writes) once its day has been seen."""
    if type(effective_at) is str and effective_at[-1:] == "Z" and effective_at[10:11] == "T":
        folder = _folders.get(effective_at[:10])
        if folder is not None:
            return folder
        day = day_of(effective_at)
        if day == effective_at[:10]:
            remember(_folders, day, _DAY_PREFIX + day, _FOLDERS_MAX)
        return _DAY_PREFIX + day
    return _DAY_PREFIX + day_of(effective_at)


def _unwritable(path: Path, exc: OSError) -> SinkError:
    reason = exc.strerror or type(exc).__name__
    return SinkError(
        f"cannot write normal readings to {path} ({reason}): make BPWATCH_NORMAL_DIR "
        "point to a writable folder"
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _ShardPartition(StatefulSinkPartition[Mapping[str, Any], ShardState]):
    """One part: its day files, their lengths, and a small cache of open handles."""

    def __init__(
        self,
        root: Path,
        part: str,
        resume_state: ShardState | None,
        on_fresh_start: str,
        max_open_files: int,
        retention_days: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._root = root
        self._retention_days = retention_days
        self._clock = clock
        self._next_retention = 0.0
        self._part = part
        self._file = part + _SUFFIX
        self._max_open = max_open_files
        self._lengths: ShardState = {}
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._dirty: set[str] = set()  # days written since the last snapshot
        self._new_dirs: set[Path] = set()  # folders that gained an entry since then
        self._fresh_mark = root / f".{part}.fresh"  # a fresh start not yet snapshotted twice
        self._snapshots = 0
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not os.access(root, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
            self._restore(resume_state, on_fresh_start)
            self._apply_retention(self._clock())
        except OSError as exc:
            raise _unwritable(root, exc) from exc

    # -- retention ------------------------------------------------------------------
    def _apply_retention(self, now: float) -> None:
        """Delete this part's files in day folders older than the retention."""
        if self._retention_days <= 0:
            return
        self._next_retention = now + RETENTION_CHECK_S
        cutoff = retention_cutoff(now, self._retention_days)
        old = sorted(
            {day for day in self._lengths if day < cutoff}
            | {day for day in self._existing() if day < cutoff}
        )
        if not old:
            return
        removed = 0
        for day in old:
            fd = self._fds.pop(day, None)
            if fd is not None:
                os.close(fd)
            path = self._root / day / self._file
            if path.exists():
                removed += path.stat().st_size
                path.unlink()
                self._new_dirs.add(path.parent)
            self._lengths.pop(day, None)
            self._dirty.discard(day)
            try:
                path.parent.rmdir()  # only once every part's file is gone
                self._new_dirs.discard(path.parent)
                self._new_dirs.add(self._root)
            except OSError:
                pass
        logger.info(
            "normal_sink_retention part=%s days=%d oldest=%s newest=%s removed_bytes=%d "
            "retention_days=%g",
            self._part, len(old), old[0], old[-1], removed, self._retention_days,
        )  # fmt: skip

    # -- recovery -------------------------------------------------------------------
    def _existing(self) -> dict[str, Path]:
        return {
            p.parent.name: p
            for p in self._root.glob(f"{_DAY_PREFIX}*/{self._file}")
            if p.parent.name.startswith(_DAY_PREFIX)
        }

    def _restore(self, state: ShardState | None, on_fresh_start: str) -> None:
        existing = self._existing()
        removed = truncated = 0
        forgotten: list[str] = []
        if state is None:
            ours = self._fresh_mark.exists()  # files of a run that crashed before snapshots
            if on_fresh_start == "refuse" and existing and not ours:
                raise SinkError(
                    f"{self._root} already holds normal-case files ({len(existing)} of "
                    f"{self._file}) but the monitor starts without a recovery snapshot, so it "
                    "would read the input from its beginning and Kafka no longer holds what is "
                    "older than its retention. Move the files away, or set "
                    "BPWATCH_NORMAL_ON_FRESH_START=replace (remove and rewrite them from what "
                    "the input still holds) or =append (keep them and add to them); see "
                    "docs/operations.md"
                )
            if on_fresh_start == "refuse":
                self._fresh_mark.touch()
                self._new_dirs.add(self._root)
            if on_fresh_start == "append":
                self._lengths = {day: p.stat().st_size for day, p in existing.items()}
            else:
                for path in existing.values():
                    removed += path.stat().st_size
                    path.unlink()
                    self._new_dirs.add(path.parent)
        else:
            self._fresh_mark.unlink(missing_ok=True)
            for day, path in existing.items():
                if day not in state:
                    removed += path.stat().st_size
                    path.unlink()
                    self._new_dirs.add(path.parent)
            # the newest day folder on disk, of any part: an older one gone is retention
            newest = max((p.name for p in self._root.glob(f"{_DAY_PREFIX}*")), default="")
            cutoff = retention_cutoff(self._clock(), self._retention_days)
            for day, length in state.items():
                folder = self._root / day
                path = folder / self._file
                if day < cutoff:
                    continue  # past the retention: deleted by _apply_retention, not restored
                if not folder.exists() and day < newest:
                    forgotten.append(day)  # a retention job took it: nothing to rewrite
                    continue
                size = path.stat().st_size if path.exists() else 0
                if size < length:
                    raise SinkError(
                        f"{path} holds {size} bytes but the recovery snapshot recorded {length}: "
                        "it was changed outside bpwatch; restore it, or start with a fresh "
                        "recovery directory"
                    )
                if size > length:
                    os.truncate(path, length)
                    truncated += size - length
                    self._dirty.add(day)
                self._lengths[day] = length
        self._sync()
        if forgotten:
            logger.warning(
                "normal_sink_forgot part=%s days=%d oldest=%s newest=%s reason=folder_deleted",
                self._part,
                len(forgotten),
                min(forgotten),
                max(forgotten),
            )
        if state is not None or removed:
            logger.info(
                "normal_sink_resume part=%s files=%d truncated_bytes=%d removed_bytes=%d",
                self._part,
                len(self._lengths),
                truncated,
                removed,
            )

    # -- writing --------------------------------------------------------------------
    def _fd(self, day: str) -> int:
        fd = self._fds.get(day)
        if fd is not None:
            self._fds.move_to_end(day)
            return fd
        folder = self._root / day
        if not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)
            self._new_dirs.add(self._root)
        path = folder / self._file
        if not path.exists():
            self._new_dirs.add(folder)
        fd = os.open(path, _FLAGS, 0o640)
        self._fds[day] = fd
        self._lengths.setdefault(day, 0)
        while len(self._fds) > self._max_open:
            # A closed dirty file stays in _dirty: the next snapshot reopens it to fsync.
            _, old_fd = self._fds.popitem(last=False)
            os.close(old_fd)
        return fd

    def write_batch(self, values: list[Mapping[str, Any]]) -> None:
        if self._retention_days > 0:
            now = self._clock()
            if now >= self._next_retention:
                try:
                    self._apply_retention(now)
                except OSError as exc:
                    raise _unwritable(self._root, exc) from exc
        by_day: dict[str, list[bytes]] = {}
        dumps = orjson.dumps
        for doc in values:
            day = _folder_of(doc["effective_at"])
            lines = by_day.get(day)
            if lines is None:
                lines = by_day[day] = []
            lines.append(dumps(doc, option=_OPTS))
        for day, lines in by_day.items():
            data = b"".join(lines)
            path = self._root / day / self._file
            try:
                fd = self._fd(day)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                self._discard_partial(day)
                raise _unwritable(path, exc) from exc
            self._lengths[day] += len(data)
            self._dirty.add(day)
        if values:
            logger.info(
                "normal_sink_batch part=%s lines=%d files=%d", self._part, len(values), len(by_day)
            )

    def _discard_partial(self, day: str) -> None:
        """Best effort: cut a half-written batch so the file ends on a whole line."""
        if day in self._lengths:
            try:
                os.truncate(self._root / day / self._file, self._lengths[day])
            except OSError:
                logger.warning("normal_sink_partial_tail part=%s day=%s", self._part, day)

    # -- durability -----------------------------------------------------------------
    def _sync(self) -> None:
        for day in self._dirty:
            fd = self._fds.get(day)
            if fd is not None:
                os.fsync(fd)
            else:
                path = self._root / day / self._file
                if path.exists():
                    tmp = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(tmp)
                    finally:
                        os.close(tmp)
        for folder in self._new_dirs:
            if folder.exists():
                _fsync_dir(folder)
        self._dirty.clear()
        self._new_dirs.clear()

    def snapshot(self) -> ShardState:
        try:
            self._sync()
            self._snapshots += 1
            if self._snapshots == 2:  # the first epoch's snapshot is committed by now
                self._fresh_mark.unlink(missing_ok=True)
        except OSError as exc:
            raise _unwritable(self._root, exc) from exc
        return dict(self._lengths)

    def close(self) -> None:
        try:
            self._sync()
            if self._snapshots:  # a clean end after a snapshot: the files are the store's
                self._fresh_mark.unlink(missing_ok=True)
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class NormalFileSink(FixedPartitionedSink[Mapping[str, Any], ShardState]):
    """Write normal readings as day-partitioned JSON Lines, exactly once under recovery.

    Items are ``(patient_id, reading_dict)`` pairs (a keyed stream, e.g. straight after a
    stateful step keyed by patient); the dict holds at least ``observation_id``,
    ``patient_id``, ``effective_at`` (aware datetime or ISO 8601 string), ``systolic``,
    ``diastolic``, ``category`` and ``risk_score``. The unit of parallelism is the part; the
    directory must be the same folder for every worker (one machine or a shared mount).
    See the module docstring for the exact guarantee.

    :arg directory: ``settings.normal_dir``.
    :arg parts: number of fixed partitions; keep it constant across restarts.
    :arg on_fresh_start: ``"refuse"`` (default), ``"replace"`` or ``"append"``, see the module
        docstring.
    :arg max_open_files: open handles kept per part.
    :arg retention_days: delete day folders older than this (wall clock, UTC days); 0 keeps
        them all.
    :arg clock: the wall clock (tests).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        parts: int = 4,
        on_fresh_start: Literal["refuse", "replace", "append"] = "refuse",
        max_open_files: int = 8,
        retention_days: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if parts < 1:
            raise ValueError("parts must be at least 1")
        if on_fresh_start not in ("refuse", "replace", "append"):
            raise ValueError("on_fresh_start must be 'refuse', 'replace' or 'append'")
        self._root = Path(directory)
        self._parts = parts
        self._on_fresh_start = on_fresh_start
        self._max_open = max(1, max_open_files)
        self._retention_days = retention_days
        self._clock = clock

    def list_parts(self) -> list[str]:
        return [f"part-{k}" for k in range(self._parts)]

    def part_fn(self, item_key: str) -> int:
        return zlib.crc32(item_key.encode("utf-8"))

    def build_part(
        self, step_id: str, for_part: str, resume_state: ShardState | None
    ) -> _ShardPartition:
        return _ShardPartition(
            self._root,
            for_part,
            resume_state,
            self._on_fresh_start,
            self._max_open,
            self._retention_days,
            self._clock,
        )


def part_files(directory: Path | str) -> list[Path]:
    """Every ``date=*/part-*.jsonl`` file under ``directory``, sorted."""
    return sorted(Path(directory).glob(f"{_DAY_PREFIX}*/part-*{_SUFFIX}"))


def iter_records(directory: Path | str) -> Iterator[dict[str, Any]]:
    """Read back every line written by :class:`NormalFileSink` (tests, reports, tools)."""
    for path in part_files(directory):
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    yield orjson.loads(line)
