"""Home-BP alert episodes (``home_hypertension``): opened and resolved by the averages of the
home-BP protocol (:mod:`lib.monitor.home`). Pure, deterministic, event time only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lib.monitor.alert_events import REVIEW, AlertEvent, _digest
from lib.monitor.home import HomeAverage

HOME_FAMILY = "home"
HOME_CONDITION = "home_hypertension"


@dataclass(frozen=True, slots=True)
class _HomeEpisode:
    key: str  # doc id of the home average that opened it (patient | series start)
    opened_at: datetime


def home_step(
    episode: _HomeEpisode | None, avg: HomeAverage, tier: str = REVIEW
) -> tuple[_HomeEpisode | None, AlertEvent | None]:
    """One patient's ``home_hypertension`` episode after one more home average, and its event
    if any.

    Opened by the first home average (``lib.monitor.home.HomeAverage``) with
    ``home_hypertension``; resolved by an average of a *later* series (another ``doc_id``)
    below the threshold (a series whose average drops below the threshold as it grows does not
    resolve its own episode: home averages of one series are not independent). Severity
    ``moderate`` (home hypertension is the out-of-office counterpart of stage 1); the event
    carries the means as ``systolic`` / ``diastolic``, ``risk_score`` 0 (no model involved) and
    the Average Observation's id, if any, in ``observation_ids``. Ids are deterministic:
    ``sha256(patient | home | opening average's doc id | event)``.
    """
    if episode is None:
        if avg.home_hypertension:
            episode = _HomeEpisode(avg.doc_id, avg.series_start)
            return episode, _home_event(episode, avg, "opened", tier)
        return None, None
    if not avg.home_hypertension and avg.doc_id != episode.key:
        return None, _home_event(episode, avg, "resolved", tier)
    return episode, None


def _home_event(episode: _HomeEpisode, avg: HomeAverage, event: str, tier: str) -> AlertEvent:
    patient = avg.patient_id
    return AlertEvent(
        alert_id=_digest(patient, HOME_FAMILY, episode.key, event),
        episode_id=_digest(patient, HOME_FAMILY, episode.key),
        patient_id=patient,
        condition=HOME_CONDITION,
        event=event,
        severity="moderate",
        opened_at=episode.opened_at,
        event_at=avg.series_end,
        observation_ids=(avg.observation_id,) if avg.observation_id else (),
        systolic=avg.mean_systolic,
        diastolic=avg.mean_diastolic,
        risk_score=0.0,
        ruleset=avg.ruleset,
        conditions=(HOME_CONDITION,) if event != "resolved" else (),
        tier=tier,
    )
