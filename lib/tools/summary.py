"""Reconciled summary of a run: what went in, where each Observation ended, what is missing.

``python -m lib.tools.summary [--truth data/demo/ground_truth.jsonl]`` reads the real
outputs (Kafka topic offsets, Elasticsearch counts and ids, the normal-case files) and, when the
simulator's ground truth is given, checks them against the expected fate of every Observation:

* dead letters on the DLQ = Observations the simulator made faulty on purpose;
* every reading that should be live (not retracted) is in ``bp-anomalies`` or a normal file;
* no retracted reading is left in ``bp-anomalies``; no normal line is written twice.

Exit code 0 when everything reconciles, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lib.settings import Settings, load_or_exit

log = logging.getLogger(__name__)


@dataclass
class RunOutputs:
    messages_in: int = 0
    dead_letters: int = 0
    alerts_kafka: int = 0
    alerts_es: int = 0
    anomaly_ids: set[str] = field(default_factory=set)
    normal_lines: int = 0
    normal_ids: set[str] = field(default_factory=set)
    normal_duplicate_lines: int = 0
    normal_files: int = 0


def topic_size(settings: Settings, topic: str) -> int:
    """Messages in a topic: the sum over partitions of high - low watermark."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka_client_config(), "group.id": "bpwatch-summary"})
    try:
        md = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if md is None or md.error is not None:
            return 0
        total = 0
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += high - low
        return total
    finally:
        consumer.close()


def es_ids(es: Any, index: str) -> set[str]:
    """All document ids of an index (scroll-free: search_after on _id is not allowed, so PIT)."""
    from elasticsearch import NotFoundError

    try:
        es.indices.refresh(index=index)
    except NotFoundError:
        return set()
    ids: set[str] = set()
    pit = es.open_point_in_time(index=index, keep_alive="1m")["id"]
    try:
        after = None
        while True:
            kwargs: dict[str, Any] = {
                "size": 5000,
                "pit": {"id": pit, "keep_alive": "1m"},
                "sort": [{"_shard_doc": "asc"}],
                "_source": False,
            }
            if after is not None:
                kwargs["search_after"] = after
            hits = es.search(**kwargs)["hits"]["hits"]
            if not hits:
                return ids
            ids.update(h["_id"] for h in hits)
            after = hits[-1]["sort"]
    finally:
        es.close_point_in_time(id=pit)


def read_normals(directory: Path, out: RunOutputs) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for path in sorted(directory.rglob("*.jsonl")):
        out.normal_files += 1
        with path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = orjson.loads(line)
                out.normal_lines += 1
                seen[(rec["observation_id"], str(rec.get("version", "")))] += 1
                out.normal_ids.add(rec["observation_id"])
    out.normal_duplicate_lines = sum(c - 1 for c in seen.values() if c > 1)


def elastic_outputs(settings: Settings) -> tuple[set[str], int]:
    """The ids of the anomaly documents and the number of alert documents."""
    from lib.connectors.elastic import TOOL_RETRIES, make_client

    es = make_client(settings, max_retries=TOOL_RETRIES)
    try:
        return es_ids(es, settings.anomalies_index), len(es_ids(es, settings.alerts_index))
    finally:
        es.close()


def collect(settings: Settings) -> RunOutputs:
    out = RunOutputs()
    out.messages_in = topic_size(settings, settings.observations_topic)
    out.dead_letters = topic_size(settings, settings.dlq_topic)
    out.alerts_kafka = topic_size(settings, settings.alerts_topic)
    out.anomaly_ids, out.alerts_es = elastic_outputs(settings)
    if settings.normal_dir.exists():
        read_normals(settings.normal_dir, out)
    return out


def reconcile(out: RunOutputs, truth_path: Path) -> tuple[list[str], dict[str, int]]:
    """Problems found (empty = reconciled) and the expected counts by fate."""
    fates: Counter[str] = Counter()
    live: set[str] = set()
    retracted: set[str] = set()
    with truth_path.open("rb") as fh:
        for line in fh:
            rec = orjson.loads(line)
            fates[rec["fate"]] += 1
            if rec["fate"] == "reading":
                live.add(rec["observation_id"])
            elif rec["fate"] == "retracted":
                retracted.add(rec["observation_id"])
    live -= retracted
    problems: list[str] = []
    if out.dead_letters != fates["dead_letter"]:
        problems.append(f"dead letters: expected {fates['dead_letter']}, found {out.dead_letters}")
    found = out.anomaly_ids | out.normal_ids
    lost = live - found
    if lost:
        problems.append(f"lost readings: {len(lost)} expected Observations are in no output")
    stale = out.anomaly_ids & retracted
    if stale:
        problems.append(f"retracted readings still in Elasticsearch: {len(stale)}")
    unexpected = out.anomaly_ids - live
    if unexpected:
        problems.append(f"unexpected anomaly documents: {len(unexpected)}")
    if out.normal_duplicate_lines:
        problems.append(f"duplicate normal lines: {out.normal_duplicate_lines}")
    if out.alerts_kafka != out.alerts_es:
        problems.append(f"alerts: {out.alerts_kafka} on Kafka but {out.alerts_es} in Elasticsearch")
    return problems, dict(fates)


def render(
    settings: Settings, out: RunOutputs, fates: dict[str, int] | None, problems: list[str] | None
) -> str:
    rows = [
        ("messages in", f"{out.messages_in:,}", settings.observations_topic),
        (
            "anomalies indexed",
            f"{len(out.anomaly_ids):,}",
            f"Elasticsearch {settings.anomalies_index}",
        ),
        (
            "normal readings",
            f"{out.normal_lines:,} lines in {out.normal_files} files",
            str(settings.normal_dir),
        ),
        ("dead letters", f"{out.dead_letters:,}", settings.dlq_topic),
        (
            "alerts",
            f"{out.alerts_kafka:,} on Kafka, {out.alerts_es:,} in Elasticsearch",
            f"{settings.alerts_topic} / {settings.alerts_index}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = ["bpwatch run summary", "-" * 19]
    lines += [f"{name:<{width}}  {value:<40} {where}" for name, value, where in rows]
    if fates is not None and problems is not None:
        expected = ", ".join(f"{k}={v:,}" for k, v in sorted(fates.items()))
        lines.append(f"{'expected (truth)':<{width}}  {expected}")
        if problems:
            lines.append("RECONCILIATION FAILED:")
            lines += [f"  - {p}" for p in problems]
        else:
            lines.append("reconciled: every Observation is accounted for; 0 lost, 0 duplicated")
    lines += [
        "",
        "where to look:",
        f"  curl -s '{settings.es_url}/{settings.anomalies_index}/_search?size=3&pretty'",
        f"  ls {settings.normal_dir}",
        f"  BPWATCH_NAMESPACE={settings.namespace} .venv/bin/python -m lib.tools.report"
        " --out report.html"
        "   (the dashboard views as HTML, without Kibana)",
        "  Kibana (Docker stack): http://127.0.0.1:5601, dashboard 'bpwatch-overview'",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.tools.summary")
    parser.add_argument("--truth", type=Path, help="simulator ground truth (JSON Lines)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = load_or_exit()
    out = collect(settings)
    fates = problems = None
    if args.truth and args.truth.exists():
        problems, fates = reconcile(out, args.truth)
    sys.stdout.write(render(settings, out, fates, problems) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
