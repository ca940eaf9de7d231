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

Randomness comes only from ``numpy.random.Generator`` objects seeded from ``(seed, patient index)``,
so a patient's stream does not depend on which worker generates it or on the other patients.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np

from lib.domain import GroundTruth, Reading, utc_iso

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


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str  # crisis | hypotension | surge
    onset: float  # hours: start of the prodrome
    start: float  # hours: start of the acute phase (the labelled moment)
    end: float  # hours: end of the acute phase
    settle: float  # hours: recovery practically complete
    sys_delta: float  # excess systolic at the acute phase (negative for hypotension)
    dia_ratio: float  # diastolic excess = ratio * systolic excess
    tau: float  # recovery time constant, hours
    gradual: float  # share of the excess reached by the end of the prodrome

    @property
    def acute(self) -> bool:
        return self.kind != "surge"


def patient_id(seed: int, index: int) -> str:
    return f"pat-{seed}-{index:05d}"


def patient_name(seed: int, index: int) -> str:
    """A deterministic fake display name, e.g. ``"Greta Okafor"``."""
    rng = np.random.default_rng([seed, index, 0x4E])
    return f"{_GIVEN[rng.integers(len(_GIVEN))]} {_FAMILY[rng.integers(len(_FAMILY))]}"


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


def _exact_counts(shares: Mapping[str, float], n: int) -> dict[str, int]:
    """``n`` split by ``shares`` (summing to 1) with the largest-remainder method."""
    raw = {name: share * n for name, share in shares.items()}
    counts = {name: math.floor(v) for name, v in raw.items()}
    rest = n - sum(counts.values())
    for name in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[:rest]:
        counts[name] += 1
    return counts


def assign_profiles(
    n_patients: int, seed: int, mix: Mapping[str, float] | None = None
) -> list[str]:
    """Profiles of patients ``0..n-1``: exact shares (largest remainder), shuffled by seed."""
    counts = _exact_counts(normalize_mix(mix), n_patients)
    profiles = [name for name in PROFILES for _ in range(counts[name])]
    order = np.random.default_rng([seed, 0x9F]).permutation(n_patients)
    return [profiles[i] for i in order]


def cohort(n_patients: int, seed: int, mix: Mapping[str, float] | None = None) -> list[Patient]:
    """The patients of a run, with their profile, cadence, time zone and device."""
    patients = []
    for index, profile in enumerate(assign_profiles(n_patients, seed, mix)):
        rng = np.random.default_rng([seed, index, 0x50])
        patients.append(
            Patient(
                index=index,
                patient_id=patient_id(seed, index),
                name=patient_name(seed, index),
                profile=profile,
                utc_offset_min=int(rng.choice(_UTC_OFFSETS_MIN)),
                interval_min=float(rng.choice(_INTERVALS_MIN)),
                device=str(rng.choice(_DEVICES)),
                arm=str(rng.choice(_ARMS)),
            )
        )
    return patients


class _Draws:
    """Block-buffered standard normal and uniform draws (scalar Generator calls are slow)."""

    __slots__ = ("_i", "_j", "_n", "_rng", "_u")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._n = rng.standard_normal(512).tolist()
        self._u = rng.random(512).tolist()
        self._i = 0
        self._j = 0

    def normal(self) -> float:
        if self._i == len(self._n):
            self._n = self._rng.standard_normal(512).tolist()
            self._i = 0
        self._i += 1
        return self._n[self._i - 1]

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        if self._j == len(self._u):
            self._u = self._rng.random(512).tolist()
            self._j = 0
        self._j += 1
        return lo + (hi - lo) * self._u[self._j - 1]

    def exponential(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.uniform())


