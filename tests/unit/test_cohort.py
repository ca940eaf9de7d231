"""lib.sim.cohort: determinism, plausible statistics per profile, predictable events."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime

import numpy as np
import pytest

from lib.sim import cohort


def _category(sys_v: float, dia_v: float) -> str:
    """AHA 2017 bands (an independent re-statement, not lib.monitor.rules)."""
    if sys_v < 90 or dia_v < 60:
        return "hypotension"
    if sys_v > 180 or dia_v > 120:
        return "crisis"
    if sys_v >= 140 or dia_v >= 90:
        return "stage2"
    if sys_v >= 130 or dia_v >= 80:
        return "stage1"
    if sys_v >= 120:
        return "elevated"
    return "normal"


@pytest.fixture(scope="module")
def week() -> list:
    return list(cohort.generate(120, 11, hours=24 * 7))


def test_same_seed_same_stream_other_seed_differs() -> None:
    a = list(itertools.islice(cohort.generate(30, 5, hours=48), 2000))
    b = list(itertools.islice(cohort.generate(30, 5, hours=48), 2000))
    c = list(itertools.islice(cohort.generate(30, 6, hours=48), 2000))
    assert a == b
    assert [r.systolic for r, _ in a] != [r.systolic for r, _ in c]


def test_global_event_time_order_and_utc(week: list) -> None:
    times = [r.effective_at for r, _ in week]
    assert times == sorted(times)
    assert all(t.tzinfo is not None and t.utcoffset().total_seconds() == 0 for t in times[:500])
    assert len({r.observation_id for r, _ in week}) == len(week)


def test_subset_of_patients_gives_the_same_readings() -> None:
    full = [r for r, _ in cohort.generate(20, 3, hours=24)]
    part = [r for r, _ in cohort.generate(20, 3, hours=24, patients=range(1, 20, 3))]
    wanted = {cohort.patient_id(3, i) for i in range(1, 20, 3)}
    assert part == [r for r in full if r.patient_id in wanted]


def test_mix_is_honoured_exactly_in_every_block_of_100() -> None:
    profiles = cohort.assign_profiles(200, 1, {"stage2": 3, "normotensive": 1})
    assert Counter(profiles) == {"stage2": 150, "normotensive": 50}
    thousand = cohort.assign_profiles(1000, 1)
    for block in range(0, 1000, 100):
        counts = Counter(thousand[block : block + 100])
        assert counts == {name: round(100 * share) for name, share in cohort.DEFAULT_MIX.items()}
    # a smaller cohort is the larger one's first patients, so its shares are approximate
    assert cohort.assign_profiles(10, 1) == thousand[:10]
    with pytest.raises(ValueError, match="unknown profiles"):
        cohort.assign_profiles(10, 1, {"athlete": 1.0})


def test_cadence_between_12_and_72_minutes(week: list) -> None:
    by_patient: dict[str, list[float]] = defaultdict(list)
    for r, _ in week:
        by_patient[r.patient_id].append(r.ts)
    gaps = np.concatenate([np.diff(ts) for ts in by_patient.values()]) / 60.0
    assert gaps.min() >= 12.0 - 1e-6
    assert gaps.max() <= 72.0 + 1e-6
    # weighted by readings (15-minute patients send the most): 18-24 over seeds 1-4 and 11
    assert 17.0 < np.median(gaps) < 45.0


def test_profile_statistics_in_plausible_bands(week: list) -> None:
    cats: dict[str, Counter] = defaultdict(Counter)
    values: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r, g in week:
        cats[g.profile][_category(r.systolic, r.diastolic)] += 1
        values[g.profile].append((r.systolic, r.diastolic))
    share = {p: {k: v / sum(c.values()) for k, v in c.items()} for p, c in cats.items()}
    mean = {p: np.mean(v, axis=0) for p, v in values.items()}
    assert set(share) == set(cohort.PROFILES)
    assert share["normotensive"].get("normal", 0) > 0.5
    assert share["normotensive"].get("stage2", 0) + share["normotensive"].get("crisis", 0) < 0.08
    assert 105 < mean["normotensive"][0] < 120
    assert 118 < mean["elevated"][0] < 135
    assert share["stage1"].get("stage1", 0) + share["stage1"].get("stage2", 0) > 0.7
    assert share["stage2"].get("stage2", 0) + share["stage2"].get("crisis", 0) > 0.85
    assert 0.02 < share["stage2"].get("crisis", 0) < 0.3
    assert 0.1 < share["hypotension_prone"].get("hypotension", 0) < 0.5
    assert share["hypotension_prone"].get("crisis", 0) == 0

    # labile patients vary more from reading to reading than normotensive ones
    def arv(profile: str) -> float:
        by: dict[str, list[float]] = defaultdict(list)
        for r, g in week:
            if g.profile == profile:
                by[r.patient_id].append(r.systolic)
        return float(np.mean([np.mean(np.abs(np.diff(v))) for v in by.values()]))

    assert arv("labile") > 1.5 * arv("normotensive")
    # physiological ranges and pulse pressure
    all_v = np.array([v for vs in values.values() for v in vs])
    assert (all_v[:, 0] - all_v[:, 1] >= 10).all()
    assert all_v[:, 0].min() >= 60 and all_v[:, 0].max() <= 250


def test_circadian_dip_at_night(week: list) -> None:
    patients = {p.patient_id: p for p in cohort.cohort(120, 11)}
    night, day = [], []
    for r, g in week:
        if g.in_event or g.extra["prodrome"]:
            continue
        p = patients[r.patient_id]
        hour = (r.effective_at.hour + p.utc_offset_min / 60) % 24
        if 1 <= hour < 5:
            night.append(r.systolic)
        elif 12 <= hour < 18:
            day.append(r.systolic)
    assert np.mean(day) - np.mean(night) > 6


def test_events_have_positive_labels_and_are_predictable_from_trend(week: list) -> None:
    labels = np.array([g.event_within_horizon for _, g in week])
    assert 0.01 < labels.mean() < 0.15
    kinds = Counter(g.event_kind for _, g in week if g.event_within_horizon)
    assert kinds["crisis"] > 0 and kinds["hypotension"] > 0
    # crises really happen: in-event crisis readings are high
    crisis_vals = [r.systolic for r, g in week if g.in_event and g.event_kind == "crisis"]
    assert np.median(crisis_vals) > 175
    hypo_vals = [r.systolic for r, g in week if g.in_event and g.event_kind == "hypotension"]
    assert np.median(hypo_vals) < 95
    # before a crisis the pressure rises: readings 1-3 h ahead sit above the patient's usual level
    by: dict[str, list] = defaultdict(list)
    for r, g in week:
        by[r.patient_id].append((r, g))
    lifts = []
    for rows in by.values():
        usual = np.median([r.systolic for r, _ in rows])
        for r, g in rows:
            if (
                g.event_kind == "crisis"
                and g.event_within_horizon
                and g.extra["hours_to_event"] < 3
            ):
                lifts.append(r.systolic - usual)
    assert np.mean(lifts) > 15


def test_label_is_consistent_with_hours_to_event(week: list) -> None:
    for _, g in week[:5000]:
        h = g.extra["hours_to_event"]
        assert g.event_within_horizon == (0 < h <= 6.0)


def test_horizon_changes_the_label_share() -> None:
    short = [g.event_within_horizon for _, g in cohort.generate(60, 2, hours=72, horizon_hours=1)]
    long = [g.event_within_horizon for _, g in cohort.generate(60, 2, hours=72, horizon_hours=12)]
    assert len(short) == len(long)
    assert sum(long) > 3 * sum(short)


def test_names_are_deterministic_and_varied() -> None:
    names = [cohort.patient_name(9, i) for i in range(50)]
    assert names == [cohort.patient_name(9, i) for i in range(50)]
    assert len(set(names)) > 35
    assert all(len(n.split(" ")) == 2 for n in names)


def test_start_must_be_aware() -> None:
    with pytest.raises(ValueError):
        next(cohort.generate(2, 1, hours=1, start=datetime(2025, 1, 1)))  # noqa: DTZ001
    first, _ = next(cohort.generate(2, 1, hours=1, start=datetime(2025, 1, 1, tzinfo=UTC)))
    assert first.effective_at >= datetime(2025, 1, 1, tzinfo=UTC)
