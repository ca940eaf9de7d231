"""Clinical rules as data: blood-pressure categories, anomaly types and severity.

Pure functions over frozen rule data; no I/O, no clock. :data:`RULESETS` is the one registry
of rule sets: the settings validate ``BPWATCH_RULESET`` against it, the monitor resolves it once
at build time and passes the :class:`RuleSet` down, and the alert thresholds come from it. A new
rule set is one more ``RuleSet(...)`` in the registry. Three rule sets:

``aha2025`` (default): 2025 AHA/ACC guideline, office thresholds, mm[Hg]; the same cuts as
aha2017 with the 2025 wording (a reading above 180 and/or 120 is *severe hypertension*: an
emergency only with acute target-organ damage, which a BP stream cannot see; it keeps the
contract category ``hypertensive_crisis``)

``aha2017``: 2017 ACC/AHA guideline, office thresholds, mm[Hg]

    hypertensive_crisis    systolic > 180 or diastolic > 120
    hypertension_stage_2   systolic >= 140 or diastolic >= 90
    hypertension_stage_1   systolic >= 130 or diastolic >= 80
    hypotension            systolic < 90 or diastolic < 60
    elevated               systolic >= 120 (diastolic < 80 follows from the order)
    normal                 otherwise (< 120 and < 80)

``esh2023``: 2023 ESH guideline, office thresholds, mapped onto the contract's categories

    grade 3 hypertension   >= 180 or >= 110  -> hypertensive_crisis (ESH: the range in which a
                                                 hypertensive emergency must be considered)
    grade 2 hypertension   >= 160 or >= 100  -> hypertension_stage_2
    grade 1 hypertension   >= 140 or >= 90   -> hypertension_stage_1 (isolated systolic
                                                 hypertension, >= 140 and < 90, lands here)
    hypotension            < 90 or < 60      -> hypotension (ESH defines no office cut-off;
                                                 the same as aha2017)
    high-normal            >= 130 or >= 85   -> elevated
    normal                 >= 120 or >= 80   -> normal
    optimal                otherwise         -> normal

The bands of a rule set are tried in order and the first whose systolic *or* diastolic cut is
hit wins (the guidelines' "and/or": the higher category of the two values). So a reading that
is both high and low (150/55) is hypertensive, not hypotensive. ``classify`` does not check
plausibility (that is ``lib.monitor.fhir``'s job).

Anomalies. A reading is an anomaly when ``anomaly_types`` is not empty:

    single reading   hypertensive_crisis     category is hypertensive_crisis
                     systolic_hypertension   systolic hits the stage-1 band's systolic cut
                     diastolic_hypertension  diastolic hits the stage-1 band's diastolic cut
                     hypotension             category is hypotension
    window trends    sustained_hypertension  window mean >= 135 systolic or >= 85 diastolic
                     (Features, incl.        (home/out-of-office threshold of both guidelines)
                     this reading)           over at least 5 readings
                     rapid_rise              systolic slope >= 10 mm[Hg]/h over at least 4
                                             readings, and the reading >= 15 above the window
                                             mean (a rise that is real, not two close readings)
                     high_variability        systolic SD >= 15 or ARV >= 14 over >= 5 readings

Each band carries the guideline's own wording (``Band.label``), written to the documents as
``category_label``. Each rule set also holds its *out-of-office* (home) thresholds,
``RuleSet.home``: a home-BP protocol mean at or above the systolic *or* the diastolic value is
home hypertension (lib.monitor.home).

So categories stage 1, stage 2, crisis and hypotension are always anomalies; normal and elevated
readings are anomalies only when a trend rule fires.

Severity (``severity``), a pure function of the category, the types and the values:

    critical   hypertensive_crisis, or severe hypotension (systolic < 70 or diastolic < 40)
    high       hypertension_stage_2, hypotension
    moderate   hypertension_stage_1
    low        everything else (normal, elevated, no anomaly)
    then       rapid_rise raises one level; sustained_hypertension raises to at least moderate;
               trends never make a reading critical (critical pages a clinician: it needs an
               acute single-reading finding).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping
from dataclasses import astuple, dataclass, field, replace

from lib.domain import CATEGORIES, SEVERITIES, Features, Reading
from lib.memo import remember

ANOMALY_TYPES = (
    "hypertensive_crisis",
    "systolic_hypertension",
    "diastolic_hypertension",
    "hypotension",
    "sustained_hypertension",
    "rapid_rise",
    "high_variability",
)
ABNORMAL_CATEGORIES = frozenset(
    {"hypertension_stage_1", "hypertension_stage_2", "hypertensive_crisis", "hypotension"}
)

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<": operator.lt,
    "<=": operator.le,
}


# the severity of each category before the trend rules (see the module docstring)
_SEVERITY_BY_CATEGORY = {
    "normal": "low",
    "elevated": "low",
    "hypertension_stage_1": "moderate",
    "hypertension_stage_2": "high",
    "hypotension": "high",
    "hypertensive_crisis": "critical",
}
_LEVEL = {name: i for i, name in enumerate(SEVERITIES)}
_LEVEL_OF_CATEGORY = {c: _LEVEL[s] for c, s in _SEVERITY_BY_CATEGORY.items()}
_MODERATE = _LEVEL["moderate"]
_TREND_CAP = _LEVEL["high"]  # trends raise the severity up to this level, never to critical


# (crisis, systolic >= stage-1 cut, diastolic >= stage-1 cut, hypotension) -> anomaly types
_SINGLE: dict[tuple[bool, ...], tuple[str, ...]] = {
    flags: tuple(t for t, on in zip(ANOMALY_TYPES[:4], flags, strict=True) if on)
    for flags in itertools.product((False, True), repeat=4)
}
# (sustained_hypertension, rapid_rise, high_variability) -> trend anomaly types
_TRENDS: dict[tuple[bool, ...], tuple[str, ...]] = {
    flags: tuple(t for t, on in zip(ANOMALY_TYPES[4:], flags, strict=True) if on)
    for flags in itertools.product((False, True), repeat=3)
}


@dataclass(frozen=True, slots=True)
class Cut:
    """A threshold on one value in mm[Hg]: hit when ``value <op> at``."""

    op: str  # ">=" | ">" | "<" | "<="
    at: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"Cut.op must be one of {', '.join(_OPS)}, not {self.op!r}")

    def hit(self, value: float) -> bool:
        return _OPS[self.op](value, self.at)

    def __str__(self) -> str:
        return f"{self.op} {self.at:g}"


@dataclass(frozen=True, slots=True)
class Band:
    """A category band: hit when the systolic *or* the diastolic cut is hit."""

    category: str  # one of lib.domain.CATEGORIES
    label: str  # the guideline's own name
    systolic: Cut | None
    diastolic: Cut | None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}")

    def matches(self, systolic: float, diastolic: float) -> bool:
        return (self.systolic is not None and self.systolic.hit(systolic)) or (
            self.diastolic is not None and self.diastolic.hit(diastolic)
        )


@dataclass(frozen=True, slots=True)
class TrendRules:
    """Thresholds of the window (trend) rules, applied to lib.domain.Features."""

    sustained_min_n: int = 5
    sustained_systolic: float = 135.0  # window mean >=
    sustained_diastolic: float = 85.0  # window mean >=
    rapid_rise_min_n: int = 4
    rapid_rise_slope_per_h: float = 10.0  # systolic slope >=
    rapid_rise_above_mean: float = 15.0  # last systolic - window mean systolic >=
    variability_min_n: int = 5
    variability_sd: float = 15.0  # systolic SD >=
    variability_arv: float = 14.0  # systolic average real variability >=


@dataclass(frozen=True, slots=True)
class RuleSet:
    name: str
    title: str
    bands: tuple[Band, ...]  # priority order: the first band hit wins
    default: Band  # when no band is hit
    severe_hypotension: Band  # a hypotension reading in this band is critical
    # (systolic, diastolic) at or above which *both* values make an alert "combined critical"
    critical: tuple[float, float]
    # out-of-office (home) thresholds: a protocol mean >= systolic or >= diastolic is home
    # hypertension
    home: tuple[float, float] = (130.0, 80.0)
    trends: TrendRules = TrendRules()
    # compiled forms of the data above, for rules.verdict (not part of equality): see _code
    _single: tuple[tuple[_Single, ...], ...] = field(init=False, repr=False, compare=False)
    _trend_cuts: tuple[float, ...] = field(init=False, repr=False, compare=False)  # astuple
    _memo: tuple[dict[float, int], dict[float, int]] = field(
        init=False, repr=False, compare=False
    )  # _code of a systolic value, of a diastolic value

    def __post_init__(self) -> None:
        _ = self.stage_1  # a rule set without a stage-1 band is refused here
        codes = range(4 * (len(self.bands) + 1))
        single = tuple(tuple(self._single_rules(cs, cd) for cd in codes) for cs in codes)
        object.__setattr__(self, "_single", single)
        object.__setattr__(self, "_trend_cuts", astuple(self.trends))
        object.__setattr__(self, "_memo", ({}, {}))

    def _code(self, value: float, diastolic: bool) -> int:
        """What one value (systolic, or diastolic) hits on its own, as ``4 * first + 2 *
        stage_1 + severe``: the index of the first band whose cut on this value it hits
        (``len(bands)`` for none), whether it hits the stage-1 band's cut, and the
        severe-hypotension band's cut. Memoised per value: readings repeat a few hundred values
        (the memo is cleared when full; results never depend on it)."""
        memo = self._memo[diastolic]
        code = memo.get(value)
        if code is None:
            first = next(
                (i for i, band in enumerate(self.bands) if _cut_hit(band, value, diastolic)),
                len(self.bands),
            )
            stage_1 = _cut_hit(self.stage_1, value, diastolic)
            severe = _cut_hit(self.severe_hypotension, value, diastolic)
            code = 4 * first + 2 * stage_1 + severe
            remember(memo, value, code, _MEMO_MAX)
        return code

    def _single_rules(self, cs: int, cd: int) -> _Single:
        """The single-reading rules of the module docstring for a reading whose values hit
        what codes ``cs`` (systolic) and ``cd`` (diastolic) say: (category, label, anomaly
        types, severity level before the trend rules). The band is the first one hit by either
        value; a severely low reading of the hypotension band is critical."""
        first = min(cs >> 2, cd >> 2)
        band = self.bands[first] if first < len(self.bands) else self.default
        category = band.category
        hypotension = category == "hypotension"
        crisis = category == "hypertensive_crisis"
        types = _SINGLE[crisis, bool(cs & 2), bool(cd & 2), hypotension]
        level = _LEVEL_OF_CATEGORY[category]
        if hypotension and (cs & 1 or cd & 1):
            level = _LEVEL["critical"]
        return category, band.label, types, level

    @property
    def stage_1(self) -> Band:
        """The band whose cuts define systolic_/diastolic_hypertension."""
        for band in self.bands:
            if band.category == "hypertension_stage_1":
                return band
        raise ValueError(f"rule set {self.name} has no hypertension_stage_1 band")

    def band_of(self, systolic: float, diastolic: float) -> Band:
        """The first band hit by the systolic or the diastolic value, else the default."""
        i = min(self._code(systolic, False), self._code(diastolic, True)) >> 2
        return self.bands[i] if i < len(self.bands) else self.default


# (category, label, single-reading anomaly types, severity level): see RuleSet._single_rules
_Single = tuple[str, str, tuple[str, ...], int]
_MEMO_MAX = 4096  # values memoised per rule set and per systolic / diastolic


def _cut_hit(band: Band, value: float, diastolic: bool) -> bool:
    cut = band.diastolic if diastolic else band.systolic
    return cut is not None and cut.hit(value)


# Hypertension 2025;82:e212-e316 (DOI 10.1161/HYP.0000000000000249), checked against the
# guideline's tables as reproduced in its official pocket guide (Guideline Central, 2025):
# "Categories of BP in Adults" (normal <120 and <80; elevated 120-129 and <80; stage 1 130-139
# or 80-89; stage 2 >=140 or >=90; "individuals with SBP and DBP in 2 categories should be
# designated to the higher BP category"); section 6.2 "Hypertensive Emergencies and Severe
# Hypertension": severe hypertension ">180 and/or >120 mm Hg", an emergency only "with evidence
# of acute target organ damage"; the table of values for home BP monitoring (HBPM)
# corresponding to office levels: office 130/80 = HBPM 130/80 (so home: >=130 or >=80).
# The guideline sets no hypotension cut-off: <90 or <60 as in aha2017.
AHA2025 = RuleSet(
    name="aha2025",
    title="2025 AHA/ACC Guideline for the Prevention, Detection, Evaluation and Management of "
    "High Blood Pressure in Adults (office)",
    bands=(
        Band("hypertensive_crisis", "severe hypertension", Cut(">", 180), Cut(">", 120)),
        Band("hypertension_stage_2", "stage 2 hypertension", Cut(">=", 140), Cut(">=", 90)),
        Band("hypertension_stage_1", "stage 1 hypertension", Cut(">=", 130), Cut(">=", 80)),
        Band("hypotension", "hypotension", Cut("<", 90), Cut("<", 60)),
        Band("elevated", "elevated", Cut(">=", 120), None),
    ),
    default=Band("normal", "normal", None, None),
    severe_hypotension=Band("hypotension", "severe hypotension", Cut("<", 70), Cut("<", 40)),
    critical=(180.0, 120.0),
    home=(130.0, 80.0),
)

# Hypertension 2018;71:e13-e115: Table 6 "Categories of BP in Adults"; Table 11 "Corresponding
# Values of SBP/DBP for Clinic, HBPM, Daytime, Nighttime, and 24-Hour ABPM Measurements"
# (clinic 130/80 = HBPM 130/80); hypertensive crisis >180 and/or >120 (section 11.2).
AHA2017 = replace(
    AHA2025,  # the 2025 guideline kept the 2017 cuts; only the wording of the top band differs
    name="aha2017",
    title="2017 ACC/AHA Guideline for High Blood Pressure in Adults (office)",
    bands=(
        Band("hypertensive_crisis", "hypertensive crisis", Cut(">", 180), Cut(">", 120)),
        *AHA2025.bands[1:],
    ),
)

# J Hypertens 2023;41:1874-2071: the table "Classification of office BP and definitions of
# hypertension grades" (optimal <120 and <80 ... grade 3 >=180 and/or >=110) and the table of
# hypertension definitions by office, ambulatory and home BP (home BP >=135 and/or >=85).
ESH2023 = RuleSet(
    name="esh2023",
    title="2023 ESH Guidelines for the management of arterial hypertension (office)",
    bands=(
        Band("hypertensive_crisis", "grade 3 hypertension", Cut(">=", 180), Cut(">=", 110)),
        Band("hypertension_stage_2", "grade 2 hypertension", Cut(">=", 160), Cut(">=", 100)),
        Band("hypertension_stage_1", "grade 1 hypertension", Cut(">=", 140), Cut(">=", 90)),
        Band("hypotension", "hypotension", Cut("<", 90), Cut("<", 60)),
        Band("elevated", "high-normal", Cut(">=", 130), Cut(">=", 85)),
        Band("normal", "normal", Cut(">=", 120), Cut(">=", 80)),
    ),
    default=Band("normal", "optimal", None, None),
    severe_hypotension=Band("hypotension", "severe hypotension", Cut("<", 70), Cut("<", 40)),
    critical=(180.0, 110.0),
    home=(135.0, 85.0),
)

# The registry: name -> RuleSet. The first entry's name is the default of BPWATCH_RULESET.
RULESETS: Mapping[str, RuleSet] = {r.name: r for r in (AHA2025, AHA2017, ESH2023)}
DEFAULT_RULESET = next(iter(RULESETS))


def get_ruleset(ruleset: str | RuleSet) -> RuleSet:
    """A RuleSet by name (a key of :data:`RULESETS`), or the RuleSet itself."""
    if type(ruleset) is RuleSet:
        return ruleset
    try:
        return RULESETS[ruleset]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown rule set {ruleset!r}: use one of {', '.join(RULESETS)}"
        ) from None


def cuts_at(ruleset: RuleSet, category: str) -> tuple[float, float]:
    """(systolic, diastolic) thresholds of the rule set's first band of this category."""
    for band in ruleset.bands:
        if band.category == category and band.systolic and band.diastolic:
            return band.systolic.at, band.diastolic.at
    raise ValueError(f"rule set {ruleset.name} has no {category} band with both cuts")


