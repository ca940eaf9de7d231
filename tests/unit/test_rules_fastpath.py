"""``rules.verdict`` (the one implementation of the rules) equals the rules of the module
docstring composed plainly: this file holds that composition, as the test oracle."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

from lib.domain import SEVERITIES, Features, Reading
from lib.monitor import rules
from lib.monitor.rules import ANOMALY_TYPES, Band, RuleSet, TrendRules

T0 = datetime(2025, 3, 3, tzinfo=UTC)

_SEVERITY_OF = {
    "normal": "low",
    "elevated": "low",
    "hypertension_stage_1": "moderate",
    "hypertension_stage_2": "high",
    "hypotension": "high",
    "hypertensive_crisis": "critical",
}


# -- the oracle: each rule written as the module docstring states it ------------------------
def band(systolic: float, diastolic: float, rs: RuleSet) -> Band:
    """The first band whose systolic or diastolic cut is hit, else the default."""
    return next((b for b in rs.bands if b.matches(systolic, diastolic)), rs.default)


def reading_anomalies(
    systolic: float, diastolic: float, category: str, rs: RuleSet
) -> tuple[str, ...]:
    stage_1 = rs.stage_1
    on = {
        "hypertensive_crisis": category == "hypertensive_crisis",
        "systolic_hypertension": stage_1.systolic is not None and stage_1.systolic.hit(systolic),
        "diastolic_hypertension": stage_1.diastolic is not None
        and stage_1.diastolic.hit(diastolic),
        "hypotension": category == "hypotension",
    }
    return tuple(t for t in ANOMALY_TYPES if on.get(t))


def trend_anomalies(f: Features, t: TrendRules) -> tuple[str, ...]:
    on = {
        "sustained_hypertension": f.n >= t.sustained_min_n
        and (f.mean_sys >= t.sustained_systolic or f.mean_dia >= t.sustained_diastolic),
        "rapid_rise": f.n >= t.rapid_rise_min_n
        and f.slope_sys_per_h >= t.rapid_rise_slope_per_h
        and f.last_sys - f.mean_sys >= t.rapid_rise_above_mean,
        "high_variability": f.n >= t.variability_min_n
        and (f.sd_sys >= t.variability_sd or f.arv_sys >= t.variability_arv),
    }
    return tuple(name for name in ANOMALY_TYPES if on.get(name))


def severity(
    category: str, anomaly_types: tuple[str, ...], systolic: float, diastolic: float, rs: RuleSet
) -> str:
    if category == "hypotension" and rs.severe_hypotension.matches(systolic, diastolic):
        return "critical"
    level = SEVERITIES.index(_SEVERITY_OF[category])
    high = SEVERITIES.index("high")
    if level < high:  # trends never make a reading critical
        if "rapid_rise" in anomaly_types:
            level = min(level + 1, high)
        if "sustained_hypertension" in anomaly_types:
            level = max(level, SEVERITIES.index("moderate"))
    return SEVERITIES[level]


def composed(reading: Reading, features: Features | None, name: str) -> tuple:
    """(category, label, anomaly types, severity), as ``rules.verdict`` gives them."""
    rs = rules.get_ruleset(name)
    s, d = reading.systolic, reading.diastolic
    b = band(s, d, rs)
    types = reading_anomalies(s, d, b.category, rs)
    if features is not None:
        types = types + trend_anomalies(features, rs.trends)
    return b.category, b.label, types, severity(b.category, types, s, d, rs)


# -- the tests ------------------------------------------------------------------------------
def test_verdict_equals_the_composed_rules() -> None:
    rng = random.Random(3)
    seen: set[object] = set()
    names = tuple(rules.RULESETS)
    for i, name in itertools.product(range(6000), names):
        s = rng.choice(
            [
                rng.uniform(40, 300),
                float(rng.choice([69, 70, 89, 90, 119, 120, 130, 135, 139, 140, 160, 180, 181])),
            ]
        )
        d = rng.choice(
            [
                rng.uniform(20, s - 1),
                float(rng.choice([39, 40, 59, 60, 79, 80, 85, 89, 90, 100, 110, 120, 121])),
            ]
        )
        reading = Reading(f"o{i}", "p", T0, s, d)
        n = rng.randint(1, 12)
        features = Features(
            n, rng.uniform(100, 160), rng.uniform(60, 100), rng.uniform(0, 25),
            rng.uniform(0, 15), rng.uniform(0, 20), rng.uniform(-20, 30), rng.uniform(-10, 10),
            rng.randint(0, n), rng.uniform(0, 5), s, d,
        )  # fmt: skip
        for f in (features, None):
            got = rules.verdict(reading, f, name)
            assert got == composed(reading, f, name), (s, d, f, name)
            assert rules.verdict(reading, f, rules.RULESETS[name]) == got
            assert rules.assess(reading, f, name) == (got[0], got[2], got[3])
            assert rules.classify(s, d, name) == got[0]
            assert rules.band_of(s, d, name) == band(s, d, rules.RULESETS[name])
            seen.add(got[0])
            seen.add(got[3])
            seen.add(got[2])
    assert len(seen) >= 40  # every category, every severity and many sets of types


def test_the_value_memo_is_bounded_and_never_changes_a_result() -> None:
    rs = rules.get_ruleset("esh2023")
    values = [60.0 + k / 64 for k in range(rules._MEMO_MAX + 100)]
    for s in values:
        d = s / 2
        reading = Reading("o", "p", T0, s, d)
        assert rules.verdict(reading, None, rs) == composed(reading, None, rs.name)
        assert all(len(m) <= rules._MEMO_MAX for m in rs._memo)
    for s in values[:50]:  # again, from the memo
        reading = Reading("o", "p", T0, s, s / 2)
        assert rules.verdict(reading, None, rs) == composed(reading, None, rs.name)
