"""Back up and restore the monitor's recovery store (Bytewax 0.21 SQLite partitions).

``python -m lib.tools.recovery_store backup SRC_DIR DEST_DIR`` copies a store, also while the
monitor runs on it; ``python -m lib.tools.recovery_store restore BACKUP_DIR DEST_DIR [--force]``
puts a backup in place of a lost store. The procedure around them is in
``docs/operations.md`` ("Backup and restore of the recovery store").

How a copy of a live store is checked (what Bytewax 0.21.1 resumes from, and why partitions
copied one after the other can fail to resume) is in ``docs/operations.md``, "How the backup
tool checks a copy". In short, :func:`backup` copies the partitions holding the frontier rows
first with SQLite's online backup API, accepts the copy only when every partition was copied
after the frontier it resumes from and none was garbage-collected up to it (else it tries
again), checks each copy's integrity and writes a manifest; :func:`restore` checks a backup the
same way and replaces a store only when asked.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from lib.errors import RecoveryError

__all__ = [
    "BackupReport",
    "Manifest",
    "PartitionInfo",
    "RestoreReport",
    "ResumePoint",
    "backup",
    "check_partitions",
    "copy_problem",
    "restore",
    "resume_point",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
ATTEMPTS = 3  # copies tried before a backup gives up
BUSY_TIMEOUT_S = 10.0


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ResumePoint:
    """Where Bytewax resumes a store: the next execution number and the resume epoch."""

    execution: int
    epoch: int


@dataclass(frozen=True)
class PartitionInfo:
    """One partition file: its identity (``parts``) and its share of the progress tables."""

    path: Path
    index: int
    count: int
    executions: tuple[tuple[int, int, int], ...] = ()  # exs: (ex_num, worker_count, resume_epoch)
    frontiers: tuple[tuple[int, int, int], ...] = ()  # fronts: (ex_num, worker, frontier)
    commit_epoch: int | None = None  # commits: garbage-collected up to this epoch

    @property
    def name(self) -> str:
        return f"part-{self.index}.sqlite3"


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of a backup (versioned: a restore refuses a version it does not know)."""

    partitions: int
    execution: int
    resume_epoch: int
    files: dict[str, dict[str, Any]]  # name -> {"bytes": int, "sha256": str}
    created_at: str
    source: str
    took_s: float
    bytewax: str
    version: int = MANIFEST_VERSION

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes, where: Path) -> Manifest:
        try:
            raw = orjson.loads(data)
            version = raw.get("version")
            if version != MANIFEST_VERSION:
                raise RecoveryError(
                    f"{where} is a backup manifest of version {version!r}; this bpwatch reads "
                    f"version {MANIFEST_VERSION}: restore it with the bpwatch that made it"
                )
            return cls(**raw)
        except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            raise RecoveryError(
                f"{where} is not a readable backup manifest ({exc}): use another backup"
            ) from exc


@dataclass
class BackupReport:
    dest: Path
    partitions: int
    bytes: int
    resume: ResumePoint
    took_s: float
    attempts: int

    def line(self) -> str:
        return (
            f"backup ok partitions={self.partitions} bytes={self.bytes} "
            f"execution={self.resume.execution} resume_epoch={self.resume.epoch} "
            f"attempts={self.attempts} took={self.took_s:.2f}s dest={self.dest}"
        )


@dataclass
class RestoreReport:
    dest: Path
    partitions: int
    bytes: int
    resume: ResumePoint
    removed: list[str] = field(default_factory=list)
    backup_created_at: str = ""

    def line(self) -> str:
        return (
            f"restore ok partitions={self.partitions} bytes={self.bytes} "
            f"execution={self.resume.execution} resume_epoch={self.resume.epoch} "
            f"backup_created_at={self.backup_created_at or 'unknown'} "
            f"removed={len(self.removed)} dest={self.dest}"
        )


# ----------------------------------------------------------------------------- pure logic
def check_partitions(found: Sequence[PartitionInfo], where: Path) -> int:
    """The partition count of a complete set (as ``bytewax.recovery`` created it), or
    :class:`RecoveryError` naming what is wrong and the fix."""
    if not found:
        raise RecoveryError(
            f"{where} holds no recovery partitions (part-*.sqlite3): name the folder given to "
            "the monitor with -r, or create a store with `python -m bytewax.recovery DIR N`"
        )
    counts = sorted({p.count for p in found})
    if len(counts) > 1:
        raise RecoveryError(
            f"{where} mixes partitions of stores of {counts} partitions: a store's files must "
            "all come from one `python -m bytewax.recovery DIR N`; remove the strays"
        )
    count = counts[0]
    by_index: dict[int, list[Path]] = {}
    for p in found:
        by_index.setdefault(p.index, []).append(p.path)
    doubled = {i: paths for i, paths in by_index.items() if len(paths) > 1}
    if doubled:
        i, paths = min(doubled.items())
        raise RecoveryError(
            f"{where} holds partition {i} of {count} twice ({', '.join(map(str, paths))}): "
            "keep one copy of each partition"
        )
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise RecoveryError(
            f"{where} misses partitions {missing} of {count}: Bytewax cannot resume an "
            "incomplete store; copy every part-*.sqlite3 of the store, or restore a backup"
        )
    return count


