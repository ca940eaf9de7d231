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

``settings.sim_postpartum_share`` and ``settings.sim_low_adherence_share`` put those shares of
the patients in the remote-monitoring cohorts (:func:`lib.sim.cohort.rpm_plan_codes`): home
readings with a device on a course before the simulated time 0, without injected faults; a
postpartum patient's enrolment (:func:`enrollments`, for ``bp.enrollments``) is sent before
any reading, and her planned severe-range events are in the ground truth (``severe``). With
both shares 0 the stream is the one without them, byte for byte.
"""

from __future__ import annotations

import enum
import heapq
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, cast

import numpy as np
import orjson

from lib.domain import GroundTruth, Reading, utc_iso
from lib.settings import Settings
from lib.sim import cohort as cohort_mod
from lib.sim import draws
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


@dataclass(frozen=True, slots=True)
class SimEnrollment:
    """A postpartum patient's enrolment message for ``bp.enrollments`` (key = patient id, as
    its readings): ``{"program": "postpartum", "start": <local date of the first reading>}``."""

    key: bytes
    value: bytes
    patient_id: str

    def kafka_record(self) -> tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]:
        """``(key, value, headers)`` for :class:`lib.connectors.kafka.ConfirmedKafkaSink`."""
        return self.key, self.value, [("content-type", b"application/json")]


def enrollment(patient: cohort_mod.Patient, plan: cohort_mod.RpmPlan) -> SimEnrollment:
    """The enrolment of an enrolled RPM patient (``plan.program`` not empty)."""
    value = orjson.dumps({"program": plan.program, "start": plan.first_date.isoformat()})
    return SimEnrollment(patient.patient_id.encode(), value, patient.patient_id)


def enrollments(
    settings: Settings, *, worker_index: int = 0, worker_count: int = 1
) -> list[SimEnrollment]:
    """The enrolments of worker ``worker_index``'s patients (``index % worker_count``), by
    patient index: one per postpartum patient. Empty when the postpartum share is 0."""
    if settings.sim_postpartum_share <= 0:
        return []
    seed = settings.sim_seed
    indexes = np.arange(worker_index, settings.sim_patients, worker_count, dtype=np.int64)
    codes = _rpm_codes(settings, indexes)
    rows = np.flatnonzero(codes == 1 + cohort_mod.RPM_KINDS.index("postpartum"))
    if len(rows) == 0:
        return []
    attrs = cohort_mod.attributes(seed, indexes[rows])
    start = (settings.sim_start or cohort_mod.DEFAULT_START).astimezone(UTC)
    out = []
    for row in range(len(rows)):
        patient = cohort_mod.make_patient(seed, int(attrs.indexes[row]), attrs, row)
        out.append(enrollment(patient, cohort_mod.rpm_plan(patient, "postpartum", seed, start)))
    return out


def _rpm_codes(settings: Settings, indexes: np.ndarray) -> np.ndarray:
    return cohort_mod.rpm_plan_codes(
        settings.sim_seed,
        indexes,
        settings.sim_home_share,
        settings.sim_postpartum_share,
        settings.sim_low_adherence_share,
    )


_TAG_FAULTS = 0xFA
_FAULT_DRAWS = 8  # draws reserved per reading for its faults
# a delivered reading a later fault may refer to: seq, effective ms, systolic, diastolic,
# version, status (0 final, 1 amended), kPa (0/1), issued ms (-1: none)
_ENTRY = struct.Struct("<iqddBBBq")
_STATUS = ("final", "amended")


class _PatientFaults:
    """Fault injection for one patient's readings, one reading at a time.

    Its state between readings is small: the last :data:`_HISTORY` delivered readings as
    packed numbers (:attr:`history`, rebuilt into bytes only when a fault refers to one), and
    a reading held back for out-of-order delivery (:attr:`held`). Draws are numbered by the
    reading (:mod:`lib.sim.draws`).
    """

    __slots__ = ("held", "history", "key", "p", "rate", "rng_key", "seed")

    def __init__(
        self,
        patient: cohort_mod.Patient,
        seed: int,
        rate: float,
        history: bytes = b"",
        held: tuple[Reading, GroundTruth] | None = None,
        rng_key: int | None = None,
    ) -> None:
        self.p = patient
        self.seed = seed
        self.rate = rate
        if rng_key is None:
            rng_key = draws.stream_key(seed, _TAG_FAULTS, patient.index)
        self.rng_key = rng_key
        self.key = patient.patient_id.encode()
        self.history = history
        self.held = held

    def _fhir(self, reading: Reading, **kw: Any) -> dict[str, Any]:
        p = self.p
        kw.setdefault("setting", reading.setting or None)
        return fhir_obs.to_fhir(
            reading, p.name, utc_offset_min=p.utc_offset_min, device=p.device, arm=p.arm, **kw
        )

    def _json(
        self,
        r: Reading,
        *,
        unit: str = "mm[Hg]",
        status: str | None = None,
        issued: datetime | None = None,
        ms: int | None = None,
    ) -> bytes:
        """``encode(self._fhir(r, ...))``, written without the dict (``ms``: the effective time
        in milliseconds, when the caller has it)."""
        p = self.p
        return fhir_obs.observation_json(
            r.observation_id,
            r.patient_id,
            p.name,
            cohort_mod.ms_of(r.effective_at) if ms is None else ms,
            r.systolic,
            r.diastolic,
            status=status or r.status,
            version=r.version,
            utc_offset_min=p.utc_offset_min,
            device=p.device,
            arm=p.arm,
            unit=unit,
            issued_ms=None if issued is None else cohort_mod.ms_of(issued),
            setting=r.setting or None,
        )

    def _msg(self, value: bytes, at: datetime, *expected: Expected) -> SimMessage:
        return SimMessage(self.key, value, self.p.patient_id, at, expected)

    # -- the history of delivered readings, packed ----------------------------------------------
    def _remember(
        self, seq: int, r: Reading, kpa: bool, issued: datetime | None, ms: int | None = None
    ) -> None:
        if self.rate <= 0:
            return  # no fault will refer to it
        entry = _ENTRY.pack(
            seq,
            cohort_mod.ms_of(r.effective_at) if ms is None else ms,
            r.systolic,
            r.diastolic,
            int(r.version or "1"),
            _STATUS.index(r.status),
            kpa,
            -1 if issued is None else cohort_mod.ms_of(issued),
        )
        self.history = (self.history + entry)[-_HISTORY * _ENTRY.size :]

    def _entries(self) -> int:
        return len(self.history) // _ENTRY.size

    def _entry(self, i: int) -> tuple[int, Reading, bytes]:
        """``(seq, reading, bytes as delivered)`` of history entry ``i``."""
        seq, ms, sys_v, dia_v, version, status, kpa, issued = _ENTRY.unpack_from(
            self.history, i * _ENTRY.size
        )
        r = Reading(
            observation_id=f"bp-{self.seed}-{self.p.index:05d}-{seq:06d}",
            patient_id=self.p.patient_id,
            effective_at=cohort_mod.at_ms(ms),
            systolic=sys_v,
            diastolic=dia_v,
            status=_STATUS[status],
            version=str(version),
        )
        at = None if issued < 0 else cohort_mod.at_ms(issued)
        value = self._json(r, unit="kPa" if kpa else "mm[Hg]", issued=at, ms=ms)
        return seq, r, value

    def _drop(self, i: int) -> None:
        n = _ENTRY.size
        self.history = self.history[: i * n] + self.history[(i + 1) * n :]

    # -- messages -------------------------------------------------------------------------------
    def _clean(
        self,
        seq: int,
        r: Reading,
        g: GroundTruth,
        fault: FaultKind | None = None,
        ms: int | None = None,
    ) -> SimMessage:
        kpa = fault is FaultKind.KPA_UNITS
        if ms is None:
            ms = cohort_mod.ms_of(r.effective_at)
        value = self._json(r, unit="kPa" if kpa else "mm[Hg]", ms=ms)
        self._remember(seq, r, kpa, None, ms)
        return self._msg(
            value, r.effective_at, Expected(r.observation_id, "reading", fault, "", r, g)
        )

    def _u(self, seq: int, j: int) -> float:
        return draws.uniform(self.rng_key, seq * _FAULT_DRAWS + j)

    def _extra(self, kind: FaultKind, seq: int, r: Reading, at: datetime) -> SimMessage:
        """An extra message derived from ``r`` (own id): a dead letter, or skipped FHIR."""
        fate, reason = EXPECTED[kind]
        bad = replace(r, observation_id=f"{r.observation_id}-x")
        obs = self._fhir(bad)
        if kind is FaultKind.MALFORMED_JSON:
            raw = fhir_obs.encode(obs)
            value = raw[: int(len(raw) * (0.3 + 0.6 * self._u(seq, 2)))]
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
            value = self._json(swapped)
        else:  # IMPLAUSIBLE_HIGH
            value = self._json(replace(bad, systolic=400.0))
        return self._msg(value, at, Expected(bad.observation_id, fate, kind, reason))

    def _about_earlier(self, kind: FaultKind, seq: int, r: Reading) -> list[SimMessage]:
        """Messages about an earlier (or this) delivered reading: correction, retraction, ..."""
        at = r.effective_at
        if kind is FaultKind.DUPLICATE:
            # the very same bytes again, as a redelivery does
            _, last, value = self._entry(self._entries() - 1)
            return [
                self._msg(value, at, Expected(last.observation_id, "duplicate", kind, "", last))
            ]
        if kind is FaultKind.PRELIMINARY:
            pre = replace(r, observation_id=f"{r.observation_id}-p")
            value = self._json(pre, status="preliminary")
            return [self._msg(value, at, Expected(pre.observation_id, "ignored", kind))]
        target_i = min(int(self._u(seq, 2) * self._entries()), self._entries() - 1)
        target_seq, target, _ = self._entry(target_i)
        if kind is FaultKind.AMENDED:
            shift = float(_SHIFTS[min(int(self._u(seq, 3) * len(_SHIFTS)), len(_SHIFTS) - 1)])
            amended = replace(
                target,
                systolic=target.systolic + shift,
                diastolic=target.diastolic + round(shift / 2),
                status="amended",
                version=str(int(target.version or "1") + 1),
            )
            value = self._json(amended, issued=at)
            self._drop(target_i)
            self._remember(target_seq, amended, False, at)
            return [
                self._msg(value, at, Expected(target.observation_id, "reading", kind, "", amended))
            ]
        # ENTERED_IN_ERROR: a new version of the target with that status
        withdrawn = replace(target, version=str(int(target.version or "1") + 1))
        value = self._json(withdrawn, status="entered-in-error", issued=at)
        self._drop(target_i)
        return [self._msg(value, at, Expected(target.observation_id, "retracted", kind))]

    def on_reading(
        self, seq: int, r: Reading, g: GroundTruth, ms: int | None = None
    ) -> list[SimMessage]:
        """The messages that reading ``seq`` of the patient sends (its faults included);
        ``ms``: the reading's effective time in milliseconds since the epoch, if known."""
        kind = None
        if self.rate > 0 and self._u(seq, 0) < self.rate:
            kind = _KINDS[min(int(self._u(seq, 1) * len(_KINDS)), len(_KINDS) - 1)]
        if kind is FaultKind.OUT_OF_ORDER and self.held is None:
            self.held = (r, g)  # delivered after the next reading of this patient
            return []
        if kind is FaultKind.OUT_OF_ORDER:
            kind = None  # one late reading at a time
        out = [
            self._clean(seq, r, g, FaultKind.KPA_UNITS if kind is FaultKind.KPA_UNITS else None, ms)
        ]
        if self.held is not None:
            late_r, late_g = self.held
            self.held = None
            late_seq = int(late_r.observation_id.rsplit("-", 1)[1])
            late = self._clean(late_seq, late_r, late_g, FaultKind.OUT_OF_ORDER)
            out.append(replace(late, emitted_at=r.effective_at))
        if kind is None or kind in (FaultKind.KPA_UNITS, FaultKind.OUT_OF_ORDER):
            return out
        if kind in _EXTRA_KINDS:
            out.append(self._extra(kind, seq, r, r.effective_at))
        elif self._entries():
            out.extend(self._about_earlier(kind, seq, r))
        return out

    def finish(self, last_at: datetime | None) -> list[SimMessage]:
        """The reading still held back when the patient's stream ends, sent last."""
        if self.held is None or last_at is None:
            return []
        late_r, late_g = self.held
        self.held = None
        late_seq = int(late_r.observation_id.rsplit("-", 1)[1])
        late = self._clean(late_seq, late_r, late_g, FaultKind.OUT_OF_ORDER)
        return [replace(late, emitted_at=last_at)]

    def run(self, readings: Iterator[tuple[Reading, GroundTruth]]) -> Iterator[SimMessage]:
        """The messages of a whole stream of readings (numbered in order from 0)."""
        last_at: datetime | None = None
        for seq, (r, g) in enumerate(readings):
            last_at = r.effective_at
            yield from self.on_reading(seq, r, g)
        yield from self.finish(last_at)


