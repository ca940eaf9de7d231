"""The alert tracker's cheap condition check gives what the plain definition gives, and its
``quiet`` shortcut (in ``EpisodeTracker.step`` and ``Patient.process``) changes nothing."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from lib.domain import CATEGORIES, Assessment, Features, Reading
from lib.monitor.alerts import (
    CONDITIONS,
    AlertPolicy,
    EpisodeTracker,
    NoDataRule,
    PatientAlertState,
    conditions_of,
)
from lib.monitor.patient import Patient, PatientContext
from lib.monitor.rules import AHA2017, ANOMALY_TYPES
from lib.monitor.state import Results

T0 = datetime(2025, 3, 3, tzinfo=UTC)


def reference_conditions(a: Assessment, policy: AlertPolicy) -> tuple[str, ...]:
    """The definition of the module docstring, written plainly."""
    types = set(a.anomaly_types)
    crisis = a.category == "hypertensive_crisis" or "hypertensive_crisis" in types
    crit_sys, crit_dia = policy.critical_for(a.ruleset)
    high_risk = a.risk_score >= policy.risk_threshold
    critical_risk = policy.risk_threshold if policy.critical_risk is None else policy.critical_risk
    active = {
        "hypertensive_crisis": crisis,
        "systolic_hypertension": "systolic_hypertension" in types,
        "diastolic_hypertension": "diastolic_hypertension" in types,
        "combined_critical": (a.reading.systolic >= crit_sys and a.reading.diastolic >= crit_dia)
        or (crisis and a.risk_score >= critical_risk),
        "hypotension": a.category == "hypotension" or "hypotension" in types,
        "high_risk": high_risk,
    }
    return tuple(name for name in CONDITIONS if active[name])


def assessment(rng: random.Random, i: int, patient: str = "p") -> Assessment:
    sys_ = rng.choice([70.0, 95.0, 125.0, 135.0, 150.0, 179.9, 180.0, 185.0, 200.0])
    dia = rng.choice([35.0, 55.0, 75.0, 85.0, 95.0, 109.9, 110.0, 120.0, 125.0])
    types = tuple(t for t in ANOMALY_TYPES if rng.random() < 0.25)
    reading = Reading(f"{patient}-{i}", patient, T0 + timedelta(minutes=15 * i), sys_, dia)
    features = Features(1, sys_, dia, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, sys_, dia)
    return Assessment(
        reading,
        features,
        rng.choice(CATEGORIES),
        types,
        rng.choice(("low", "moderate", "high", "critical")),
        rng.choice([0.0, 0.5, 0.79, 0.8, 0.95, 1.0]),
        rng.choice(("aha2017", "esh2023")),
    )


def calm(i: int, patient: str) -> Assessment:
    """A normal reading, low risk: no condition (resolves episodes, opens none)."""
    reading = Reading(f"{patient}-{i}", patient, T0 + timedelta(minutes=15 * i), 118.0, 76.0)
    features = Features(1, 118.0, 76.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, 118.0, 76.0)
    return Assessment(reading, features, "normal", (), "low", 0.1, "aha2017")


def test_conditions_match_the_plain_definition() -> None:
    rng = random.Random(11)
    policies = [
        AlertPolicy(),
        AlertPolicy(risk_threshold=0.5),
        AlertPolicy(risk_threshold=1.0),
        AlertPolicy(risk_threshold=0.8, critical_risk=None),
        AlertPolicy(critical_risk=0.95),
    ]
    seen: set[tuple[str, ...]] = set()
    for i, policy in itertools.product(range(4000), policies):
        a = assessment(rng, i)
        got = conditions_of(a, policy)
        assert got == reference_conditions(a, policy)
        seen.add(got)
    assert () in seen and len(seen) > 20
    assert conditions_of(a) == reference_conditions(a, AlertPolicy())


def test_no_condition_and_no_state_is_a_no_op_without_state() -> None:
    rng = random.Random(5)
    tracker = EpisodeTracker(AlertPolicy(open_severity="high"))
    checked = 0
    for i in range(3000):
        a = assessment(rng, i)
        state, events = tracker.step(None, a)
        if not conditions_of(a, tracker.policy):
            checked += 1
            assert state is None and events == []
        elif events:
            assert state is not None and events[0].event == "opened"
    assert checked > 50


def test_quiet_is_exactly_opens_nothing() -> None:
    """``quiet`` (the shortcut of step and Patient.process) holds exactly when the full episode
    logic, given no state, opens nothing."""
    rng = random.Random(23)
    counts = {True: 0, False: 0}
    for policy in (AlertPolicy(), AlertPolicy(open_severity="high", risk_threshold=0.79)):
        tracker = EpisodeTracker(policy)
        for i in range(3000):
            a = assessment(rng, i)
            state, events = tracker._step(None, a)
            quiet = tracker.quiet(a)
            assert quiet == (state is None and events == []), a
            counts[quiet] += 1
    assert min(counts.values()) > 300


def test_the_quiet_shortcut_equals_the_full_step_on_every_assessment() -> None:
    """``EpisodeTracker.step`` and a patient's episodes (``Patient.process`` follows each
    assessment with the tracker, skipping quiet ones while the patient has no episode) give
    the events and the states of the full episode logic run on every assessment."""
    rng = random.Random(29)
    for policy in (
        AlertPolicy(),
        AlertPolicy(open_severity="high", resolve_after=2, reminder_every=timedelta(hours=1)),
    ):
        tracker = EpisodeTracker(policy)
        ctx = PatientContext(AHA2017, lambda f: 0.0, tracker, NoDataRule())
        full: dict[str, PatientAlertState] = {}
        stepped: dict[str, PatientAlertState] = {}
        patients: dict[str, Patient] = {}
        n_resolved = n_skipped = 0
        for batch in range(200):
            for k in range(30):
                i, pid = 30 * batch + k, f"p{rng.randrange(12)}"
                # calm readings in between, so that episodes resolve and patients go quiet
                a = assessment(rng, i, pid) if rng.random() < 0.3 else calm(i, pid)
                n_skipped += pid not in full and tracker.quiet(a)
                st, expect = tracker._step(full.pop(pid, None), a)
                if st is not None:
                    full[pid] = st
                st, got = tracker.step(stepped.pop(pid, None), a)
                if st is not None:
                    stepped[pid] = st
                assert [e.to_doc() for e in got] == [e.to_doc() for e in expect]
                patient = patients.setdefault(pid, Patient(pid))
                res = Results()
                patient._follow(ctx, a, 0.0, res)  # the episodes' part of Patient.process
                assert [e.to_doc() for e in res.events] == [e.to_doc() for e in expect]
                n_resolved += sum(e.event == "resolved" for e in expect)
            assert stepped == full
            assert {k: p.alerts for k, p in patients.items() if p.alerts is not None} == full
        assert n_resolved > 100 and n_skipped > 500
