"""The naive baseline: the obvious design, faithfully re-implemented, for comparison only.

    .venv/bin/python -m benchmarks.naive [--messages 200000] [--limit 5000] [--quick]

What a first version of such a monitor usually looks like (and what STYLE.md lists as
anti-patterns): a confluent-kafka consumer loop that, per message, decodes it with stdlib
``json``, pulls the fields out, keeps a per-patient ``deque`` window, scores it with
scikit-learn ``predict_proba`` on a one-row matrix, indexes each anomaly with its own
Elasticsearch request, and writes each normal reading to its own JSON file. It does the same
clinical work as the monitor (the same rules, features and model), minus the edge cases
(Bundles, retractions, amendments, DLQ: a faulty message is skipped).

The benchmark fills a fresh ``bench-naive-...`` namespace with the same simulator messages as
the end-to-end benchmark and times the naive loop over the first ``--limit`` of them (it is
slow; the rate is what is compared). Not used by bpwatch itself.
"""

from __future__ import annotations

import json
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    MESSAGES,
    PATIENTS,
    ROOT,
    Option,
    Row,
    command,
    messages,
    namespace,
)
from lib.domain import Features, Reading
from lib.settings import Settings


def _features(window: deque) -> Features:
    """The monitor's features, recomputed from the whole deque (the obvious way)."""
    from lib.monitor.window import compute_features

    return compute_features([w[0] for w in window], [w[1] for w in window], [w[2] for w in window])


def naive_monitor(settings: Settings, limit: int, *, idle_s: float = 5.0) -> tuple[int, float]:
    """Consume up to ``limit`` messages the naive way; (readings processed, seconds)."""
    from confluent_kafka import Consumer
    from elasticsearch import Elasticsearch

    from lib.monitor import rules
    from lib.monitor.risk import RiskModel

    # the scikit-learn Pipeline itself, unpickled (the naive design imports scikit-learn)
    model = RiskModel.load(ROOT / "models" / "bp_risk.joblib").pipeline
    es = Elasticsearch(settings.es_url)
    out_dir = Path(settings.normal_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_brokers,
            "group.id": f"naive-{settings.namespace}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.observations_topic])
    windows: dict[str, deque] = {}
    seen = readings = 0
    start = time.perf_counter()
    last_msg = time.monotonic()
    while seen < limit and time.monotonic() - last_msg < idle_s:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        last_msg = time.monotonic()
        seen += 1
        try:
            obs = json.loads(msg.value())
            if obs.get("resourceType") != "Observation" or obs.get("status") != "final":
                continue
            values = {}
            for comp in obs["component"]:
                code = comp["code"]["coding"][0]["code"]
                q = comp["valueQuantity"]
                factor = 7.50062 if q.get("code") == "kPa" else 1.0
                values[code] = round(q["value"] * factor, 1) if factor != 1.0 else q["value"]
            systolic, diastolic = float(values["8480-6"]), float(values["8462-4"])
            patient = obs["subject"]["reference"].split("/")[-1]
            when = datetime.fromisoformat(obs["effectiveDateTime"])
        except (KeyError, ValueError, TypeError, IndexError):
            continue  # the naive design just skips what it cannot read
        window = windows.setdefault(patient, deque(maxlen=12))
        window.append((when.timestamp(), systolic, diastolic))
        feats = _features(window)
        risk = float(1.0 - model.predict_proba([list(feats.vector())])[0][0])
        reading = Reading(obs["id"], patient, when, systolic, diastolic)
        category, types, severity = rules.assess(reading, feats, "aha2017")
        doc = {
            "observation_id": obs["id"],
            "patient_id": patient,
            "effective_at": when.isoformat(),
            "systolic": systolic,
            "diastolic": diastolic,
            "category": category,
            "risk_score": risk,
            "severity": severity,
        }
        if types:
            doc["anomaly_types"] = list(types)
            es.index(index=settings.anomalies_index, id=obs["id"], document=_anomaly_doc(doc))
        else:
            with (out_dir / f"{obs['id']}.json").open("w") as f:
                json.dump(doc, f)
        readings += 1
    took = time.perf_counter() - start
    consumer.close()
    es.close()
    return readings, took


def _anomaly_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The contract's fields of a bp-anomalies document."""
    return {
        **doc,
        "ruleset": "aha2017",
        "ingested_at": doc["effective_at"],
    }


def measure(n_messages: int, patients: int, limit: int) -> tuple[list[Row], float]:
    from benchmarks.common import fill

    msgs = messages(patients, n_messages)[:limit]
    with namespace("naive") as settings:
        fill(settings, msgs)
        readings, took = naive_monitor(settings, len(msgs))
    rate = readings / took
    row = Row("naive", "naive consumer loop", round(rate), "readings/s", "", None,
              f"first {len(msgs):,} of the same msgs; json, predict_proba, 1 ES request "
              "per anomaly, 1 file per normal")  # fmt: skip
    return [row], rate


def main(argv: list[str] | None = None) -> list[Row]:
    limit = Option("--limit", 5_000, 300)
    return command(__doc__, lambda **kw: measure(**kw)[0], argv, MESSAGES, PATIENTS, limit)


if __name__ == "__main__":
    main()