def classify(systolic: float, diastolic: float, ruleset: str | RuleSet = DEFAULT_RULESET) -> str:
    """The contract category of one reading (values in mm[Hg])."""
    return get_ruleset(ruleset).band_of(systolic, diastolic).category


def band_of(systolic: float, diastolic: float, ruleset: str | RuleSet = DEFAULT_RULESET) -> Band:
    """The guideline band of one reading (its ``label`` names e.g. the ESH grade)."""
    return get_ruleset(ruleset).band_of(systolic, diastolic)


def is_abnormal(systolic: float, diastolic: float, ruleset: str | RuleSet = "aha2017") -> bool:
    """In an abnormal category of the rule set: stage 1 or above, or hypotension.

    ``Features.n_abnormal`` counts the window's readings for which this holds under ``aha2017``
    (fixed, so the model's input keeps its meaning whatever ``BPWATCH_RULESET`` says).
    """
    return classify(systolic, diastolic, ruleset) in ABNORMAL_CATEGORIES


def news2_systolic(systolic: float) -> int:
    """The NEWS2 sub-score of systolic blood pressure (Royal College of Physicians, National
    Early Warning Score 2, 2017, chart 1): <=90 -> 3, 91-100 -> 2, 101-110 -> 1,
    111-219 -> 0, >=220 -> 3. The chart's integer bands are read as cuts at 90, 100, 110 and
    220 (so 90.5 scores 2, 219.5 scores 0): one comparison chain.
    """
    if systolic <= 90.0:
        return 3
    if systolic <= 100.0:
        return 2
    if systolic <= 110.0:
        return 1
    return 0 if systolic < 220.0 else 3


