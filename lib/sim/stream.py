"""The simulator's message stream: FHIR messages with injected faults of known kinds. Pure.

``messages(settings)`` turns the cohort (:mod:`lib.sim.cohort`) into Kafka-ready messages
(key = patient id, value = FHIR JSON). Every message carries, per Observation it holds, the
*fate* the monitor must give it, so a test can reconcile the monitor's outcome counters with
what was sent::

    reading      scorable: ends as one assessment (normal or anomaly)
    duplicate    the same observation id and version was already delivered
    retracted    an entered-in-error Observation withdrawing an earlier reading
    ignored      a valid, unscored Observation (status preliminary)
    dead_letter  not processable: the original bytes go to the DLQ (``reason`` is the expected code)

With probability ``fault_rate`` a clean reading gets one fault (kinds uniformly):
``kpa`` and ``out_of_order`` change how the reading itself is delivered; ``duplicate``,
``amended``, ``entered_in_error`` and ``preliminary`` add a message about it; the dead-letter
kinds add a corrupted *extra* message (own observation id), so no clean reading is lost and
the ground truth of every clean reading stays valid.

Faults are drawn per patient from ``(seed, patient index)``, so the stream of a patient is the
same whichever worker produces it. ``messages()`` merges patients in event-time order.

``settings.sim_home_share`` puts that share of the patients in the *home cohort*
(:func:`lib.sim.cohort.home_plans`): instead of the clinical stream they send a home-BP week
before the simulated time 0 (morning and evening sessions marked with the Vitals IG
``MeasurementSettingExt``, SNOMED 264362003 Home), white-coat patients also an office visit
(marked clinic), and some stop sending. They get no injected faults; their ground truth says
which home average and which silence the monitor must find. With a share of 0 the stream is
the clinical one, byte for byte. ``settings.sim_start`` moves the simulated time 0.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson

from lib.domain import GroundTruth, Reading, utc_iso
from lib.settings import Settings
from lib.sim import cohort as cohort_mod
from lib.sim import fhir_writer as fhir_obs

FATES = ("reading", "duplicate", "retracted", "ignored", "skipped", "dead_letter")


class FaultKind(enum.StrEnum):
    MALFORMED_JSON = "malformed_json"
    NOT_OBSERVATION = "not_observation"
    WRONG_LOINC = "wrong_loinc"
    MISSING_DIASTOLIC = "missing_diastolic"
    KPA_UNITS = "kpa_units"
    SYS_BELOW_DIA = "sys_below_dia"
    IMPLAUSIBLE_HIGH = "implausible_high"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    AMENDED = "amended"
    ENTERED_IN_ERROR = "entered_in_error"
    PRELIMINARY = "preliminary"


# fault kind -> (fate of the faulty Observation, expected DeadLetter.reason)
EXPECTED: dict[FaultKind, tuple[str, str]] = {
    FaultKind.MALFORMED_JSON: ("dead_letter", "invalid_json"),
    FaultKind.NOT_OBSERVATION: ("skipped", ""),  # valid FHIR, not a BP reading: a Patient
    FaultKind.WRONG_LOINC: ("skipped", ""),  # a heart-rate Observation
    FaultKind.MISSING_DIASTOLIC: ("dead_letter", "missing_component"),
    FaultKind.KPA_UNITS: ("reading", ""),
    FaultKind.SYS_BELOW_DIA: ("dead_letter", "implausible_value"),
    FaultKind.IMPLAUSIBLE_HIGH: ("dead_letter", "implausible_value"),
    FaultKind.DUPLICATE: ("duplicate", ""),
    FaultKind.OUT_OF_ORDER: ("reading", ""),
    FaultKind.AMENDED: ("reading", ""),
    FaultKind.ENTERED_IN_ERROR: ("retracted", ""),
    FaultKind.PRELIMINARY: ("ignored", ""),
}
_KINDS = tuple(FaultKind)
# kinds sent as an extra message of their own (a dead letter, or FHIR that is not a BP reading)
_EXTRA_KINDS = frozenset(
    k for k, (fate, _) in EXPECTED.items() if fate in ("dead_letter", "skipped")
)
_HISTORY = 6  # earlier readings a correction or retraction may refer to


@dataclass(frozen=True, slots=True)
class Expected:
    """What the monitor must make of one Observation of a message."""

    observation_id: str
    fate: str  # one of FATES
    fault: FaultKind | None = None
    reason: str = ""  # expected DeadLetter.reason when fate == "dead_letter"
    reading: Reading | None = None  # the reading as the monitor should parse it (mm[Hg], UTC)
    truth: GroundTruth | None = None  # ground truth of a clean reading (None for extras)


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One Kafka message of the simulator and the expected fate of each Observation in it."""

    key: bytes
    value: bytes
    patient_id: str
    emitted_at: datetime  # event time at which the message is sent (UTC)
    expected: tuple[Expected, ...]

    @property
    def is_fault(self) -> bool:
        return any(e.fault is not None for e in self.expected)

    def kafka_record(self) -> tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]:
        """``(key, value, headers)`` for :class:`lib.connectors.kafka.ConfirmedKafkaSink`."""
        return self.key, self.value, [("content-type", b"application/fhir+json")]