class _Trajectory:
    """Latent state of one patient; ``step(t)`` gives the measured values at hour ``t``."""

    def __init__(self, patient: Patient, seed: int) -> None:
        self.p = PROFILES[patient.profile]
        self.patient = patient
        rng = np.random.default_rng([seed, patient.index, 0x7A])
        self.d = _Draws(rng)
        d, p = self.d, self.p
        self.base_sys = p.sys_mean + p.sys_sd * d.normal()
        self.base_dia = p.dia_mean + p.dia_sd * d.normal()
        if patient.profile == "elevated":
            self.base_dia = min(self.base_dia, 77.0)  # elevated: systolic only
        drifting = d.uniform() < p.drift_share
        self.drift_per_day = d.uniform(0.8, 3.5) if drifting else 0.0
        self.drift_cap = d.uniform(12.0, 28.0)
        self.ou_sys = p.fluct_sd * d.normal()
        self.ou_dia = 0.6 * self.ou_sys
        self.t_prev = 0.0
        self.events: list[_Event] = []
        self._scheduled_until = 0.0
        self._schedule(0.0)

    # -- events -----------------------------------------------------------------------------
    def _rate(self) -> float:
        p = self.p
        return p.crisis_per_day + p.hypotension_per_day + p.surge_per_day

    def _schedule(self, after: float) -> None:
        """Append the next event whose prodrome starts after ``after`` hours."""
        p, d = self.p, self.d
        rate = self._rate()
        if rate <= 0:
            self._scheduled_until = math.inf
            return
        onset = after + d.exponential(24.0 / rate)
        pick = d.uniform() * rate
        if pick < p.crisis_per_day:
            kind = "crisis"
        elif pick < p.crisis_per_day + p.hypotension_per_day:
            kind = "hypotension"
        else:
            kind = "surge"
        if kind == "crisis":
            # most crises announce themselves hours ahead; about a quarter come quickly
            prodrome = d.uniform(0.5, 1.5) if d.uniform() < 0.25 else d.uniform(2.0, 8.0)
            target = max(182.0, self.base_sys + 40.0) + d.uniform(0.0, 30.0)
            delta = target - self.base_sys
            duration = d.uniform(1.0, 3.5)
            tau = d.uniform(1.5, 3.5)
            dia_ratio = d.uniform(0.45, 0.7)
            gradual = d.uniform(0.45, 0.8)
        elif kind == "hypotension":
            prodrome = d.uniform(0.3, 1.0) if d.uniform() < 0.25 else d.uniform(1.0, 4.0)
            target = d.uniform(72.0, 86.0)
            delta = min(target - self.base_sys, -15.0)
            duration = d.uniform(0.5, 2.0)
            tau = d.uniform(0.5, 1.5)
            dia_ratio = d.uniform(0.5, 0.7)
            gradual = d.uniform(0.35, 0.65)
        else:  # a stress surge: rises like a prodrome, then subsides without a crisis
            prodrome = d.uniform(1.0, 4.0)
            delta = d.uniform(15.0, 35.0)
            duration = 0.0
            tau = d.uniform(1.0, 2.5)
            dia_ratio = d.uniform(0.4, 0.6)
            gradual = 1.0
        start = onset + prodrome
        end = start + duration
        event = _Event(kind, onset, start, end, end + 4.0 * tau, delta, dia_ratio, tau, gradual)
        self.events.append(event)
        self._scheduled_until = event.settle + d.uniform(2.0, 6.0)  # refractory period

    def _ensure(self, until: float) -> None:
        while self._scheduled_until < until:
            self._schedule(self._scheduled_until)

    def excess(self, t: float) -> tuple[float, float, float, _Event | None]:
        """(systolic excess, diastolic excess, variability multiplier, current event)."""
        self._ensure(t)
        while self.events and self.events[0].settle < t:
            self.events.pop(0)
        for ev in self.events:
            if t < ev.onset:
                break
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
        return 0.0, 0.0, 1.0, None

    def next_acute_start(self, t: float) -> tuple[float, str]:
        """Start time and kind of the first acute event starting strictly after ``t``."""
        horizon = t
        while True:
            self._ensure(horizon + 24.0)
            for ev in self.events:
                if ev.acute and ev.start > t:
                    return ev.start, ev.kind
            if self._rate() <= 0 or (self.p.crisis_per_day + self.p.hypotension_per_day) <= 0:
                return math.inf, ""
            horizon += 24.0

    # -- measurement ------------------------------------------------------------------------
    def measure(self, t: float) -> tuple[float, float, float, float, _Event | None]:
        """(systolic, diastolic, latent systolic, latent diastolic, event) at hour ``t``."""
        p, d = self.p, self.d
        dt = max(t - self.t_prev, 0.0)
        self.t_prev = t
        keep = math.exp(-dt / 3.0)  # OU with a 3 h time constant
        spread = p.fluct_sd * math.sqrt(1.0 - keep * keep)
        self.ou_sys = keep * self.ou_sys + spread * d.normal()
        self.ou_dia = keep * self.ou_dia + 0.6 * spread * d.normal()
        local_h = (t + self.patient.utc_offset_min / 60.0) % 24.0
        # peak mid-afternoon, nocturnal dip around 03:00
        circ = -math.cos(2.0 * math.pi * (local_h - 3.0) / 24.0)
        drift = min(self.drift_per_day * t / 24.0, self.drift_cap)
        ex_sys, ex_dia, var, ev = self.excess(t)
        lat_sys = self.base_sys + drift + p.circadian_sys * circ + self.ou_sys + ex_sys
        lat_dia = self.base_dia + 0.55 * drift + 0.6 * p.circadian_sys * circ + self.ou_dia + ex_dia
        sys_v = lat_sys + p.noise_sys * var * d.normal()
        dia_v = lat_dia + p.noise_dia * var * d.normal()
        sys_v = min(max(sys_v, 62.0), 250.0)
        dia_v = min(max(dia_v, 35.0), 145.0)
        if sys_v - dia_v < 15.0:  # keep a physiological pulse pressure
            dia_v = sys_v - 15.0 - 5.0 * d.uniform()
        return float(round(sys_v)), float(round(dia_v)), lat_sys, lat_dia, ev

    def next_gap_h(self, last_sys: float) -> float:
        """Hours to the next measurement: routine cadence, tighter when the last one was off."""
        interval = self.patient.interval_min
        if last_sys >= 160.0 or last_sys < 95.0:
            interval = min(interval, 15.0)
        return interval * self.d.uniform(0.8, 1.2) / 60.0


