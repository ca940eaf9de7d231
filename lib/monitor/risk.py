"""Risk score: probability that an acute event starts within the model's horizon.

The model is a scikit-learn pipeline (its inputs, ``StandardScaler``, ``LogisticRegression``;
"Inputs" below) trained by ``python -m models.train`` (``make train``) on the same
:class:`lib.domain.Features` the monitor computes. Two files make an artifact::

    models/bp_risk.joblib   the pickled pipeline
    models/bp_risk.json     its metadata: feature names, coefficients, metrics, threshold, sha256

Loading safety: joblib unpickles code, so :meth:`RiskModel.load` reads only the given path,
hashes the bytes it read and unpickles *those same bytes* only when the sha256 equals the
metadata's; it also checks that the metadata's input bounds, scaler and coefficients are the
pipeline's own.
The monitor uses :meth:`RiskModel.load_parameters`: the same checks of the artifact, then the
parameters from the metadata, never unpickling and never importing scikit-learn (~2 s of every
start-up). A missing, tampered or incompatible artifact raises :class:`lib.errors.ModelError`
whose message names the command that fixes it.

The model is multinomial: one logit per class, class 0 = "no event starts within the
horizon", the others = "a hypertensive crisis starts" and "a hypotensive episode starts".
Those two push blood pressure in opposite directions, which a single linear logit cannot
express; the score is the event mass ``1 - P(class 0)``. (A binary model is accepted too.)

Inputs. The model reads the window features (:data:`lib.domain.FEATURE_NAMES`, what the
documents carry) and, after them, the :data:`DERIVED_NAMES` it computes from them itself
(:func:`model_inputs` for a matrix, the same arithmetic in plain Python for one reading):
the reading's deviation from the patient's own baseline, the mean of the window's *other*
readings, kept only for a reading in the stage-2 or the hypotension band (AHA 2017 cuts,
as ``n_abnormal`` uses; ``0`` elsewhere and for a patient's first reading)::

    baseline = (mean * n - last) / (n - 1)      deviation = last - baseline

    dev_sys_high  systolic deviation when systolic  >= 140      dev_sys_low  when < 90
    dev_dia_high  diastolic deviation when diastolic >= 90      dev_dia_low  when < 60

A chronically high (or low) patient sits in the band near the baseline; an acute change
leaves it. The gate matters: a linear model already holds ``last - mean`` as a combination of
its inputs, so an ungated deviation adds nothing. Every input is then clipped to the range
the training rows span (``input_min`` / ``input_max`` in the metadata): a linear model
extrapolates without limit, and a window unlike any it was trained on (home readings half a
day apart, where training saw 15 to 60 minutes) would otherwise score as a near-certain
event. The trained pipeline is ``Pipeline(FunctionTransformer(model_inputs, kw_args=bounds),
StandardScaler, LogisticRegression)``; a two-step pipeline on the window features alone is
accepted too (``derived`` is then empty and nothing is clipped).

Scoring never calls scikit-learn: the scaler's ``mean_``/``scale_`` and the regression's
``coef_``/``intercept_`` are extracted once, then::

    x' = (x - mean) / scale        z_k = x' . w_k + b_k
    p  = sum_{k>=1} exp(z_k - max z) / sum_k exp(z_k - max z)      (binary: 1 / (1 + exp(-z)))

in plain Python for one reading (:meth:`RiskModel.predict_proba_one`) and in numpy for a
matrix (:meth:`RiskModel.predict_proba`); both agree with scikit-learn's ``predict_proba``
within 1e-9 and never overflow (max-shifted softmax, stable sigmoid). Non-finite features
give NaN; the monitor's window features are always finite.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import mul, sub, truediv
from pathlib import Path
from typing import Any

import numpy as np

from lib.domain import FEATURE_NAMES, Features
from lib.errors import ModelError
from lib.monitor.rules import AHA2017, cuts_at
from lib.monitor.window import deviation_from_baseline

log = logging.getLogger(__name__)

FIX = "run `make train` (or `python -m models.train`) to rebuild it"

# The model's own inputs after the window features (see the module docstring). The bands are
# fixed AHA 2017 cuts, like n_abnormal's, so the inputs do not change with BPWATCH_RULESET.
DERIVED_NAMES: tuple[str, ...] = ("dev_sys_high", "dev_sys_low", "dev_dia_high", "dev_dia_low")
HIGH_SYS, HIGH_DIA = cuts_at(AHA2017, "hypertension_stage_2")
LOW_SYS, LOW_DIA = cuts_at(AHA2017, "hypotension")
_N, _MEAN_SYS, _MEAN_DIA = (FEATURE_NAMES.index(k) for k in ("n", "mean_sys", "mean_dia"))
_LAST_SYS, _LAST_DIA = FEATURE_NAMES.index("last_sys"), FEATURE_NAMES.index("last_dia")


def metadata_path(artifact: Path | str) -> Path:
    """``models/bp_risk.joblib`` -> ``models/bp_risk.json``."""
    return Path(artifact).with_suffix(".json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sigmoid(z: float) -> float:
    """Stable logistic function: no OverflowError for any finite or infinite z."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _sigmoid_array(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0.0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    neg = ~pos  # includes NaN, which stays NaN
    e = np.exp(z[neg])
    out[neg] = e / (1.0 + e)
    return out