class _PatientFaults:
    """Fault injection for one patient's stream of clean readings."""

    def __init__(self, patient: cohort_mod.Patient, seed: int, rate: float) -> None:
        self.p = patient
        self.rate = rate
        self.rng = np.random.default_rng([seed, patient.index, 0xFA])
        self.key = patient.patient_id.encode()
        self.history: deque[tuple[Reading, bytes]] = deque(maxlen=_HISTORY)
        self.held: tuple[Reading, GroundTruth] | None = None

    def _fhir(self, reading: Reading, **kw: Any) -> dict[str, Any]:
        p = self.p
        kw.setdefault("setting", reading.setting or None)
        return fhir_obs.to_fhir(
            reading, p.name, utc_offset_min=p.utc_offset_min, device=p.device, arm=p.arm, **kw
        )

    def _msg(self, value: bytes, at: datetime, *expected: Expected) -> SimMessage:
        return SimMessage(self.key, value, self.p.patient_id, at, expected)

    def _clean(self, r: Reading, g: GroundTruth, fault: FaultKind | None = None) -> SimMessage:
        unit = "kPa" if fault is FaultKind.KPA_UNITS else "mm[Hg]"
        value = fhir_obs.encode(self._fhir(r, unit=unit))
        self.history.append((r, value))
        return self._msg(
            value, r.effective_at, Expected(r.observation_id, "reading", fault, "", r, g)
        )

    def _extra(self, kind: FaultKind, r: Reading, at: datetime) -> SimMessage:
        """An extra message derived from ``r`` (own id): a dead letter, or skipped FHIR."""
        fate, reason = EXPECTED[kind]
        bad = replace(r, observation_id=f"{r.observation_id}-x")
        obs = self._fhir(bad)
        if kind is FaultKind.MALFORMED_JSON:
            raw = fhir_obs.encode(obs)
            value = raw[: int(len(raw) * self.rng.uniform(0.3, 0.9))]
        elif kind is FaultKind.NOT_OBSERVATION:
            given, family = self.p.name.split(" ", 1)
            value = fhir_obs.encode(
                {
                    "resourceType": "Patient",
                    "id": self.p.patient_id,
                    "name": [{"family": family, "given": [given]}],
                }
            )
        elif kind is FaultKind.WRONG_LOINC:
            obs["code"] = {
                "coding": [{"system": fhir_obs.LOINC, "code": "8867-4", "display": "Heart rate"}]
            }
            value = fhir_obs.encode(obs)
        elif kind is FaultKind.MISSING_DIASTOLIC:
            obs["component"] = obs["component"][:1]
            value = fhir_obs.encode(obs)
        elif kind is FaultKind.SYS_BELOW_DIA:
            swapped = replace(bad, systolic=bad.diastolic, diastolic=bad.systolic)
            value = fhir_obs.encode(self._fhir(swapped))
        else:  # IMPLAUSIBLE_HIGH
            value = fhir_obs.encode(self._fhir(replace(bad, systolic=400.0)))
        return self._msg(value, at, Expected(bad.observation_id, fate, kind, reason))

    def _about_earlier(self, kind: FaultKind, r: Reading, g: GroundTruth) -> list[SimMessage]:
        """Messages about an earlier (or this) delivered reading: correction, retraction, ..."""
        at = r.effective_at
        if kind is FaultKind.DUPLICATE:
            # the very same bytes again, as a redelivery does
            last, value = self.history[-1]
            return [
                self._msg(value, at, Expected(last.observation_id, "duplicate", kind, "", last))
            ]
        if kind is FaultKind.PRELIMINARY:
            pre = replace(r, observation_id=f"{r.observation_id}-p")
            value = fhir_obs.encode(self._fhir(pre, status="preliminary"))
            return [self._msg(value, at, Expected(pre.observation_id, "ignored", kind))]
        target_i = int(self.rng.integers(len(self.history)))
        target, _ = self.history[target_i]
        if kind is FaultKind.AMENDED:
            shift = float(self.rng.choice((-8, -6, -4, 4, 6, 8)))
            amended = replace(
                target,
                systolic=target.systolic + shift,
                diastolic=target.diastolic + round(shift / 2),
                status="amended",
                version=str(int(target.version or "1") + 1),
            )
            value = fhir_obs.encode(self._fhir(amended, issued=at))
            self.history[target_i] = (amended, value)
            return [
                self._msg(value, at, Expected(target.observation_id, "reading", kind, "", amended))
            ]
        # ENTERED_IN_ERROR: a new version of the target with that status
        withdrawn = replace(target, version=str(int(target.version or "1") + 1))
        value = fhir_obs.encode(self._fhir(withdrawn, status="entered-in-error", issued=at))
        del self.history[target_i]
        return [self._msg(value, at, Expected(target.observation_id, "retracted", kind))]

    def run(self, readings: Iterator[tuple[Reading, GroundTruth]]) -> Iterator[SimMessage]:
        last_at: datetime | None = None
        for r, g in readings:
            last_at = r.effective_at
            kind = (
                _KINDS[int(self.rng.integers(len(_KINDS)))]
                if self.rng.random() < self.rate
                else None
            )
            if kind is FaultKind.OUT_OF_ORDER and self.held is None:
                self.held = (r, g)  # delivered after the next reading of this patient
                continue
            if kind is FaultKind.OUT_OF_ORDER:
                kind = None  # one late reading at a time
            yield self._clean(r, g, FaultKind.KPA_UNITS if kind is FaultKind.KPA_UNITS else None)
            if self.held is not None:
                late_r, late_g = self.held
                self.held = None
                late = self._clean(late_r, late_g, FaultKind.OUT_OF_ORDER)
                yield replace(late, emitted_at=r.effective_at)
            if kind is None or kind in (FaultKind.KPA_UNITS, FaultKind.OUT_OF_ORDER):
                continue
            if kind in _EXTRA_KINDS:
                yield self._extra(kind, r, r.effective_at)
            elif self.history:
                yield from self._about_earlier(kind, r, g)
        if self.held is not None and last_at is not None:
            late = self._clean(*self.held, FaultKind.OUT_OF_ORDER)
            self.held = None
            yield replace(late, emitted_at=last_at)


