"""Risk score: probability that an acute event starts within the model's horizon.

The model is a scikit-learn ``Pipeline(StandardScaler, LogisticRegression)`` trained by
``python -m models.train`` (``make train``) on the same :class:`lib.domain.Features` the
monitor computes. Two files make an artifact::

    models/bp_risk.joblib   the pickled pipeline
    models/bp_risk.json     its metadata: feature names, coefficients, metrics, threshold, sha256

Loading safety: joblib unpickles code, so :meth:`RiskModel.load` reads only the given path,
hashes the bytes it read and unpickles *those same bytes* only when the sha256 equals the
metadata's. A missing, tampered or incompatible artifact raises :class:`lib.errors.ModelError`
whose message names the command that fixes it.

Scoring never calls scikit-learn: the scaler's ``mean_``/``scale_`` and the regression's
``coef_``/``intercept_`` are extracted once, then::

    z = sum(((x - mean) / scale) * w) + b        p = 1 / (1 + exp(-z))

in plain Python for one reading (:meth:`RiskModel.predict_proba_one`) and in numpy for a
matrix (:meth:`RiskModel.predict_proba`); both agree with ``Pipeline.predict_proba`` within
1e-9 and never overflow (numerically stable sigmoid). Non-finite features give NaN.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


def linear_parameters(pipeline: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, coef, intercept) of a fitted StandardScaler + binary LogisticRegression.

    Raises ModelError when the pipeline does not have that shape.
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
        classes = list(clf.classes_)
    except AttributeError as exc:
        raise ModelError(
            f"the model is not a fitted scaler + logistic pipeline ({exc}): {FIX}"
        ) from None
    if coef.shape[0] != 1 or intercept.shape != (1,) or len(classes) != 2:
        raise ModelError(f"the model is not a binary classifier: {FIX}")
    if not (mean.shape == scale.shape == coef[0].shape):
        raise ModelError(f"the model's scaler and coefficients disagree in size: {FIX}")
    return mean, scale, coef[0], float(intercept[0])


@dataclass(frozen=True, slots=True, eq=False)
class RiskModel:
    """A loaded, verified risk model; scores :class:`Features` without scikit-learn."""

    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    metadata: Mapping[str, Any] = field(default_factory=dict)
    pipeline: Any = None  # the scikit-learn pipeline, for tests and evaluation only
    # plain-Python copies for the per-reading path (no numpy overhead per call)
    _mean: tuple[float, ...] = ()
    _scale: tuple[float, ...] = ()
    _coef: tuple[float, ...] = ()

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
        if len(names) != coef.shape[0]:
            raise ModelError(
                f"the model has {coef.shape[0]} inputs but {len(names)} feature names: {FIX}"
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
            _coef=tuple(float(v) for v in coef),
        )

    @classmethod
    def load(cls, path: Path | str) -> RiskModel:
        """Load ``path`` after checking its sha256 against the metadata JSON beside it."""
        import joblib  # deferred: only loading needs it

        artifact = Path(path)
        meta_file = metadata_path(artifact)
        try:
            blob = artifact.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"risk model {artifact} is missing: {FIX}") from None
        except OSError as exc:
            raise ModelError(
                f"risk model {artifact} cannot be read ({exc.strerror}): {FIX}"
            ) from None
        try:
            metadata = json.loads(meta_file.read_text())
        except FileNotFoundError:
            raise ModelError(f"risk model metadata {meta_file} is missing: {FIX}") from None
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"risk model metadata {meta_file} is unreadable ({exc}): {FIX}"
            ) from None
        if not isinstance(metadata, dict) or not isinstance(metadata.get("sha256"), str):
            raise ModelError(f"risk model metadata {meta_file} has no sha256: {FIX}")
        digest = sha256_bytes(blob)
        if digest != metadata["sha256"]:
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
        try:
            # the very bytes whose hash was checked, never a second read of the file
            pipeline = joblib.load(io.BytesIO(blob))
        except Exception as exc:  # unpickling can fail in many ways; all mean "rebuild"
            raise ModelError(f"risk model {artifact} cannot be unpickled ({exc}): {FIX}") from exc
        model = cls.from_pipeline(pipeline, names, metadata)
        log.info(
            "risk model loaded path=%s sha256=%s features=%d threshold=%s",
            artifact,
            digest[:12],
            len(names),
            metadata.get("threshold"),
        )
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
        """Risk for one reading's window features; pure Python."""
        z = self.intercept
        for x, m, s, w in zip(features.vector(), self._mean, self._scale, self._coef, strict=True):
            z += ((x - m) / s) * w
        return _sigmoid(z)

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Risks for a ``(n, len(feature_names))`` matrix; returns shape ``(n,)``."""
        x = np.asarray(matrix, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.coef.shape[0]:
            raise ValueError(f"expected a matrix of shape (n, {self.coef.shape[0]}), got {x.shape}")
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return _sigmoid_array(z)

    def predict_proba_many(self, features: Sequence[Features]) -> np.ndarray:
        """Risks for a batch of Features (one numpy pass)."""
        if not features:
            return np.empty(0, dtype=np.float64)
        return self.predict_proba(feature_matrix(features))


def feature_matrix(features: Sequence[Features]) -> np.ndarray:
    """Stack Features into the model's input matrix, columns in FEATURE_NAMES order."""
    return np.array([f.vector() for f in features], dtype=np.float64).reshape(
        len(features), len(FEATURE_NAMES)
    )
