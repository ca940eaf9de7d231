"""Per-patient rolling window of recent readings and the trend features computed from it.

Pure, no I/O, deterministic. The monitor keeps one :class:`PatientWindow` per patient; the
training script calls :func:`features_of` on each simulated patient's readings, which runs the
very same code (no train/serve skew).

Window semantics
----------------
* At most ``size`` readings (``BPWATCH_WINDOW_SIZE``, default 12), kept in **event-time order**.
  A late reading is inserted at its place; the oldest reading falls out when the window is full.
  A reading older than every reading of a full window is assessed but not kept.
* Features of a reading are computed *as of* that reading: over the window's readings up to and
  including it in event time (for in-order data: the whole window). So a late reading is judged
  by what preceded it, exactly as it would have been had it arrived on time.
* ``add`` returns ``None`` for a **duplicate**: the same ``observation_id`` and ``version`` with
  the same time and values, or an older numeric version than the one held (a stale replay).
  A new version of a known id (or the same version with different content: senders that amend
  without ``meta.versionId``) **replaces** the earlier reading.
* ``retract(observation_id)`` removes a reading (status ``entered-in-error``) and remembers
  the id (the last ``size`` retracted ids): a withdrawn reading that arrives again (a resend,
  or the original arriving after its retraction) is a duplicate, never scored again.
* A reading that leaves the window (the oldest, when a newer one arrives; or a late reading
  older than a full window, judged alone) leaves a 64-bit digest of its id and version behind
  (the last ``GONE`` of them): a redelivery of it is still a duplicate, up to ``size + GONE``
  readings later. Only readings no newer than the window's oldest are looked up there, so
  in-order data never pays for it. A redelivery older than that is assessed again (a second
  normal line, and possibly an alert) - the limit of bounded memory.

Memory
------
Times and values live in three ``array('d')`` (8 bytes per value), ids and versions in two short
lists, the digests of departed readings in an ``array('Q')`` (8 bytes each, ``GONE`` = 52 at
most); the object uses ``__slots__``. The bytes per patient are measured by
``benchmarks/bench_memory.py`` and bounded by a test (``tests/unit/test_window.py``).
Idle expiry is done by the owner of the window, the patient's state
(:class:`lib.monitor.patient.Patient`, in the monitor's ``patient_windows`` step keyed by
patient id): a reading more than the idle expiry time after :attr:`PatientWindow.last_ts`, in
event time, starts a new window, and a patient reclaimed after that long without input on the
wall clock drops its window (or packs it, while the input is behind).
"""

from __future__ import annotations

import math
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from lib.domain import Features, Reading
from lib.monitor.rules import AHA2017, cuts_at

# n_abnormal counts the readings that rules.is_abnormal calls abnormal under AHA 2017: at or
# above stage 1, or hypotensive. Fixed, independent of the selected rule set, so that the
# model's input does not change meaning when an operator switches BPWATCH_RULESET. The loop in
# compute_features tests the cuts inline (>= stage 1, < hypotension), read from the rule set.
ABNORMAL_SYS, ABNORMAL_DIA = cuts_at(AHA2017, "hypertension_stage_1")
HYPO_SYS, HYPO_DIA = cuts_at(AHA2017, "hypotension")

_HOUR = 3600.0
GONE = 52  # digests of departed readings remembered per patient (size 12 + 52 = 64 readings)
_fsum = math.fsum
_sqrt = math.sqrt
_features = tuple.__new__  # Features from its 12 values, without a Python-level __new__

# size, times, systolic, diastolic (array('d') bytes), ids, versions, retracted ids,
# departed digests (array('Q') bytes), ids with a date-only time (the last two absent in
# snapshots of earlier versions)
WindowState = tuple[Any, ...]


def _digest(observation_id: str, version: str) -> int:
    """Stable 64-bit digest of (id, version): the same in every process (no hash seed)."""
    b = f"{observation_id}\x1f{version}".encode()
    return zlib.crc32(b) | (zlib.adler32(b) << 32)


def _is_newer(new: str, old: str) -> bool:
    """Is version ``new`` a later version than ``old`` (numeric when both are numbers)?"""
    if new.isdigit() and old.isdigit():
        return int(new) > int(old)
    return new != old


def deviation_from_baseline(n: int, mean: float, value: float) -> float:
    """``value`` minus the patient's baseline, the mean of the window's *other* readings
    (``mean`` over ``n`` readings includes ``value``); 0 without another reading. The one
    home of this formula: the risk model's derived inputs and the hypotension confirmation."""
    if n < 2:
        return 0.0
    return value - (mean * n - value) / (n - 1)


