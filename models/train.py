"""Train the bpwatch risk model on a simulated cohort and evaluate it on held-out patients.

    python -m models.train [--seed S] [--patients N] [--hours H] [--precision-target P]
        [--out models/bp_risk.joblib]

Phases (one progress line each):

1. simulate   ``lib.sim.cohort.generate`` with ground truth (deterministic for the seed)
2. features   ``lib.monitor.window.features_of`` per patient: the very code the monitor runs
3. split      by patient (never by reading): a seeded permutation of the sorted patient ids
4. fit        ``Pipeline(FunctionTransformer(model_inputs), StandardScaler,
              LogisticRegression(class_weight="balanced"))``: the window features and the
              inputs ``lib.monitor.risk.model_inputs`` derives from them, each clipped to
              the range of the training rows, multinomial over {no event, crisis,
              hypotension}, then a prior correction of the intercepts so that the score is
              a probability again
5. evaluate   AUROC, AUPRC, Brier and a decile calibration table on the held-out patients, for
              the model and for two baselines; the alert threshold and the precision-recall
              curve beside the rules' urgent conditions (below); lead time before each event
6. write      ``bp_risk.joblib`` + ``bp_risk.json`` (metadata with the artifact's sha256)

Label: ``GroundTruth.event_within_horizon`` (an acute event, hypertensive crisis or hypotensive
episode, starts within ``--horizon`` hours after the reading). Readings taken while the patient
is already inside an event (``in_event``) are excluded from fitting and from the metrics: the
question "will an event start?" has no answer there, and the rules see those readings anyway.
They are kept for the lead-time analysis, where the first in-event reading marks the onset.

The regression is fitted on three classes: 0 = no event within the horizon, 1 = a crisis
starts, 2 = a hypotensive episode starts (``GroundTruth.event_kind``). The two kinds move blood
pressure in opposite directions, so a single binary logit (risk rising with systolic pressure)
cannot see both; the multinomial model gives each kind its own logit and the score is the
event mass ``1 - P(no event)``: still the probability of the binary label above.

Alert threshold: an alert is judged as ``lib.tools.alert_quality`` judges it, *true* when its
reading is in an event or one starts within the horizon. On every reading of the held-out
patients, the threshold is the lowest score whose alerts (``score >= threshold``) reach
``--precision-target``; when none does, the score of the highest precision, recorded as not
reached. Beside the model's precision-recall curve on those readings stand the rules' urgent
conditions per reading (hypertensive crisis, systolic below the hypotension cut), so that the
two compare at equal recall. The threshold is chosen on the readings it is reported on;
``benchmarks/alert_quality.py`` checks it on cohorts of other seeds.

Deterministic: no wall clock and no unseeded randomness reach the artifact or the metadata, so
the same arguments give the same metrics and, with the same library versions, the same bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from lib.domain import FEATURE_NAMES, GroundTruth, Reading
from lib.monitor import rules, window
from lib.monitor.risk import (
    RiskModel,
    metadata_path,
    model_inputs,
    reference_proba,
    sha256_bytes,
)
from lib.sim import cohort

DEFAULT_OUT = Path("models/bp_risk.joblib")
SCHEMA_VERSION = 2  # 2: derived inputs, a threshold for a precision target
PR_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9)  # points of the reported curve


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 20240601
    patients: int = 600
    hours: float = 72.0
    horizon_hours: float = 6.0
    test_fraction: float = 0.3
    ruleset: str = "aha2017"
    c: float = 1.0
    max_iter: int = 1000
    window_size: int = 12  # BPWATCH_WINDOW_SIZE the monitor runs with
    precision_target: float = 0.5  # of the alert threshold, on the held-out readings


@dataclass
class Dataset:
    """One row per reading, in per-patient event-time order."""

    patient_ids: list[str]  # sorted; rows refer to them by index
    X: np.ndarray
    y: np.ndarray  # event_within_horizon
    label: np.ndarray  # 0 none, 1 crisis, 2 hypotension (class of the fitted model)
    in_event: np.ndarray
    patient: np.ndarray  # index into patient_ids
    ts: np.ndarray  # POSIX seconds
    category: list[str]
    event_kind: list[str]

    @property
    def true_alert(self) -> np.ndarray:
        """An alert on the reading would be true: in an event, or one starts within the
        horizon (the definition of ``lib.tools.alert_quality``)."""
        return self.y | self.in_event


@dataclass
class TrainResult:
    config: TrainConfig
    pipeline: Pipeline
    model: RiskModel
    train_patients: list[str]
    test_patients: list[str]
    metrics: dict[str, Any]
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ThresholdChoice:
    """An alert threshold and what its alerts (``score >= threshold``) achieve."""

    threshold: float
    reached: bool  # precision >= the target
    precision: float
    recall: float
    alerts: int


# -- phases -------------------------------------------------------------------------------
def simulate(cfg: TrainConfig) -> dict[str, list[tuple[Reading, GroundTruth]]]:
    """Readings with their ground truth, grouped by patient, each in event-time order."""
    by_patient: dict[str, list[tuple[Reading, GroundTruth]]] = defaultdict(list)
    for reading, truth in cohort.generate(
        cfg.patients, cfg.seed, hours=cfg.hours, horizon_hours=cfg.horizon_hours
    ):
        by_patient[reading.patient_id].append((reading, truth))
    for rows in by_patient.values():
        rows.sort(key=lambda rt: rt[0].ts)  # stable: generate() already yields in time order
    return dict(by_patient)


CLASSES = ("none", "crisis", "hypotension")  # label i = CLASSES[i]; 0 must be "no event"


def label_of(truth: GroundTruth) -> int:
    if not truth.event_within_horizon:
        return 0
    return 2 if truth.event_kind == "hypotension" else 1


def build_dataset(
    by_patient: dict[str, list[tuple[Reading, GroundTruth]]], ruleset: str, window_size: int
) -> Dataset:
    patient_ids = sorted(by_patient)
    vectors: list[tuple[float, ...]] = []
    y: list[bool] = []
    label: list[int] = []
    in_event: list[bool] = []
    patient: list[int] = []
    ts: list[float] = []
    category: list[str] = []
    kind: list[str] = []
    for index, pid in enumerate(patient_ids):
        rows = by_patient[pid]
        readings = [r for r, _ in rows]
        features = window.features_of(readings, window_size)
        if len(features) != len(readings):
            raise RuntimeError(
                f"features_of returned {len(features)} rows for {len(readings)} readings"
            )
        for (reading, truth), feats in zip(rows, features, strict=True):
            vectors.append(feats.vector())
            y.append(truth.event_within_horizon)
            label.append(label_of(truth))
            in_event.append(truth.in_event)
            patient.append(index)
            ts.append(reading.ts)
            category.append(rules.classify(reading.systolic, reading.diastolic, ruleset))
            kind.append(truth.event_kind)
    return Dataset(
        patient_ids=patient_ids,
        X=np.array(vectors, dtype=np.float64).reshape(len(vectors), len(FEATURE_NAMES)),
        y=np.array(y, dtype=bool),
        label=np.array(label, dtype=np.int64),
        in_event=np.array(in_event, dtype=bool),
        patient=np.array(patient, dtype=np.int64),
        ts=np.array(ts, dtype=np.float64),
        category=category,
        event_kind=kind,
    )


def split_patients(
    patient_ids: Sequence[str], seed: int, test_fraction: float
) -> tuple[list[str], list[str]]:
    """Deterministic patient-level split: a seeded permutation of the sorted ids."""
    ids = sorted(patient_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = max(1, round(len(ids) * test_fraction)) if len(ids) > 1 else 0
    test = sorted(ids[i] for i in order[:n_test])
    train = sorted(ids[i] for i in order[n_test:])
    return train, test


def fit(X: np.ndarray, labels: np.ndarray, cfg: TrainConfig, *, derive: bool = True) -> Pipeline:
    """Balanced-weight logistic regression, intercepts corrected back to the true priors.

    ``derive``: ``X`` holds the window features and the pipeline's first step adds the
    derived inputs (``lib.monitor.risk.model_inputs``) and clips every input to the range
    these rows span; else ``X`` is used as it is.

    ``class_weight="balanced"`` fits as if every class were equally common, which keeps the
    rare event classes from being ignored, but it shifts each class's log-odds by
    ``-log(prior_k)`` (plus a constant). Adding ``log(prior_k)`` to each intercept (King and
    Zeng's prior correction) restores calibrated probabilities; the ranking of a binary
    model is unchanged.
    """
    steps: list[tuple[str, Any]] = []
    if derive:
        inputs = model_inputs(X)
        bounds = {"lower": inputs.min(axis=0).tolist(), "upper": inputs.max(axis=0).tolist()}
        steps.append(("inputs", FunctionTransformer(model_inputs, kw_args=bounds)))
    steps += [
        ("scale", StandardScaler()),
        (
            "logit",
            LogisticRegression(
                C=cfg.c, class_weight="balanced", max_iter=cfg.max_iter, solver="lbfgs"
            ),
        ),
    ]
    pipeline = Pipeline(steps)
    pipeline.fit(X, labels)
    clf = pipeline.named_steps["logit"]
    priors = np.array([np.mean(labels == c) for c in clf.classes_])
    if len(clf.classes_) == 2:
        clf.intercept_ = clf.intercept_ + np.log(priors[1] / priors[0])
    else:
        clf.intercept_ = clf.intercept_ + np.log(priors)
    return pipeline


def category_rates(categories: Sequence[str], y: np.ndarray) -> dict[str, float]:
    """Rules-only baseline: P(event within horizon | current category), from training rows.

    Laplace-smoothed toward the overall rate so that a rare category gets a sane value.
    """
    prior = float(np.mean(y)) if len(y) else 0.0
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for cat, label in zip(categories, y, strict=True):
        counts[cat][0] += int(label)
        counts[cat][1] += 1
    return {cat: (pos + prior) / (n + 1.0) for cat, (pos, n) in sorted(counts.items())}


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Deciles of the predicted score: rows, mean predicted and observed event rate."""
    order = np.argsort(p, kind="stable")
    table = []
    for chunk in np.array_split(order, bins):
        if len(chunk) == 0:
            continue
        table.append(
            {
                "n": len(chunk),
                "score_min": _r(float(p[chunk].min())),
                "score_max": _r(float(p[chunk].max())),
                "mean_predicted": _r(float(p[chunk].mean())),
                "observed_rate": _r(float(y[chunk].mean())),
            }
        )
    return table


def score_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    both = bool(y.any()) and bool((~y).any())
    return {
        "auroc": _r(float(roc_auc_score(y, p))) if both else None,
        "auprc": _r(float(average_precision_score(y, p))) if both else None,
        "brier": _r(float(brier_score_loss(y, np.clip(p, 0.0, 1.0)))),
        "calibration": calibration_table(y, p),
    }


def _ranked(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct score, highest first: (threshold, alerts, true alerts) of the alerts
    ``score >= threshold``."""
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    true = np.cumsum(truth[order])
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])  # the last of each tie
    return ordered[ends], ends + 1, true[ends]


def precision_threshold(scores: np.ndarray, truth: np.ndarray, target: float) -> ThresholdChoice:
    """The lowest threshold whose alerts (``score >= threshold``) reach ``precision >= target``
    on these readings; when none does, the threshold of the highest precision (the lowest of
    equals), with ``reached`` False. Candidates are the scores themselves."""
    if len(scores) == 0:
        raise ValueError("no scores to choose a threshold from")
    thresholds, alerts, true = _ranked(scores, truth)
    precision = true / alerts
    ok = np.flatnonzero(precision >= target)
    reached = len(ok) > 0
    i = int(ok[-1]) if reached else int(np.flatnonzero(precision == precision.max())[-1])
    positives = int(true[-1])
    return ThresholdChoice(
        threshold=float(thresholds[i]),
        reached=reached,
        precision=_r(float(precision[i])),
        recall=_r(float(true[i]) / positives) if positives else 0.0,
        alerts=int(alerts[i]),
    )


def alert_figures(alert: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Precision and recall of per-reading alerts against the truth of the same readings."""
    n, hits, positives = int(alert.sum()), int((alert & truth).sum()), int(truth.sum())
    return {
        "alerts": n,
        "precision": _r(hits / n) if n else None,
        "recall": _r(hits / positives) if positives else None,
    }


def pr_curve(
    scores: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] = PR_THRESHOLDS
) -> list[dict[str, Any]]:
    """The model's precision and recall at a few thresholds."""
    return [{"threshold": t, **alert_figures(scores >= t, truth)} for t in thresholds]


def at_recall(scores: np.ndarray, truth: np.ndarray, recall: float) -> dict[str, Any]:
    """The highest threshold whose alerts reach ``recall``, and their precision and recall:
    the model at the recall of another alerting method."""
    thresholds, _, true = _ranked(scores, truth)
    positives = int(true[-1])
    i = int(np.argmax(true >= recall * positives)) if positives else len(thresholds) - 1
    t = float(thresholds[i])
    return {"threshold": _r(t), **alert_figures(scores >= t, truth)}


def rules_urgent(data: Dataset, ruleset: str) -> np.ndarray:
    """Readings on which the rules' urgent conditions hold: a hypertensive crisis, or a
    systolic below the rule set's hypotension cut (the default urgent tier of
    ``lib.monitor.alerts``, before confirmation)."""
    low = rules.cuts_at(rules.get_ruleset(ruleset), "hypotension")[0]
    systolic = data.X[:, FEATURE_NAMES.index("last_sys")]
    crisis = np.array([c == "hypertensive_crisis" for c in data.category], dtype=bool)
    return crisis | (systolic < low)


def lead_times(
    data: Dataset,
    rows: np.ndarray,
    model_alert: np.ndarray,
    rules_alert: np.ndarray,
    horizon_s: float,
) -> dict[str, Any]:
    """Per held-out event: how long before onset each method first alerts.

    Onset = time of the first in-event reading of an episode. Candidates are the patient's
    non-event readings within the horizon before onset, plus the onset reading itself (lead 0).
    An event without any alert among them is missed.
    """
    events = []
    by_patient: dict[int, list[int]] = defaultdict(list)
    for i in rows:
        by_patient[int(data.patient[i])].append(int(i))
    for idx in by_patient.values():
        for k, i in enumerate(idx):
            if not data.in_event[i] or (k > 0 and data.in_event[idx[k - 1]]):
                continue
            onset = data.ts[i]
            window_rows = [i]
            j = k - 1
            while j >= 0 and not data.in_event[idx[j]] and onset - data.ts[idx[j]] <= horizon_s:
                window_rows.append(idx[j])
                j -= 1
            window_rows.reverse()  # event-time order
            events.append(
                (
                    _first_alert(model_alert, window_rows, data.ts, onset),
                    _first_alert(rules_alert, window_rows, data.ts, onset),
                )
            )

    def summary(leads: list[float | None]) -> dict[str, Any]:
        got = [v for v in leads if v is not None]
        return {
            "detected": len(got),
            "median_lead_h": _r(float(np.median(got))) if got else None,
            "p25_lead_h": _r(float(np.percentile(got, 25))) if got else None,
            "p75_lead_h": _r(float(np.percentile(got, 75))) if got else None,
        }

    model_leads = [m for m, _ in events]
    rules_leads = [r for _, r in events]
    either = [max((v for v in pair if v is not None), default=None) for pair in events]
    earlier = sum(1 for m, r in events if m is not None and (r is None or m > r))
    return {
        "events": len(events),
        "model": summary(model_leads),
        "rules": summary(rules_leads),
        "rules_or_model": summary(either),
        "model_earlier_than_rules": earlier,
    }


def _first_alert(
    alert: np.ndarray, candidates: list[int], ts: np.ndarray, onset: float
) -> float | None:
    """Hours between the first alerting candidate and the onset; None when none alerts."""
    for r in candidates:
        if alert[r]:
            return float(onset - ts[r]) / 3600.0
    return None


def false_alarm_rate(alert: np.ndarray, data: Dataset, rows: np.ndarray) -> float:
    """Share of quiet readings (no event now, none within the horizon) that alert."""
    sel = rows[~data.in_event[rows] & ~data.y[rows]]
    return _r(float(alert[sel].mean())) if len(sel) else 0.0


# -- orchestration ------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """Rows of the dataset by role (indices into its arrays)."""

    train_patients: list[str]
    test_patients: list[str]
    train_rows: np.ndarray  # training patients, readings outside an event
    test_rows: np.ndarray  # held-out patients, readings outside an event
    held_out: np.ndarray  # every reading of the held-out patients (lead times, false alarms)


class _Phases:
    """Seconds per phase, and one progress line each when asked (never reach the artifact)."""

    def __init__(self, progress: bool) -> None:
        self.timings: dict[str, float] = {}
        self._progress = progress
        self._clock = time.perf_counter()

    def __call__(self, name: str, detail: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._clock, 3)
        self._clock = now
        if self._progress:
            print(f"[train] {name:<9} {self.timings[name]:6.2f}s  {detail}", flush=True)


def train(cfg: TrainConfig, *, progress: bool = False) -> TrainResult:
    phase = _Phases(progress)
    by_patient = simulate(cfg)
    n_readings = sum(len(v) for v in by_patient.values())
    phase("simulate", f"patients={len(by_patient)} readings={n_readings}")

    data = build_dataset(by_patient, cfg.ruleset, cfg.window_size)
    phase("features", f"rows={len(data.y)} events_within_horizon={int(data.y.sum())}")

    split = split_rows(data, cfg)
    phase(
        "split",
        f"train_patients={len(split.train_patients)} test_patients={len(split.test_patients)}",
    )

    labels = data.label[split.train_rows]
    if len(np.unique(labels)) < 2 or not data.y[split.train_rows].any():
        raise SystemExit("training set has no events: simulate more patients or hours")
    pipeline = fit(data.X[split.train_rows], labels, cfg)
    model = RiskModel.from_pipeline(pipeline, FEATURE_NAMES)
    counts = " ".join(f"{c}={int((labels == i).sum())}" for i, c in enumerate(CLASSES))
    phase("fit", f"rows={len(split.train_rows)} {counts}")

    metrics, threshold = evaluate(data, split, model, cfg)
    m, b = metrics["model"]["auroc"], metrics["baseline_rules_category"]["auroc"]
    phase("evaluate", f"auroc={m} baseline_auroc={b} threshold={threshold:.4f}")
    return TrainResult(
        config=cfg,
        pipeline=pipeline,
        model=model,
        train_patients=split.train_patients,
        test_patients=split.test_patients,
        metrics=metrics,
        threshold=threshold,
        timings=phase.timings,
    )


def split_rows(data: Dataset, cfg: TrainConfig) -> Split:
    """The patient-level split (:func:`split_patients`) as rows of ``data``."""
    train_ids, test_ids = split_patients(data.patient_ids, cfg.seed, cfg.test_fraction)
    test_set = {data.patient_ids.index(p) for p in test_ids}
    is_test = np.array([p in test_set for p in data.patient], dtype=bool)
    rows = np.arange(len(data.y))
    return Split(
        train_patients=train_ids,
        test_patients=test_ids,
        train_rows=rows[~is_test & ~data.in_event],
        test_rows=rows[is_test & ~data.in_event],
        held_out=rows[is_test],
    )


def evaluate(
    data: Dataset, split: Split, model: RiskModel, cfg: TrainConfig
) -> tuple[dict[str, Any], float]:
    """Held-out metrics of the model and the baselines, and the model's alert threshold."""
    test_rows, held_out = split.test_rows, split.held_out
    y_test = data.y[test_rows]
    scores = model.predict_proba(data.X)
    rules_alert = rules_urgent(data, cfg.ruleset)
    truth = data.true_alert
    alerting = alert_metrics(scores[held_out], rules_alert[held_out], truth[held_out], cfg)
    threshold = alerting["threshold"]["threshold"]
    model_alert = scores >= threshold
    rates, by_category, single_reading = baseline_scores(data, split, cfg)
    metrics = {
        "held_out": {
            "patients": len(split.test_patients),
            "rows": len(test_rows),
            "positives": int(y_test.sum()),
            "prevalence": _r(float(y_test.mean())) if len(y_test) else None,
        },
        "model": score_metrics(y_test, scores[test_rows]),
        "baseline_rules_category": score_metrics(y_test, by_category[test_rows]),
        "baseline_single_reading_lr": score_metrics(y_test, single_reading[test_rows]),
        "baseline_category_rates": {k: _r(v) for k, v in rates.items()},
        "alerting": alerting,
        "false_alarm_rate": {
            "model": false_alarm_rate(model_alert, data, held_out),
            "rules": false_alarm_rate(rules_alert, data, held_out),
            "rules_or_model": false_alarm_rate(rules_alert | model_alert, data, held_out),
        },
        "lead_time": lead_times(
            data, held_out, model_alert, rules_alert, cfg.horizon_hours * 3600.0
        ),
    }
    return metrics, threshold


def alert_metrics(
    scores: np.ndarray, rules_alert: np.ndarray, truth: np.ndarray, cfg: TrainConfig
) -> dict[str, Any]:
    """The alert threshold for ``cfg.precision_target`` and the precision-recall figures of
    the model and of the rules' urgent conditions, on the same readings (every reading of the
    held-out patients) against the same truth (``Dataset.true_alert``)."""
    choice = precision_threshold(scores, truth, cfg.precision_target)
    model_alert = scores >= choice.threshold
    rules = alert_figures(rules_alert, truth)
    outside = ~rules_alert
    both_kinds = bool(truth.any()) and bool((~truth).any())
    return {
        "truth": "in_event or event_within_horizon (a true alert of lib.tools.alert_quality)",
        "rows": len(truth),
        "positives": int(truth.sum()),
        "model_auprc": _r(float(average_precision_score(truth, scores))) if both_kinds else None,
        "threshold": {"precision_target": cfg.precision_target, **asdict(choice)},
        "pr_curve": pr_curve(scores, truth),
        "rules_urgent": rules,
        "model_at_rules_recall": at_recall(scores, truth, rules["recall"] or 0.0),
        "rules_or_model": alert_figures(rules_alert | model_alert, truth),
        # what the model's alerts add: the readings the rules' urgent conditions leave out
        "model_outside_rules": {
            "rows": int(outside.sum()),
            "positives": int(truth[outside].sum()),
            **alert_figures(model_alert[outside], truth[outside]),
        },
    }


def baseline_scores(
    data: Dataset, split: Split, cfg: TrainConfig
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The baselines' scores for every row: the event rate of the reading's category (rules
    only), and a logistic regression on the last reading alone; plus the category rates."""
    train_rows = split.train_rows
    y_train = data.y[train_rows]
    rates = category_rates([data.category[i] for i in train_rows], y_train)
    prior = float(np.mean(y_train))
    by_category = np.array([rates.get(c, prior) for c in data.category])
    last = _cols("last_sys", "last_dia")
    single = fit(data.X[train_rows][:, last], data.label[train_rows], cfg, derive=False)
    return rates, by_category, reference_proba(single, data.X[:, last])


def _cols(*names: str) -> list[int]:
    return [FEATURE_NAMES.index(n) for n in names]


def _r(value: float) -> float:
    return round(value, 6)


def pipeline_bytes(pipeline: Pipeline) -> bytes:
    buf = io.BytesIO()
    joblib.dump(pipeline, buf)
    return buf.getvalue()


def build_metadata(result: TrainResult, blob: bytes) -> dict[str, Any]:
    model = result.model
    return {
        "schema_version": SCHEMA_VERSION,
        "model": "bp_risk",
        "target": (
            f"P(acute event - hypertensive crisis or hypotensive episode - starts within "
            f"{result.config.horizon_hours:g} h after the reading)"
        ),
        "sha256": sha256_bytes(blob),
        "size_bytes": len(blob),
        "feature_names": list(model.feature_names),
        "derived_features": list(model.derived),
        "input_min": None if model.lower is None else model.lower.tolist(),
        "input_max": None if model.upper is None else model.upper.tolist(),
        "scaler_mean": model.mean.tolist(),
        "scaler_scale": model.scale.tolist(),
        "coefficients": model.coef.tolist(),
        "intercept": model.intercept.tolist(),
        "threshold": result.threshold,  # exact: the figures below hold at this very value
        "threshold_rule": (
            f"precision target {result.config.precision_target:g}: the lowest score whose "
            "alerts (score >= threshold) on every reading of the held-out patients are true "
            "(in an event, or one starts within the horizon) at least that often; else the "
            "score of the highest precision (metrics.alerting.threshold.reached false)"
        ),
        "classes": list(CLASSES),
        "score": "1 - P(class 0 'none') = P(an acute event starts within the horizon)",
        "training": {
            **asdict(result.config),
            "command": "python -m models.train " + " ".join(_cli_args(result.config)),
            "train_patients": len(result.train_patients),
            "test_patients": len(result.test_patients),
            "label": "GroundTruth.event_within_horizon; in-event readings excluded",
            "data": "simulated cohort (lib.sim.cohort.generate)",
        },
        "versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "joblib": joblib.__version__,
        },
        "metrics": result.metrics,
    }


def write_artifact(pipeline: Pipeline, out: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write the pipeline and its metadata (with the sha256 of the bytes written)."""
    blob = pipeline_bytes(pipeline)
    metadata = {**metadata, "sha256": sha256_bytes(blob), "size_bytes": len(blob)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    metadata_path(out).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return metadata


def _cli_args(cfg: TrainConfig) -> list[str]:
    return [
        f"--seed {cfg.seed}",
        f"--patients {cfg.patients}",
        f"--hours {cfg.hours:g}",
        f"--precision-target {cfg.precision_target:g}",
    ]


def summary_table(metrics: dict[str, Any], threshold: float) -> str:
    lines = [
        f"{'held-out':<28}{'AUROC':>8}{'AUPRC':>8}{'Brier':>8}",
    ]
    for name, key in (
        ("model (window features)", "model"),
        ("rules-only (category)", "baseline_rules_category"),
        ("single reading (sys, dia)", "baseline_single_reading_lr"),
    ):
        m = metrics[key]
        lines.append(f"{name:<28}{m['auroc']:>8.3f}{m['auprc']:>8.3f}{m['brier']:>8.4f}")
    lt = metrics["lead_time"]
    lines.append("")
    lines.append(f"threshold {threshold:.4f}; held-out events {lt['events']}")
    for name in ("model", "rules", "rules_or_model"):
        s = lt[name]
        rate = metrics["false_alarm_rate"][name]
        lines.append(
            f"  {name:<15}detected {s['detected']:>4}  median lead {s['median_lead_h']} h"
            f"  (p25 {s['p25_lead_h']}, p75 {s['p75_lead_h']})  false-alarm rate {rate}"
        )
    lines.append(f"  model alerted before the rules on {lt['model_earlier_than_rules']} events")
    lines.append("")
    lines.append(alerting_table(metrics["alerting"]))
    return "\n".join(lines)


def alerting_table(a: dict[str, Any]) -> str:
    """The threshold choice and the precision-recall points of the model and the rules."""
    t = a["threshold"]
    verdict = "reached" if t["reached"] else "NOT reached: best precision kept"
    lines = [
        f"alerts on {a['rows']} held-out readings, {a['positives']} true (in an event or one "
        f"within the horizon); model AUPRC {a['model_auprc']}",
        f"threshold {t['threshold']:.4f}: precision target {t['precision_target']:g} {verdict}"
        f" (precision {t['precision']}, recall {t['recall']}, {t['alerts']} alerts)",
        f"  {'alerting':<50}{'precision':>10}{'recall':>8}{'alerts':>8}",
    ]

    def row(name: str, f: dict[str, Any]) -> None:
        p = "-" if f["precision"] is None else f"{f['precision']:.3f}"
        r = "-" if f["recall"] is None else f"{f['recall']:.3f}"
        lines.append(f"  {name:<50}{p:>10}{r:>8}{f['alerts']:>8}")

    for point in a["pr_curve"]:
        row(f"model >= {point['threshold']:g}", point)
    row("rules urgent (crisis, sys < cut)", a["rules_urgent"])
    m = a["model_at_rules_recall"]
    row(f"model at the rules' recall (>= {m['threshold']:.4f})", m)
    row("rules or model (threshold)", a["rules_or_model"])
    o = a["model_outside_rules"]
    row(f"model (threshold) outside rules, {o['positives']}/{o['rows']} true", o)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    d = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m models.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--patients", type=int, default=d.patients)
    parser.add_argument("--hours", type=float, default=d.hours)
    parser.add_argument("--horizon", type=float, default=d.horizon_hours, help="hours")
    parser.add_argument("--test-fraction", type=float, default=d.test_fraction)
    parser.add_argument(
        "--precision-target",
        type=float,
        default=d.precision_target,
        help="precision of the alert threshold on the held-out readings (0..1)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    cfg = TrainConfig(
        seed=args.seed,
        patients=args.patients,
        hours=args.hours,
        horizon_hours=args.horizon,
        test_fraction=args.test_fraction,
        precision_target=args.precision_target,
    )
    if not 0.0 < cfg.precision_target <= 1.0:
        parser.error("--precision-target must be in (0, 1]")
    result = train(cfg, progress=True)
    blob = pipeline_bytes(result.pipeline)
    metadata = write_artifact(result.pipeline, args.out, build_metadata(result, blob))
    print(
        f"[train] write     {args.out} ({metadata['size_bytes']} bytes) "
        f"sha256={metadata['sha256'][:16]}"
    )
    print(summary_table(result.metrics, result.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
