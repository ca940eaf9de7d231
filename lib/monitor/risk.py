"""Risk score: probability that an acute event starts within the model's horizon.

The model is a scikit-learn ``Pipeline(StandardScaler, LogisticRegression)`` trained by
``python -m models.train`` (``make train``) on the same :class:`lib.domain.Features` the
monitor computes. Two files make an artifact::

    models/bp_risk.joblib   the pickled pipeline
    models/bp_risk.json     its metadata: feature names, coefficients, metrics, threshold, sha256

Loading safety: joblib unpickles code, so :meth:`RiskModel.load` reads only the given path,
hashes the bytes it read and unpickles *those same bytes* only when the sha256 equals the
metadata's; it also checks that the metadata's scaler and coefficients are the pipeline's own.
The monitor uses :meth:`RiskModel.load_parameters`: the same checks of the artifact, then the
parameters from the metadata, never unpickling and never importing scikit-learn (~2 s of every
start-up). A missing, tampered or incompatible artifact raises :class:`lib.errors.ModelError`
whose message names the command that fixes it.

The model is multinomial: one logit per class, class 0 = "no event starts within the
horizon", the others = "a hypertensive crisis starts" and "a hypotensive episode starts".
Those two push blood pressure in opposite directions, which a single linear logit cannot
express; the score is the event mass ``1 - P(class 0)``. (A binary model is accepted too.)

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

log = logging.getLogger(__name__)

FIX = "run `make train` (or `python -m models.train`) to rebuild it"


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


def linear_parameters(pipeline: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, coef (k, n), intercept (k,)) of a fitted scaler + logistic pipeline.

    Binary models have ``k == 1`` (sigmoid); multinomial ones ``k >= 3`` (softmax), where
    ``classes_[0]`` is "no event" and every other class is a kind of event. Raises
    ModelError when the pipeline does not have that shape.
    """
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2:
        raise ModelError(f"the model is not a 2-step scaler + logistic pipeline: {FIX}")
    scaler, clf = steps[0][1], steps[1][1]
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
    """Event probability through scikit-learn itself: ``1 - P(classes_[0])``.

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
    coef: np.ndarray  # (k, n): k == 1 binary, k >= 3 multinomial
    intercept: np.ndarray  # (k,)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    pipeline: Any = None  # the scikit-learn pipeline, for tests and evaluation only
    # plain-Python copies for the per-reading path (no numpy overhead per call)
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
        if len(names) != coef.shape[1]:
            raise ModelError(
                f"the model has {coef.shape[1]} inputs but {len(names)} feature names: {FIX}"
            )
        return cls(
            feature_names=names,
            mean=mean,
            scale=scale,
            coef=coef,
            intercept=intercept,
            metadata=dict(metadata or {}),
            pipeline=pipeline,
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
        if _metadata_parameters(artifact, metadata) != _parameters_of(model):
            raise ModelError(
                f"risk model metadata {metadata_path(artifact)} does not hold the pipeline's "
                f"own scaler and coefficients: {FIX}"
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
        mean, scale, coef, intercept = (
            np.asarray(v, dtype=np.float64) for v in _metadata_parameters(artifact, metadata)
        )
        classes = metadata.get("classes")
        k = 1 if isinstance(classes, list) and len(classes) == 2 else len(coef)
        if (
            coef.ndim != 2
            or coef.shape != (k, len(names))
            or intercept.shape != (k,)
            or mean.shape != (len(names),)
            or scale.shape != (len(names),)
        ):
            raise ModelError(
                f"risk model metadata {metadata_path(artifact)} has parameters of the wrong "
                f"shape: {FIX}"
            )
        model = cls(
            feature_names=names,
            mean=mean,
            scale=scale,
            coef=coef,
            intercept=intercept,
            metadata=metadata,
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
        if len(features) != len(self._mean):
            raise ValueError(f"expected {len(self._mean)} features, got {len(features)}")
        if len(self._coef) == 1:  # a binary model: one logit
            z1 = map(truediv, map(sub, features, self._mean), self._scale)
            return _sigmoid(self._intercept[0] + sum(map(mul, z1, self._coef[0])))
        z = list(map(truediv, map(sub, features, self._mean), self._scale))
        logits = [b + sum(map(mul, z, w)) for w, b in zip(self._coef, self._intercept)]  # noqa: B905
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]  # all <= 1: no overflow
        return math.fsum(exps[1:]) / math.fsum(exps)

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Risks for a ``(n, len(feature_names))`` matrix; returns shape ``(n,)``."""
        x = np.asarray(matrix, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.coef.shape[1]:
            raise ValueError(f"expected a matrix of shape (n, {self.coef.shape[1]}), got {x.shape}")
        logits = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        if logits.shape[1] == 1:
            return _sigmoid_array(logits[:, 0])
        exps = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exps[:, 1:].sum(axis=1) / exps.sum(axis=1)

    def predict_proba_many(self, features: Sequence[Features]) -> np.ndarray:
        """Risks for a batch of Features (one numpy pass)."""
        if not features:
            return np.empty(0, dtype=np.float64)
        return self.predict_proba(feature_matrix(features))


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


def feature_matrix(features: Sequence[Features]) -> np.ndarray:
    """Stack Features into the model's input matrix, columns in FEATURE_NAMES order."""
    return np.array([f.vector() for f in features], dtype=np.float64).reshape(
        len(features), len(FEATURE_NAMES)
    )
