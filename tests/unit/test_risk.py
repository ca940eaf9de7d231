"""lib.monitor.risk: verified loading and the fast scorer (no scikit-learn per message)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from lib.domain import FEATURE_NAMES, Features
from lib.errors import ModelError
from lib.monitor.risk import (
    DERIVED_NAMES,
    HIGH_DIA,
    HIGH_SYS,
    LOW_DIA,
    LOW_SYS,
    RiskModel,
    _derived_one,
    input_bounds,
    linear_parameters,
    metadata_path,
    model_inputs,
    reference_proba,
)

N = len(FEATURE_NAMES)


def feature_matrix(features: list[Features]) -> np.ndarray:
    """The model's input matrix of some windows, columns in FEATURE_NAMES order (the tests'
    oracle: the monitor scores one reading at a time)."""
    return np.array([f.vector() for f in features], dtype=np.float64).reshape(len(features), N)


def _fit_pipeline(seed: int = 3, multinomial: bool = True) -> Pipeline:
    """Classes 0 (no event), 1 and 2 (two event kinds at opposite ends), or binary."""
    rng = np.random.default_rng(seed)
    X = rng.normal(loc=120.0, scale=15.0, size=(400, N))
    w = rng.normal(size=N)
    z = (X - 120.0) @ w / 15.0 + rng.normal(size=400)
    y = np.where(z > 1.5, 1, np.where(z < -1.5, 2, 0)) if multinomial else z > 1.0
    pipe = Pipeline(
        [("scale", StandardScaler()), ("logit", LogisticRegression(class_weight="balanced"))]
    )
    return pipe.fit(X, y)


def _write(pipe: Pipeline, out: Path, **meta_overrides) -> Path:
    """The artifact and its metadata as models/train.py writes them."""
    joblib.dump(pipe, out)
    try:
        mean, scale, coef, intercept = linear_parameters(pipe)
        params = {
            "classes": [str(c) for c in pipe.classes_],
            "scaler_mean": mean.tolist(),
            "scaler_scale": scale.tolist(),
            "coefficients": coef.tolist(),
            "intercept": intercept.tolist(),
        }
    except ModelError:  # not a pipeline: no parameters to write
        params = {}
    meta = {
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "feature_names": list(FEATURE_NAMES),
        "threshold": 0.25,
        **params,
        **meta_overrides,
    }
    metadata_path(out).write_text(json.dumps(meta))
    return out


# module-level for the hypothesis test (fixtures are not reset per example)
_PIPES = {"multinomial": _fit_pipeline(), "binary": _fit_pipeline(multinomial=False)}
_MODELS = {kind: RiskModel.from_pipeline(p) for kind, p in _PIPES.items()}


@pytest.fixture(scope="module", params=sorted(_PIPES))
def pipe(request) -> Pipeline:
    return _PIPES[request.param]


@pytest.fixture
def artifact(tmp_path: Path, pipe: Pipeline) -> Path:
    return _write(pipe, tmp_path / "bp_risk.joblib")


@pytest.fixture(scope="module")
def model(pipe: Pipeline) -> RiskModel:
    return RiskModel.from_pipeline(pipe)


def _features(vec) -> Features:
    return Features(**dict(zip(Features._fields, vec, strict=True)))


def test_feature_order_of_domain_matches_the_named_tuple():
    # _features() relies on this; the model's input order is FEATURE_NAMES.
    assert Features._fields == FEATURE_NAMES
    f = _features(range(len(FEATURE_NAMES)))
    assert f.vector() == tuple(float(i) for i in range(len(FEATURE_NAMES)))
    assert list(f.as_dict().items()) == [(k, i) for i, k in enumerate(FEATURE_NAMES)]


def test_reference_is_one_minus_no_event_probability(pipe: Pipeline):
    X = np.random.default_rng(2).normal(120.0, 30.0, size=(50, N))
    proba = pipe.predict_proba(X)
    assert pipe.classes_[0] == 0  # class 0 / False is "no event"
    np.testing.assert_allclose(reference_proba(pipe, X), 1.0 - proba[:, 0], atol=1e-12)


def test_multinomial_model_has_a_logit_per_class():
    model = _MODELS["multinomial"]
    assert model.coef.shape == (3, N) and model.intercept.shape == (3,)
    assert _MODELS["binary"].coef.shape == (1, N)


def test_load_verifies_and_scores_like_the_pipeline(artifact: Path, pipe: Pipeline):
    model = RiskModel.load(artifact)
    assert model.feature_names == FEATURE_NAMES
    assert model.threshold == 0.25
    assert model.sha256 == hashlib.sha256(artifact.read_bytes()).hexdigest()
    X = np.random.default_rng(11).normal(120.0, 30.0, size=(200, N))
    np.testing.assert_allclose(model.predict_proba(X), reference_proba(pipe, X), atol=1e-9)


def test_missing_artifact_names_the_fix(tmp_path: Path):
    with pytest.raises(ModelError, match="make train"):
        RiskModel.load(tmp_path / "absent.joblib")


def test_missing_metadata_names_the_fix(artifact: Path):
    metadata_path(artifact).unlink()
    with pytest.raises(ModelError, match=r"metadata .* is missing.*make train"):
        RiskModel.load(artifact)


def test_tampered_artifact_is_refused_before_unpickling(artifact: Path, monkeypatch):
    blob = bytearray(artifact.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    artifact.write_bytes(bytes(blob))
    calls = []
    monkeypatch.setattr(joblib, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(ModelError, match=r"sha256.*make train"):
        RiskModel.load(artifact)
    assert calls == []  # never unpickled


def test_swapped_artifact_with_stale_metadata_is_refused(tmp_path: Path, pipe: Pipeline):
    out = _write(pipe, tmp_path / "bp_risk.joblib")
    joblib.dump(
        _fit_pipeline(seed=99, multinomial=False), out
    )  # a different, valid pickle; metadata untouched
    with pytest.raises(ModelError, match="does not match the sha256"):
        RiskModel.load(out)


def test_feature_name_mismatch_is_refused(tmp_path: Path, pipe: Pipeline):
    names = list(FEATURE_NAMES)
    names[0], names[1] = names[1], names[0]
    out = _write(pipe, tmp_path / "bp_risk.joblib", feature_names=names)
    with pytest.raises(ModelError, match="trained on features"):
        RiskModel.load(out)


def test_metadata_without_sha_is_refused(tmp_path: Path, pipe: Pipeline):
    out = _write(pipe, tmp_path / "bp_risk.joblib", sha256=None)
    with pytest.raises(ModelError, match="no sha256"):
        RiskModel.load(out)


def test_non_pipeline_pickle_is_refused(tmp_path: Path):
    out = _write({"not": "a model"}, tmp_path / "bp_risk.joblib")
    with pytest.raises(ModelError, match="pipeline"):
        RiskModel.load(out)


def test_scorer_equals_predict_proba_on_random_and_extreme_inputs(model: RiskModel, pipe):
    rng = np.random.default_rng(5)
    X = np.vstack(
        [
            rng.normal(120.0, 20.0, size=(500, N)),
            rng.uniform(-1e6, 1e6, size=(200, N)),  # saturates the sigmoid both ways
            np.full((1, N), 1e300),
            np.full((1, N), -1e300),
            np.zeros((1, N)),
        ]
    )
    expected = reference_proba(pipe, X)
    batch = model.predict_proba(X)
    one = np.array([model.predict_proba_one(_features(row)) for row in X])
    assert np.isfinite(batch).all() and np.isfinite(one).all()
    np.testing.assert_allclose(batch, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(one, expected, rtol=0, atol=1e-9)
    assert ((batch >= 0.0) & (batch <= 1.0)).all()
    # the extremes really saturate (so the overflow path was exercised)
    assert batch.min() < 1e-12 and batch.max() > 1 - 1e-12


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1e5, max_value=1e5, allow_nan=False, allow_infinity=False),
        min_size=N,
        max_size=N,
    )
)
def test_one_and_batch_agree_with_pipeline(vec):
    for kind, pipe in _PIPES.items():
        model = _MODELS[kind]
        expected = float(reference_proba(pipe, np.array([vec]))[0])
        assert abs(model.predict_proba_one(_features(vec)) - expected) <= 1e-9, kind
        assert abs(float(model.predict_proba(np.array([vec]))[0]) - expected) <= 1e-9, kind


def test_the_batch_and_one_reading_paths_agree(model: RiskModel, pipe: Pipeline):
    rng = np.random.default_rng(8)
    feats = [_features(row) for row in rng.normal(100.0, 25.0, size=(30, N))]
    X = np.array([f.vector() for f in feats], dtype=np.float64)  # columns in FEATURE_NAMES order
    batch = model.predict_proba(X)
    np.testing.assert_allclose(batch, reference_proba(pipe, X))
    np.testing.assert_allclose([model.predict_proba_one(f) for f in feats], batch, atol=1e-9)


def test_wrong_matrix_shape_is_a_value_error(model: RiskModel):
    with pytest.raises(ValueError, match="shape"):
        model.predict_proba(np.zeros((3, N + 1)))


def test_from_pipeline_rejects_name_count_mismatch(pipe: Pipeline):
    with pytest.raises(ModelError, match="feature names"):
        RiskModel.from_pipeline(pipe, FEATURE_NAMES[:-1])


# -- load_parameters: the monitor's loader, from the verified metadata ----------------------


def test_load_parameters_scores_bit_identically_to_the_pipeline_loader(artifact: Path):
    full, lean = RiskModel.load(artifact), RiskModel.load_parameters(artifact)
    assert lean.pipeline is None and lean.threshold == full.threshold
    X = np.random.default_rng(3).normal(120.0, 30.0, size=(500, N))
    assert np.array_equal(lean.predict_proba(X), full.predict_proba(X))
    f = _features(X[0])
    assert lean.predict_proba_one(f) == full.predict_proba_one(f)


def test_load_parameters_refuses_a_tampered_artifact_too(artifact: Path):
    blob = bytearray(artifact.read_bytes())
    blob[-3] ^= 0x01
    artifact.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match=r"sha256.*make train"):
        RiskModel.load_parameters(artifact)


def test_load_parameters_without_parameters_names_the_fix(tmp_path: Path, pipe: Pipeline):
    out = _write(pipe, tmp_path / "bp_risk.joblib", coefficients=None)
    with pytest.raises(ModelError, match=r"lacks coefficients.*make train"):
        RiskModel.load_parameters(out)


def test_load_parameters_refuses_parameters_of_the_wrong_shape(tmp_path: Path, pipe: Pipeline):
    short = [row[:-1] for row in linear_parameters(pipe)[2].tolist()]
    out = _write(pipe, tmp_path / "bp_risk.joblib", coefficients=short)
    with pytest.raises(ModelError, match="wrong shape"):
        RiskModel.load_parameters(out)


def test_load_checks_the_metadata_parameters_against_the_pipeline(tmp_path: Path, pipe: Pipeline):
    coef = linear_parameters(pipe)[2].tolist()
    coef[0][0] = np.nextafter(coef[0][0], np.inf)  # one bit off
    out = _write(pipe, tmp_path / "bp_risk.joblib", coefficients=coef)
    with pytest.raises(ModelError, match="does not hold the pipeline's own"):
        RiskModel.load(out)


def test_the_shipped_model_loads_without_scikit_learn():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; from lib.monitor.risk import RiskModel; "
        "RiskModel.load_parameters('models/bp_risk.joblib'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'joblib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    full = RiskModel.load(root / "models" / "bp_risk.joblib")  # and agrees with the pipeline
    lean = RiskModel.load_parameters(root / "models" / "bp_risk.joblib")
    X = np.random.default_rng(4).normal(120.0, 30.0, size=(200, N))
    assert np.array_equal(lean.predict_proba(X), full.predict_proba(X))


# -- derived inputs: deviation from the patient's own baseline, in the guideline bands -------
def _window(n, mean_sys, mean_dia, last_sys, last_dia) -> Features:
    """Features whose other fields do not enter the derived inputs."""
    return Features(n, mean_sys, mean_dia, 5.0, 3.0, 4.0, 0.5, 0.2, 0, 0.5, last_sys, last_dia)


# (window, expected dev_sys_high, dev_sys_low, dev_dia_high, dev_dia_low), by hand:
# baseline = (mean * n - last) / (n - 1), deviation = last - baseline
HAND = [
    # 140, 140, 140, 180 / 80, 80, 80, 100: baselines 140 and 80, a rise into both high bands
    (_window(4, 150.0, 85.0, 180.0, 100.0), (40.0, 0.0, 20.0, 0.0)),
    # 120, 120, 120, 80 / 75, 75, 75, 55: baselines 120 and 75, a fall into both low bands
    (_window(4, 110.0, 70.0, 80.0, 55.0), (0.0, -40.0, 0.0, -20.0)),
    # a chronically high patient in the band at the baseline: no deviation
    (_window(6, 165.0, 95.0, 165.0, 95.0), (0.0, 0.0, 0.0, 0.0)),
    # a rise of 10 that stays below the bands (130 / 85): gated out
    (_window(3, 123.3333333333333, 81.0, 130.0, 85.0), (0.0, 0.0, 0.0, 0.0)),
    # the cuts themselves: systolic 140 is in the high band, 90 is not in the low one;
    # 100, 140 -> mean 120, baseline 100, deviation 40; 70, 90 -> baseline 70, deviation 20
    (_window(2, 120.0, 80.0, 140.0, 90.0), (40.0, 0.0, 20.0, 0.0)),
    (_window(2, 100.0, 65.0, 90.0, 60.0), (0.0, 0.0, 0.0, 0.0)),
    # a patient's first reading has no baseline
    (_window(1, 200.0, 130.0, 200.0, 130.0), (0.0, 0.0, 0.0, 0.0)),
]


def test_derived_names_follow_the_window_features():
    assert DERIVED_NAMES == ("dev_sys_high", "dev_sys_low", "dev_dia_high", "dev_dia_low")
    assert (HIGH_SYS, HIGH_DIA, LOW_SYS, LOW_DIA) == (140.0, 90.0, 90.0, 60.0)


@pytest.mark.parametrize(("window", "expected"), HAND)
def test_model_inputs_by_hand(window: Features, expected):
    out = model_inputs(feature_matrix([window]))
    assert out.shape == (1, N + len(DERIVED_NAMES))
    assert out[0, :N].tolist() == list(window.vector())  # the window features, unchanged
    np.testing.assert_allclose(out[0, N:], expected, rtol=0, atol=1e-9)
    assert _derived_one(window) == pytest.approx(expected, abs=1e-9)  # the per-reading twin


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=12),
    st.lists(st.floats(min_value=30.0, max_value=260.0, allow_nan=False), min_size=4, max_size=4),
)
def test_one_reading_derivation_is_bit_identical_to_the_matrix_one(n, values):
    window = _window(n, *values)
    assert _derived_one(window) == tuple(model_inputs(feature_matrix([window]))[0, N:].tolist())


def test_model_inputs_clips_every_column_to_the_bounds():
    window = _window(4, 150.0, 85.0, 180.0, 100.0)
    lower = [0.0] * (N + 4)
    upper = [1000.0] * (N + 4)
    upper[FEATURE_NAMES.index("last_sys")] = 170.0  # and dev_sys_high (40) to 30
    upper[N] = 30.0
    lower[FEATURE_NAMES.index("slope_dia_per_h")] = 1.0
    out = model_inputs(feature_matrix([window]), lower, upper)[0]
    assert out[FEATURE_NAMES.index("last_sys")] == 170.0
    assert out[N] == 30.0
    assert out[FEATURE_NAMES.index("slope_dia_per_h")] == 1.0
    assert out[FEATURE_NAMES.index("mean_sys")] == 150.0  # inside: unchanged


def _fit_derived_pipeline(seed: int = 5) -> Pipeline:
    """A pipeline as models/train.py fits it: model_inputs (clipped to the training range),
    scaler, multinomial logistic regression; the classes depend on the derived inputs."""
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 13, size=600).astype(float)
    mean_sys = rng.normal(130.0, 20.0, size=600)
    mean_dia = mean_sys * 0.6 + rng.normal(0.0, 5.0, size=600)
    last_sys = mean_sys + rng.normal(0.0, 25.0, size=600)
    last_dia = mean_dia + rng.normal(0.0, 12.0, size=600)
    X = rng.normal(5.0, 2.0, size=(600, N))
    for name, col in (
        ("n", n), ("mean_sys", mean_sys), ("mean_dia", mean_dia),
        ("last_sys", last_sys), ("last_dia", last_dia),
    ):  # fmt: skip
        X[:, FEATURE_NAMES.index(name)] = col
    derived = model_inputs(X)[:, N:]
    y = np.where(derived[:, 0] > 15.0, 1, np.where(derived[:, 1] < -10.0, 2, 0))
    inputs = model_inputs(X)
    bounds = {"lower": inputs.min(axis=0).tolist(), "upper": inputs.max(axis=0).tolist()}
    return Pipeline(
        [
            ("inputs", FunctionTransformer(model_inputs, kw_args=bounds)),
            ("scale", StandardScaler()),
            ("logit", LogisticRegression(class_weight="balanced", max_iter=1000)),
        ]
    ).fit(X, y)


_DERIVED_PIPE = _fit_derived_pipeline()


def _write_derived(out: Path, **overrides) -> Path:
    bounds = input_bounds(_DERIVED_PIPE)
    assert bounds is not None
    meta = {"derived_features": list(DERIVED_NAMES), "input_min": bounds[0], "input_max": bounds[1]}
    return _write(_DERIVED_PIPE, out, **{**meta, **overrides})


def test_a_pipeline_with_derived_inputs_scores_like_scikit_learn():
    model = RiskModel.from_pipeline(_DERIVED_PIPE)
    assert model.derived == DERIVED_NAMES and model.coef.shape == (3, N + 4)
    rng = np.random.default_rng(6)
    X = rng.normal(120.0, 40.0, size=(400, N))
    X[:, 0] = rng.integers(1, 13, size=400)
    X = np.vstack([X, np.full((1, N), 1e6), np.full((1, N), -1e6)])  # far outside: clipped
    expected = reference_proba(_DERIVED_PIPE, X)
    one = np.array([model.predict_proba_one(_features(row)) for row in X])
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(one, expected, rtol=0, atol=1e-9)
    # the derived inputs carry the signal: a rise into the high band is scored above a flat one
    rise = model.predict_proba_one(_window(6, 150.0, 85.0, 190.0, 100.0))
    flat = model.predict_proba_one(_window(6, 190.0, 100.0, 190.0, 100.0))
    assert rise > flat


def test_inputs_outside_the_training_range_score_as_at_its_edge():
    model = RiskModel.from_pipeline(_DERIVED_PIPE)
    assert model.upper is not None
    hours = FEATURE_NAMES.index("hours_since_prev")
    edge = _window(6, 150.0, 85.0, 170.0, 95.0)._replace(hours_since_prev=model.upper[hours])
    far = edge._replace(hours_since_prev=model.upper[hours] + 13.0)
    assert model.predict_proba_one(far) == model.predict_proba_one(edge)


def test_derived_artifact_loads_both_ways_alike(tmp_path: Path):
    out = _write_derived(tmp_path / "bp_risk.joblib")
    full, lean = RiskModel.load(out), RiskModel.load_parameters(out)
    assert full.derived == lean.derived == DERIVED_NAMES
    X = np.random.default_rng(7).normal(120.0, 30.0, size=(300, N))
    assert np.array_equal(lean.predict_proba(X), full.predict_proba(X))
    f = _features(X[0])
    assert lean.predict_proba_one(f) == full.predict_proba_one(f)


def test_unknown_derived_inputs_are_refused(tmp_path: Path):
    out = _write_derived(tmp_path / "bp_risk.joblib", derived_features=["dev_sys", "z_slope"])
    for load in (RiskModel.load, RiskModel.load_parameters):
        with pytest.raises(ModelError, match=r"derived inputs .*make train"):
            load(out)


def test_metadata_bounds_must_be_the_pipelines(tmp_path: Path):
    lower = input_bounds(_DERIVED_PIPE)[0]  # type: ignore[index]
    lower[0] -= 1.0
    out = _write_derived(tmp_path / "bp_risk.joblib", input_min=lower)
    with pytest.raises(ModelError, match="own input bounds"):
        RiskModel.load(out)
    short = _write_derived(tmp_path / "short.joblib", input_min=lower[:-1])
    with pytest.raises(ModelError, match="input bounds do not fit"):
        RiskModel.load_parameters(short)