def _bundleable(msg: SimMessage) -> bool:
    (e,) = msg.expected
    return e.fate in ("reading", "retracted", "ignored") and e.fault is not FaultKind.DUPLICATE


def bundled(
    msgs: Iterator[SimMessage], size: int, kind: str = "collection"
) -> Iterator[SimMessage]:
    """Group runs of up to ``size`` consecutive Observation messages of one patient in Bundles.

    Dead letters and duplicates stay single messages (and end the current run first, so the
    order of Observations is kept).
    """
    run: list[SimMessage] = []

    def flush() -> Iterator[SimMessage]:
        if len(run) == 1:
            yield run[0]
        elif run:
            resources = [orjson.loads(m.value) for m in run]
            first = run[0].expected[0].observation_id
            value = fhir_obs.encode(
                fhir_obs.bundle(resources, bundle_id=f"bundle-{first}", kind=kind)
            )
            last = run[-1]
            yield SimMessage(
                last.key,
                value,
                last.patient_id,
                last.emitted_at,
                tuple(e for m in run for e in m.expected),
            )
        run.clear()

    for msg in msgs:
        if not _bundleable(msg):
            yield from flush()
            yield msg
            continue
        run.append(msg)
        if len(run) >= size:
            yield from flush()
    yield from flush()


def patient_messages(
    patient: cohort_mod.Patient,
    seed: int,
    *,
    fault_rate: float,
    hours: float | None = None,
    horizon_hours: float = 6.0,
    bundle_size: int = 1,
    bundle_type: str = "collection",
    start: datetime = cohort_mod.DEFAULT_START,
    home: cohort_mod.HomePlan | None = None,
) -> Iterator[SimMessage]:
    """One patient's messages in emission order (``bundle_size`` > 1: Bundles of up to that).

    ``home``: the patient is in the home cohort and sends that plan's readings, without
    injected faults (so the expected home averages and silences hold exactly).
    """
    if home is None:
        readings = cohort_mod.patient_readings(
            patient, seed, hours=hours, horizon_hours=horizon_hours, start=start
        )
        msgs = _PatientFaults(patient, seed, fault_rate).run(readings)
    else:
        until = None if hours is None else start + timedelta(hours=hours)
        planned = cohort_mod.home_readings(patient, home, seed, start=start)
        readings = (x for x in planned if until is None or x[0].effective_at < until)
        msgs = _PatientFaults(patient, seed, 0.0).run(readings)
    return bundled(msgs, bundle_size, bundle_type) if bundle_size > 1 else msgs


