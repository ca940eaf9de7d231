"""``rules.assess`` (inlined for the hot path) equals its parts composed."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

from lib.domain import Features, Reading
from lib.monitor import rules

T0 = datetime(2025, 3, 3, tzinfo=UTC)


def composed(reading: Reading, features: Features | None, name: str) -> tuple:
    rs = rules.get_ruleset(name)
    s, d = reading.systolic, reading.diastolic
    category = rules.classify(s, d, rs)
    types = rules.reading_anomalies(s, d, category, rs)
    if features is not None:
        types = types + rules.trend_anomalies(features, rs.trends)
    return category, types, rules.severity(category, types, s, d, rs)


def test_assess_equals_the_composed_rules() -> None:
    rng = random.Random(3)
    seen = set()
    for i, name in itertools.product(range(6000), ("aha2017", "esh2023")):
        s = rng.choice([rng.uniform(40, 300), float(rng.choice([89, 90, 119, 120, 130, 180, 181]))])
        d = rng.choice([rng.uniform(20, s - 1), float(rng.choice([39, 40, 59, 60, 80, 85, 121]))])
        reading = Reading(f"o{i}", "p", T0, s, d)
        n = rng.randint(1, 12)
        features = Features(
            n, rng.uniform(100, 160), rng.uniform(60, 100), rng.uniform(0, 25),
            rng.uniform(0, 15), rng.uniform(0, 20), rng.uniform(-20, 30), rng.uniform(-10, 10),
            rng.randint(0, n), rng.uniform(0, 5), s, d,
        )  # fmt: skip
        for f in (features, None):
            got = rules.assess(reading, f, name)
            assert got == composed(reading, f, name)
            assert rules.assess(reading, f, rules.RULESETS[name]) == got
            seen.add(got[0])
            seen.add(got[2])
    assert len(seen) >= 10  # every category and several severities were exercised