def compute_features(ts: Sequence[float], sys_: Sequence[float], dia: Sequence[float]) -> Features:
    """Trend features of one patient's readings (event-time order; the last one is current).

    Means; sample standard deviations (0 for one reading); average real variability (mean
    absolute successive difference of systolic); least-squares slopes in mm[Hg] per hour of
    event time (0 when all readings share one time); readings counted abnormal
    (:func:`lib.monitor.rules.is_abnormal` under ``aha2017``); hours since the previous
    reading; the current values.

    Speed (the monitor's hot path): one tight loop over local variables. Every sum is
    accumulated left to right exactly as ``sum()`` over the element-wise terms would, so the
    results are bit-identical to the textbook form (means by ``math.fsum``).
    """
    n = len(ts)
    last_s = float(sys_[-1])
    last_d = float(dia[-1])
    if n == 1:
        s, d = last_s, last_d
        abnormal = s >= ABNORMAL_SYS or d >= ABNORMAL_DIA or s < HYPO_SYS or d < HYPO_DIA
        return _features(Features, (
            1, last_s, last_d, 0.0, 0.0, 0.0, 0.0, 0.0, int(abnormal), 0.0, last_s, last_d,
        ))  # fmt: skip
    mean_s = _fsum(sys_) / n
    mean_d = _fsum(dia) / n
    t0 = ts[0]
    hours = [(t - t0) / _HOUR for t in ts]
    mean_h = sum(hours) / n
    prev = sys_[0]
    ss = sd = arv = stt = sxs = sxd = 0.0
    n_abn = 0
    for h, s, d in zip(hours, sys_, dia):  # noqa: B905 (equal lengths: one window)
        ds = s - mean_s
        dd = d - mean_d
        dh = h - mean_h
        ss += ds * ds
        sd += dd * dd
        stt += dh * dh
        sxs += dh * ds
        sxd += dh * dd
        step = s - prev  # 0.0 for the first reading
        arv += step if step >= 0.0 else -step  # abs() without a call (-0.0 adds nothing)
        prev = s
        if s >= ABNORMAL_SYS or d >= ABNORMAL_DIA or s < HYPO_SYS or d < HYPO_DIA:
            n_abn += 1
    if stt > 0.0:
        slope_s = sxs / stt
        slope_d = sxd / stt
    else:
        slope_s = slope_d = 0.0
    return _features(Features, (
        n, mean_s, mean_d, _sqrt(ss / (n - 1)), _sqrt(sd / (n - 1)), arv / (n - 1),
        slope_s, slope_d, n_abn, (ts[-1] - ts[-2]) / _HOUR, last_s, last_d,
    ))  # fmt: skip