def assess(
    reading: Reading, features: Features | None, ruleset: str | RuleSet = DEFAULT_RULESET
) -> tuple[str, tuple[str, ...], str]:
    """(category, anomaly_types, severity) of one reading in its window.

    ``features`` are the window's features including this reading; ``None`` applies only the
    single-reading rules. :func:`verdict` also gives the band's label.
    """
    category, _, types, sev = verdict(reading, features, ruleset)
    return category, types, sev


def verdict(
    reading: Reading, features: Features | None, ruleset: str | RuleSet = DEFAULT_RULESET
) -> tuple[str, str, tuple[str, ...], str]:
    """(category, category_label, anomaly_types, severity): :func:`assess` with the label.

    The one implementation of the rules of the module docstring (the monitor's per-reading
    path): the single-reading rules precomputed by the rule set for what each value hits
    (:meth:`RuleSet._single_rules`), then the trend rules and their effect on the severity.
    """
    rules = ruleset if type(ruleset) is RuleSet else get_ruleset(ruleset)
    sys_, dia = reading.systolic, reading.diastolic
    memo_s, memo_d = rules._memo
    cs = memo_s.get(sys_)
    if cs is None:
        cs = rules._code(sys_, False)
    cd = memo_d.get(dia)
    if cd is None:
        cd = rules._code(dia, True)
    category, label, types, level = rules._single[cs][cd]
    if features is not None:
        n, mean_s, mean_d, sd_s, _, arv, slope_s, _, _, _, last_s, _ = features
        sus_n, sus_s, sus_d, rise_n, rise_slope, rise_above, var_n, var_sd, var_arv = (
            rules._trend_cuts
        )
        sustained = n >= sus_n and (mean_s >= sus_s or mean_d >= sus_d)
        rapid = n >= rise_n and slope_s >= rise_slope and last_s - mean_s >= rise_above
        variable = n >= var_n and (sd_s >= var_sd or arv >= var_arv)
        if sustained or rapid or variable:
            types = types + _TRENDS[sustained, rapid, variable]
            if level < _TREND_CAP:  # trends never make a reading critical
                if rapid:
                    level = min(level + 1, _TREND_CAP)
                if sustained:
                    level = max(level, _MODERATE)
    return category, label, types, SEVERITIES[level]
