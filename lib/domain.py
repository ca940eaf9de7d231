"""Domain types shared by the simulator, the monitor, the model and the tests.

Pure data, no I/O. Every input message of the monitor ends as exactly one *outcome*
per Observation it carries (a Bundle may carry several):

    Reading      a scorable blood-pressure reading (status final / amended / corrected)
    Retraction   status entered-in-error: removes an earlier reading
    Ignored      a valid Observation not scored (preliminary, registered, cancelled, unknown)
    DeadLetter   anything that cannot be processed (original bytes go to the DLQ unchanged)

Every Reading ends as exactly one Assessment, which is either normal (-> JSON Lines file)
or anomalous (-> Elasticsearch ``bp-anomalies``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

# Outcome counters: every input message is accounted for by these names.
OUTCOMES = ("normal", "anomaly", "dead_letter", "ignored", "retracted", "duplicate")

# Categories and severities of the contract (shared/CONTRACT.md).
CATEGORIES = (
    "normal",
    "elevated",
    "hypertension_stage_1",
    "hypertension_stage_2",
    "hypertensive_crisis",
    "hypotension",
)
SEVERITIES = ("low", "moderate", "high", "critical")


@dataclass(frozen=True, slots=True)
class Reading:
    """One scorable blood-pressure reading, values in mm[Hg], time in UTC."""

    observation_id: str
    patient_id: str
    effective_at: datetime  # timezone-aware, UTC
    systolic: float
    diastolic: float
    status: str = "final"  # final | amended | corrected
    version: str = ""  # meta.versionId, or "" when absent
    source: str = ""  # "topic:partition:offset" of the message it came from

    @property
    def ts(self) -> float:
        """Event time as POSIX seconds."""
        return self.effective_at.timestamp()


@dataclass(frozen=True, slots=True)
class Retraction:
    """An ``entered-in-error`` Observation: the reading with this id is withdrawn."""

    observation_id: str
    patient_id: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A valid Observation that is counted but not scored (e.g. status preliminary)."""

    observation_id: str
    patient_id: str
    status: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that cannot be processed. ``raw`` is the original value, unchanged.

    ``reason`` is a short code (``invalid_json``, ``not_observation``, ``wrong_code``,
    ``missing_component``, ``bad_unit``, ``implausible_value``, ``missing_subject``,
    ``missing_time``, ``missing_id``, ...); ``detail`` is human text without PHI.
    """

    raw: bytes
    key: bytes | None
    reason: str
    detail: str
    source: str = ""
    headers: tuple[tuple[str, bytes], ...] = ()


Outcome = Reading | Retraction | Ignored | DeadLetter


@dataclass(frozen=True, slots=True)
class Features:
    """Trend features of a patient's window, computed *including* the current reading.

    The order of FEATURE_NAMES is the order of the model's input vector.
    """

    n: int
    mean_sys: float
    mean_dia: float
    sd_sys: float
    sd_dia: float
    arv_sys: float  # average real variability: mean |x_i - x_{i-1}|
    slope_sys_per_h: float
    slope_dia_per_h: float
    n_abnormal: int  # readings in the window at or above stage 1, or hypotensive
    hours_since_prev: float  # 0.0 for a patient's first reading
    last_sys: float
    last_dia: float

    def vector(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, name)) for name in FEATURE_NAMES)


FEATURE_NAMES: tuple[str, ...] = (
    "n",
    "mean_sys",
    "mean_dia",
    "sd_sys",
    "sd_dia",
    "arv_sys",
    "slope_sys_per_h",
    "slope_dia_per_h",
    "n_abnormal",
    "hours_since_prev",
    "last_sys",
    "last_dia",
)


@dataclass(frozen=True, slots=True)
class Assessment:
    """A reading with its window features, rule verdict and model risk."""

    reading: Reading
    features: Features
    category: str
    anomaly_types: tuple[str, ...]
    severity: str  # low | moderate | high | critical
    risk_score: float  # 0..1
    ruleset: str

    @property
    def is_anomaly(self) -> bool:
        return bool(self.anomaly_types)


def utc_iso(dt: datetime) -> str:
    """ISO 8601 with a ``Z`` suffix, millisecond precision."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What the simulator knows and the FHIR message does not carry (for training/evaluation)."""

    observation_id: str
    patient_id: str
    profile: str
    event_within_horizon: bool  # an acute event starts within the horizon after this reading
    in_event: bool  # the patient is inside an acute event at this reading
    event_kind: str = ""  # "crisis" | "hypotension" | ""
    extra: dict[str, float] = field(default_factory=dict)
