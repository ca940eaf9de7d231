"""models.train: determinism, patient-level split, artifact metadata, and the model vs the rules."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lib.domain import FEATURE_NAMES, GroundTruth
from lib.errors import ModelError
from lib.monitor.risk import DERIVED_NAMES, RiskModel, metadata_path, model_inputs, reference_proba
from models import train as T

# Small enough for a unit test (a few seconds), large enough to hold events in both halves.
SMALL = T.TrainConfig(seed=11, patients=160, hours=48.0)
# For claims about quality: with fewer patients the held-out AUROC varies too much between
# seeds to compare models (400 x 72 h: the model won on each of seeds 11-15 by 0.02-0.09).
MEDIUM = T.TrainConfig(seed=11, patients=400, hours=72.0)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def result() -> T.TrainResult:
    return T.train(SMALL)


@pytest.fixture(scope="module")
def medium() -> T.TrainResult:
    return T.train(MEDIUM)


@pytest.fixture(scope="module")
def written(result: T.TrainResult, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "bp_risk.joblib"
    blob = T.pipeline_bytes(result.pipeline)
    T.write_artifact(result.pipeline, out, T.build_metadata(result, blob))
    return out


def test_same_seed_gives_same_metrics_coefficients_and_bytes(result: T.TrainResult):
    again = T.train(SMALL)
    assert again.metrics == result.metrics
    assert again.threshold == result.threshold
    np.testing.assert_array_equal(again.model.coef, result.model.coef)
    np.testing.assert_array_equal(again.model.intercept, result.model.intercept)
    assert T.pipeline_bytes(again.pipeline) == T.pipeline_bytes(result.pipeline)


def test_another_seed_gives_another_model(result: T.TrainResult):
    other = T.train(T.TrainConfig(seed=12, patients=SMALL.patients, hours=SMALL.hours))
    assert not np.array_equal(other.model.coef, result.model.coef)


def test_split_is_by_patient(result: T.TrainResult):
    train, test = set(result.train_patients), set(result.test_patients)
    assert train and test and not train & test
    assert len(test) == round(SMALL.patients * SMALL.test_fraction)
    assert len(train | test) == SMALL.patients


def test_split_patients_is_deterministic_and_seeded():
    ids = [f"p{i:03d}" for i in range(50)]
    a = T.split_patients(ids, 1, 0.3)
    assert a == T.split_patients(list(reversed(ids)), 1, 0.3)  # input order does not matter
    assert a != T.split_patients(ids, 2, 0.3)
    assert len(a[1]) == 15 and sorted(a[0] + a[1]) == ids


def test_metadata_matches_artifact(written: Path, result: T.TrainResult):
    meta = json.loads(metadata_path(written).read_text())
    blob = written.read_bytes()
    assert meta["sha256"] == hashlib.sha256(blob).hexdigest()
    assert meta["size_bytes"] == len(blob)
    assert tuple(meta["feature_names"]) == FEATURE_NAMES
    clf = result.pipeline.named_steps["logit"]
    scaler = result.pipeline.named_steps["scale"]
    np.testing.assert_array_equal(np.array(meta["coefficients"]), clf.coef_)
    np.testing.assert_array_equal(np.array(meta["intercept"]), clf.intercept_)
    np.testing.assert_array_equal(np.array(meta["scaler_mean"]), scaler.mean_)
    np.testing.assert_array_equal(np.array(meta["scaler_scale"]), scaler.scale_)
    assert meta["classes"] == list(T.CLASSES) and list(clf.classes_) == [0, 1, 2]
    assert meta["training"]["seed"] == SMALL.seed
    assert meta["threshold"] == result.threshold  # exact: the figures hold at this value
    assert meta["derived_features"] == list(DERIVED_NAMES)
    inputs = result.pipeline.named_steps["inputs"]
    assert inputs.func is model_inputs
    assert [meta["input_min"], meta["input_max"]] == [
        inputs.kw_args["lower"],
        inputs.kw_args["upper"],
    ]
    assert len(meta["input_min"]) == len(FEATURE_NAMES) + len(DERIVED_NAMES)
    assert "--precision-target 0.5" in meta["training"]["command"]


def test_written_artifact_loads_and_scores_like_sklearn(written: Path, result: T.TrainResult):
    model = RiskModel.load(written)
    X = np.random.default_rng(0).normal(120.0, 25.0, size=(300, len(FEATURE_NAMES)))
    np.testing.assert_allclose(
        model.predict_proba(X), reference_proba(result.pipeline, X), rtol=0, atol=1e-9
    )


def test_written_artifact_tampered_is_refused(written: Path, tmp_path: Path):
    copy = tmp_path / "bp_risk.joblib"
    blob = bytearray(written.read_bytes())
    blob[-20] ^= 0xFF
    copy.write_bytes(bytes(blob))
    metadata_path(copy).write_text(metadata_path(written).read_text())
    with pytest.raises(ModelError, match="make train"):
        RiskModel.load(copy)


def test_model_beats_rules_only_baseline_on_held_out_patients(medium: T.TrainResult):
    model = medium.metrics["model"]
    rules = medium.metrics["baseline_rules_category"]
    assert medium.metrics["held_out"]["positives"] >= 30
    assert model["auroc"] > rules["auroc"] + 0.01
    assert model["auprc"] > rules["auprc"]


def test_scores_are_calibrated_probabilities(medium: T.TrainResult):
    """The prior correction brings the mean score to the event rate (balanced weights alone
    would put it near 0.5 or more)."""
    table = medium.metrics["model"]["calibration"]
    n = sum(row["n"] for row in table)
    mean_predicted = sum(row["mean_predicted"] * row["n"] for row in table) / n
    observed = sum(row["observed_rate"] * row["n"] for row in table) / n
    assert abs(mean_predicted - observed) < 0.5 * observed
    # deciles ordered by score: the top decile holds far more events than the bottom one
    assert table[-1]["observed_rate"] > 3 * table[0]["observed_rate"]


def test_threshold_reaches_the_precision_target_on_held_out_readings(medium: T.TrainResult):
    a = medium.metrics["alerting"]
    choice = a["threshold"]
    assert choice["reached"] and choice["precision"] >= MEDIUM.precision_target
    assert choice["threshold"] == medium.threshold
    # the lowest such threshold: the curve's points below it fall short of the target
    below = [p for p in a["pr_curve"] if p["threshold"] < medium.threshold]
    assert below and all(p["precision"] < MEDIUM.precision_target for p in below)
    assert a["rows"] > a["positives"] > 0
    lead = medium.metrics["lead_time"]
    assert lead["events"] > 0
    assert lead["rules_or_model"]["detected"] >= lead["rules"]["detected"]


def test_model_beats_the_rules_urgent_conditions_at_equal_recall(medium: T.TrainResult):
    """Per held-out reading, against the alert-quality truth (in an event or one ahead)."""
    a = medium.metrics["alerting"]
    rules, model = a["rules_urgent"], a["model_at_rules_recall"]
    assert model["recall"] >= rules["recall"]
    assert model["precision"] > rules["precision"]


def test_precision_target_flag_reaches_the_metadata(tmp_path: Path, monkeypatch):
    seen = {}

    def fake_train(cfg, progress):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(T, "train", fake_train)
    with pytest.raises(SystemExit):
        T.main(["--precision-target", "0.7", "--out", str(tmp_path / "m.joblib")])
    assert seen["cfg"].precision_target == 0.7
    with pytest.raises(SystemExit) as exc:
        T.main(["--precision-target", "1.5"])
    assert exc.value.code == 2


# -- pure helpers ---------------------------------------------------------------------------
def test_label_of_maps_event_kinds():
    def truth(within: bool, kind: str) -> GroundTruth:
        return GroundTruth("o", "p", "x", within, False, kind)

    assert T.label_of(truth(False, "crisis")) == 0  # kind of a later event: not within
    assert T.label_of(truth(True, "crisis")) == 1
    assert T.label_of(truth(True, "hypotension")) == 2


# Alerts are score >= threshold. Descending, with the true ones marked *:
#   score      0.9* 0.8  0.7* 0.6* 0.5  0.4  0.3* 0.2
#   precision  1/1  1/2  2/3  3/4  3/5  3/6  4/7  4/8
SCORES = np.array([0.4, 0.9, 0.2, 0.7, 0.5, 0.3, 0.8, 0.6])  # any order
TRUTH = np.array([0, 1, 0, 1, 0, 1, 0, 1], dtype=bool)


@pytest.mark.parametrize(
    ("target", "threshold", "precision", "recall", "alerts"),
    [
        (0.55, 0.3, 4 / 7, 1.0, 7),  # the lowest that reaches it, not the first from the top
        (0.5, 0.2, 0.5, 1.0, 8),  # every reading
        (0.7, 0.6, 0.75, 0.75, 4),
        (0.8, 0.9, 1.0, 0.25, 1),
        (1.0, 0.9, 1.0, 0.25, 1),
    ],
)
def test_precision_threshold_by_hand(target, threshold, precision, recall, alerts):
    got = T.precision_threshold(SCORES, TRUTH, target)
    assert got.reached
    assert got.threshold == threshold
    assert got.precision == pytest.approx(precision, abs=1e-6)
    assert got.recall == pytest.approx(recall)
    assert got.alerts == alerts == int(np.sum(got.threshold <= SCORES))


def test_precision_threshold_never_splits_a_tie_and_says_when_it_falls_short():
    scores = np.array([0.5, 0.5, 0.4])
    truth = np.array([1, 0, 1], dtype=bool)
    # 0.5 alerts on both tied readings (1/2); 0.4 on all three (2/3)
    assert T.precision_threshold(scores, truth, 0.6) == T.ThresholdChoice(
        0.4, True, pytest.approx(2 / 3, abs=1e-6), 1.0, 3
    )
    short = T.precision_threshold(scores, truth, 0.9)  # unreachable: the best is kept
    assert (short.reached, short.threshold, short.alerts) == (False, 0.4, 3)
    top_false = T.precision_threshold(np.array([0.9, 0.1]), np.array([0, 1], dtype=bool), 0.9)
    assert (top_false.reached, top_false.threshold, top_false.precision) == (False, 0.1, 0.5)


def test_at_recall_and_pr_curve_by_hand():
    # recall 3/4 is first reached at 0.6 (0.9, 0.7, 0.6 true): 4 alerts, 3 true
    assert T.at_recall(SCORES, TRUTH, 0.75) == {
        "threshold": 0.6,
        "alerts": 4,
        "precision": 0.75,
        "recall": 0.75,
    }
    curve = T.pr_curve(SCORES, TRUTH, (0.65, 0.95))
    assert curve == [
        {
            "threshold": 0.65,
            "alerts": 3,
            "precision": pytest.approx(2 / 3, abs=1e-6),
            "recall": 0.5,
        },
        {"threshold": 0.95, "alerts": 0, "precision": None, "recall": 0.0},
    ]


def test_rules_urgent_is_crisis_or_systolic_below_the_hypotension_cut():
    data = _hand_dataset(
        last_sys=[185.0, 150.0, 89.0, 95.0, 90.0],
        category=["hypertensive_crisis", "hypertension_stage_2", "hypotension", "hypotension",
                  "hypotension"],
    )  # fmt: skip
    # 95 / 55 and 90 / 58 are hypotension on the diastolic alone: review, not urgent
    assert T.rules_urgent(data, "aha2017").tolist() == [True, False, True, False, False]


def _hand_dataset(last_sys: list[float], category: list[str]) -> T.Dataset:
    n = len(last_sys)
    X = np.zeros((n, len(FEATURE_NAMES)))
    X[:, FEATURE_NAMES.index("last_sys")] = last_sys
    return T.Dataset(
        patient_ids=["p"],
        X=X,
        y=np.zeros(n, dtype=bool),
        label=np.zeros(n, dtype=np.int64),
        in_event=np.zeros(n, dtype=bool),
        patient=np.zeros(n, dtype=np.int64),
        ts=np.arange(n) * 3600.0,
        category=category,
        event_kind=[""] * n,
    )


def test_category_rates_are_smoothed_event_rates():
    cats = ["normal"] * 8 + ["hypotension"] * 2
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1], dtype=bool)
    rates = T.category_rates(cats, y)
    assert rates["hypotension"] == pytest.approx((2 + 0.3) / 3)
    assert rates["normal"] == pytest.approx((1 + 0.3) / 9)


def test_lead_times_on_a_hand_built_patient():
    h = 3600.0
    # readings at 0..5 h; the event starts at the 5 h reading; horizon 3 h
    data = T.Dataset(
        patient_ids=["p"],
        X=np.zeros((6, len(FEATURE_NAMES))),
        y=np.array([0, 0, 1, 1, 1, 0], dtype=bool),
        label=np.array([0, 0, 1, 1, 1, 0]),
        in_event=np.array([0, 0, 0, 0, 0, 1], dtype=bool),
        patient=np.zeros(6, dtype=np.int64),
        ts=np.arange(6) * h,
        category=["normal"] * 5 + ["hypertensive_crisis"],
        event_kind=[""] * 6,
    )
    model_alert = np.array([1, 0, 0, 1, 0, 0], dtype=bool)  # 0 h is outside the horizon
    rules_alert = np.array([0, 0, 0, 0, 0, 1], dtype=bool)
    out = T.lead_times(data, np.arange(6), model_alert, rules_alert, 3 * h)
    assert out["events"] == 1
    assert out["model"]["median_lead_h"] == pytest.approx(2.0)
    assert out["rules"]["median_lead_h"] == pytest.approx(0.0)
    assert out["model_earlier_than_rules"] == 1


def test_committed_artifact_loads_and_beats_its_baseline():
    path = REPO / "models" / "bp_risk.joblib"
    if not path.exists():
        pytest.skip("no committed model yet: run make train")
    model = RiskModel.load(path)
    metrics = model.metadata["metrics"]
    assert metrics["model"]["auroc"] > metrics["baseline_rules_category"]["auroc"]
    assert model.threshold is not None and 0.0 < model.threshold < 1.0
