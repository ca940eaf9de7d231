"""Synthetic patient cohort: blood-pressure trajectories with ground truth. Pure and deterministic.

Every patient has a *profile* (its baseline), a measurement cadence and a site time zone. Its
latent blood pressure at time ``t`` is::

    baseline + gradual drift + circadian rhythm (local time, nocturnal dip)
             + slow fluctuation (Ornstein-Uhlenbeck) + acute-event component + measurement noise

Acute events are scheduled as a Poisson process per profile and have three phases:

    prodrome   hours before the start: a crisis builds up with rising pressure and growing
               variability; a hypotensive episode is preceded by a downward drift. Some events
               have a short prodrome, and harmless surges that never become crises also occur,
               so the label is predictable from the trend, but not trivially.
    event      ``start`` .. ``start + duration``: the acute phase (crisis >= 180 systolic or
               >= 120 diastolic; hypotension < 90 systolic)
    recovery   after treatment the excess decays exponentially back to the baseline

Ground truth per reading (:class:`lib.domain.GroundTruth`): ``event_within_horizon`` is true when
an acute event *starts* in ``(t, t + horizon_hours]``, the label the risk model learns.

Randomness comes only from numbered draws of ``(seed, patient index, purpose)``
(:mod:`lib.sim.draws`), and shares (profiles, the home cohort) are exact within blocks of 100
consecutive patients, so a patient's stream depends neither on which worker generates it, nor
on the other patients, nor on the cohort's size: patient ``i`` sends the same readings in a
cohort of 1,000 as in one of 1,000,000. A patient's whole state is a few numbers
(:class:`Trajectory`), so a simulator can hold a million of them.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, NamedTuple

import numpy as np

from lib.domain import GroundTruth, Reading, utc_iso
from lib.sim import draws

DEFAULT_START = datetime(2025, 3, 3, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Profile:
    """Population parameters of one profile (mm[Hg], events per day)."""

    sys_mean: float
    sys_sd: float  # between patients
    dia_mean: float
    dia_sd: float
    noise_sys: float  # within patient, per measurement
    noise_dia: float
    fluct_sd: float  # slow fluctuation (stationary sd of the OU process)
    circadian_sys: float  # half the day-night difference
    crisis_per_day: float
    hypotension_per_day: float
    surge_per_day: float  # transient rises that do not become a crisis
    drift_share: float  # share of patients with a gradual rise


PROFILES: dict[str, Profile] = {
    "normotensive": Profile(112, 6, 71, 4, 5, 3.5, 3, 7, 0.02, 0.03, 0.3, 0.05),
    "elevated": Profile(124, 3, 74, 3, 5, 3.5, 3, 7, 0.05, 0.02, 0.4, 0.25),
    "stage1": Profile(132, 3.5, 83, 3, 6, 4, 3.5, 8, 0.18, 0.02, 0.5, 0.25),
    "stage2": Profile(152, 7, 94, 5, 7, 4.5, 4, 9, 0.5, 0.03, 0.6, 0.25),
    "hypotension_prone": Profile(102, 5, 67, 3.5, 5, 3.5, 3, 6, 0.0, 0.45, 0.2, 0.0),
    "labile": Profile(128, 7, 80, 5, 11, 7, 7, 10, 0.35, 0.2, 1.2, 0.1),
}

DEFAULT_MIX: dict[str, float] = {
    "normotensive": 0.30,
    "elevated": 0.15,
    "stage1": 0.20,
    "stage2": 0.15,
    "hypotension_prone": 0.10,
    "labile": 0.10,
}

_GIVEN = (
    "Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kamala", "Lars", "Mei", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Samir", "Tove",
    "Umar", "Vera", "Wanjiru", "Xavier", "Yara", "Zoltan", "Amara", "Bastien", "Carmen", "Dario",
)  # fmt: skip
_FAMILY = (
    "Achterberg", "Bianchi", "Castellanos", "Dubois", "Eriksen", "Fontaine", "Gallagher",
    "Haddad", "Ivanova", "Jansen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor",
    "Petrov", "Quiroga", "Rasmussen", "Schneider", "Takahashi", "Urquhart", "Varga", "Weber",
    "Xu", "Yilmaz", "Zielinski", "Abernathy", "Brennan", "Costa", "Delacroix",
)  # fmt: skip
_UTC_OFFSETS_MIN = (0, 60, 60, 120, -300, -480)  # site time zones
_INTERVALS_MIN = (15, 20, 30, 30, 45, 60)  # routine measurement cadence
_DEVICES = ("Omron HBP-1320", "Welch Allyn Connex", "Philips IntelliVue MX450", "GE Carescape V100")
_ARMS = ("left", "right")


@dataclass(frozen=True, slots=True)
class Patient:
    """A simulated patient. ``name`` is fake but realistic (it is PHI for logging purposes)."""

    index: int
    patient_id: str
    name: str
    profile: str
    utc_offset_min: int
    interval_min: float
    device: str
    arm: str


class _Event(NamedTuple):
    kind: str  # crisis | hypotension | surge
    onset: float  # hours: start of the prodrome
    start: float  # hours: start of the acute phase (the labelled moment)
    end: float  # hours: end of the acute phase
    settle: float  # hours: recovery practically complete
    sys_delta: float  # excess systolic at the acute phase (negative for hypotension)
    dia_ratio: float  # diastolic excess = ratio * systolic excess
    tau: float  # recovery time constant, hours
    gradual: float  # share of the excess reached by the end of the prodrome
    next_after: float  # hours: the next event's prodrome starts after this (refractory end)

    @property
    def acute(self) -> bool:
        return self.kind != "surge"


def patient_id(seed: int, index: int) -> str:
    return f"pat-{seed}-{index:05d}"


# Draw streams, one per purpose (the ``tag`` of lib.sim.draws.stream_key).
_TAG_NAME, _TAG_ATTRS, _TAG_PROFILE, _TAG_TRAJ, _TAG_EVENTS = 0x4E, 0x50, 0x9F, 0x7A, 0xE7
_TAG_HOME, _TAG_HOME_SILENT, _TAG_HOME_DRAWS = 0x40E, 0x40F, 0x40
_BLOCK = 100  # shares are exact within each block of this many consecutive patient indexes
_EVENT_DRAWS = 16  # draws reserved per event of a patient's event chain


def _pick(table: tuple[Any, ...], u: float) -> Any:
    return table[min(int(u * len(table)), len(table) - 1)]


def patient_name(seed: int, index: int) -> str:
    """A deterministic fake display name, e.g. ``"Greta Okafor"``."""
    key = draws.stream_key(seed, _TAG_NAME, index)
    return f"{_pick(_GIVEN, draws.uniform(key, 0))} {_pick(_FAMILY, draws.uniform(key, 1))}"


def normalize_mix(mix: Mapping[str, float] | None) -> dict[str, float]:
    """Validate a profile mix and scale it to sum to 1 (``None`` -> :data:`DEFAULT_MIX`)."""
    mix = DEFAULT_MIX if mix is None else mix
    unknown = set(mix) - set(PROFILES)
    if unknown:
        raise ValueError(f"unknown profiles {sorted(unknown)}: use {sorted(PROFILES)}")
    total = float(sum(mix.values()))
    if total <= 0 or any(v < 0 for v in mix.values()):
        raise ValueError("profile mix weights must be >= 0 and not all 0")
    return {name: float(mix.get(name, 0.0)) / total for name in PROFILES}


def stratified(seed: int, tag: int, indexes: np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per patient, stratified within blocks of :data:`_BLOCK` indexes.

    The patients of a block take one stratum ``[k/B, (k+1)/B)`` each (a seeded permutation),
    so a share ``s`` of them falls below ``s`` up to one per block, whatever the cohort's
    size: a patient's value depends only on the seed and its block, never on the cohort.
    """
    indexes = np.asarray(indexes, dtype=np.int64)
    blocks = np.unique(indexes // _BLOCK)
    members = (blocks[:, None] * _BLOCK + np.arange(_BLOCK)).ravel()
    order = draws.uniforms(seed, tag, members, 0).reshape(-1, _BLOCK)
    rank = np.argsort(np.argsort(order, axis=1, kind="stable"), axis=1, kind="stable")
    jitter = draws.uniforms(seed, tag, members, 1).reshape(-1, _BLOCK)
    u = ((rank + jitter) / _BLOCK).ravel()
    return u[np.searchsorted(blocks, indexes // _BLOCK) * _BLOCK + indexes % _BLOCK]


def _categories(u: np.ndarray, shares: Mapping[str, float]) -> np.ndarray:
    """Index into ``shares`` (in its order) of each uniform ``u``."""
    cum = np.cumsum(list(shares.values()))
    return np.minimum(np.searchsorted(cum, u, side="right"), len(shares) - 1)


def profile_codes(
    seed: int, indexes: np.ndarray, mix: Mapping[str, float] | None = None
) -> np.ndarray:
    """Profile of each patient as an index into :data:`PROFILES` (exact shares per block)."""
    return _categories(stratified(seed, _TAG_PROFILE, indexes), normalize_mix(mix))


def assign_profiles(
    n_patients: int, seed: int, mix: Mapping[str, float] | None = None
) -> list[str]:
    """Profiles of patients ``0..n-1``: the mix's shares, exact within each block of 100.

    Patient ``i`` has the same profile in every cohort of the seed that holds it."""
    names = list(PROFILES)
    return [names[c] for c in profile_codes(seed, np.arange(n_patients), mix)]


class Attributes(NamedTuple):
    """Per-patient attributes of many patients as small integer arrays (indexes into the
    module's tables), for a simulator that holds a million patients."""

    indexes: np.ndarray  # int64 patient indexes
    profile: np.ndarray  # into PROFILES
    utc_offset: np.ndarray  # into _UTC_OFFSETS_MIN
    interval: np.ndarray  # into _INTERVALS_MIN
    device: np.ndarray  # into _DEVICES
    arm: np.ndarray  # into _ARMS
    given: np.ndarray  # into _GIVEN
    family: np.ndarray  # into _FAMILY


def attributes(
    seed: int, indexes: np.ndarray, mix: Mapping[str, float] | None = None
) -> Attributes:
    """The attributes of the patients ``indexes`` (vectorised; the same as :func:`patient`)."""
    indexes = np.asarray(indexes, dtype=np.int64)

    def pick(n: int, size: int, tag: int = _TAG_ATTRS) -> np.ndarray:
        u = draws.uniforms(seed, tag, indexes, n)
        return np.minimum((u * size).astype(np.int64), size - 1).astype(np.uint8)

    return Attributes(
        indexes,
        profile_codes(seed, indexes, mix).astype(np.uint8),
        pick(0, len(_UTC_OFFSETS_MIN)),
        pick(1, len(_INTERVALS_MIN)),
        pick(2, len(_DEVICES)),
        pick(3, len(_ARMS)),
        pick(0, len(_GIVEN), _TAG_NAME),
        pick(1, len(_FAMILY), _TAG_NAME),
    )


_PROFILE_NAMES = tuple(PROFILES)


def make_patient(seed: int, index: int, attrs: Attributes, row: int) -> Patient:
    """Patient ``index`` from row ``row`` of its cohort's :class:`Attributes`."""
    return Patient(
        index=index,
        patient_id=patient_id(seed, index),
        name=f"{_GIVEN[attrs.given[row]]} {_FAMILY[attrs.family[row]]}",
        profile=_PROFILE_NAMES[attrs.profile[row]],
        utc_offset_min=_UTC_OFFSETS_MIN[attrs.utc_offset[row]],
        interval_min=float(_INTERVALS_MIN[attrs.interval[row]]),
        device=_DEVICES[attrs.device[row]],
        arm=_ARMS[attrs.arm[row]],
    )


def cohort(n_patients: int, seed: int, mix: Mapping[str, float] | None = None) -> list[Patient]:
    """The patients of a run, with their profile, cadence, time zone and device.

    ``cohort(n, seed)[i]`` is the same patient for every ``n > i``."""
    attrs = attributes(seed, np.arange(n_patients), mix)
    return [make_patient(seed, i, attrs, i) for i in range(n_patients)]


def first_reading_hours(seed: int, attrs: Attributes) -> np.ndarray:
    """Hour of each patient's first clinical reading (vectorised :meth:`Trajectory.start`)."""
    u = draws.uniforms(seed, _TAG_TRAJ, attrs.indexes, 0)
    interval_h = np.array([m / 60.0 for m in _INTERVALS_MIN])[attrs.interval]
    return interval_h * u  # patients are not in lock-step


TRAJECTORY_TAGS = (_TAG_TRAJ, _TAG_EVENTS)


def trajectory_keys(seed: int, index: int) -> tuple[int, int]:
    """The draw-stream keys of a patient's measurements and of its event chain."""
    return draws.stream_key(seed, _TAG_TRAJ, index), draws.stream_key(seed, _TAG_EVENTS, index)


_KIND_CODES = {"": 0, "crisis": 1, "hypotension": 2, "surge": 3}
_KIND_NAMES = tuple(_KIND_CODES)
# the packed state of a trajectory (see Trajectory.pack)
_STATE = struct.Struct("<qqq" + "d" * 9 + "B" + "d" * 9 + "B")


class Trajectory:
    """Latent state of one patient; :meth:`step` measures at the next reading time and moves on.

    The whole state is a few numbers (:meth:`pack`: 170 bytes), and every draw is numbered
    (:mod:`lib.sim.draws`), so a simulator can keep a million patients as packed bytes and
    resume each one where it stopped. The acute events form a chain: event ``k`` is a pure
    function of ``k`` and the end of event ``k - 1``'s refractory period, so only the current
    event and the next acute event's start are kept.
    """

    __slots__ = (
        "base_dia", "base_sys", "drift_cap", "drift_per_day", "ev", "ev_k", "ev_key", "key",
        "ms", "n", "na_kind", "na_start", "ou_dia", "ou_sys", "p", "patient", "seq", "t", "t_prev",
    )  # fmt: skip

    def __init__(self, patient: Patient, seed: int, keys: tuple[int, int] | None = None) -> None:
        self.patient = patient
        self.p = PROFILES[patient.profile]
        self.key, self.ev_key = keys or trajectory_keys(seed, patient.index)

    @classmethod
    def start(cls, patient: Patient, seed: int, keys: tuple[int, int] | None = None) -> Trajectory:
        """A patient's trajectory before its first reading (``keys``: :func:`trajectory_keys`)."""
        self = cls(patient, seed, keys)
        p, key = self.p, self.key
        self.t = (patient.interval_min / 60.0) * draws.uniform(key, 0)
        self.seq = 0
        self.base_sys = p.sys_mean + p.sys_sd * draws.normal(key, 1)
        self.base_dia = p.dia_mean + p.dia_sd * draws.normal(key, 2)
        if patient.profile == "elevated":
            self.base_dia = min(self.base_dia, 77.0)  # elevated: systolic only
        drifting = draws.uniform(key, 3) < p.drift_share
        self.drift_per_day = 0.8 + 2.7 * draws.uniform(key, 4) if drifting else 0.0
        self.drift_cap = 12.0 + 16.0 * draws.uniform(key, 5)
        self.ou_sys = p.fluct_sd * draws.normal(key, 6)
        self.ou_dia = 0.6 * self.ou_sys
        self.t_prev = 0.0
        self.n = 8  # the next draw of the measurement stream
        self.ev_k = 0
        self.ev = self._event(0, 0.0)
        self.na_start, self.na_kind = -math.inf, ""
        return self

    def pack(self) -> bytes:
        ev = self.ev or _NO_EVENT
        return _STATE.pack(
            self.n, self.seq, self.ev_k, self.t, self.t_prev, self.ou_sys, self.ou_dia,
            self.base_sys, self.base_dia, self.drift_per_day, self.drift_cap, self.na_start,
            _KIND_CODES[self.na_kind], *ev[1:], _KIND_CODES[ev.kind],
        )  # fmt: skip

    @classmethod
    def unpack(
        cls, patient: Patient, seed: int, state: bytes, keys: tuple[int, int] | None = None
    ) -> Trajectory:
        self = cls(patient, seed, keys)
        (
            self.n, self.seq, self.ev_k, self.t, self.t_prev, self.ou_sys, self.ou_dia,
            self.base_sys, self.base_dia, self.drift_per_day, self.drift_cap, self.na_start,
            na_kind, *ev, kind,
        ) = _STATE.unpack(state)  # fmt: skip
        self.na_kind = _KIND_NAMES[na_kind]
        self.ev = _Event(_KIND_NAMES[kind], *ev) if kind else None
        return self

    # -- random draws -------------------------------------------------------------------------
    def _normal(self) -> float:
        self.n += 1
        return draws.normal(self.key, self.n - 1)

    def _uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        self.n += 1
        return lo + (hi - lo) * draws.uniform(self.key, self.n - 1)

    # -- events -----------------------------------------------------------------------------
    def _rate(self) -> float:
        p = self.p
        return p.crisis_per_day + p.hypotension_per_day + p.surge_per_day

    def _event(self, k: int, after: float) -> _Event | None:
        """Event ``k`` of the chain, whose prodrome starts after ``after`` hours (None: none)."""
        p = self.p
        rate = self._rate()
        if rate <= 0:
            return None
        key, n = self.ev_key, k * _EVENT_DRAWS

        def u(j: int, lo: float = 0.0, hi: float = 1.0) -> float:
            return lo + (hi - lo) * draws.uniform(key, n + j)

        onset = after - (24.0 / rate) * math.log(1.0 - u(0))
        pick = u(1) * rate
        if pick < p.crisis_per_day:
            kind = "crisis"
        elif pick < p.crisis_per_day + p.hypotension_per_day:
            kind = "hypotension"
        else:
            kind = "surge"
        if kind == "crisis":
            # most crises announce themselves hours ahead; about a quarter come quickly
            prodrome = u(3, 0.5, 1.5) if u(2) < 0.25 else u(3, 2.0, 8.0)
            target = max(182.0, self.base_sys + 40.0) + u(4, 0.0, 30.0)
            delta = target - self.base_sys
            duration = u(5, 1.0, 3.5)
            tau = u(6, 1.5, 3.5)
            dia_ratio = u(7, 0.45, 0.7)
            gradual = u(8, 0.45, 0.8)
        elif kind == "hypotension":
            prodrome = u(3, 0.3, 1.0) if u(2) < 0.25 else u(3, 1.0, 4.0)
            target = u(4, 72.0, 86.0)
            delta = min(target - self.base_sys, -15.0)
            duration = u(5, 0.5, 2.0)
            tau = u(6, 0.5, 1.5)
            dia_ratio = u(7, 0.5, 0.7)
            gradual = u(8, 0.35, 0.65)
        else:  # a stress surge: rises like a prodrome, then subsides without a crisis
            prodrome = u(3, 1.0, 4.0)
            delta = u(4, 15.0, 35.0)
            duration = 0.0
            tau = u(6, 1.0, 2.5)
            dia_ratio = u(7, 0.4, 0.6)
            gradual = 1.0
        start = onset + prodrome
        end = start + duration
        settle = end + 4.0 * tau
        refractory = u(9, 2.0, 6.0)
        return _Event(
            kind, onset, start, end, settle, delta, dia_ratio, tau, gradual, settle + refractory
        )

    def excess(self, t: float) -> tuple[float, float, float, _Event | None]:
        """(systolic excess, diastolic excess, variability multiplier, current event)."""
        ev = self.ev
        if ev is None:
            return 0.0, 0.0, 1.0, None
        while ev.settle < t:
            self.ev_k += 1
            ev = self._event(self.ev_k, ev.next_after)
            assert ev is not None
        self.ev = ev
        if t < ev.onset:
            return 0.0, 0.0, 1.0, None
        if t < ev.start:
            x = (t - ev.onset) / (ev.start - ev.onset)
            share = ev.gradual * x**1.6
            var = 1.0 + (0.9 * x if ev.kind in ("crisis", "surge") else 0.3 * x)
            return ev.sys_delta * share, ev.sys_delta * ev.dia_ratio * share, var, ev
        if t < ev.end:
            return ev.sys_delta, ev.sys_delta * ev.dia_ratio, 1.5, ev
        decay = math.exp(-(t - ev.end) / ev.tau)
        level = ev.gradual if ev.kind == "surge" else 1.0
        share = level * decay
        return ev.sys_delta * share, ev.sys_delta * ev.dia_ratio * share, 1.0 + 0.3 * decay, ev

    def next_acute_start(self, t: float) -> tuple[float, str]:
        """Start time and kind of the first acute event starting strictly after ``t``."""
        if self.na_start > t:
            return self.na_start, self.na_kind
        p = self.p
        ev, k = self.ev, self.ev_k
        if ev is None or (p.crisis_per_day + p.hypotension_per_day) <= 0:
            self.na_start, self.na_kind = math.inf, ""
            return self.na_start, self.na_kind
        while not (ev.acute and ev.start > t):
            k += 1
            ev = self._event(k, ev.next_after)
            assert ev is not None
        self.na_start, self.na_kind = ev.start, ev.kind
        return self.na_start, self.na_kind

    # -- measurement ------------------------------------------------------------------------
    def measure(self, t: float) -> tuple[float, float, float, float, _Event | None]:
        """(systolic, diastolic, latent systolic, latent diastolic, event) at hour ``t``."""
        p = self.p
        dt = max(t - self.t_prev, 0.0)
        self.t_prev = t
        keep = math.exp(-dt / 3.0)  # OU with a 3 h time constant
        spread = p.fluct_sd * math.sqrt(1.0 - keep * keep)
        self.ou_sys = keep * self.ou_sys + spread * self._normal()
        self.ou_dia = keep * self.ou_dia + 0.6 * spread * self._normal()
        local_h = (t + self.patient.utc_offset_min / 60.0) % 24.0
        # peak mid-afternoon, nocturnal dip around 03:00
        circ = -math.cos(2.0 * math.pi * (local_h - 3.0) / 24.0)
        drift = min(self.drift_per_day * t / 24.0, self.drift_cap)
        ex_sys, ex_dia, var, ev = self.excess(t)
        lat_sys = self.base_sys + drift + p.circadian_sys * circ + self.ou_sys + ex_sys
        lat_dia = self.base_dia + 0.55 * drift + 0.6 * p.circadian_sys * circ + self.ou_dia + ex_dia
        sys_v = lat_sys + p.noise_sys * var * self._normal()
        dia_v = lat_dia + p.noise_dia * var * self._normal()
        sys_v = min(max(sys_v, 62.0), 250.0)
        dia_v = min(max(dia_v, 35.0), 145.0)
        if sys_v - dia_v < 15.0:  # keep a physiological pulse pressure
            dia_v = sys_v - 15.0 - 5.0 * self._uniform()
        return float(round(sys_v)), float(round(dia_v)), lat_sys, lat_dia, ev

    def next_gap_h(self, last_sys: float) -> float:
        """Hours to the next measurement: routine cadence, tighter when the last one was off."""
        interval = self.patient.interval_min
        if last_sys >= 160.0 or last_sys < 95.0:
            interval = min(interval, 15.0)
        return interval * self._uniform(0.8, 1.2) / 60.0

    def step(self, seed: int, start_us: int, horizon_hours: float) -> tuple[Reading, GroundTruth]:
        """The reading at hour ``self.t`` with its ground truth; moves to the next reading."""
        t, patient = self.t, self.patient
        sys_v, dia_v, lat_sys, lat_dia, ev = self.measure(t)
        next_start, next_kind = self.next_acute_start(t)
        within = next_start - t <= horizon_hours
        in_event = ev is not None and ev.acute and ev.start <= t < ev.end
        # kind of the event the label is about; else the one the patient is in
        kind = next_kind if within else (ev.kind if in_event and ev is not None else "")
        obs_id = f"bp-{seed}-{patient.index:05d}-{self.seq:06d}"
        self.ms = ms = reading_ms(start_us, t)  # of the reading made: the FHIR writer's time
        reading = Reading(
            observation_id=obs_id,
            patient_id=patient.patient_id,
            effective_at=at_ms(ms),
            systolic=sys_v,
            diastolic=dia_v,
            status="final",
            version="1",
        )
        truth = GroundTruth(
            observation_id=obs_id,
            patient_id=patient.patient_id,
            profile=patient.profile,
            event_within_horizon=bool(within),
            in_event=bool(in_event),
            event_kind=kind,
            extra={
                "latent_systolic": round(lat_sys, 2),
                "latent_diastolic": round(lat_dia, 2),
                "hours_to_event": round(next_start - t, 3) if math.isfinite(next_start) else -1.0,
                "prodrome": 1.0 if ev is not None and ev.onset <= t < ev.start else 0.0,
            },
        )
        self.seq += 1
        self.t = t + self.next_gap_h(sys_v)
        return reading, truth


_NO_EVENT = _Event("", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


# ----------------------------------------------------------- many patients' starts at once
# Trajectory.start and the walk of next_acute_start at the first reading, over arrays: the
# hashes in numpy, the same float operations in the same order (IEEE arithmetic gives numpy
# and Python the same bits), logarithms and cosines by math per value. A patient's first
# reading then finds its state made, instead of some 50 scalar draws of its event chain.
_STATE_DTYPE = np.dtype(
    [("n", "<i8"), ("seq", "<i8"), ("ev_k", "<i8")]
    + [(f, "<f8") for f in ("t", "t_prev", "ou_sys", "ou_dia", "base_sys", "base_dia",
                            "drift_per_day", "drift_cap", "na_start")]
    + [("na_kind", "u1")]
    + [(f, "<f8") for f in _Event._fields[1:]]
    + [("kind", "u1")]
)  # fmt: skip
assert _STATE_DTYPE.itemsize == _STATE.size


def _profile_column(codes: np.ndarray, value: Any) -> np.ndarray:
    """``value(profile)`` of each patient's profile (a Python float per profile)."""
    return np.array([float(value(PROFILES[name])) for name in _PROFILE_NAMES])[codes]


def _events_np(
    keys: np.ndarray, k: int, after: np.ndarray, base_sys: np.ndarray, codes: np.ndarray
) -> dict[str, np.ndarray]:
    """:meth:`Trajectory._event` ``k`` of many patients (every rate above 0), as columns."""
    n = k * _EVENT_DRAWS
    uu = [draws.uniforms_of(keys, n + j) for j in range(10)]

    def u(j: int, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
        return lo + (hi - lo) * uu[j]

    rate = _profile_column(codes, lambda p: p.crisis_per_day + p.hypotension_per_day
                           + p.surge_per_day)  # fmt: skip
    scale = _profile_column(codes, lambda p: 24.0 / (p.crisis_per_day + p.hypotension_per_day
                                                     + p.surge_per_day))  # fmt: skip
    log = math.log
    logs = np.array([log(x) for x in (1.0 - u(0)).tolist()], dtype=np.float64)
    onset = after - scale * logs
    pick = u(1) * rate
    crisis = pick < _profile_column(codes, lambda p: p.crisis_per_day)
    hypo = ~crisis & (
        pick < _profile_column(codes, lambda p: p.crisis_per_day + p.hypotension_per_day)
    )
    quick = u(2) < 0.25
    c_prodrome = np.where(quick, u(3, 0.5, 1.5), u(3, 2.0, 8.0))
    h_prodrome = np.where(quick, u(3, 0.3, 1.0), u(3, 1.0, 4.0))
    c_target = np.maximum(182.0, base_sys + 40.0) + u(4, 0.0, 30.0)
    h_target = u(4, 72.0, 86.0)

    def pick3(c: Any, h: Any, s: Any) -> np.ndarray:
        return np.where(crisis, c, np.where(hypo, h, s))

    prodrome = pick3(c_prodrome, h_prodrome, u(3, 1.0, 4.0))
    delta = pick3(c_target - base_sys, np.minimum(h_target - base_sys, -15.0), u(4, 15.0, 35.0))
    duration = pick3(u(5, 1.0, 3.5), u(5, 0.5, 2.0), 0.0)
    tau = pick3(u(6, 1.5, 3.5), u(6, 0.5, 1.5), u(6, 1.0, 2.5))
    dia_ratio = pick3(u(7, 0.45, 0.7), u(7, 0.5, 0.7), u(7, 0.4, 0.6))
    gradual = pick3(u(8, 0.45, 0.8), u(8, 0.35, 0.65), 1.0)
    start = onset + prodrome
    end = start + duration
    settle = end + 4.0 * tau
    refractory = u(9, 2.0, 6.0)
    return {
        "kind": pick3(_KIND_CODES["crisis"], _KIND_CODES["hypotension"], _KIND_CODES["surge"]),
        "onset": onset, "start": start, "end": end, "settle": settle, "sys_delta": delta,
        "dia_ratio": dia_ratio, "tau": tau, "gradual": gradual,
        "next_after": settle + refractory,
    }  # fmt: skip


def start_states(seed: int, attrs: Attributes, rows: np.ndarray) -> list[bytes | None]:
    """The packed state (:meth:`Trajectory.pack`) of the patients at ``rows`` of ``attrs``
    just before their first reading, with the first acute event after it already found: the
    state :meth:`Trajectory.start` makes, with what ``next_acute_start`` caches at the first
    reading. None for a patient whose profile has no acute events (made one by one)."""
    rows = np.asarray(rows, dtype=np.int64)
    out: list[bytes | None] = [None] * len(rows)
    codes = attrs.profile[rows].astype(np.int64)
    acute = _profile_column(codes, lambda p: p.crisis_per_day + p.hypotension_per_day) > 0
    if not acute.all():
        rows, codes = rows[acute], codes[acute]
    if len(rows) == 0:
        return out
    indexes = attrs.indexes[rows]
    key = draws.stream_keys(seed, _TAG_TRAJ, indexes)
    ev_key = draws.stream_keys(seed, _TAG_EVENTS, indexes)
    st = np.zeros(len(rows), dtype=_STATE_DTYPE)
    st["n"] = 8
    interval_h = np.array([m / 60.0 for m in _INTERVALS_MIN])[attrs.interval[rows]]
    t = st["t"] = interval_h * draws.uniforms_of(key, 0)

    def column(name: str) -> np.ndarray:
        return _profile_column(codes, lambda p: getattr(p, name))

    base_sys = st["base_sys"] = column("sys_mean") + column("sys_sd") * np.array(
        draws.normals_of(key, 1)
    )
    base_dia = column("dia_mean") + column("dia_sd") * np.array(draws.normals_of(key, 2))
    elevated = codes == _PROFILE_NAMES.index("elevated")
    st["base_dia"] = np.where(elevated, np.minimum(base_dia, 77.0), base_dia)
    drifting = draws.uniforms_of(key, 3) < column("drift_share")
    st["drift_per_day"] = np.where(drifting, 0.8 + 2.7 * draws.uniforms_of(key, 4), 0.0)
    st["drift_cap"] = 12.0 + 16.0 * draws.uniforms_of(key, 5)
    ou_sys = st["ou_sys"] = column("fluct_sd") * np.array(draws.normals_of(key, 6))
    st["ou_dia"] = 0.6 * ou_sys
    ev = _events_np(ev_key, 0, np.zeros(len(rows)), base_sys, codes)
    for name, values in ev.items():
        st[name] = values
    # the first acute event starting after the first reading (next_acute_start's walk)
    na_start = np.full(len(rows), math.inf)
    na_kind = np.zeros(len(rows), dtype=np.uint8)
    todo = np.arange(len(rows))
    k = 0
    while len(todo):
        found = (ev["kind"] != _KIND_CODES["surge"]) & (ev["start"] > t[todo])
        na_start[todo[found]] = ev["start"][found]
        na_kind[todo[found]] = ev["kind"][found]
        keep = ~found
        todo, after = todo[keep], ev["next_after"][keep]
        k += 1
        if len(todo):
            ev = _events_np(ev_key[todo], k, after, base_sys[todo], codes[todo])
    st["na_start"], st["na_kind"] = na_start, na_kind
    raw = st.tobytes()
    size = _STATE.size
    for i, at in enumerate(np.flatnonzero(acute).tolist()):
        out[at] = raw[i * size : (i + 1) * size]
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(start: datetime) -> int:
    """``start`` (timezone-aware) as integer microseconds since the Unix epoch."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    return (start - _EPOCH) // timedelta(microseconds=1)


def reading_ms(start_us: int, t: float) -> int:
    """The millisecond (since the epoch) of simulated hour ``t`` after ``start_us``."""
    return (start_us + round(t * 3_600_000_000)) // 1000


def at_ms(ms: int) -> datetime:
    """The UTC datetime of a millisecond since the epoch."""
    return _EPOCH + timedelta(milliseconds=ms)


def ms_of(at: datetime) -> int:
    """A timezone-aware datetime as milliseconds since the epoch (rounded down)."""
    return (at - _EPOCH) // timedelta(milliseconds=1)


def patient_readings(
    patient: Patient,
    seed: int,
    *,
    hours: float | None,
    horizon_hours: float = 6.0,
    start: datetime = DEFAULT_START,
) -> Iterator[tuple[Reading, GroundTruth]]:
    """One patient's readings in time order (``hours=None``: unbounded)."""
    start_us = epoch_us(start)
    traj = Trajectory.start(patient, seed)
    while hours is None or traj.t < hours:
        yield traj.step(seed, start_us, horizon_hours)


def merge_by_time(
    streams: Iterable[Iterator[tuple[Reading, GroundTruth]]],
) -> Iterator[tuple[Reading, GroundTruth]]:
    """Merge per-patient streams into global event-time order (ties: stream order)."""
    return heapq.merge(*streams, key=lambda item: item[0].effective_at)


def generate(
    n_patients: int,
    seed: int,
    *,
    hours: float | None,
    mix: Mapping[str, float] | None = None,
    horizon_hours: float = 6.0,
    start: datetime = DEFAULT_START,
    patients: Iterable[int] | None = None,
) -> Iterator[tuple[Reading, GroundTruth]]:
    """Readings with ground truth of ``n_patients`` in global event-time order.

    Deterministic for a seed; ``patients`` restricts the output to those patient indexes
    (their readings are the same as in the full cohort, and as in any larger cohort).
    ``hours=None`` is unbounded. For a small cohort: it holds a generator per patient
    (:func:`lib.sim.stream.messages` is the simulator for large ones).
    """
    everyone = cohort(n_patients, seed, mix)
    chosen = everyone if patients is None else [everyone[i] for i in patients]
    return merge_by_time(
        patient_readings(p, seed, hours=hours, horizon_hours=horizon_hours, start=start)
        for p in chosen
    )


# ----------------------------------------------------------------------------- home cohort
# A share of the patients measures at home instead of sending a routine clinical stream: a
# 7-day home-BP week ending the day before the simulated time 0 (``start``), two sessions a
# day (morning and evening, local time) of two readings each, marked as home measurements.
# White-coat patients also have an office visit the day before that week, with high readings
# marked as clinic measurements. Some patients stop sending after day 2 or day 4.
HOME_MIX: dict[str, float] = {"home_normal": 0.4, "home_hypertension": 0.35, "white_coat": 0.25}
HOME_SILENT_SHARE = 0.2  # of the home cohort: stops sending
HOME_DAYS = 7
HOME_SESSIONS_H = (7.0, 20.0)  # local hour of the morning and evening sessions
HOME_PER_SESSION = 2
OFFICE_READINGS = 3
_STOP_AFTER = (4, 2)  # days sent by silent patients (day 4: an average; 2: none)
# home baselines (mm[Hg]): far enough from the AHA 130/80 and ESH 135/85 home thresholds
# that a week's average lands on the designed side under either rule set
_HOME_BASE = {
    "normal": ((106.0, 118.0), (63.0, 72.0)),
    "hypertension": ((142.0, 152.0), (89.0, 96.0)),
    "office": ((146.0, 160.0), (90.0, 98.0)),
}
HOME_KINDS = tuple(HOME_MIX)


@dataclass(frozen=True, slots=True)
class HomePlan:
    """What a home-cohort patient sends: ``kind`` (a key of :data:`HOME_MIX`) and the number
    of days with readings (:data:`HOME_DAYS`, or fewer for a patient who stops sending)."""

    kind: str
    days: int = HOME_DAYS

    @property
    def silent(self) -> bool:
        return self.days < HOME_DAYS

    @property
    def home_hypertension(self) -> bool | None:
        """The designed protocol verdict; None when too few days give no average."""
        if self.days < 4:  # day 1 is discarded: at least 3 more days hold the 12 readings
            return None
        return self.kind == "home_hypertension"

    @property
    def office_readings(self) -> int:
        return OFFICE_READINGS if self.kind == "white_coat" else 0

    @property
    def readings(self) -> int:
        """Readings sent in all (office visit included)."""
        return self.office_readings + self.days * len(HOME_SESSIONS_H) * HOME_PER_SESSION


def home_plan_codes(seed: int, indexes: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """``(kind, days)`` per patient: kind 0 = not in the home cohort, else 1 + index into
    :data:`HOME_MIX`.

    Within each block of 100 consecutive patients, a share joins (exact up to one), their
    kinds split by :data:`HOME_MIX` (up to one each) and :data:`HOME_SILENT_SHARE` of them
    stop sending, alternately after day 4 and day 2. A patient's plan depends only on the seed
    and its block, not on the cohort's size.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"home share must be between 0 and 1, not {share}")
    indexes = np.asarray(indexes, dtype=np.int64)
    blocks = np.unique(indexes // _BLOCK)
    everyone = (blocks[:, None] * _BLOCK + np.arange(_BLOCK)).ravel()
    u = stratified(seed, _TAG_HOME, everyone)
    member = u < share
    kind = np.where(member, 1 + _categories(u / share if share else u, HOME_MIX), 0)
    # the members of a block in a seeded order; the first of them stop sending
    order = np.where(member, draws.uniforms(seed, _TAG_HOME_SILENT, everyone), 2.0)
    order = order.reshape(-1, _BLOCK)
    rank = np.argsort(np.argsort(order, axis=1, kind="stable"), axis=1, kind="stable")
    n_silent = np.rint(HOME_SILENT_SHARE * member.reshape(-1, _BLOCK).sum(axis=1))
    silent = (rank < n_silent[:, None]).ravel() & member
    days = np.where(silent, np.array(_STOP_AFTER)[rank.ravel() % len(_STOP_AFTER)], HOME_DAYS)
    rows = np.searchsorted(blocks, indexes // _BLOCK) * _BLOCK + indexes % _BLOCK
    return kind[rows].astype(np.uint8), days[rows].astype(np.uint8)


def home_plans(n_patients: int, seed: int, share: float) -> dict[int, HomePlan]:
    """The home cohort of a run: patient index -> plan (about ``share * n`` patients)."""
    kinds, days = home_plan_codes(seed, np.arange(n_patients), share)
    return {int(i): HomePlan(HOME_KINDS[kinds[i] - 1], int(days[i])) for i in np.flatnonzero(kinds)}


def days_before(patient: Patient, start: datetime, days: int) -> datetime:
    """Local midnight (as UTC) ``days`` days before ``start``'s local day, in the patient's
    time zone: day 1 of a course that ends on the local day before ``start``."""
    local = start.astimezone(timezone(timedelta(minutes=patient.utc_offset_min)))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - timedelta(days=days)).astimezone(UTC)


def home_week_start(patient: Patient, start: datetime) -> datetime:
    """Local midnight (as UTC) of day 1 of the home week: 7 days before ``start``'s local day."""
    return days_before(patient, start, HOME_DAYS)


def home_reading(patient: Patient, plan: HomePlan, seed: int, j: int, week0: datetime) -> Reading:
    """Reading ``j`` (``0 <= j < plan.readings``, in time order, office visit first) of a
    home-cohort patient whose week starts at ``week0`` (:func:`home_week_start`). Every draw
    is numbered by the reading, so any reading is made on its own."""
    key = draws.stream_key(seed, _TAG_HOME_DRAWS, patient.index)

    def u(n: int, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * draws.uniform(key, n)

    if j < plan.office_readings:
        (lo_s, hi_s), (lo_d, hi_d) = _HOME_BASE["office"]
        visit = week0 - timedelta(days=1) + timedelta(hours=10, minutes=u(2, 0.0, 90.0))
        sys_v = u(0, lo_s, hi_s) - 2.0 * j + 4.0 * draws.normal(key, 10 + 2 * j)
        dia_v = u(1, lo_d, hi_d) - 1.0 * j + 3.0 * draws.normal(key, 11 + 2 * j)
        at = visit + timedelta(minutes=3 * j)
        return _home_reading(patient, f"o{j:04d}", at, sys_v, dia_v, "clinic")
    h = j - plan.office_readings
    day, rest = divmod(h, len(HOME_SESSIONS_H) * HOME_PER_SESSION)
    session, i = divmod(rest, HOME_PER_SESSION)
    level = "hypertension" if plan.kind == "home_hypertension" else "normal"
    (lo_s, hi_s), (lo_d, hi_d) = _HOME_BASE[level]
    first_day = 5.0 if day == 0 else 0.0  # the first day reads higher (discarded)
    morning = 2.0 if session == 0 else 0.0
    minutes = u(100 + day * len(HOME_SESSIONS_H) + session, -20.0, 40.0)
    begin = week0 + timedelta(days=day, hours=HOME_SESSIONS_H[session], minutes=minutes)
    n = 1000 + 4 * h
    sys_v = u(3, lo_s, hi_s) + first_day + morning - 1.5 * i + 5.0 * draws.normal(key, n)
    dia_v = u(4, lo_d, hi_d) + 0.6 * first_day + 0.5 * morning - i + 3.5 * draws.normal(key, n + 1)
    at = begin + timedelta(minutes=2 * i, seconds=u(n + 2, 0.0, 30.0))
    return _home_reading(patient, f"h{j:04d}", at, sys_v, dia_v, "home")


def _home_reading(
    patient: Patient, seq: str, at: datetime, systolic: float, diastolic: float, setting: str
) -> Reading:
    at = at.replace(microsecond=(at.microsecond // 1000) * 1000)
    return Reading(
        observation_id=f"bp-{patient.patient_id.removeprefix('pat-')}-{seq}",
        patient_id=patient.patient_id,
        effective_at=at,
        systolic=float(round(systolic)),
        diastolic=float(round(diastolic)),
        status="final",
        version="1",
        setting=setting,
    )


def home_truth(
    patient: Patient, plan: HomePlan, reading: Reading, series_start: datetime
) -> GroundTruth:
    """The truth of a home-cohort reading: what the home-BP protocol should make of the week.

    ``home_series_start`` (the first home reading), ``home_hypertension`` (None when too few
    days are sent for an average), ``home_readings`` (the home readings planned) and
    ``silent`` (the patient stops sending after the last of them)."""
    return GroundTruth(
        observation_id=reading.observation_id,
        patient_id=patient.patient_id,
        profile=plan.kind,
        event_within_horizon=False,
        in_event=False,
        extra={
            "setting": reading.setting,
            "home_series_start": utc_iso(series_start),
            "home_hypertension": plan.home_hypertension,
            "home_readings": plan.readings - plan.office_readings,
            "silent": plan.silent,
        },
    )


def home_readings(
    patient: Patient, plan: HomePlan, seed: int, *, start: datetime = DEFAULT_START
) -> Iterator[tuple[Reading, GroundTruth]]:
    """A home-cohort patient's readings with ground truth (:func:`home_truth`), in time order."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    week0 = home_week_start(patient, start.astimezone(UTC))
    first = home_reading(patient, plan, seed, plan.office_readings, week0).effective_at
    for j in range(plan.readings):
        r = home_reading(patient, plan, seed, j, week0)
        yield r, home_truth(patient, plan, r, first)


# ------------------------------------------------------------------------------ RPM cohorts
# Remote patient monitoring: patients who send home readings from a cuff (marked home, with a
# device), on a course that ends on the local day before the simulated time 0 (as the home
# week), without injected faults. Two cohorts:
#   postpartum      enrolled in a postpartum program (an enrolment on bp.enrollments whose
#                   start is the local date of the first reading); a 42-day course with a
#                   morning reading every day and an evening one on some; every reading below
#                   the severe range (160/110) except the planned severe-range events: a
#                   "repeat" pair (the second 5-10 minutes after the first), a "persistent"
#                   pair (20-90 minutes) and a "single" severe reading, each on at most one
#                   day of its own window, the windows a week apart
#   low adherence   not enrolled; a 35-day course on which the patient sends on some days
#                   only: "sparse" (each day with a probability of 0.2-0.4), "moderate"
#                   (0.5-0.7) or "dropout" (0.8-0.95, and nothing after day 9-13)
RPM_KINDS = (
    "postpartum", "low_adherence_sparse", "low_adherence_moderate", "low_adherence_dropout",
)  # fmt: skip
LOW_ADHERENCE_MIX: dict[str, float] = {
    "low_adherence_sparse": 0.4,
    "low_adherence_moderate": 0.35,
    "low_adherence_dropout": 0.25,
}
POSTPARTUM_COURSE_DAYS = 42
LOW_ADHERENCE_COURSE_DAYS = 35
SEVERE_KINDS = ("repeat", "persistent", "single")
SEVERE_SHARE = 0.55  # chance that a postpartum patient has an event of each kind
ORDINARY_MAX = (157.0, 107.0)  # every other reading stays below the severe range (160/110)
_SEND_P = {
    "postpartum": (1.0, 1.0),
    "low_adherence_sparse": (0.2, 0.4),
    "low_adherence_moderate": (0.5, 0.7),
    "low_adherence_dropout": (0.8, 0.95),
}
_DROPOUT_LAST_DAY = (8, 12)  # the last course day (0-based) a dropout patient sends on
_EVENING_P = (0.3, 0.8)  # chance of an evening reading on a day with readings
_SEVERE_WINDOWS = ((5, 10), (17, 22), (29, 34))  # course days of the events, one per window
_GAP_MIN = {"repeat": (5.0, 10.0), "persistent": (20.0, 90.0), "single": (0.0, 0.0)}
_SEVERE_ORDERS = (
    ("repeat", "persistent", "single"), ("repeat", "single", "persistent"),
    ("persistent", "repeat", "single"), ("persistent", "single", "repeat"),
    ("single", "repeat", "persistent"), ("single", "persistent", "repeat"),
)  # fmt: skip
RPM_SLOTS = 3  # reading slots of a course day: morning, the morning pair's second, evening
_TAG_RPM_DRAWS = 0x5B1


class SevereEvent(NamedTuple):
    """A planned severe-range event of a postpartum patient: on course ``day`` (0-based),
    ``kind`` one of :data:`SEVERE_KINDS`, the second reading ``gap_min`` minutes after the
    first (0 for a single reading)."""

    day: int
    kind: str
    gap_min: float


@dataclass(frozen=True, slots=True)
class RpmPlan:
    """What an RPM patient sends (:func:`rpm_plan`): made from the patient's numbered draws."""

    kind: str  # one of RPM_KINDS
    days: int  # course length
    day0: datetime  # local midnight of course day 0, as UTC
    first_date: date  # its local date
    base_sys: float
    base_dia: float
    send_p: float  # chance of sending on a course day
    last_day: int  # no readings after this course day
    evening_p: float
    events: tuple[SevereEvent, ...] = ()

    @property
    def program(self) -> str:
        """The program of the patient's enrolment ("" when not enrolled)."""
        return "postpartum" if self.kind == "postpartum" else ""

    def event_on(self, day: int) -> tuple[int, SevereEvent] | None:
        for i, ev in enumerate(self.events):
            if ev.day == day:
                return i, ev
        return None


def rpm_plan_codes(
    seed: int,
    indexes: np.ndarray,
    home_share: float,
    postpartum_share: float,
    low_adherence_share: float,
) -> np.ndarray:
    """The RPM cohort of each patient: 0 = none, else 1 + index into :data:`RPM_KINDS`.

    The cohorts take the strata after the home cohort's in each block of 100 patients
    (:func:`stratified` with the home cohort's draws): postpartum ``[h, h + p)``, low
    adherence ``[h + p, h + p + l)``, so they are exact per block up to one, disjoint from
    the home cohort and from each other, and a patient's cohort does not depend on the
    cohort's size. The low-adherence patterns split by :data:`LOW_ADHERENCE_MIX`.
    """
    shares = (home_share, postpartum_share, low_adherence_share)
    if any(not 0.0 <= s <= 1.0 for s in shares) or sum(shares) > 1.0 + 1e-9:
        raise ValueError(
            f"home, postpartum and low-adherence shares must be between 0 and 1 and sum to at "
            f"most 1, not {shares}"
        )
    indexes = np.asarray(indexes, dtype=np.int64)
    codes = np.zeros(len(indexes), dtype=np.uint8)
    if postpartum_share <= 0 and low_adherence_share <= 0:
        return codes
    u = stratified(seed, _TAG_HOME, indexes)
    low_from = home_share + postpartum_share
    codes[(u >= home_share) & (u < low_from)] = 1
    low = (u >= low_from) & (u < low_from + low_adherence_share)
    if low.any():
        within = (u[low] - low_from) / low_adherence_share
        codes[low] = 2 + _categories(within, LOW_ADHERENCE_MIX)
    return codes


def rpm_plans(
    n_patients: int, seed: int, home_share: float, postpartum_share: float, low_share: float
) -> dict[int, str]:
    """The RPM cohorts of a run: patient index -> kind (a key of :data:`RPM_KINDS`)."""
    codes = rpm_plan_codes(seed, np.arange(n_patients), home_share, postpartum_share, low_share)
    return {int(i): RPM_KINDS[codes[i] - 1] for i in np.flatnonzero(codes)}


def rpm_plan(patient: Patient, kind: str, seed: int, start: datetime = DEFAULT_START) -> RpmPlan:
    """The course of an RPM patient of ``kind`` whose simulated time 0 is ``start``."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    key = draws.stream_key(seed, _TAG_RPM_DRAWS, patient.index)

    def u(n: int, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * draws.uniform(key, n)

    days = POSTPARTUM_COURSE_DAYS if kind == "postpartum" else LOW_ADHERENCE_COURSE_DAYS
    day0 = days_before(patient, start.astimezone(UTC), days)
    tz = timezone(timedelta(minutes=patient.utc_offset_min))
    last_day = days - 1
    if kind == "low_adherence_dropout":
        lo, hi = _DROPOUT_LAST_DAY
        last_day = lo + min(int(u(4) * (hi - lo + 1)), hi - lo)
    events: list[SevereEvent] = []
    if kind == "postpartum":
        order = _pick(_SEVERE_ORDERS, u(8))
        for i, (lo, hi) in enumerate(_SEVERE_WINDOWS):
            if u(5 + i) >= SEVERE_SHARE:
                continue
            day = lo + min(int(u(9 + i) * (hi - lo + 1)), hi - lo)
            events.append(SevereEvent(day, order[i], u(12 + i, *_GAP_MIN[order[i]])))
    return RpmPlan(
        kind=kind,
        days=days,
        day0=day0,
        first_date=day0.astimezone(tz).date(),
        base_sys=u(0, 122.0, 142.0),
        base_dia=u(1, 76.0, 92.0),
        send_p=u(2, *_SEND_P[kind]),
        last_day=last_day,
        evening_p=u(3, *_EVENING_P),
        events=tuple(events),
    )


def rpm_reading(patient: Patient, plan: RpmPlan, seed: int, c: int) -> tuple[Reading, str] | None:
    """The reading of slot ``c`` (course day ``c // 3``; morning, the morning pair's second,
    evening) of an RPM patient and its severe-range mark (``""``, ``first``, ``repeat``,
    ``persistent``, ``single``); None when the patient sends nothing in that slot. Every draw
    is numbered by the day or the slot, so any slot is made on its own."""
    day, slot = divmod(c, RPM_SLOTS)
    if day >= plan.days or day > plan.last_day:
        return None
    key = draws.stream_key(seed, _TAG_RPM_DRAWS, patient.index)

    def u(n: int, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * draws.uniform(key, n)

    n = 100 + 8 * day
    if plan.send_p < 1.0 and u(n) >= plan.send_p:
        return None
    found = plan.event_on(day)
    seq = f"r{c:04d}"
    if slot == 2:
        if u(n + 1) >= plan.evening_p:
            return None
        at = plan.day0 + timedelta(days=day, hours=20, minutes=u(n + 3, -20.0, 40.0))
        at += timedelta(seconds=u(n + 5, 0.0, 30.0))
        return _rpm_ordinary(patient, plan, key, seq, c, at, morning=False), ""
    first = plan.day0 + timedelta(days=day, hours=7, minutes=u(n + 2, -20.0, 40.0))
    first += timedelta(seconds=u(n + 4, 0.0, 30.0))
    if found is None:
        if slot == 1:
            return None
        return _rpm_ordinary(patient, plan, key, seq, c, first, morning=True), ""
    i, ev = found
    if slot == 1 and ev.kind == "single":
        return None
    # a severe-range event: systolic-led (>= 160) or diastolic-led (>= 110), below 180/120
    m = 20 + 8 * i + 4 * slot
    if u(20 + 8 * i + 3) < 0.7:
        sys_v, dia_v = u(m, 161.0, 176.0), u(m + 1, 92.0, 106.0)
    else:
        sys_v, dia_v = u(m, 146.0, 166.0), u(m + 1, 111.0, 116.0)
    at = first if slot == 0 else first + timedelta(minutes=ev.gap_min)
    mark = ("single" if ev.kind == "single" else "first") if slot == 0 else ev.kind
    return _home_reading(patient, seq, at, sys_v, dia_v, "home"), mark


def _rpm_ordinary(
    patient: Patient, plan: RpmPlan, key: int, seq: str, c: int, at: datetime, *, morning: bool
) -> Reading:
    """A reading below the severe range: the patient's level, a morning rise and noise."""
    sys_v = plan.base_sys + (3.0 if morning else 0.0) + 6.0 * draws.normal(key, 1000 + 2 * c)
    dia_v = plan.base_dia + (2.0 if morning else 0.0) + 4.0 * draws.normal(key, 1001 + 2 * c)
    sys_v = min(max(sys_v, 100.0), ORDINARY_MAX[0])
    dia_v = min(max(dia_v, 60.0), ORDINARY_MAX[1], sys_v - 25.0)
    return _home_reading(patient, seq, at, sys_v, dia_v, "home")


def rpm_next(patient: Patient, plan: RpmPlan, seed: int, c: int) -> tuple[int, Reading, str] | None:
    """The first slot at or after ``c`` that holds a reading, with the reading and its mark
    (None: the course is over)."""
    end = min(plan.days, plan.last_day + 1) * RPM_SLOTS
    while c < end:
        made = rpm_reading(patient, plan, seed, c)
        if made is not None:
            return c, made[0], made[1]
        c += 1
    return None


def rpm_truth(patient: Patient, plan: RpmPlan, reading: Reading, severe: str) -> GroundTruth:
    """The truth of an RPM reading: ``rpm``, ``program`` and ``program_start`` (the
    enrolment's, None when not enrolled), ``local_date`` (the reading's local date, the day
    the adherence cycles count) and ``severe`` (its severe-range mark)."""
    tz = timezone(timedelta(minutes=patient.utc_offset_min))
    return GroundTruth(
        observation_id=reading.observation_id,
        patient_id=patient.patient_id,
        profile=plan.kind,
        event_within_horizon=False,
        in_event=False,
        extra={
            "setting": reading.setting,
            "rpm": True,
            "program": plan.program,
            "program_start": plan.first_date.isoformat() if plan.program else None,
            "local_date": reading.effective_at.astimezone(tz).date().isoformat(),
            "severe": severe,
        },
    )


def rpm_readings(
    patient: Patient, kind: str, seed: int, *, start: datetime = DEFAULT_START
) -> Iterator[tuple[Reading, GroundTruth]]:
    """An RPM patient's readings with ground truth (:func:`rpm_truth`), in time order."""
    plan = rpm_plan(patient, kind, seed, start)
    for c in range(plan.days * RPM_SLOTS):
        made = rpm_reading(patient, plan, seed, c)
        if made is not None:
            yield made[0], rpm_truth(patient, plan, made[0], made[1])