_SHIFTS = (-8, -6, -4, 4, 6, 8)


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
    rpm: str | None = None,
) -> Iterator[SimMessage]:
    """One patient's messages in emission order (``bundle_size`` > 1: Bundles of up to that).

    ``home``: the patient is in the home cohort and sends that plan's readings, without
    injected faults (so the expected home averages and silences hold exactly); ``rpm``: the
    patient is in that RPM cohort (a key of :data:`lib.sim.cohort.RPM_KINDS`), also without
    faults. The same messages as the patient's in :func:`messages`, unbundled.
    """
    if rpm is not None:
        until = None if hours is None else start + timedelta(hours=hours)
        course = cohort_mod.rpm_readings(patient, rpm, seed, start=start)
        readings = (x for x in course if until is None or x[0].effective_at < until)
        msgs = _PatientFaults(patient, seed, 0.0).run(readings)
    elif home is None:
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


_ROW_BITS = 32  # a heap key is (millisecond after the origin) << _ROW_BITS | row
_ROW_MASK = (1 << _ROW_BITS) - 1
_ORIGIN_BEFORE_MS = 30 * 86_400_000  # the home week and office visit come after it, RPM
# courses may start before it (a negative key: still in order)
_START_CHUNK = 8192  # patients whose starting states are made at once
_LIVE = 16_384  # patients kept unpacked between their readings (about 1 KB each)