def resume_point(partitions: Iterable[PartitionInfo]) -> ResumePoint:
    """Where Bytewax 0.21.1 resumes these partitions (``RecoveryPart::resume_from``): the
    next execution, and the smallest frontier of the latest execution's workers, a worker
    without a frontier row counting as that execution's resume epoch."""
    parts = list(partitions)
    executions = [ex for p in parts for ex in p.executions]
    if not executions:
        return ResumePoint(0, 1)  # never run: Bytewax's ResumeFrom::default
    latest = max(ex for ex, _, _ in executions)
    _, workers, start = next(e for e in executions if e[0] == latest)
    frontier = dict.fromkeys(range(workers), start)
    for ex, worker, value in (f for p in parts for f in p.frontiers):
        if ex == latest:
            frontier[worker] = max(frontier.get(worker, value), value)
    return ResumePoint(latest + 1, min(frontier.values()))


def _frontier_holders(partitions: Iterable[PartitionInfo], execution: int) -> set[int]:
    """Indices of the partitions that hold a frontier row of ``execution``."""
    return {p.index for p in partitions if any(f[0] == execution for f in p.frontiers)}


def copy_order(partitions: Sequence[PartitionInfo]) -> list[PartitionInfo]:
    """Partitions holding the latest execution's frontier rows first, then the others."""
    latest = resume_point(partitions).execution - 1
    first = _frontier_holders(partitions, latest)
    return sorted(partitions, key=lambda p: (p.index not in first, p.index))


def collected_too_far(partitions: Iterable[PartitionInfo], resume: ResumePoint) -> list[int]:
    """Partitions garbage-collected up to the resume epoch or past it (see the module doc)."""
    return sorted(
        p.index for p in partitions if p.commit_epoch is not None and p.commit_epoch >= resume.epoch
    )


def copy_problem(
    before: ResumePoint, copies: Sequence[PartitionInfo], first_copied: int
) -> str | None:
    """Why a set of copies made one after the other is not resumable as it is, or None.

    ``before`` is the resume point read from the live store before the first copy,
    ``first_copied`` the index of the partition copied first.
    """
    after = resume_point(copies)
    if after.execution != before.execution:
        return (
            f"the monitor started execution {after.execution - 1} during the copy (it was at "
            f"{before.execution - 1})"
        )
    holders = _frontier_holders(copies, after.execution - 1)
    if after.epoch != before.epoch and holders - {first_copied}:
        return (
            f"the monitor went from epoch {before.epoch} to {after.epoch} during the copy, and "
            f"its frontiers are kept in partitions {sorted(holders)}, so a copy may predate them"
        )
    too_far = collected_too_far(copies, after)
    if too_far:
        return (
            f"partitions {too_far} were garbage-collected up to epoch {after.epoch} or later "
            "during the copy, so their keys changed in that epoch would resume empty"
        )
    return None


# ----------------------------------------------------------------------------- SQLite I/O
def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection: it never checkpoints or deletes the live store's WAL."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)


def _read(conn: sqlite3.Connection, path: Path) -> PartitionInfo:
    try:
        conn.execute("BEGIN")  # one read snapshot for the four tables
        rows = conn.execute("SELECT part_index, part_count FROM parts").fetchall()
        exs = conn.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall()
        fronts = conn.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts").fetchall()
        commits = conn.execute("SELECT commit_epoch FROM commits").fetchall()
        conn.rollback()
    except sqlite3.DatabaseError as exc:
        raise RecoveryError(
            f"{path} is not a Bytewax recovery partition ({exc}): move it out of the folder"
        ) from exc
    if len(rows) != 1:
        raise RecoveryError(
            f"{path} names {len(rows)} partitions instead of one: it is not a partition made "
            "by `python -m bytewax.recovery`; move it out of the folder"
        )
    index, count = rows[0]
    return PartitionInfo(
        path=path,
        index=index,
        count=count,
        executions=tuple(map(tuple, exs)),
        frontiers=tuple(map(tuple, fronts)),
        commit_epoch=max((c for (c,) in commits), default=None),
    )


def read_partition(path: Path) -> PartitionInfo:
    """The identity and progress rows of one partition file (read-only, live store safe)."""
    conn = _connect_ro(path)
    try:
        return _read(conn, path)
    finally:
        conn.close()


