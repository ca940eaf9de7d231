"""Real-time alert episodes: one page per clinical episode, never one per reading.

Pure, deterministic, no I/O. A patient's alert state is part of the patient's state,
:class:`lib.monitor.patient.Patient` (``alerts``, ``home_episode``, ``seen``), in the monitor's
``patient_windows`` step keyed by patient id: ``Patient.process`` runs the
:class:`EpisodeTracker` on each assessment right after the window, rules and risk;
``lib.monitor.documents`` shapes the events for Kafka and Elasticsearch.

Conditions (detected on every :class:`lib.domain.Assessment`)
-------------------------------------------------------------
``hypertensive_crisis``     category or anomaly type ``hypertensive_crisis``
``systolic_hypertension``   anomaly type ``systolic_hypertension``
``diastolic_hypertension``  anomaly type ``diastolic_hypertension``
``combined_critical``       systolic *and* diastolic in the critical range of the rule set
                            (at or above ``AlertPolicy.critical``), or a crisis with
                            ``risk_score >= critical_risk``
``hypotension``             category or anomaly type ``hypotension``
``high_risk``               ``risk_score >= risk_threshold``

Beside the per-reading conditions, :func:`home_step` keeps a patient's ``home_hypertension``
episode (family ``home``) from the home-BP protocol's averages (``lib.monitor.home``), and
:class:`NoDataRule` the ``no_data`` episode (family ``no_data``) of a patient who fell silent.

Episodes
--------
Conditions are grouped in three *episode families*; a patient has at most one open
episode per family:

* ``hypertension``: systolic / diastolic hypertension < crisis < combined critical. Moving up
  this ladder (or up in severity, e.g. stage 1 → stage 2 → crisis) is an **escalation** of the
  same episode, not a new one. Going back down does not page.
* ``hypotension``: escalates when the reading's severity rank rises.
* ``high_risk``: the model's early warning. It is **not opened while an acute
  (hypertension or hypotension) episode is open** for the patient: that patient is already
  being paged about, and the risk score travels in every alert.

Events per episode: ``opened`` (first reading with the condition at or above
``open_severity``), ``escalated`` (each strictly higher level), ``reminder`` (optional, every
``reminder_every`` of *event time* while the condition persists), ``resolved``.

Resolution hysteresis: an episode resolves only after ``resolve_after`` (default 3)
consecutive in-order readings without any condition of its family. A reading that flaps
back into the condition resets the count, so a patient oscillating around a threshold is
paged once. There is no wall-clock timeout: an episode of a patient who stops sending
readings stays open (reclaiming an idle patient drops or packs its window and home series,
never its open episodes).

Ordering and replays: the tracker ignores an assessment whose (observation id, version)
equals the last one it processed. A late reading (event time before the newest one seen)
may open or escalate, but never counts towards resolution.

Alert ids are deterministic: ``sha256(patient | family | episode start observation id |
event | discriminator)`` (discriminator: the level reached for ``escalated``, the ordinal
for ``reminder``), so a replay produces the same ids and Elasticsearch (``_id`` =
``alert_id``) never holds a duplicate.

State per patient is a small picklable :class:`PatientAlertState` (``Patient.alerts``), or
``None`` when the patient has no open episode, so its memory is proportional to the number of
patients currently in an episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from lib.domain import DEFAULT_URGENT, SEVERITIES, TIER_KEYS, Assessment
from lib.monitor.alert_events import EVENTS, REVIEW, URGENT, AlertEvent, _digest
from lib.monitor.home_alerts import HOME_CONDITION, HOME_FAMILY, _HomeEpisode, home_step
from lib.monitor.no_data import NO_DATA_CONDITION, NO_DATA_FAMILY, NoDataRule, _LastSeen
from lib.monitor.rules import cuts_at, get_ruleset
from lib.monitor.window import deviation_from_baseline

# Re-exported: the episode kinds beside the reading episodes (their own modules), and the
# names earlier snapshots pickled under this module (``_HomeEpisode``, ``_LastSeen``).
__all__ = [
    "CONDITIONS",
    "EVENTS",
    "FAMILIES",
    "HOME_CONDITION",
    "HOME_FAMILY",
    "NO_DATA_CONDITION",
    "NO_DATA_FAMILY",
    "REVIEW",
    "URGENT",
    "AlertEvent",
    "AlertPolicy",
    "EpisodeTracker",
    "NoDataRule",
    "PatientAlertState",
    "_HomeEpisode",
    "_LastSeen",
    "_digest",
    "conditions_of",
    "drop_below_baseline",
    "home_step",
    "tier_key",
]

CONDITIONS = (
    "hypertensive_crisis",
    "systolic_hypertension",
    "diastolic_hypertension",
    "combined_critical",
    "hypotension",
    "high_risk",
)
FAMILIES = ("hypertension", "hypotension", "high_risk")

# condition -> (family, rank within the family); the rank orders escalation
_LADDER: dict[str, tuple[str, int]] = {
    "systolic_hypertension": ("hypertension", 1),
    "diastolic_hypertension": ("hypertension", 1),
    "hypertensive_crisis": ("hypertension", 2),
    "combined_critical": ("hypertension", 3),
    "hypotension": ("hypotension", 1),
    "high_risk": ("high_risk", 1),
}
_SEV_RANK = {name: i for i, name in enumerate(SEVERITIES)}

# Tiers. ``urgent`` is a real-time page; ``review`` feeds the worklist and a daily review and
# never pages (the Kibana rules page on ``tier: urgent`` only). What makes an episode urgent,
# and the clinical basis of each choice (AlertPolicy.urgent names the keys; "all" = every key,
# the behaviour before tiers):
#
#   key                    tier by default  basis
#   hypertensive_crisis    urgent   2025 AHA/ACC guideline (Hypertension 2025;82:e212), section
#                                   6.2: severe hypertension >180 and/or >120 mm Hg needs prompt
#                                   evaluation for acute target-organ damage; 2017 ACC/AHA
#                                   section 11.2 (hypertensive crisis) likewise
#   combined_critical      urgent   both values in that range: the same source; or a crisis the
#                                   model scores at >= critical_risk (0.5: its calibrated
#                                   probability of an event within the horizon is more likely
#                                   than not; at the alert threshold of 0.16, 23 of the 100
#                                   held-out urgent pages were such crises, nearly all false)
#   systolic_hypotension   urgent   systolic below the rule set's hypotension cut (90): NEWS2
#                                   (Royal College of Physicians, National Early Warning Score 2,
#                                   2017, chart 1) scores systolic <=90 with 3, its highest
#                                   single-parameter score, which calls for an urgent response;
#                                   NEWS2 scores no diastolic value
#   diastolic_hypotension  review   diastolic below 60 with systolic >=90: a chronic risk marker,
#                                   not an acute state: in ARIC, DBP <60 was associated with
#                                   subclinical myocardial damage and coronary events over years
#                                   (McEvoy JW et al., J Am Coll Cardiol 2016;68(16):1713-1722,
#                                   doi:10.1016/j.jacc.2016.07.754), a reason to review treatment
#                                   (over-treatment), not to page
#   systolic_hypertension, review   stage 2 (>=140 or >=90): the guidelines treat it by
#   diastolic_hypertension          confirming on repeated and out-of-office readings and
#                                   adjusting treatment within weeks (2025 AHA/ACC, BP
#                                   categories and follow-up), not by an immediate response
#   high_risk              review   the model's early warning: on the held-out evaluation
#                                   (benchmarks/alert_quality.py) its alerts are less precise
#                                   than the rules' at equal recall, so it does not page
#   home_hypertension      review   a diagnosis from a week of home readings (out-of-office
#                                   thresholds, lib.monitor.home): a clinic follow-up
#   no_data                review   a silent patient: a call from the program, not a page
#
# Confirmation. An urgent key pages once ``confirm_readings`` consecutive readings of the
# patient meet it (default 2: the reading and the next one): guidelines ask to confirm a
# severe value by repeating the measurement (ACOG Committee Opinion 767 for severe
# hypertension in pregnancy and postpartum: confirmed within 15 minutes; the AHA/ACC
# guidelines base BP decisions on an average of >=2 readings on >=2 occasions, section 4).
# Until then the episode is open as ``review`` (visible in the worklist); the confirming
# reading's ``escalated`` event carries ``tier`` ``urgent``. ``confirm_readings=1`` pages on
# the first reading, with none of the checks below. Without waiting:
#   * a combined-critical reading, or one in the rule set's severe-hypotension band
#     (severity ``critical``), unless ``confirm_critical``;
#   * systolic hypotension with a fall of >= 40 mm Hg below the patient's baseline (the mean
#     systolic of the window's other readings): the ACCP/SCCM consensus definition of
#     hypotension, "a systolic blood pressure of <90 mm Hg or a reduction of >=40 mm Hg from
#     baseline" (Bone RC et al., Chest 1992;101(6):1644-1655).
# A systolic-hypotension reading less than ``hypotension_drop_confirm`` (8) mm Hg below the
# baseline does not count towards confirmation: a patient whose usual systolic is near 90
# dips below it with measurement noise. The 8 mm Hg is a tuning of this project, not a
# guideline value: chosen on simulated seeds 42 and 3 with benchmarks/alert_quality.py, then
# checked once on the held-out seed 11.


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Tunable alerting behaviour. Defaults are documented in the module docstring."""

    resolve_after: int = 3
    reminder_every: timedelta | None = None
    risk_threshold: float = 0.8
    # a crisis whose risk score reaches this is combined critical (None: risk_threshold, as
    # before tiers); 0.5: the calibrated model finds an event more likely than not
    critical_risk: float | None = 0.5
    open_severity: str = "low"
    # (systolic, diastolic) at or above which both values are "combined critical"; None: the
    # thresholds of the assessment's rule set (the monitor passes its rule set's, resolved once)
    critical: tuple[float, float] | None = None
    # tier keys (TIER_KEYS) that page; the others are review (see "Tiers" above)
    urgent: frozenset[str] = frozenset(DEFAULT_URGENT)
    # consecutive readings meeting an urgent key before it pages (1: at once)
    confirm_readings: int = 2
    # a combined-critical or severe-hypotension reading also waits for confirmation
    confirm_critical: bool = False
    # systolic hypotension: pages at once this far below the patient's baseline (ACCP/SCCM);
    # counts towards confirmation only at least this far below it (see "Confirmation")
    hypotension_drop_now: float = 40.0
    hypotension_drop_confirm: float = 8.0

    def __post_init__(self) -> None:
        unknown = set(self.urgent) - set(TIER_KEYS)
        if unknown:
            raise ValueError(f"unknown urgent keys {sorted(unknown)}: use {TIER_KEYS}")
        if self.confirm_readings < 1:
            raise ValueError("confirm_readings must be at least 1")
        if self.resolve_after < 1:
            raise ValueError("resolve_after must be at least 1")
        if self.reminder_every is not None and self.reminder_every <= timedelta(0):
            raise ValueError("reminder_every must be positive")
        if self.open_severity not in _SEV_RANK:
            raise ValueError(f"open_severity must be one of {SEVERITIES}")
        if not 0.0 <= self.risk_threshold <= 1.0:
            raise ValueError("risk_threshold must be between 0 and 1")
        if self.critical_risk is not None and not 0.0 <= self.critical_risk <= 1.0:
            raise ValueError("critical_risk must be between 0 and 1")

    def critical_for(self, ruleset: str) -> tuple[float, float]:
        """The combined-critical thresholds; an unknown rule set name raises ValueError."""
        if self.critical is not None:
            return self.critical
        return get_ruleset(ruleset).critical

    def tier_of(self, key: str) -> str:
        """The tier of an episode kind named by a tier key (home and no-data episodes)."""
        return URGENT if key in self.urgent else REVIEW