class _Simulator:
    """One worker's patients: a heap of ``(next message time, row)`` and packed states.

    Memory is a few hundred bytes per patient, whatever the run's length: the patients'
    attributes as small integers (:func:`lib.sim.cohort.attributes`), one heap key, the
    trajectory as packed numbers (:class:`lib.sim.cohort.Trajectory`, made at the
    patient's first reading) and, with faults, the packed history of delivered readings.
    Each step takes the patient due first, makes its next reading (or ``bundle_size``
    readings) and puts it back at the time of its next one.

    Two shortcuts, neither of which changes a byte: the :data:`_LIVE` patients stepped last
    stay unpacked (a cohort of that size is never packed), and the starting states are made
    :data:`_START_CHUNK` patients at a time, in the order of their first readings
    (:func:`lib.sim.cohort.start_states`: numpy over the patients instead of some 50 scalar
    draws each for the event chain, the cost of a first reading).
    """

    def __init__(
        self,
        settings: Settings,
        worker_index: int,
        worker_count: int,
        hours: float | None,
        horizon_hours: float,
        bundle_size: int,
        bundle_type: str,
    ) -> None:
        self.seed = seed = settings.sim_seed
        self.rate = settings.sim_fault_rate
        self.hours = hours
        self.horizon = horizon_hours
        self.bundle_size = bundle_size
        self.bundle_type = bundle_type
        start = settings.sim_start or cohort_mod.DEFAULT_START
        self.start = start.astimezone(UTC)
        self.start_us = cohort_mod.epoch_us(self.start)
        self.origin_ms = self.start_us // 1000 - _ORIGIN_BEFORE_MS
        indexes = np.arange(worker_index, settings.sim_patients, worker_count, dtype=np.int64)
        if len(indexes) > _ROW_MASK:
            raise ValueError(f"at most {_ROW_MASK:,} patients per worker: add workers")
        self.attrs = cohort_mod.attributes(seed, indexes)
        self.home_kind, self.home_days = cohort_mod.home_plan_codes(
            seed, indexes, settings.sim_home_share
        )
        self.rpm_kind = _rpm_codes(settings, indexes)
        # packed trajectory, or the next home reading, or the next RPM slot
        self.states: list[Any] = [None] * len(indexes)
        self.history: list[bytes] = [b""] * len(indexes) if self.rate > 0 else []
        self.held: dict[int, tuple[Reading, GroundTruth]] = {}  # out-of-order, in flight
        # the patients stepped last, unpacked (least recently stepped first)
        self.live: OrderedDict[int, tuple[cohort_mod.Trajectory, _PatientFaults]] = OrderedDict()
        # draw-stream keys: measurements, event chain, faults
        self.keys = np.stack(
            [draws.stream_keys(seed, tag, indexes) for tag in cohort_mod.TRAJECTORY_TAGS]
            + [draws.stream_keys(seed, _TAG_FAULTS, indexes)],
            axis=1,
        )
        first_h = cohort_mod.first_reading_hours(seed, self.attrs)
        first_ms = (self.start_us + np.rint(first_h * 3_600_000_000).astype(np.int64)) // 1000
        keys = ((first_ms - self.origin_ms) << _ROW_BITS) | np.arange(len(indexes))
        clinical = (self.home_kind == 0) & (self.rpm_kind == 0)
        if hours is not None:
            clinical &= first_h < hours
        keys = keys[clinical]
        # clinical patients in the order of their first reading: their starting states are
        # made in chunks (lib.sim.cohort.start_states) as the first of a chunk comes due
        self.first_order = np.flatnonzero(clinical)[np.argsort(keys, kind="stable")]
        self.first_done = 0
        # (the keys of the first clinical readings are computed in int64, which wraps: they
        # sort before every other key, as they always have; the other keys are Python ints)
        heap = keys.tolist()
        for row in np.flatnonzero(self.home_kind).tolist():
            heap.append(self._home_key(row, 0))
        for row in np.flatnonzero(self.rpm_kind).tolist():
            key = self._rpm_key(row, 0)
            if key is not None:
                heap.append(key)
        heapq.heapify(heap)
        self.heap = heap

    # -- patients -------------------------------------------------------------------------------
    def _patient(self, row: int) -> cohort_mod.Patient:
        return cohort_mod.make_patient(self.seed, int(self.attrs.indexes[row]), self.attrs, row)

    def _plan(self, row: int) -> cohort_mod.HomePlan:
        kind = cohort_mod.HOME_KINDS[self.home_kind[row] - 1]
        return cohort_mod.HomePlan(kind, int(self.home_days[row]))

    def _key(self, ms: int, row: int) -> int:
        return ((ms - self.origin_ms) << _ROW_BITS) | row

    def _home_key(self, row: int, j: int) -> int | None:
        """The key of home reading ``j`` (None: none, the patient is done)."""
        plan = self._plan(row)
        if j >= plan.readings:
            return None
        patient = self._patient(row)
        week0 = cohort_mod.home_week_start(patient, self.start)
        r = cohort_mod.home_reading(patient, plan, self.seed, j, week0)
        if self.hours is not None and r.effective_at >= self.start + timedelta(hours=self.hours):
            return None
        return self._key(cohort_mod.ms_of(r.effective_at), row)

    def _rpm_plan(self, row: int) -> tuple[cohort_mod.Patient, cohort_mod.RpmPlan]:
        patient = self._patient(row)
        kind = cohort_mod.RPM_KINDS[self.rpm_kind[row] - 1]
        return patient, cohort_mod.rpm_plan(patient, kind, self.seed, self.start)

    def _rpm_key(
        self,
        row: int,
        c: int,
        made: tuple[cohort_mod.Patient, cohort_mod.RpmPlan] | None = None,
    ) -> int | None:
        """The key of the patient's first RPM reading at or after slot ``c`` (None: done);
        that slot becomes the patient's state. Negative keys (before the origin) sort
        correctly among the Python-int keys."""
        patient, plan = made or self._rpm_plan(row)
        found = cohort_mod.rpm_next(patient, plan, self.seed, c)
        if found is None:
            return None
        c_next, r, _ = found
        if self.hours is not None and r.effective_at >= self.start + timedelta(hours=self.hours):
            return None
        self.states[row] = c_next
        return self._key(cohort_mod.ms_of(r.effective_at), row)

    # -- steps ----------------------------------------------------------------------------------
    def _home_step(self, row: int) -> tuple[list[SimMessage], int | None]:
        """The next home reading's messages and the patient's next key (None: done)."""
        j = self.states[row] or 0
        patient, plan = self._patient(row), self._plan(row)
        week0 = cohort_mod.home_week_start(patient, self.start)
        first = cohort_mod.home_reading(patient, plan, self.seed, plan.office_readings, week0)
        faults = _PatientFaults(patient, self.seed, 0.0)
        out: list[SimMessage] = []
        for _ in range(self.bundle_size):
            r = cohort_mod.home_reading(patient, plan, self.seed, j, week0)
            g = cohort_mod.home_truth(patient, plan, r, first.effective_at)
            out.extend(faults.on_reading(j, r, g))
            j += 1
            if self._home_key(row, j) is None:
                break
        self.states[row] = j
        return out, self._home_key(row, j)

    def _rpm_step(self, row: int) -> tuple[list[SimMessage], int | None]:
        """The next RPM reading's messages and the patient's next key (None: done)."""
        made = self._rpm_plan(row)
        patient, plan = made
        faults = _PatientFaults(patient, self.seed, 0.0)
        out: list[SimMessage] = []
        key = None
        for _ in range(self.bundle_size):
            c = self.states[row]
            r, severe = cast(
                tuple[Reading, str], cohort_mod.rpm_reading(patient, plan, self.seed, c)
            )
            out.extend(faults.on_reading(c, r, cohort_mod.rpm_truth(patient, plan, r, severe)))
            key = self._rpm_key(row, c + 1, made)
            if key is None:
                self.states[row] = None
                break
        return out, key

    def _load(self, row: int) -> tuple[cohort_mod.Trajectory, _PatientFaults]:
        """A clinical patient's trajectory and fault state, from its packed state."""
        patient = self._patient(row)
        state = self.states[row]
        if state is None and self.first_done < len(self.first_order):
            state = self._start_chunk(row)
        traj_key, ev_key, fault_key = self.keys[row].tolist()
        if state is None:
            traj = cohort_mod.Trajectory.start(patient, self.seed, (traj_key, ev_key))
        else:
            traj = cohort_mod.Trajectory.unpack(patient, self.seed, state, (traj_key, ev_key))
        faults = _PatientFaults(
            patient,
            self.seed,
            self.rate,
            self.history[row] if self.rate > 0 else b"",
            self.held.pop(row, None) if self.held else None,
            fault_key,
        )
        return traj, faults

    def _unload(self, row: int, live: tuple[cohort_mod.Trajectory, _PatientFaults]) -> None:
        """Pack a patient's state back (it leaves :attr:`live`)."""
        traj, faults = live
        self.states[row] = traj.pack()
        if self.rate > 0:
            self.history[row] = faults.history
        if faults.held is not None:
            self.held[row] = faults.held

    def _clinical_step(self, row: int) -> tuple[list[SimMessage], int | None]:
        """The next clinical reading's messages and the patient's next key (None: done)."""
        live = self.live.pop(row, None)
        traj, faults = self._load(row) if live is None else live
        out: list[SimMessage] = []
        last_at = None
        for _ in range(self.bundle_size):
            seq = traj.seq
            r, g = traj.step(self.seed, self.start_us, self.horizon)
            last_at = r.effective_at
            out.extend(faults.on_reading(seq, r, g, traj.ms))
            if self.hours is not None and traj.t >= self.hours:
                out.extend(faults.finish(last_at))
                self.states[row] = None
                if self.rate > 0:
                    self.history[row] = b""
                return out, None
        self.live[row] = (traj, faults)
        if len(self.live) > _LIVE:
            self._unload(*self.live.popitem(last=False))
        return out, self._key(cohort_mod.reading_ms(self.start_us, traj.t), row)

    def _start_chunk(self, row: int) -> bytes | None:
        """Make the starting states of the next :data:`_START_CHUNK` patients due to start
        (``row`` among them); ``row``'s state."""
        begin = self.first_done
        rows = self.first_order[begin : begin + _START_CHUNK]
        self.first_done = begin + len(rows)
        states = self.states
        made = cohort_mod.start_states(self.seed, self.attrs, rows)
        for r, st in zip(rows.tolist(), made, strict=True):
            if states[r] is None:
                states[r] = st
        return states[row]

    def __iter__(self) -> Iterator[SimMessage]:
        heap = self.heap
        home, rpm = self.home_kind, self.rpm_kind
        while heap:
            row = heap[0] & _ROW_MASK
            if home[row]:
                out, key = self._home_step(row)
            elif rpm[row]:
                out, key = self._rpm_step(row)
            else:
                out, key = self._clinical_step(row)
            if key is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, key)
            if self.bundle_size > 1:
                yield from bundled(iter(out), self.bundle_size, self.bundle_type)
            else:
                yield from out


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
    ``bundle_size`` > 1 wraps each patient's next run of up to that many readings in FHIR
    Bundles (sent at the time of the run's first reading). A patient's messages depend
    neither on the worker count nor on the cohort's size.
    """
    if not 0 <= worker_index < worker_count:
        raise ValueError(f"worker_index {worker_index} not in 0..{worker_count - 1}")
    sim = _Simulator(
        settings, worker_index, worker_count, hours, horizon_hours, bundle_size, bundle_type
    )
    bound = worker_share(settings.sim_count, worker_index, worker_count)
    return islice(sim, bound) if bound else iter(sim)


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