def partition_files(directory: Path) -> list[Path]:
    """Every ``*.sqlite3`` file of a folder: Bytewax opens each one as a partition."""
    return sorted(p for p in directory.glob("*.sqlite3") if p.is_file())


def read_store(directory: Path) -> tuple[list[PartitionInfo], int]:
    """The partitions of a store folder and their count, checked complete."""
    if not directory.is_dir():
        raise RecoveryError(f"{directory} is not a folder: name the recovery store (-r DIR)")
    parts = [read_partition(p) for p in partition_files(directory)]
    return parts, check_partitions(parts, directory)


def _integrity(path: Path) -> None:
    conn = _connect_ro(path)
    try:
        result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    if result != ["ok"]:
        raise RecoveryError(
            f"{path} fails SQLite's integrity check ({'; '.join(result[:3])}): "
            "the copy is unusable; take or choose another backup"
        )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_partition(src: Path, dst: Path) -> int:
    """Copy one partition with SQLite's online backup API (one read transaction, so a
    consistent copy even while Bytewax writes), flushed to disk; returns its size."""
    source = _connect_ro(src)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)  # all pages in one step: one snapshot of the source
            target.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal
        finally:
            target.close()
    finally:
        source.close()
    _fsync(dst)
    return dst.stat().st_size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def in_use(path: Path) -> bool:
    """Whether a process (a running monitor) holds this SQLite file open."""
    try:
        conn = sqlite3.connect(path, timeout=0)
    except sqlite3.Error:
        return False
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.rollback()
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc) or "busy" in str(exc)
    except sqlite3.DatabaseError:
        return False  # not a database: nobody has it open as one
    finally:
        conn.close()


# ----------------------------------------------------------------------------- backup
def _bytewax_version() -> str:
    try:
        return metadata.version("bytewax")
    except metadata.PackageNotFoundError:
        return "unknown"


def _copy_all(parts: Sequence[PartitionInfo], tmp: Path) -> int:
    """Copy ``parts`` into ``tmp`` one after the other, in this order; the bytes copied."""
    total = 0
    for part in parts:
        started = time.monotonic()
        size = copy_partition(part.path, tmp / part.name)
        total += size
        log.info(
            "recovery_store_copy part=%s index=%d bytes=%d took=%.3fs",
            part.path.name,
            part.index,
            size,
            time.monotonic() - started,
        )
    return total


def _seal(tmp: Path, copies: Sequence[PartitionInfo], src: Path, took: float) -> ResumePoint:
    """Check each copy's integrity and write the manifest; the backup's resume point."""
    for copy in copies:
        _integrity(copy.path)
    resume = resume_point(copies)
    manifest = Manifest(
        partitions=len(copies),
        execution=resume.execution,
        resume_epoch=resume.epoch,
        files={c.name: {"bytes": c.path.stat().st_size, "sha256": _sha256(c.path)} for c in copies},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=str(src.resolve()),
        took_s=round(took, 3),
        bytewax=_bytewax_version(),
    )
    (tmp / MANIFEST).write_bytes(manifest.to_json())
    _fsync(tmp / MANIFEST)
    _fsync(tmp)
    return resume


