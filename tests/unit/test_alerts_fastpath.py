"""The alert tracker's cheap condition check gives what the plain definition gives."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from lib.domain import CATEGORIES, Assessment, Features, Reading
from lib.monitor.alerts import (
    CONDITIONS,
    AlertPolicy,
    EpisodeTracker,
    PatientAlertState,
    ShardAlerts,
    conditions_of,
)
from lib.monitor.rules import ANOMALY_TYPES

T0 = datetime(2025, 3, 3, tzinfo=UTC)


def reference_conditions(a: Assessment, policy: AlertPolicy) -> tuple[str, ...]:
    """The definition of the module docstring, written plainly."""
    types = set(a.anomaly_types)
    crisis = a.category == "hypertensive_crisis" or "hypertensive_crisis" in types
    crit_sys, crit_dia = policy.critical_for(a.ruleset)
    high_risk = a.risk_score >= policy.risk_threshold
    active = {
        "hypertensive_crisis": crisis,
        "systolic_hypertension": "systolic_hypertension" in types,
        "diastolic_hypertension": "diastolic_hypertension" in types,
        "combined_critical": (a.reading.systolic >= crit_sys and a.reading.diastolic >= crit_dia)
        or (crisis and high_risk),
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


def test_conditions_match_the_plain_definition() -> None:
    rng = random.Random(11)
    policies = [AlertPolicy(), AlertPolicy(risk_threshold=0.5), AlertPolicy(risk_threshold=1.0)]
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
    """``quiet`` (the shortcut of step and ShardAlerts) holds exactly when the full episode
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


def test_shard_alerts_equal_the_full_step_on_every_assessment() -> None:
    """ShardAlerts.process (skipping quiet assessments of patients without state) gives the
    events and the states of the full episode logic run on every assessment."""
    rng = random.Random(29)
    for policy in (
        AlertPolicy(),
        AlertPolicy(open_severity="high", resolve_after=2, reminder_every=timedelta(hours=1)),
    ):
        tracker = EpisodeTracker(policy)
        shard = ShardAlerts(tracker)
        states: dict[str, PatientAlertState] = {}
        n_events = 0
        for batch in range(200):
            items = [assessment(rng, 30 * batch + k, f"p{rng.randrange(12)}") for k in range(30)]
            got = shard.process(items)
            expect = []
            for a in items:
                pid = a.reading.patient_id
                st, new = tracker._step(states.pop(pid, None), a)
                if st is not None:
                    states[pid] = st
                expect += new
            assert [e.to_doc() for e in got] == [e.to_doc() for e in expect]
            assert shard.states == states
            n_events += len(got)
        assert n_events > 100
