"""Domain types shared by the simulator, the monitor, the model and the tests.

Pure data, no I/O. Every input message of the monitor ends as exactly one *outcome*
per Observation it carries (a Bundle may carry several):

    Reading      a scorable blood-pressure reading (status final / amended / corrected)
    Retraction   status entered-in-error: removes an earlier reading
    Ignored      a valid BP Observation not scored: a status such as preliminary, a value
                 not measured (``dataAbsentReason``), or an average BP (``Average``, counted
                 as ignored until the home-BP protocol scores it)
    Skipped      valid FHIR that is not a BP reading (a Patient, a weight Observation, an
                 OperationOutcome in a searchset, an empty searchset): counted, never a dead
                 letter
    DeadLetter   a message that cannot be processed (original bytes go to the DLQ unchanged),
                 at most one per message

In a patient's window a Reading becomes a Duplicate (already held: not scored again) or an
Assessment, which is either normal (-> JSON Lines file) or anomalous (-> Elasticsearch
``bp-anomalies``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

# Outcome counters: every input message is accounted for by these names.
OUTCOMES = ("normal", "anomaly", "dead_letter", "ignored", "retracted", "duplicate", "skipped")

# Dead-letter reason codes (the DLQ header ``error``), in the order the parser checks them:
# the first problem found is the one reported. See lib.monitor.fhir for each one's meaning.
DEAD_LETTER_REASONS = (
    "too_large",
    "invalid_json",
    "not_observation",
    "wrong_code",
    "missing_id",
    "bad_status",
    "missing_subject",
    "missing_time",
    "bad_time",
    "missing_timezone",
    "missing_component",
    "bad_unit",
    "implausible_value",
    "internal_error",  # a defect in the parser (logged with the exception type only)
    "parser_error",  # the parser raised although it promises not to (caught around it)
    "no_value",  # a Kafka message without a value (a tombstone)
    "empty_bundle",  # the parser returned no outcome for a message
    "retention_gap",  # not a message: input offsets the broker deleted before they were read
)

# Categories and severities of the contract (docs/contract.md).
CATEGORIES = (
    "normal",
    "elevated",
    "hypertension_stage_1",
    "hypertension_stage_2",
    "hypertensive_crisis",
    "hypotension",
)
SEVERITIES = ("low", "moderate", "high", "critical")
# Alert tiers and the episode kinds they are decided by (lib.monitor.alerts, "Tiers")
TIERS = ("urgent", "review")
TIER_KEYS = (
    "hypertensive_crisis",
    "combined_critical",
    "systolic_hypotension",
    "diastolic_hypotension",
    "systolic_hypertension",
    "diastolic_hypertension",
    "high_risk",
    "home_hypertension",
    "no_data",
    "severe_range_bp",  # a program's confirmed severe-range episode (lib.monitor.programs)
)
DEFAULT_URGENT = (
    "hypertensive_crisis",
    "combined_critical",
    "systolic_hypotension",
    "severe_range_bp",
)


@dataclass(slots=True)
class Reading:
    """One scorable blood-pressure reading, values in mm[Hg], time in UTC.

    A value: never changed after it is made. Not ``frozen`` (as Assessment is not) because one
    is made per reading on the hot path, and a frozen dataclass's ``__init__`` costs a call per
    field (benchmarks/README.md has the measurement).
    """

    observation_id: str
    patient_id: str
    effective_at: datetime  # timezone-aware, UTC
    systolic: float
    diastolic: float
    status: str = "final"  # final | amended | corrected
    version: str = ""  # meta.versionId, or "" when absent
    source: str = ""  # "topic:partition:offset" of the message it came from
    precision: str = ""  # "" (a time of day), or "day" | "month" | "year" for a date only
    # qualifiers as sent, "" when absent (codes and labels only, never names)
    body_position: str = ""  # observation-bodyPosition extension
    body_site: str = ""  # bodySite, the cuff location
    setting: str = ""  # Vitals IG MeasurementSettingExt: home | clinic | hospital | other code
    device: str = ""  # device display, or its reference
    # the UTC offset (minutes) the sender's time carried, None for a date without a time:
    # the reading's local date (lib.monitor.adherence.local_day); never in documents
    utc_offset: int | None = None

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
    """A valid BP Observation that is counted but not scored.

    ``reason``: ``status`` (preliminary, registered, cancelled, unknown) or ``data_absent``
    (``dataAbsentReason`` instead of a value: "not measured" is not an error).
    """

    observation_id: str
    patient_id: str
    status: str
    source: str = ""
    reason: str = "status"


@dataclass(frozen=True, slots=True)
class Average:
    """An average blood pressure (LOINC 96607-7) over a period: accepted, not a reading.

    Counted as ``ignored`` (reason ``average``); it gives its own ``bp-home-averages``
    document (``origin`` ``reported``) and may open or resolve a home-hypertension episode.
    """

    observation_id: str
    patient_id: str
    start: datetime
    end: datetime
    systolic: float
    diastolic: float
    status: str = "final"
    version: str = ""
    source: str = ""
    reason: str = "average"


@dataclass(frozen=True, slots=True)
class Skipped:
    """Valid FHIR that is not a blood-pressure reading: counted as ``skipped``, not dead-lettered.

    ``what`` names the resource type, and the Observation code for an Observation
    (``Patient``, ``Observation 29463-7``): never an id or a value.
    """

    what: str
    key: bytes | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that cannot be processed. ``raw`` is the original value, unchanged.

    ``reason`` is one of :data:`DEAD_LETTER_REASONS`; ``detail`` is human text without PHI.
    """

    raw: bytes
    key: bytes | None
    reason: str
    detail: str
    source: str = ""
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class RetentionGap:
    """Offsets ``from_offset`` to ``to_offset - 1`` of an input partition that the broker deleted
    (retention) before the monitor read them: readings lost before they reached bpwatch.

    Not a message: the input source reports it when a resumed partition's next offset is
    older than the earliest offset the broker still holds. Counted as ``gap`` (offsets
    skipped) and written to the dead-letter topic, once per gap, with reason
    ``retention_gap``.
    """

    topic: str
    partition: int
    from_offset: int
    to_offset: int
    key: None = None  # no message key: routed like an outcome without a patient

    @property
    def skipped(self) -> int:
        return self.to_offset - self.from_offset

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}:{self.from_offset}"