def worker_share(total: int, worker_index: int, worker_count: int) -> int:
    """This worker's part of a global bound (the first workers take the remainder)."""
    return total // worker_count + (1 if worker_index < total % worker_count else 0)


def messages(
    settings: Settings,
    *,
    worker_index: int = 0,
    worker_count: int = 1,
    hours: float | None = None,
    horizon_hours: float = 6.0,
    bundle_size: int = 1,
    bundle_type: str = "collection",
) -> Iterator[SimMessage]:
    """The simulator's messages for one worker, in event-time order, bounded by ``sim_count``.

    Worker ``w`` of ``n`` simulates the patients whose index ``% n == w`` and sends its share
    of ``settings.sim_count`` (0 = unbounded). With one worker this is the whole stream.
    ``bundle_size`` > 1 wraps runs of a patient's Observations in FHIR Bundles.
    """
    if not 0 <= worker_index < worker_count:
        raise ValueError(f"worker_index {worker_index} not in 0..{worker_count - 1}")
    seed = settings.sim_seed
    patients = cohort_mod.cohort(settings.sim_patients, seed)[worker_index::worker_count]
    plans = cohort_mod.home_plans(settings.sim_patients, seed, settings.sim_home_share)
    streams = [
        patient_messages(
            p,
            seed,
            fault_rate=settings.sim_fault_rate,
            hours=hours,
            horizon_hours=horizon_hours,
            bundle_size=bundle_size,
            bundle_type=bundle_type,
            start=settings.sim_start or cohort_mod.DEFAULT_START,
            home=plans.get(p.index),
        )
        for p in patients
    ]
    merged = heapq.merge(*streams, key=lambda m: m.emitted_at)
    bound = worker_share(settings.sim_count, worker_index, worker_count)
    for n, msg in enumerate(merged):
        if bound and n >= bound:
            return
        yield msg


def truth_record(msg: SimMessage, exp: Expected) -> dict[str, Any]:
    """One JSON-ready ground-truth line for an Observation of a message."""
    rec: dict[str, Any] = {
        "observation_id": exp.observation_id,
        "patient_id": msg.patient_id,
        "fate": exp.fate,
        "fault": exp.fault.value if exp.fault is not None else None,
        "reason": exp.reason or None,
    }
    if exp.reading is not None:
        rec["effective_at"] = utc_iso(exp.reading.effective_at)
        rec["systolic"] = exp.reading.systolic
        rec["diastolic"] = exp.reading.diastolic
        rec["version"] = exp.reading.version
    g = exp.truth
    if g is not None:
        rec["profile"] = g.profile
        rec["event_within_horizon"] = g.event_within_horizon
        rec["in_event"] = g.in_event
        rec["event_kind"] = g.event_kind
        rec.update(g.extra)
    return rec