def patient_readings(
    patient: Patient,
    seed: int,
    *,
    hours: float | None,
    horizon_hours: float = 6.0,
    start: datetime = DEFAULT_START,
) -> Iterator[tuple[Reading, GroundTruth]]:
    """One patient's readings in time order (``hours=None``: unbounded)."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    start = start.astimezone(UTC)
    traj = _Trajectory(patient, seed)
    t = traj.d.uniform(0.0, patient.interval_min / 60.0)  # patients are not in lock-step
    seq = 0
    while hours is None or t < hours:
        sys_v, dia_v, lat_sys, lat_dia, ev = traj.measure(t)
        next_start, next_kind = traj.next_acute_start(t)
        within = next_start - t <= horizon_hours
        in_event = ev is not None and ev.acute and ev.start <= t < ev.end
        # kind of the event the label is about; else the one the patient is in
        kind = next_kind if within else (ev.kind if in_event and ev is not None else "")
        effective = start + timedelta(microseconds=round(t * 3_600_000_000))
        effective = effective.replace(microsecond=(effective.microsecond // 1000) * 1000)
        obs_id = f"bp-{seed}-{patient.index:05d}-{seq:06d}"
        reading = Reading(
            observation_id=obs_id,
            patient_id=patient.patient_id,
            effective_at=effective,
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
        yield reading, truth
        seq += 1
        t += traj.next_gap_h(sys_v)


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
    (their readings are the same as in the full cohort). ``hours=None`` is unbounded.
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
_STOP_AFTER = (4, 2)  # days sent by silent patients, alternately (day 4: an average; 2: none)
# home baselines (mm[Hg]): far enough from the AHA 130/80 and ESH 135/85 home thresholds
# that a week's average lands on the designed side under either rule set
_HOME_BASE = {
    "normal": ((106.0, 118.0), (63.0, 72.0)),
    "hypertension": ((142.0, 152.0), (89.0, 96.0)),
    "office": ((146.0, 160.0), (90.0, 98.0)),
}


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


def home_plans(n_patients: int, seed: int, share: float) -> dict[int, HomePlan]:
    """The home cohort of a run: patient index -> plan (``round(share * n)`` patients)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"home share must be between 0 and 1, not {share}")
    k = round(share * n_patients)
    if k == 0:
        return {}
    rng = np.random.default_rng([seed, 0x40E])
    chosen = sorted(int(i) for i in rng.permutation(n_patients)[:k])
    kinds = [name for name, c in _exact_counts(HOME_MIX, k).items() for _ in range(c)]
    kinds = [kinds[i] for i in rng.permutation(k)]
    silent = sorted(int(i) for i in rng.permutation(k)[: round(HOME_SILENT_SHARE * k)])
    days = {pos: _STOP_AFTER[j % len(_STOP_AFTER)] for j, pos in enumerate(silent)}
    return {index: HomePlan(kinds[pos], days.get(pos, HOME_DAYS))
            for pos, index in enumerate(chosen)}  # fmt: skip