def drop_below_baseline(assessment: Assessment) -> float:
    """How far the reading's systolic lies below the patient's baseline, the mean systolic of
    the window's *other* readings (mm[Hg]; 0 without another reading)."""
    f = assessment.features
    if f is None:
        return 0.0
    return -deviation_from_baseline(f.n, f.mean_sys, assessment.reading.systolic)


@lru_cache(maxsize=16)
def _hypotension_systolic_cut(ruleset: str) -> float:
    return cuts_at(get_ruleset(ruleset), "hypotension")[0]


def tier_key(family: str, condition: str, systolic: float, ruleset: str) -> str:
    """The tier key of a reading's strongest condition in a family (see "Tiers")."""
    if family == "hypotension":
        cut = _hypotension_systolic_cut(ruleset) if ruleset else 90.0
        return "systolic_hypotension" if systolic < cut else "diastolic_hypotension"
    return condition


_DEFAULT_POLICY = AlertPolicy()


@dataclass(slots=True)
class _Episode:
    condition: str
    severity: str
    level: tuple[int, int]  # (condition rank, severity rank); escalation = strictly higher
    start_observation_id: str
    opened_at: datetime
    last_alert_at: datetime
    reminders: int = 0
    clear_ids: tuple[str, ...] = ()  # consecutive in-order readings without the condition
    # fields added with tiers (a snapshot written before them resumes with these defaults;
    # such an episode keeps the tier it paged with: urgent)
    tier: str = URGENT
    urgent_run: int = 0  # consecutive readings meeting an urgent key (confirmation)

    def __setstate__(self, state: list[Any]) -> None:
        names = [f.name for f in fields(self)]
        for name, value in zip(names, state, strict=False):
            object.__setattr__(self, name, value)
        for f in fields(self)[len(state) :]:
            object.__setattr__(self, f.name, f.default)

    def __getstate__(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(slots=True)
class PatientAlertState:
    """Per-patient alert state (picklable; kept only while an episode is open)."""

    episodes: dict[str, _Episode] = field(default_factory=dict)
    last_at: datetime | None = None
    last_key: tuple[str, str] = ("", "")


def conditions_of(assessment: Assessment, policy: AlertPolicy | None = None) -> tuple[str, ...]:
    """The alert conditions active on one assessment, in ``CONDITIONS`` order."""
    if policy is None:
        policy = _DEFAULT_POLICY
    types = assessment.anomaly_types
    category = assessment.category
    crisis = category == "hypertensive_crisis" or "hypertensive_crisis" in types
    high_risk = assessment.risk_score >= policy.risk_threshold
    systolic_ht = "systolic_hypertension" in types
    diastolic_ht = "diastolic_hypertension" in types
    hypotension = category == "hypotension" or "hypotension" in types
    reading = assessment.reading
    crit_sys, crit_dia = policy.critical_for(assessment.ruleset)
    active: list[str] = []
    if crisis:
        active.append("hypertensive_crisis")
    if systolic_ht:
        active.append("systolic_hypertension")
    if diastolic_ht:
        active.append("diastolic_hypertension")
    critical_risk = policy.risk_threshold if policy.critical_risk is None else policy.critical_risk
    if (reading.systolic >= crit_sys and reading.diastolic >= crit_dia) or (
        crisis and assessment.risk_score >= critical_risk
    ):
        active.append("combined_critical")
    if hypotension:
        active.append("hypotension")
    if high_risk:
        active.append("high_risk")
    return tuple(active)


@lru_cache(maxsize=1024)  # a few hundred keys: families x sets of conditions x severities
def _strongest(
    family: str, conditions: tuple[str, ...], severity: str
) -> tuple[str, tuple[int, int]] | None:
    """The family's highest active condition and its level, or None if none is active."""
    best: tuple[str, tuple[int, int]] | None = None
    for name in conditions:  # CONDITIONS order breaks ties: systolic before diastolic
        fam, rank = _LADDER[name]
        if fam != family:
            continue
        level = (rank, _SEV_RANK.get(severity, 0) if family != "high_risk" else 0)
        if best is None or level > best[1]:
            best = (name, level)
    return best


class EpisodeTracker:
    """Turns one patient's assessments into alert events (see the module docstring)."""

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()

    def quiet(self, assessment: Assessment) -> bool:
        """Would this assessment open nothing for a patient without an open episode? (The
        common case, answered without the episode logic.) Opening needs the high-risk
        condition, or an acute condition on a reading of at least ``open_severity``."""
        policy = self.policy
        return assessment.risk_score < policy.risk_threshold and (
            _SEV_RANK.get(assessment.severity, 0) < _SEV_RANK[policy.open_severity]
            or not conditions_of(assessment, policy)
        )

    def step(
        self, state: PatientAlertState | None, assessment: Assessment
    ) -> tuple[PatientAlertState | None, list[AlertEvent]]:
        """One patient's ``(state, assessment) -> (state, events)`` (``Patient.process`` does
        the same: :meth:`_step` unless :meth:`quiet` answers for a patient without state)."""
        if state is None and self.quiet(assessment):
            return None, []  # no episode, and nothing to open one
        return self._step(state, assessment)

    def _step(
        self, state: PatientAlertState | None, assessment: Assessment
    ) -> tuple[PatientAlertState | None, list[AlertEvent]]:
        """:meth:`step` without the :meth:`quiet` shortcut."""
        reading = assessment.reading
        conditions = conditions_of(assessment, self.policy)
        if state is None:
            if not conditions:
                return None, []
            st = PatientAlertState()
        else:
            st = state
        key = (reading.observation_id, reading.version)
        if key == st.last_key:
            return state, []  # the same reading again: already accounted for
        st.last_key = key
        in_order = st.last_at is None or reading.effective_at >= st.last_at
        if in_order:
            st.last_at = reading.effective_at

        events: list[AlertEvent] = []
        episodes = st.episodes
        severity = assessment.severity
        for family in FAMILIES:
            strongest = _strongest(family, conditions, severity) if conditions else None
            episode = episodes.get(family)
            if episode is None:
                if strongest is not None and self._may_open(family, st, assessment):
                    events.append(self._open(st, family, strongest, assessment, conditions))
            elif strongest is not None:
                events.extend(self._continue(episode, family, strongest, assessment, conditions))
            elif in_order:
                episode.urgent_run = 0
                episode.clear_ids = (*episode.clear_ids, reading.observation_id)
                if len(episode.clear_ids) >= self.policy.resolve_after:
                    events.append(self._event(episode, family, "resolved", "", assessment, ()))
                    del episodes[family]
        return (st if episodes else None), events

    # -- transitions -------------------------------------------------------------------
    def _may_open(self, family: str, st: PatientAlertState, assessment: Assessment) -> bool:
        if family == "high_risk":
            episodes = st.episodes  # no acute episode open
            return "hypertension" not in episodes and "hypotension" not in episodes
        return _SEV_RANK.get(assessment.severity, 0) >= _SEV_RANK[self.policy.open_severity]

    def _urgent(
        self, episode: _Episode, family: str, condition: str, assessment: Assessment
    ) -> bool:
        """Count this reading towards the episode's confirmation; does it make it urgent?
        (See "Tiers" and "Confirmation" above.)"""
        reading = assessment.reading
        policy = self.policy
        key = tier_key(family, condition, reading.systolic, assessment.ruleset)
        if key not in policy.urgent:
            episode.urgent_run = 0
            return False
        if policy.confirm_readings == 1:
            return True
        if key == "systolic_hypotension":
            drop = drop_below_baseline(assessment)
            if drop >= policy.hypotension_drop_now:
                return True
            if drop < policy.hypotension_drop_confirm:
                episode.urgent_run = 0
                return False
        episode.urgent_run += 1
        if episode.urgent_run >= policy.confirm_readings:
            return True
        critical = key == "combined_critical" or (
            key == "systolic_hypotension" and assessment.severity == "critical"
        )
        return critical and not policy.confirm_critical

    def _open(
        self,
        st: PatientAlertState,
        family: str,
        strongest: tuple[str, tuple[int, int]],
        assessment: Assessment,
        conditions: tuple[str, ...],
    ) -> AlertEvent:
        reading = assessment.reading
        condition, level = strongest
        episode = _Episode(
            condition=condition,
            severity=assessment.severity,
            level=level,
            start_observation_id=reading.observation_id,
            opened_at=reading.effective_at,
            last_alert_at=reading.effective_at,
            tier=REVIEW,
        )
        if self._urgent(episode, family, condition, assessment):
            episode.tier = URGENT
        st.episodes[family] = episode
        return self._event(episode, family, "opened", "", assessment, conditions)

    def _continue(
        self,
        episode: _Episode,
        family: str,
        strongest: tuple[str, tuple[int, int]],
        assessment: Assessment,
        conditions: tuple[str, ...],
    ) -> list[AlertEvent]:
        reading = assessment.reading
        episode.clear_ids = ()
        condition, level = strongest
        paged = episode.tier == REVIEW and self._urgent(episode, family, condition, assessment)
        if episode.tier == URGENT:
            episode.urgent_run = 0  # nothing more to confirm
        if paged:
            episode.tier = URGENT
        if level > episode.level or paged:
            if level[0] > episode.level[0]:
                episode.condition = condition
            episode.level = max(level, episode.level)
            episode.severity = max(
                episode.severity, assessment.severity, key=lambda s: _SEV_RANK.get(s, 0)
            )
            episode.last_alert_at = max(episode.last_alert_at, reading.effective_at)
            lvl = episode.level
            # ids of escalations that do not change the tier are those of before tiers
            tag = f"{episode.condition}:{lvl[0]}.{lvl[1]}" + (":urgent" if paged else "")
            return [self._event(episode, family, "escalated", tag, assessment, conditions)]
        every = self.policy.reminder_every
        if every is not None and reading.effective_at - episode.last_alert_at >= every:
            episode.reminders += 1
            episode.last_alert_at = reading.effective_at
            tag = str(episode.reminders)
            return [self._event(episode, family, "reminder", tag, assessment, conditions)]
        return []

    def _event(
        self,
        episode: _Episode,
        family: str,
        event: str,
        discriminator: str,
        assessment: Assessment,
        conditions: tuple[str, ...],
    ) -> AlertEvent:
        reading = assessment.reading
        patient = reading.patient_id
        start = episode.start_observation_id
        ids = episode.clear_ids if event == "resolved" else (reading.observation_id,)
        return AlertEvent(
            alert_id=_digest(patient, family, start, event, discriminator),
            episode_id=_digest(patient, family, start),
            patient_id=patient,
            condition=episode.condition,
            event=event,
            severity=episode.severity,
            opened_at=episode.opened_at,
            event_at=reading.effective_at,
            observation_ids=ids,
            systolic=reading.systolic,
            diastolic=reading.diastolic,
            risk_score=assessment.risk_score,
            ruleset=assessment.ruleset,
            conditions=conditions,
            tier=episode.tier,
        )
