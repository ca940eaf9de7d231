"""Every output of the plain monitor loop as bytes, to prove a performance change changes none.

    .venv/bin/python -m benchmarks.dump_outputs OUT [--ruleset aha2025] [--fault-rate 0.01]
                                                    [--messages 50000] [--patients 2000]

Runs the loop of ``bench_inprocess.run_plain`` (the same simulator messages, batches of 1,000)
and writes one line per output: every Assessment (features, verdict, risk), every alert item
(``once_item`` and ``elastic_item``), every ``bp-anomalies`` action (with its document's key
order and its orjson bytes), every normal record, every dead letter, every batch's counters.
Floats are written as ``float.hex`` (the last bit shows). Run it in a checkout of the code before
a change (``git worktree add /tmp/before HEAD``) and after, then ``cmp`` the two files.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench_inprocess import BATCH, SETTINGS, _policy, source_messages
from benchmarks.common import FAULT_RATE, load_model, messages
from lib.domain import FEATURE_NAMES, Assessment
from lib.monitor import documents, engine


def _exact(value: Any) -> Any:
    """JSON-able, floats to the last bit and bytes as hex."""
    if isinstance(value, float):
        return {"f": value.hex()}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    if isinstance(value, dict):
        return {"keys": list(value), "items": {k: _exact(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [_exact(v) for v in value]
    return value


def dump(out: Path, ruleset: str, fault_rate: float, n_messages: int, patients: int) -> Counter:
    """Write every output to ``out``; how many of each kind."""
    items = source_messages(messages(patients, n_messages, fault_rate))
    model = load_model()
    monitor = engine.Monitor(model, ruleset, policy=_policy(model))
    counts: Counter = Counter()
    with out.open("wb") as fh:

        def write(kind: str, value: Any) -> None:
            counts[kind] += 1
            fh.write(kind.encode() + b" " + orjson.dumps(_exact(value)) + b"\n")

        for i in range(0, len(items), BATCH):
            results = monitor.process(items[i : i + BATCH])
            for key, res in results:
                assessed = [o for o in res.outcomes if type(o) is Assessment]
                for a in assessed:
                    features = [getattr(a.features, name) for name in FEATURE_NAMES]
                    write("assessment", [key, a.reading.observation_id, features, a.category,
                                         a.category_label, a.anomaly_types, a.severity,
                                         a.risk_score, a.ruleset])  # fmt: skip
                for event in res.events:
                    write("alert", [documents.once_item(event), documents.elastic_item(event)])
            for action, doc_id, doc in documents.elastic_actions(results):
                raw = None if doc is None else orjson.dumps(doc)
                write("elastic", [action, doc_id, doc, raw])
            for patient, record in documents.normal_records(results):
                write("normal", [patient, record, orjson.dumps(record)])
            for dead in documents.dlq_messages(results):
                write("dlq", dead)
            for key, total in documents.outcome_counts(results):
                write("counts", [key, list(total.items())])
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--ruleset", default=SETTINGS.ruleset)
    parser.add_argument("--fault-rate", type=float, default=FAULT_RATE)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--patients", type=int, default=2_000)
    args = parser.parse_args(argv)
    counts = dump(args.out, args.ruleset, args.fault_rate, args.messages, args.patients)
    print(f"{args.out}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
