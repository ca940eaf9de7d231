"""lib.monitor.rules: both sides of every threshold (generated from the rule data), an independent
hand-written clinical table, trend rules, severity."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib.domain import CATEGORIES, SEVERITIES, Features, Reading
from lib.monitor import rules
from tests.unit.test_rules_fastpath import reading_anomalies, severity

# partner values that hit no band of either rule set on their own
NEUTRAL_SYS = 110.0
NEUTRAL_DIA = 70.0


def _sides(cut: rules.Cut, eps: float) -> tuple[float, float]:
    """(a value that hits the cut, the nearest value on the other side)."""
    if cut.op == ">=":
        return cut.at, cut.at - eps
    if cut.op == ">":
        return cut.at + eps, cut.at
    if cut.op == "<":
        return cut.at - eps, cut.at
    return cut.at, cut.at + eps  # "<="


def _boundary_cases():
    for rs in rules.RULESETS.values():
        for band in rs.bands:
            for axis in ("systolic", "diastolic"):
                cut = getattr(band, axis)
                if cut is None:
                    continue
                for eps in (1.0, 0.01):
                    case_id = f"{rs.name}-{band.label}-{axis}{cut}-eps{eps}"
                    yield pytest.param(rs.name, band, axis, cut, eps, id=case_id)


@pytest.mark.parametrize(("name", "band", "axis", "cut", "eps"), list(_boundary_cases()))
def test_both_sides_of_every_threshold(name, band, axis, cut, eps):
    hit, miss = _sides(cut, eps)

    def values(x: float) -> tuple[float, float]:
        return (x, NEUTRAL_DIA) if axis == "systolic" else (NEUTRAL_SYS, x)

    assert rules.band_of(*values(hit), name) == band
    assert rules.classify(*values(hit), name) == band.category
    assert rules.band_of(*values(miss), name) != band
    # the other side falls into the band next in order that this value hits, or the default
    rs = rules.RULESETS[name]
    later = rs.bands[rs.bands.index(band) + 1 :]
    expected = next((b for b in later if b.matches(*values(miss))), rs.default)
    assert rules.band_of(*values(miss), name) == expected


def test_boundary_cases_cover_every_cut_of_every_band():
    n_cuts = sum(
        (b.systolic is not None) + (b.diastolic is not None)
        for rs in rules.RULESETS.values()
        for b in rs.bands
    )
    assert len(list(_boundary_cases())) == 2 * n_cuts
    assert n_cuts == 9 + 9 + 12  # aha2025, aha2017, esh2023


def test_neutral_partners_hit_nothing():
    for name in rules.RULESETS:
        rs = rules.RULESETS[name]
        assert rules.band_of(NEUTRAL_SYS, NEUTRAL_DIA, name) is rs.default


# -- an independent table of clinical examples (written from the guidelines, not the data) --

AHA = [
    (118, 78, "normal"),
    (119.9, 79.9, "normal"),
    (120, 79, "elevated"),
    (129, 79, "elevated"),
    (129, 80, "hypertension_stage_1"),
    (130, 70, "hypertension_stage_1"),
    (139, 89, "hypertension_stage_1"),
    (125, 85, "hypertension_stage_1"),  # diastolic decides
    (140, 70, "hypertension_stage_2"),
    (120, 90, "hypertension_stage_2"),
    (180, 120, "hypertension_stage_2"),  # crisis is strictly above
    (181, 100, "hypertensive_crisis"),
    (150, 121, "hypertensive_crisis"),
    (220, 130, "hypertensive_crisis"),
    (89, 59, "hypotension"),
    (85, 65, "hypotension"),
    (100, 55, "hypotension"),
    (90, 60, "normal"),
    (150, 55, "hypertension_stage_2"),  # isolated systolic with low diastolic: hypertensive
    (125, 59, "hypotension"),  # low diastolic beats "elevated"
]
ESH = [
    (119, 79, "normal", "optimal"),
    (120, 79, "normal", "normal"),
    (125, 82, "normal", "normal"),
    (129, 84, "normal", "normal"),
    (130, 80, "elevated", "high-normal"),
    (128, 86, "elevated", "high-normal"),
    (139, 89, "elevated", "high-normal"),
    (140, 85, "hypertension_stage_1", "grade 1 hypertension"),  # isolated systolic
    (159, 99, "hypertension_stage_1", "grade 1 hypertension"),
    (135, 90, "hypertension_stage_1", "grade 1 hypertension"),
    (160, 95, "hypertension_stage_2", "grade 2 hypertension"),
    (179, 109, "hypertension_stage_2", "grade 2 hypertension"),
    (150, 100, "hypertension_stage_2", "grade 2 hypertension"),
    (180, 90, "hypertensive_crisis", "grade 3 hypertension"),
    (150, 110, "hypertensive_crisis", "grade 3 hypertension"),
    (85, 55, "hypotension", "hypotension"),
    (90, 60, "normal", "optimal"),
]


# AHA/ACC 2025 (Hypertension 2025;82:e212-e316), "Categories of BP in Adults" and section 6.2,
# in the guideline's own words
AHA2025 = [
    (119, 79, "normal", "normal"),
    (120, 79, "elevated", "elevated"),
    (129, 79, "elevated", "elevated"),
    (129, 80, "hypertension_stage_1", "stage 1 hypertension"),
    (130, 70, "hypertension_stage_1", "stage 1 hypertension"),
    (139, 89, "hypertension_stage_1", "stage 1 hypertension"),
    (140, 70, "hypertension_stage_2", "stage 2 hypertension"),
    (120, 90, "hypertension_stage_2", "stage 2 hypertension"),
    (180, 120, "hypertension_stage_2", "stage 2 hypertension"),  # severe is strictly above
    (181, 100, "hypertensive_crisis", "severe hypertension"),
    (150, 121, "hypertensive_crisis", "severe hypertension"),
    (89, 59, "hypotension", "hypotension"),
    (90, 60, "normal", "normal"),
]


@pytest.mark.parametrize(("systolic", "diastolic", "category"), AHA)
def test_aha2017_clinical_examples(systolic, diastolic, category):
    assert rules.classify(systolic, diastolic, "aha2017") == category


@pytest.mark.parametrize(("systolic", "diastolic", "category", "label"), AHA2025)
def test_aha2025_clinical_examples(systolic, diastolic, category, label):
    assert rules.classify(systolic, diastolic, "aha2025") == category
    assert rules.classify(systolic, diastolic) == category  # the default rule set
    assert rules.band_of(systolic, diastolic, "aha2025").label == label
    assert rules.verdict(reading(systolic, diastolic), None)[:2] == (category, label)


def test_aha2025_is_the_default_and_first_in_the_registry():
    assert rules.DEFAULT_RULESET == "aha2025" == next(iter(rules.RULESETS))
    assert list(rules.RULESETS) == ["aha2025", "aha2017", "esh2023"]


def test_aha2025_keeps_the_2017_categories_on_a_fine_grid():
    # the 2025 guideline kept the 2017 cut-points: only the wording differs (so the risk model's
    # rules baseline and features are unchanged, see models/README.md)
    for s10 in range(400, 3001, 5):
        for d10 in range(200, 2001, 5):
            s, d = s10 / 10, d10 / 10
            assert rules.classify(s, d, "aha2025") == rules.classify(s, d, "aha2017"), (s, d)
    assert rules.band_of(190, 100, "aha2017").label == "hypertensive crisis"
    assert rules.band_of(190, 100, "aha2025").label == "severe hypertension"


# out-of-office (home) thresholds: AHA 2017 Table 11 / AHA 2025 HBPM table (130/80), ESH 2023
# home BP (135/85)
HOME = {"aha2025": (130.0, 80.0), "aha2017": (130.0, 80.0), "esh2023": (135.0, 85.0)}


def test_home_thresholds_of_every_rule_set():
    assert {name: rs.home for name, rs in rules.RULESETS.items()} == HOME


@pytest.mark.parametrize(("systolic", "diastolic", "category", "label"), ESH)
def test_esh2023_clinical_examples(systolic, diastolic, category, label):
    assert rules.classify(systolic, diastolic, "esh2023") == category
    assert rules.band_of(systolic, diastolic, "esh2023").label == label


def test_rule_sets_differ_where_the_guidelines_do():
    assert rules.classify(135, 85, "aha2017") == "hypertension_stage_1"
    assert rules.classify(135, 85, "esh2023") == "elevated"
    assert rules.classify(180, 110, "aha2017") == "hypertension_stage_2"
    assert rules.classify(180, 110, "esh2023") == "hypertensive_crisis"


def test_every_category_is_reachable_in_both_rule_sets():
    grid = [(s, d) for s in range(40, 301, 2) for d in range(20, 201, 2)]
    for name in rules.RULESETS:
        seen = {rules.classify(s, d, name) for s, d in grid}
        assert seen == set(CATEGORIES), name


def test_unknown_rule_set_is_a_clear_error():
    with pytest.raises(ValueError, match="aha2025, aha2017, esh2023"):
        rules.classify(120, 80, "jnc7")


def test_rule_data_is_validated():
    with pytest.raises(ValueError):
        rules.Cut("=>", 120)
    with pytest.raises(ValueError):
        rules.Band("stage_9", "x", None, None)
    with pytest.raises(ValueError, match="hypertension_stage_1"):
        rules.RuleSet(
            "x", "x", (), rules.AHA2017.default, rules.AHA2017.severe_hypotension, (180, 120)
        )


def test_rule_data_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.AHA2017.bands[0].systolic.at = 200  # type: ignore[misc]


# -- assess: single-reading anomaly types ---------------------------------------------------


def reading(systolic: float, diastolic: float) -> Reading:
    return Reading("o1", "p1", datetime(2025, 1, 1, tzinfo=UTC), float(systolic), float(diastolic))


def features(**over: float) -> Features:
    """A calm window of 12 normal readings, with overrides."""
    base = {
        "n": 12,
        "mean_sys": 118.0,
        "mean_dia": 76.0,
        "sd_sys": 5.0,
        "sd_dia": 4.0,
        "arv_sys": 4.0,
        "slope_sys_per_h": 0.0,
        "slope_dia_per_h": 0.0,
        "n_abnormal": 0,
        "hours_since_prev": 1.0,
        "last_sys": 118.0,
        "last_dia": 76.0,
    }
    base.update(over)
    return Features(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("systolic", "diastolic", "ruleset", "expected"),
    [
        (118, 76, "aha2017", ("normal", (), "low")),
        (125, 76, "aha2017", ("elevated", (), "low")),
        (132, 76, "aha2017", ("hypertension_stage_1", ("systolic_hypertension",), "moderate")),
        (125, 82, "aha2017", ("hypertension_stage_1", ("diastolic_hypertension",), "moderate")),
        (
            145,
            92,
            "aha2017",
            (
                "hypertension_stage_2",
                ("systolic_hypertension", "diastolic_hypertension"),
                "high",
            ),
        ),
        (
            190,
            100,
            "aha2017",
            (
                "hypertensive_crisis",
                ("hypertensive_crisis", "systolic_hypertension", "diastolic_hypertension"),
                "critical",
            ),
        ),
        (
            150,
            125,
            "aha2017",
            (
                "hypertensive_crisis",
                ("hypertensive_crisis", "systolic_hypertension", "diastolic_hypertension"),
                "critical",
            ),
        ),
        (85, 55, "aha2017", ("hypotension", ("hypotension",), "high")),
        (69, 45, "aha2017", ("hypotension", ("hypotension",), "critical")),
        (70, 40, "aha2017", ("hypotension", ("hypotension",), "high")),
        (95, 39, "aha2017", ("hypotension", ("hypotension",), "critical")),
        (135, 85, "esh2023", ("elevated", (), "low")),
        (142, 85, "esh2023", ("hypertension_stage_1", ("systolic_hypertension",), "moderate")),
        (130, 92, "esh2023", ("hypertension_stage_1", ("diastolic_hypertension",), "moderate")),
        (
            182,
            95,
            "esh2023",
            (
                "hypertensive_crisis",
                ("hypertensive_crisis", "systolic_hypertension", "diastolic_hypertension"),
                "critical",
            ),
        ),
    ],
)
def test_assess_single_reading(systolic, diastolic, ruleset, expected):
    assert rules.assess(reading(systolic, diastolic), features(), ruleset) == expected
    assert rules.assess(reading(systolic, diastolic), None, ruleset) == expected


# -- trend rules: both sides of every trend threshold ------------------------------------

T = rules.TrendRules()
TREND_CASES = [
    # (anomaly type, features that fire it, features just on the other side)
    (
        "sustained_hypertension",
        features(n=T.sustained_min_n, mean_sys=T.sustained_systolic),
        features(n=T.sustained_min_n, mean_sys=T.sustained_systolic - 0.01),
    ),
    (
        "sustained_hypertension",
        features(n=T.sustained_min_n, mean_dia=T.sustained_diastolic),
        features(n=T.sustained_min_n, mean_dia=T.sustained_diastolic - 0.01),
    ),
    (
        "sustained_hypertension",
        features(n=T.sustained_min_n, mean_sys=140),
        features(n=T.sustained_min_n - 1, mean_sys=140),
    ),
    (
        "rapid_rise",
        features(
            n=T.rapid_rise_min_n,
            slope_sys_per_h=T.rapid_rise_slope_per_h,
            mean_sys=110,
            last_sys=110 + T.rapid_rise_above_mean,
        ),
        features(
            n=T.rapid_rise_min_n,
            slope_sys_per_h=T.rapid_rise_slope_per_h - 0.01,
            mean_sys=110,
            last_sys=110 + T.rapid_rise_above_mean,
        ),
    ),
    (
        "rapid_rise",
        features(
            n=T.rapid_rise_min_n,
            slope_sys_per_h=30,
            mean_sys=110,
            last_sys=110 + T.rapid_rise_above_mean,
        ),
        features(
            n=T.rapid_rise_min_n,
            slope_sys_per_h=30,
            mean_sys=110,
            last_sys=110 + T.rapid_rise_above_mean - 0.01,
        ),
    ),
    (
        "rapid_rise",
        features(n=T.rapid_rise_min_n, slope_sys_per_h=30, mean_sys=110, last_sys=130),
        features(n=T.rapid_rise_min_n - 1, slope_sys_per_h=30, mean_sys=110, last_sys=130),
    ),
    (
        "high_variability",
        features(n=T.variability_min_n, sd_sys=T.variability_sd),
        features(n=T.variability_min_n, sd_sys=T.variability_sd - 0.01),
    ),
    (
        "high_variability",
        features(n=T.variability_min_n, arv_sys=T.variability_arv),
        features(n=T.variability_min_n, arv_sys=T.variability_arv - 0.01),
    ),
    (
        "high_variability",
        features(n=T.variability_min_n, sd_sys=25),
        features(n=T.variability_min_n - 1, sd_sys=25),
    ),
]


@pytest.mark.parametrize("ruleset", sorted(rules.RULESETS))
@pytest.mark.parametrize(("kind", "fires", "quiet"), TREND_CASES)
def test_both_sides_of_every_trend_threshold(ruleset, kind, fires, quiet):
    normal = reading(115, 75)
    category, types, _ = rules.assess(normal, fires, ruleset)
    assert category == "normal"
    assert types == (kind,)
    assert rules.assess(normal, quiet, ruleset)[1] == ()


def test_trend_cases_cover_every_trend_threshold():
    fields = {f.name for f in dataclasses.fields(rules.TrendRules)}
    # each threshold is moved by one case (thresholds) or n is moved (min_n)
    assert len(TREND_CASES) == len(fields)


def test_trend_types_follow_single_reading_types_in_a_stable_order():
    f = features(n=8, mean_sys=150, slope_sys_per_h=20, last_sys=190, sd_sys=20)
    _, types, severity = rules.assess(reading(190, 95), f, "aha2017")
    assert types == (
        "hypertensive_crisis",
        "systolic_hypertension",
        "diastolic_hypertension",
        "sustained_hypertension",
        "rapid_rise",
        "high_variability",
    )
    assert severity == "critical"


# -- severity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "types", "values", "expected"),
    [
        ("normal", (), (115, 75), "low"),
        ("elevated", (), (125, 75), "low"),
        ("normal", ("high_variability",), (115, 75), "low"),
        ("normal", ("rapid_rise",), (115, 75), "moderate"),
        ("normal", ("sustained_hypertension",), (115, 75), "moderate"),
        ("elevated", ("sustained_hypertension", "rapid_rise"), (125, 75), "moderate"),
        ("hypertension_stage_1", ("systolic_hypertension",), (132, 75), "moderate"),
        ("hypertension_stage_1", ("systolic_hypertension", "rapid_rise"), (132, 75), "high"),
        ("hypertension_stage_2", ("systolic_hypertension", "rapid_rise"), (150, 75), "high"),
        ("hypotension", ("hypotension", "rapid_rise"), (85, 55), "high"),
        ("hypotension", ("hypotension",), (70, 50), "high"),
        ("hypotension", ("hypotension",), (69.9, 50), "critical"),
        ("hypotension", ("hypotension",), (80, 39.9), "critical"),
        ("hypertensive_crisis", ("hypertensive_crisis",), (181, 90), "critical"),
    ],
)
def test_severity(category, types, values, expected):
    for name in rules.RULESETS:
        assert severity(category, types, *values, rules.RULESETS[name]) == expected


@given(
    st.floats(min_value=40, max_value=300),
    st.floats(min_value=20, max_value=200),
    st.sampled_from(sorted(rules.RULESETS)),
    st.floats(min_value=-50, max_value=50),
    st.floats(min_value=0, max_value=40),
)
def test_assess_invariants(systolic, diastolic, ruleset, slope, sd):
    f = features(n=8, slope_sys_per_h=slope, sd_sys=sd, last_sys=systolic)
    category, types, severity = rules.assess(reading(systolic, diastolic), f, ruleset)
    assert category in CATEGORIES and severity in SEVERITIES
    assert list(types) == sorted(types, key=rules.ANOMALY_TYPES.index)
    assert len(set(types)) == len(types)
    single = reading_anomalies(systolic, diastolic, category, rules.get_ruleset(ruleset))
    # an abnormal category always is an anomaly, and only abnormal categories give
    # single-reading anomaly types
    assert bool(single) == (category in rules.ABNORMAL_CATEGORIES)
    assert (severity == "critical") == (
        category == "hypertensive_crisis"
        or (category == "hypotension" and (systolic < 70 or diastolic < 40))
    )


@given(
    st.floats(min_value=40, max_value=300),
    st.floats(min_value=40, max_value=300),
    st.floats(min_value=20, max_value=200),
    st.sampled_from(sorted(rules.RULESETS)),
)
def test_higher_systolic_never_gives_a_lower_hypertension_grade(s1, s2, diastolic, ruleset):
    order = [c for c in CATEGORIES if c != "hypotension"]  # lowest to highest
    lo, hi = sorted((s1, s2))
    a, b = rules.classify(lo, diastolic, ruleset), rules.classify(hi, diastolic, ruleset)
    if "hypotension" not in (a, b):
        assert order.index(a) <= order.index(b)


def test_is_abnormal_matches_the_categories():
    assert rules.is_abnormal(130, 70) and rules.is_abnormal(85, 55)
    assert not rules.is_abnormal(129, 79)
    assert not rules.is_abnormal(135, 85, "esh2023")


# -- NEWS2 systolic sub-score: both sides of every band edge (RCP NEWS2 chart 1) -----------
@pytest.mark.parametrize(
    ("systolic", "score"),
    [
        (60, 3), (90, 3), (90.01, 2), (91, 2), (100, 2), (100.01, 1), (101, 1), (110, 1),
        (110.01, 0), (111, 0), (150, 0), (219, 0), (219.99, 0), (220, 3), (260, 3),
    ],
)  # fmt: skip
def test_news2_systolic_sub_score(systolic, score):
    assert rules.news2_systolic(systolic) == score


@given(st.floats(min_value=40, max_value=300))
def test_news2_systolic_is_one_of_the_chart_scores(systolic):
    score = rules.news2_systolic(systolic)
    assert score in (0, 1, 2, 3)
    assert (score == 3) == (systolic <= 90 or systolic >= 220)