def backup(src: Path, dest: Path, *, attempts: int = ATTEMPTS) -> BackupReport:
    """Copy the store ``src`` into the new folder ``dest`` (see the module doc)."""
    src, dest = Path(src), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RecoveryError(
            f"{dest} already exists and is not an empty folder: a backup never overwrites "
            "one; name a new folder (e.g. with the date and time)"
        )
    problem = ""
    for attempt in range(1, attempts + 1):
        parts, count = read_store(src)
        before = resume_point(parts)
        order = copy_order(parts)
        tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            started = time.monotonic()
            total = _copy_all(order, tmp)
            took = time.monotonic() - started
            copies = [read_partition(tmp / p.name) for p in order]
            check_partitions(copies, tmp)
            found = copy_problem(before, copies, order[0].index)
            if found is None:
                resume = _seal(tmp, copies, src, took)
                os.replace(tmp, dest)  # an empty dest is replaced; no half backup is ever seen
                _fsync(dest.parent)
                if resume.epoch <= 1:
                    log.warning(
                        "recovery_store_empty resume_epoch=%d: the store holds no snapshot yet, "
                        "so restoring this backup is a fresh start",
                        resume.epoch,
                    )
                return BackupReport(dest, count, total, resume, took, attempt)
            problem = found
            log.warning(
                "recovery_store_retry attempt=%d took=%.2fs reason=%s", attempt, took, found
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise RecoveryError(
        f"no consistent copy of {src} in {attempts} attempts: {problem}. Start the monitor with "
        "a backup interval (-b, seconds) longer than a backup takes, or back up while it is "
        "stopped; see docs/operations.md"
    )


# ----------------------------------------------------------------------------- restore
def verify_backup(directory: Path) -> tuple[list[PartitionInfo], Manifest | None]:
    """A backup's partitions, checked: complete, matching its manifest, intact, resumable."""
    parts, count = read_store(directory)
    manifest_path = directory / MANIFEST
    manifest = None
    if not manifest_path.exists():
        log.warning("recovery_store_no_manifest dir=%s checks=partitions,integrity", directory)
    else:
        manifest = Manifest.from_json(manifest_path.read_bytes(), manifest_path)
        names = {p.path.name for p in parts}
        if manifest.partitions != count or set(manifest.files) != names:
            raise RecoveryError(
                f"{directory} does not hold the {manifest.partitions} files its manifest lists "
                f"(found {sorted(names)}): the backup is incomplete; use another one"
            )
        for part in parts:
            if _sha256(part.path) != manifest.files[part.path.name]["sha256"]:
                raise RecoveryError(
                    f"{part.path} differs from the file the backup recorded (SHA-256): it was "
                    "changed or damaged in storage; use another backup"
                )
    for part in parts:
        _integrity(part.path)
    too_far = collected_too_far(parts, resume_point(parts))
    if too_far:
        raise RecoveryError(
            f"{directory}: partitions {too_far} were collected up to the resume epoch or past "
            "it, so Bytewax would resume without some state: the partitions were not copied "
            "together; use a backup made by `python -m lib.tools.recovery_store backup`"
        )
    return parts, manifest


def _store_files(directory: Path) -> list[Path]:
    """The files of a store that a restore replaces: every ``*.sqlite3`` and its companions
    (``-wal``, ``-shm``, ``-journal``), which must never meet another database file."""
    return sorted({*partition_files(directory), *directory.glob("*.sqlite3-*")})


def restore(backup_dir: Path, dest: Path, *, force: bool = False) -> RestoreReport:
    """Make ``dest`` a recovery store holding the backup ``backup_dir``; the monitor, started
    with ``-r dest``, then resumes from the backup's resume point."""
    backup_dir, dest = Path(backup_dir), Path(dest)
    parts, manifest = verify_backup(backup_dir)
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.iterdir())
    if existing and not force:
        raise RecoveryError(
            f"{dest} is not empty ({len(existing)} entries): a restore replaces a store only "
            "when asked; stop the monitor, then add --force (its partitions are deleted) or "
            "name an empty folder"
        )
    removed = _store_files(dest)  # listed first: the probe below may tidy a crashed -wal
    busy = [p for p in partition_files(dest) if in_use(p)]
    if busy:
        raise RecoveryError(
            f"{busy[0]} is open in a running process: stop the monitor before restoring"
        )
    for path in removed:
        path.unlink(missing_ok=True)
        log.info("recovery_store_remove file=%s", path.name)
    total = 0
    for part in sorted(parts, key=lambda p: p.index):
        tmp = dest / f".{part.name}.restoring"  # not *.sqlite3: Bytewax ignores it
        tmp.unlink(missing_ok=True)
        size = copy_partition(part.path, tmp)
        _integrity(tmp)
        os.replace(tmp, dest / part.name)
        total += size
        log.info("recovery_store_restore part=%s index=%d bytes=%d", part.name, part.index, size)
    _fsync(dest)
    return RestoreReport(
        dest=dest,
        partitions=len(parts),
        bytes=total,
        resume=resume_point(parts),
        removed=[p.name for p in removed],
        backup_created_at=manifest.created_at if manifest else "",
    )


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib.tools.recovery_store", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backup", help="copy a store, also while the monitor runs")
    b.add_argument("src", type=Path, help="the recovery store (the monitor's -r DIR)")
    b.add_argument("dest", type=Path, help="a new folder for the backup")
    b.add_argument("--attempts", type=int, default=ATTEMPTS, help=argparse.SUPPRESS)
    r = sub.add_parser("restore", help="make a folder a store holding a backup")
    r.add_argument("backup", type=Path, help="a folder made by `backup`")
    r.add_argument("dest", type=Path, help="the recovery store to (re)create")
    r.add_argument("--force", action="store_true", help="replace the partitions DEST holds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.command == "backup":
            report: BackupReport | RestoreReport = backup(
                args.src, args.dest, attempts=max(1, args.attempts)
            )
        else:
            report = restore(args.backup, args.dest, force=args.force)
    except RecoveryError as exc:
        sys.stderr.write(f"bpwatch: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(
            f"bpwatch: {exc.filename or ''}: {exc.strerror or exc}: check the path and its "
            "permissions\n"
        )
        return 1
    sys.stdout.write(report.line() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