def derived_of(pipeline: Any) -> tuple[str, ...]:
    """The derived inputs a pipeline computes: :data:`DERIVED_NAMES` when its first of three
    steps applies :func:`model_inputs`, none for a scaler + logistic pipeline; ModelError
    for any other shape."""
    steps = getattr(pipeline, "steps", None)
    if steps and len(steps) == 2:
        return ()
    if steps and len(steps) == 3 and getattr(steps[0][1], "func", None) is model_inputs:
        return DERIVED_NAMES
    raise ModelError(
        f"the model is not a (model_inputs +) scaler + logistic regression pipeline: {FIX}"
    )


def input_bounds(pipeline: Any) -> tuple[list[float], list[float]] | None:
    """The (lower, upper) bounds the pipeline's :func:`model_inputs` step clips to; None
    without that step or without bounds."""
    if not derived_of(pipeline):
        return None
    kw = pipeline.steps[0][1].kw_args or {}
    lower, upper = kw.get("lower"), kw.get("upper")
    if lower is None and upper is None:
        return None
    try:
        return [float(v) for v in lower], [float(v) for v in upper]
    except TypeError:
        raise ModelError(f"the model's input bounds are incomplete: {FIX}") from None


def linear_parameters(pipeline: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, coef (k, n), intercept (k,)) of a fitted scaler + logistic pipeline,
    with or without the :func:`model_inputs` step before them (:func:`derived_of`).

    Binary models have ``k == 1`` (sigmoid); multinomial ones ``k >= 3`` (softmax), where
    ``classes_[0]`` is "no event" and every other class is a kind of event. Raises
    ModelError when the pipeline does not have that shape.
    """
    derived_of(pipeline)
    scaler, clf = pipeline.steps[-2][1], pipeline.steps[-1][1]
    try:
        mean = np.asarray(scaler.mean_, dtype=np.float64)
        scale = np.asarray(scaler.scale_, dtype=np.float64)
        coef = np.asarray(clf.coef_, dtype=np.float64)
        intercept = np.asarray(clf.intercept_, dtype=np.float64)
        n_classes = len(clf.classes_)
    except AttributeError as exc:
        raise ModelError(
            f"the model is not a fitted scaler + logistic pipeline ({exc}): {FIX}"
        ) from None
    k = 1 if n_classes == 2 else n_classes
    if n_classes < 2 or coef.ndim != 2 or coef.shape[0] != k or intercept.shape != (k,):
        raise ModelError(f"the model's classes and coefficients disagree: {FIX}")
    if not (mean.shape == scale.shape == coef[0].shape):
        raise ModelError(f"the model's scaler and coefficients disagree in size: {FIX}")
    return mean, scale, coef, intercept


def reference_proba(pipeline: Any, matrix: np.ndarray) -> np.ndarray:
    """Event probability through scikit-learn itself: ``1 - P(classes_[0])`` of a matrix of
    window features (a pipeline with derived inputs computes them in its first step).

    For tests and offline evaluation; the monitor uses :class:`RiskModel`'s own arithmetic.
    """
    proba = pipeline.predict_proba(matrix)
    return proba[:, 1:].sum(axis=1)


@dataclass(frozen=True, slots=True, eq=False)
class RiskModel:
    """A loaded, verified risk model; scores :class:`Features` without scikit-learn.

    The score is the probability of *any* event class: ``1 - P(no event)``. With a binary
    model that is the sigmoid of one logit; with a multinomial one (a logit per event kind,
    e.g. crisis and hypotension, which push blood pressure in opposite directions) it is
    the softmax mass of the event classes.
    """

    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (k, n): k == 1 binary, k >= 3 multinomial; n: the model's inputs
    intercept: np.ndarray  # (k,)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    derived: tuple[str, ...] = ()  # DERIVED_NAMES, or () for a model on the features alone
    lower: np.ndarray | None = None  # every input clipped to [lower, upper]; None: not clipped
    upper: np.ndarray | None = None
    pipeline: Any = None  # the scikit-learn pipeline, for tests and evaluation only
    # plain-Python copies for the per-reading path (no numpy overhead per call)
    _lower: tuple[float, ...] = ()
    _upper: tuple[float, ...] = ()
    _mean: tuple[float, ...] = ()
    _scale: tuple[float, ...] = ()
    _coef: tuple[tuple[float, ...], ...] = ()
    _intercept: tuple[float, ...] = ()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pipeline(
        cls,
        pipeline: Any,
        feature_names: Sequence[str] = FEATURE_NAMES,
        metadata: Mapping[str, Any] | None = None,
    ) -> RiskModel:
        mean, scale, coef, intercept = linear_parameters(pipeline)
        names = tuple(feature_names)
        derived = derived_of(pipeline)
        if len(names) + len(derived) != coef.shape[1]:
            raise ModelError(
                f"the model has {coef.shape[1]} inputs but {len(names)} feature names and "
                f"{len(derived)} derived inputs: {FIX}"
            )
        lower, upper = _bounds(input_bounds(pipeline), coef.shape[1], "the model's")
        return cls(
            feature_names=names,
            mean=mean,
            scale=scale,
            coef=coef,
            intercept=intercept,
            metadata=dict(metadata or {}),
            derived=derived,
            lower=lower,
            upper=upper,
            pipeline=pipeline,
            _lower=() if lower is None else tuple(lower.tolist()),
            _upper=() if upper is None else tuple(upper.tolist()),
            _mean=tuple(float(v) for v in mean),
            _scale=tuple(float(v) for v in scale),
            _coef=tuple(tuple(float(v) for v in row) for row in coef),
            _intercept=tuple(float(v) for v in intercept),
        )

    @classmethod
    def load(cls, path: Path | str) -> RiskModel:
        """Load ``path`` after checking its sha256 against the metadata JSON beside it, and
        check that the metadata's parameters are the pipeline's, to the last bit (so that
        :meth:`load_parameters` scores exactly as this does)."""
        import joblib  # deferred: only loading the pipeline needs it (and scikit-learn)

        artifact, blob, metadata, names = _verified(path)
        try:
            # the very bytes whose hash was checked, never a second read of the file
            pipeline = joblib.load(io.BytesIO(blob))
        except Exception as exc:  # unpickling can fail in many ways; all mean "rebuild"
            raise ModelError(f"risk model {artifact} cannot be unpickled ({exc}): {FIX}") from exc
        model = cls.from_pipeline(pipeline, names, metadata)
        if model.derived != _derived_in(artifact, metadata):
            raise ModelError(
                f"risk model metadata {metadata_path(artifact)} names other derived inputs "
                f"than the pipeline computes: {FIX}"
            )
        if _metadata_parameters(artifact, metadata) != _parameters_of(model) or (
            _metadata_bounds(metadata) != input_bounds(pipeline)
        ):
            raise ModelError(
                f"risk model metadata {metadata_path(artifact)} does not hold the pipeline's "
                f"own input bounds, scaler and coefficients: {FIX}"
            )
        _log_loaded(artifact, metadata, names)
        return model

    @classmethod
    def load_parameters(cls, path: Path | str) -> RiskModel:
        """The monitor's loader: the same checks of ``path`` (sha256, feature names), then
        the scaler and coefficients from the metadata JSON beside it, which training writes
        from the fitted pipeline and :meth:`load` checks against it. Nothing is unpickled
        and scikit-learn is not imported (about 2 s of every start-up); scores are
        bit-identical to :meth:`load`'s. ``pipeline`` is None."""
        artifact, _, metadata, names = _verified(path)
        derived = _derived_in(artifact, metadata)
        mean, scale, coef, intercept = (
            np.asarray(v, dtype=np.float64) for v in _metadata_parameters(artifact, metadata)
        )
        classes = metadata.get("classes")
        k = 1 if isinstance(classes, list) and len(classes) == 2 else len(coef)
        width = len(names) + len(derived)
        if (
            coef.ndim != 2
            or coef.shape != (k, width)
            or intercept.shape != (k,)
            or mean.shape != (width,)
            or scale.shape != (width,)
        ):
            raise ModelError(
                f"risk model metadata {metadata_path(artifact)} has parameters of the wrong "
                f"shape: {FIX}"
            )
        where = f"risk model metadata {metadata_path(artifact)}:"
        lower, upper = _bounds(_metadata_bounds(metadata), width, where)
        model = cls(
            feature_names=names,
            mean=mean,
            scale=scale,
            coef=coef,
            intercept=intercept,
            metadata=metadata,
            derived=derived,
            lower=lower,
            upper=upper,
            _lower=() if lower is None else tuple(lower.tolist()),
            _upper=() if upper is None else tuple(upper.tolist()),
            _mean=tuple(mean.tolist()),
            _scale=tuple(scale.tolist()),
            _coef=tuple(tuple(row) for row in coef.tolist()),
            _intercept=tuple(intercept.tolist()),
        )
        _log_loaded(artifact, metadata, names)
        return model

    # -- metadata -----------------------------------------------------------------------
    @property
    def threshold(self) -> float | None:
        """The alert threshold chosen at training time (see models/README.md), if any."""
        value = self.metadata.get("threshold")
        return float(value) if value is not None else None

    @property
    def sha256(self) -> str:
        return str(self.metadata.get("sha256", ""))

    # -- scoring ------------------------------------------------------------------------
    def predict_proba_one(self, features: Features) -> float:
        """Risk for one reading's window features; pure Python, the monitor's per-reading
        path. The arithmetic of :meth:`predict_proba` in the same order (an int feature
        minus a float is the float difference), so the result does not depend on what else
        is scored with it."""
        if len(features) != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got {len(features)}")
        x = features + _derived_one(features) if self.derived else features
        if self._lower:  # clipped to [lower, upper] (NaN stays NaN), then standardised
            z = [
                ((lo if v < lo else hi if v > hi else v) - m) / sd
                for v, lo, hi, m, sd in zip(x, self._lower, self._upper, self._mean, self._scale)  # noqa: B905
            ]
        else:
            z = list(map(truediv, map(sub, x, self._mean), self._scale))
        if len(self._coef) == 1:  # a binary model: one logit
            return _sigmoid(self._intercept[0] + sum(map(mul, z, self._coef[0])))
        logits = [b + sum(map(mul, z, w)) for w, b in zip(self._coef, self._intercept)]  # noqa: B905
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]  # all <= 1: no overflow
        return math.fsum(exps[1:]) / math.fsum(exps)

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Risks for a ``(n, len(feature_names))`` matrix; returns shape ``(n,)``."""
        x = np.asarray(matrix, dtype=np.float64)
        width = len(self.feature_names)
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"expected a matrix of shape (n, {width}), got {x.shape}")
        if self.derived:
            x = model_inputs(x, self.lower, self.upper)
        logits = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        if logits.shape[1] == 1:
            return _sigmoid_array(logits[:, 0])
        exps = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exps[:, 1:].sum(axis=1) / exps.sum(axis=1)


def _verified(path: Path | str) -> tuple[Path, bytes, dict[str, Any], tuple[str, ...]]:
    """(artifact, its bytes, metadata, feature names) once the bytes' sha256 equals the
    metadata's and the feature names are this version's; ModelError naming the fix else."""
    artifact = Path(path)
    meta_file = metadata_path(artifact)
    try:
        blob = artifact.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"risk model {artifact} is missing: {FIX}") from None
    except OSError as exc:
        raise ModelError(f"risk model {artifact} cannot be read ({exc.strerror}): {FIX}") from None
    try:
        metadata = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise ModelError(f"risk model metadata {meta_file} is missing: {FIX}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"risk model metadata {meta_file} is unreadable ({exc}): {FIX}") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("sha256"), str):
        raise ModelError(f"risk model metadata {meta_file} has no sha256: {FIX}")
    if sha256_bytes(blob) != metadata["sha256"]:
        raise ModelError(
            f"risk model {artifact} does not match the sha256 in {meta_file} "
            f"(tampered or stale; refusing to unpickle it): {FIX}"
        )
    names = tuple(metadata.get("feature_names") or ())
    if names != FEATURE_NAMES:
        raise ModelError(
            f"risk model {artifact} was trained on features {list(names)}, but this "
            f"version computes {list(FEATURE_NAMES)}: {FIX}"
        )
    return artifact, blob, metadata, names


_PARAMETER_KEYS = ("scaler_mean", "scaler_scale", "coefficients", "intercept")


def _metadata_parameters(artifact: Path, metadata: Mapping[str, Any]) -> tuple[Any, ...]:
    """(mean, scale, coef, intercept) as the metadata holds them (JSON lists of floats)."""
    missing = [k for k in _PARAMETER_KEYS if not isinstance(metadata.get(k), list)]
    if missing:
        raise ModelError(
            f"risk model metadata {metadata_path(artifact)} lacks {', '.join(missing)}: {FIX}"
        )
    return tuple(metadata[k] for k in _PARAMETER_KEYS)


def _metadata_bounds(metadata: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """(``input_min``, ``input_max``) of the metadata, None when it has neither."""
    lower, upper = metadata.get("input_min"), metadata.get("input_max")
    if lower is None and upper is None:
        return None
    if not isinstance(lower, list) or not isinstance(upper, list):
        raise ModelError(f"risk model metadata has incomplete input bounds: {FIX}")
    return lower, upper


def _bounds(
    bounds: tuple[list[float], list[float]] | None, width: int, where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Bounds as arrays of the model's input width (ModelError naming ``where`` else)."""
    if bounds is None:
        return None, None
    lower, upper = (np.asarray(b, dtype=np.float64) for b in bounds)
    if lower.shape != (width,) or upper.shape != (width,) or not (lower <= upper).all():
        raise ModelError(f"{where} input bounds do not fit the model's {width} inputs: {FIX}")
    return lower, upper