Outcome = Reading | Retraction | Ignored | Average | Skipped | DeadLetter | RetentionGap


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A reading already held in the patient's window (same id and version): not re-scored."""

    observation_id: str
    patient_id: str
    version: str
    source: str = ""


class Features(NamedTuple):
    """Trend features of a patient's window, computed *including* the current reading.

    The one list of features: :data:`FEATURE_NAMES` is derived from these fields, in this
    order, which is the order of the model's input vector; the anomaly documents' ``features``
    object and the index template (checked by a test) follow it. A named tuple: a value, made
    once per reading (``Features._make`` builds one without a Python-level ``__init__``), and
    a row of the risk model's input matrix as it is.
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
        return tuple(map(float, self))

    def as_dict(self) -> dict[str, float | int]:
        """The features as a document, keys in FEATURE_NAMES order."""
        return dict(zip(FEATURE_NAMES, self))  # noqa: B905 (a Features has every name)


FEATURE_NAMES: tuple[str, ...] = Features._fields


@dataclass(slots=True)
class Assessment:
    """A reading with its window features, rule verdict and model risk (a value, see Reading:
    ``lib.monitor.state`` sets ``risk_score`` once, from the batch's one model call, before it
    hands the Assessment on)."""

    reading: Reading
    features: Features
    category: str
    anomaly_types: tuple[str, ...]
    severity: str  # low | moderate | high | critical
    risk_score: float  # 0..1
    ruleset: str
    category_label: str = ""  # the rule set's own name of the band ("severe hypertension")
    program: str = ""  # the program whose dates cover the reading ("" when none)
    program_band: str = ""  # the program's band of the reading (lib.monitor.programs)

    @property
    def is_anomaly(self) -> bool:
        return bool(self.anomaly_types)


# What the per-patient step makes of an Outcome: each is counted under one of OUTCOMES.
Processed = (
    Assessment | Retraction | Ignored | Average | Skipped | DeadLetter | Duplicate | RetentionGap
)


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
    extra: dict[str, Any] = field(default_factory=dict)  # numbers; home cohort: also text