def home_week_start(patient: Patient, start: datetime) -> datetime:
    """Local midnight (as UTC) of day 1 of the home week: 7 days before ``start``'s local day."""
    local = start.astimezone(timezone(timedelta(minutes=patient.utc_offset_min)))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - timedelta(days=HOME_DAYS)).astimezone(UTC)


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


def _home_schedule(patient: Patient, plan: HomePlan, d: _Draws, start: datetime) -> list[Reading]:
    """The readings of a home-cohort patient in time order (office visit first)."""
    week0 = home_week_start(patient, start)
    out: list[Reading] = []
    if plan.kind == "white_coat":
        (lo_s, hi_s), (lo_d, hi_d) = _HOME_BASE["office"]
        office_sys, office_dia = d.uniform(lo_s, hi_s), d.uniform(lo_d, hi_d)
        visit = week0 - timedelta(days=1) + timedelta(hours=10, minutes=d.uniform(0.0, 90.0))
        for i in range(OFFICE_READINGS):
            sys_v = office_sys - 2.0 * i + 4.0 * d.normal()
            dia_v = office_dia - 1.0 * i + 3.0 * d.normal()
            at = visit + timedelta(minutes=3 * i)
            out.append(_home_reading(patient, f"o{i:04d}", at, sys_v, dia_v, "clinic"))
    level = "hypertension" if plan.kind == "home_hypertension" else "normal"
    (lo_s, hi_s), (lo_d, hi_d) = _HOME_BASE[level]
    base_sys, base_dia = d.uniform(lo_s, hi_s), d.uniform(lo_d, hi_d)
    for day in range(plan.days):
        first_day = 5.0 if day == 0 else 0.0  # the first day reads higher (discarded)
        for session, hour in enumerate(HOME_SESSIONS_H):
            morning = 2.0 if session == 0 else 0.0
            begin = week0 + timedelta(days=day, hours=hour, minutes=d.uniform(-20.0, 40.0))
            for i in range(HOME_PER_SESSION):
                sys_v = base_sys + first_day + morning - 1.5 * i + 5.0 * d.normal()
                dia_v = base_dia + 0.6 * first_day + 0.5 * morning - i + 3.5 * d.normal()
                at = begin + timedelta(minutes=2 * i, seconds=d.uniform(0.0, 30.0))
                seq = f"h{len(out):04d}"
                out.append(_home_reading(patient, seq, at, sys_v, dia_v, "home"))
    return out


def home_readings(
    patient: Patient, plan: HomePlan, seed: int, *, start: datetime = DEFAULT_START
) -> Iterator[tuple[Reading, GroundTruth]]:
    """A home-cohort patient's readings with ground truth, in time order.

    The truth of every reading says what the home-BP protocol should make of the patient's
    week: ``home_series_start`` (the first home reading), ``home_hypertension`` (None when
    too few days are sent for an average), ``home_readings`` (the home readings planned) and
    ``silent`` (the patient stops sending after the last of them).
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    d = _Draws(np.random.default_rng([seed, patient.index, 0x40]))
    readings = _home_schedule(patient, plan, d, start.astimezone(UTC))
    home = [r for r in readings if r.setting == "home"]
    extra: dict[str, Any] = {
        "home_series_start": utc_iso(home[0].effective_at),
        "home_hypertension": plan.home_hypertension,
        "home_readings": len(home),
        "silent": plan.silent,
    }
    for r in readings:
        truth = GroundTruth(
            observation_id=r.observation_id,
            patient_id=patient.patient_id,
            profile=plan.kind,
            event_within_horizon=False,
            in_event=False,
            extra={"setting": r.setting, **extra},
        )
        yield r, truth