class PatientWindow:
    """Bounded rolling window of one patient's recent readings (see the module docstring)."""

    __slots__ = (
        "_coarse",
        "_dia",
        "_gone",
        "_ids",
        "_retracted",
        "_size",
        "_sys",
        "_ts",
        "_versions",
    )

    def __init__(self, size: int = 12) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self._size = size
        self._ts = array("d")
        self._sys = array("d")
        self._dia = array("d")
        self._ids: list[str] = []
        self._versions: list[str] = []
        self._retracted: tuple[str, ...] = ()
        self._gone = array("Q")  # digests of readings that left the window, oldest first
        self._coarse: frozenset[str] = frozenset()  # ids held with a date-only time

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def size(self) -> int:
        return self._size

    @property
    def last_ts(self) -> float | None:
        """Event time (POSIX seconds) of the latest reading held, or None when empty."""
        return self._ts[-1] if self._ts else None

    def held(self) -> list[tuple[float, str, float, float]]:
        """The readings held, ``(ts, id, systolic, diastolic)`` in event-time order."""
        return list(zip(self._ts, self._ids, self._sys, self._dia, strict=True))

    def ts_of(self, observation_id: str) -> float | None:
        """Event time of the held reading with this id, or None when not held."""
        ids = self._ids
        if observation_id not in ids:
            return None
        return self._ts[ids.index(observation_id)]

    @property
    def observation_ids(self) -> tuple[str, ...]:
        """Ids held, in event-time order."""
        return tuple(self._ids)

    def add(self, reading: Reading, ts: float | None = None) -> Features | None:
        """Add a reading; its features, or None for a duplicate (see the module docstring).

        ``ts``: the reading's event time as POSIX seconds, when the caller already has it.
        """
        if ts is None:
            ts = reading.effective_at.timestamp()
        oid = reading.observation_id
        version = reading.version
        ids = self._ids
        if self._retracted and oid in self._retracted:
            return None
        if oid in ids:
            i = ids.index(oid)
            old_version = self._versions[i]
            if version == old_version:
                if (
                    self._ts[i] == ts
                    and self._sys[i] == reading.systolic
                    and self._dia[i] == reading.diastolic
                ):
                    return None
            elif not _is_newer(version, old_version):
                return None
            self._remove(i)
        tsa = self._ts
        n = len(tsa)
        if n and ts <= tsa[0] and self._gone and _digest(oid, version) in self._gone:
            return None  # a redelivery of a reading that already left the window
        if not n or ts >= tsa[-1]:  # in order (the common case): append, drop the oldest
            sysa, diaa, versions = self._sys, self._dia, self._versions
            tsa.append(ts)
            sysa.append(reading.systolic)
            diaa.append(reading.diastolic)
            ids.append(oid)
            versions.append(version)
            if n >= self._size:
                self._depart(ids[0], versions[0])
                del tsa[0], sysa[0], diaa[0], ids[0], versions[0]
            features = compute_features(tsa, sysa, diaa)
        else:
            features = self._insert(reading, ts)
        if self._coarse or reading.precision:
            return self._timed_slopes(reading, features)
        return features

    def _insert(self, reading: Reading, ts: float) -> Features:
        """A late reading: inserted at its place in event time, judged as of that place."""
        tsa = self._ts
        ids = self._ids
        pos = bisect_right(tsa, ts)
        if pos == 0 and len(tsa) >= self._size:
            # Older than everything in a full window: judged alone, not kept.
            self._depart(reading.observation_id, reading.version)
            return compute_features((ts,), (reading.systolic,), (reading.diastolic,))
        tsa.insert(pos, ts)
        self._sys.insert(pos, reading.systolic)
        self._dia.insert(pos, reading.diastolic)
        ids.insert(pos, reading.observation_id)
        self._versions.insert(pos, reading.version)
        if len(ids) > self._size:
            self._depart(ids[0], self._versions[0])
            self._remove(0)
            pos -= 1
        end = pos + 1
        if end == len(tsa):
            return compute_features(tsa, self._sys, self._dia)
        return compute_features(tsa[:end], self._sys[:end], self._dia[:end])

    def _timed_slopes(self, reading: Reading, features: Features) -> Features:
        """Per-hour slopes over the readings that have a time of day.

        A date-only reading (midnight of its day) would invent a trend of hours: it gets
        slopes of 0 itself and stays out of the slopes of later readings.
        """
        ids = self._ids
        oid = reading.observation_id
        held = set(ids)
        coarse = {i for i in self._coarse if i in held and i != oid}
        if reading.precision and oid in held:
            coarse.add(oid)
        self._coarse = frozenset(coarse)
        if reading.precision or oid not in held:
            return features._replace(slope_sys_per_h=0.0, slope_dia_per_h=0.0)
        timed = [i for i in range(ids.index(oid) + 1) if ids[i] not in coarse]
        if len(timed) < 2:
            return features._replace(slope_sys_per_h=0.0, slope_dia_per_h=0.0)
        ts, sys_, dia = self._ts, self._sys, self._dia
        sub = compute_features([ts[i] for i in timed], [sys_[i] for i in timed],
                               [dia[i] for i in timed])  # fmt: skip
        return features._replace(slope_sys_per_h=sub.slope_sys_per_h,
                                 slope_dia_per_h=sub.slope_dia_per_h)  # fmt: skip

    def retract(self, observation_id: str) -> bool:
        """Withdraw the reading with this id (held or yet to come); whether it was held."""
        if observation_id not in self._retracted:
            self._retracted = (*self._retracted, observation_id)[-self._size :]
        try:
            i = self._ids.index(observation_id)
        except ValueError:
            return False
        self._remove(i)
        return True

    def _depart(self, observation_id: str, version: str) -> None:
        gone = self._gone
        gone.append(_digest(observation_id, version))
        if len(gone) > GONE:
            del gone[0]

    def _remove(self, i: int) -> None:
        del self._ts[i], self._sys[i], self._dia[i], self._ids[i], self._versions[i]

    # -- recovery: an immutable, compact copy of the state ---------------------------------
    def state(self) -> WindowState:
        return (
            self._size,
            self._ts.tobytes(),
            self._sys.tobytes(),
            self._dia.tobytes(),
            tuple(self._ids),
            tuple(self._versions),
            self._retracted,
            self._gone.tobytes(),
            tuple(self._coarse),
        )

    @classmethod
    def from_state(cls, state: WindowState) -> PatientWindow:
        size, ts, sys_, dia, ids, versions, retracted = state[:7]
        window = cls(size)
        if len(state) > 7:
            window._gone.frombytes(state[7])
        if len(state) > 8:
            window._coarse = frozenset(state[8])
        window._ts.frombytes(ts)
        window._sys.frombytes(sys_)
        window._dia.frombytes(dia)
        window._ids.extend(ids)
        window._versions.extend(versions)
        window._retracted = retracted
        return window

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (PatientWindow.from_state, (self.state(),))


def features_of(readings: Sequence[Reading], size: int = 12) -> list[Features]:
    """Features for one patient's readings, processed in the given order.

    The monitor's own code path (:meth:`PatientWindow.add`). One Features per reading;
    a duplicate reading raises ValueError (training data must not hold duplicates).
    """
    window = PatientWindow(size)
    out: list[Features] = []
    for reading in readings:
        features = window.add(reading)
        if features is None:
            raise ValueError(f"duplicate reading {reading.observation_id!r} in training data")
        out.append(features)
    return out