def _derived_in(artifact: Path, metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """The derived inputs the metadata names (``derived_features``; none when absent), which
    must be this version's :data:`DERIVED_NAMES`."""
    derived = tuple(metadata.get("derived_features") or ())
    if derived and derived != DERIVED_NAMES:
        raise ModelError(
            f"risk model {artifact} was trained on derived inputs {list(derived)}, but this "
            f"version computes {list(DERIVED_NAMES)}: {FIX}"
        )
    return derived


def _parameters_of(model: RiskModel) -> tuple[Any, ...]:
    return (model.mean.tolist(), model.scale.tolist(), model.coef.tolist(),
            model.intercept.tolist())  # fmt: skip


def _log_loaded(artifact: Path, metadata: Mapping[str, Any], names: tuple[str, ...]) -> None:
    log.info(
        "risk model loaded path=%s sha256=%s features=%d threshold=%s",
        artifact,
        str(metadata["sha256"])[:12],
        len(names),
        metadata.get("threshold"),
    )


def model_inputs(
    matrix: np.ndarray,
    lower: Sequence[float] | np.ndarray | None = None,
    upper: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """The window features ``(n, len(FEATURE_NAMES))`` followed by the :data:`DERIVED_NAMES`
    columns (see the module docstring), each column clipped to ``[lower, upper]`` when given;
    the first step of the trained pipeline.

    Elementwise, in the order of :func:`_derived_one` and :meth:`RiskModel.predict_proba_one`,
    so both give the same bits.
    """
    x = np.asarray(matrix, dtype=np.float64)
    n = x[:, _N]
    many = n >= 2.0
    others = np.where(many, n - 1.0, 1.0)  # no division by zero; masked out below
    s, d = x[:, _LAST_SYS], x[:, _LAST_DIA]
    dev_s = np.where(many, s - (x[:, _MEAN_SYS] * n - s) / others, 0.0)
    dev_d = np.where(many, d - (x[:, _MEAN_DIA] * n - d) / others, 0.0)
    zero = np.zeros_like(dev_s)
    out = np.column_stack(
        [
            x,
            np.where(s >= HIGH_SYS, dev_s, zero),
            np.where(s < LOW_SYS, dev_s, zero),
            np.where(d >= HIGH_DIA, dev_d, zero),
            np.where(d < LOW_DIA, dev_d, zero),
        ]
    )
    if lower is not None and upper is not None:
        out = np.minimum(np.maximum(out, np.asarray(lower)), np.asarray(upper))
    return out


def _derived_one(f: Features) -> tuple[float, float, float, float]:
    """:func:`model_inputs`' derived columns for one reading, in plain Python."""
    n = f[_N]
    if not n >= 2:
        return 0.0, 0.0, 0.0, 0.0
    s, d = f[_LAST_SYS], f[_LAST_DIA]
    dev_s = deviation_from_baseline(n, f[_MEAN_SYS], s)
    dev_d = deviation_from_baseline(n, f[_MEAN_DIA], d)
    return (
        dev_s if s >= HIGH_SYS else 0.0,
        dev_s if s < LOW_SYS else 0.0,
        dev_d if d >= HIGH_DIA else 0.0,
        dev_d if d < LOW_DIA else 0.0,
    )
