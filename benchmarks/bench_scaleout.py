"""Scale-out: the monitor as a Bytewax cluster of 2 processes vs 1 process, same data.

    .venv/bin/python -m benchmarks.bench_scaleout [--messages 200000] [--quick]

Two fresh namespaces with 6-partition topics get the same simulator messages (keyed by
patient, so each patient's messages land in the same partition, in the same order). One runs
the monitor as a single process, the other as two (``-i 0|1 -a "127.0.0.1:2101;..."``), both
with ``BPWATCH_KAFKA_TAIL=false``. Then every output is compared: the ``bp-anomalies``
documents (all fields but ``ingested_at``, the broker's time, and the namespace in
``source``), the normal readings (as a multiset of lines per file: within a file, lines of
different patients may interleave differently), and the DLQ messages. Throughput ratio =
(1-process seconds) / (2-process seconds).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench_e2e import run_monitor
from benchmarks.common import MESSAGES, PATIENTS, Row, command, fill, messages, namespace
from lib.settings import Settings


def anomaly_docs(es: Any, settings: Settings) -> dict[str, dict[str, Any]]:
    """Every document of the namespace's bp-anomalies, comparable across namespaces."""
    es.indices.refresh(index=settings.anomalies_index)
    docs: dict[str, dict[str, Any]] = {}
    after: list[Any] | None = None
    while True:
        kwargs: dict[str, Any] = {"search_after": after} if after else {}
        resp = es.search(
            index=settings.anomalies_index,
            size=5_000,
            sort=[{"observation_id": "asc"}],
            query={"match_all": {}},
            **kwargs,
        )
        hits = resp["hits"]["hits"]
        if not hits:
            return docs
        for hit in hits:
            doc = dict(hit["_source"])
            doc.pop("ingested_at", None)
            doc["source"] = _strip_ns(doc.get("source", ""), settings)
            docs[hit["_id"]] = doc
        after = hits[-1]["sort"]


def _strip_ns(source: str, settings: Settings) -> str:
    return source.removeprefix(settings.namespace + ".")


def normal_files(settings: Settings) -> dict[str, collections.Counter]:
    from lib.connectors.normal_files import part_files

    root = Path(settings.normal_dir)
    out: dict[str, collections.Counter] = {}
    for path in part_files(root):
        lines: collections.Counter = collections.Counter()
        for line in path.read_bytes().splitlines():
            rec = orjson.loads(line)
            rec["source"] = _strip_ns(rec.get("source", ""), settings)
            lines[orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)] += 1
        out[str(path.relative_to(root))] = lines
    return out


def dlq(settings: Settings, expected: int) -> collections.Counter:
    """Multiset of (key, value, error header) on the namespace's DLQ topic."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        settings.kafka_client_config(
            **{"group.id": f"scale-{settings.namespace}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([settings.dlq_topic])
    got: collections.Counter = collections.Counter()
    idle = 0
    while sum(got.values()) < expected and idle < 20:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            idle += 1
            continue
        error = dict(msg.headers() or []).get("error", b"")
        got[(msg.key(), msg.value(), error)] += 1
    consumer.close()
    return got


def measure(n_messages: int, patients: int) -> list[Row]:
    from benchmarks.common import expected_outputs
    from lib.connectors.elastic import make_client

    msgs = messages(patients, n_messages)
    expected = expected_outputs(msgs)
    outputs = []
    seconds = []
    for processes in (1, 2):
        with namespace(f"scale{processes}", partitions=6) as settings:
            fill(settings, msgs)
            seconds.append(run_monitor(settings, processes=processes))
            es = make_client(settings)
            outputs.append(
                (
                    anomaly_docs(es, settings),
                    normal_files(settings),
                    dlq(settings, expected["dead_letters"]),
                )
            )
            es.close()
    (docs1, files1, dlq1), (docs2, files2, dlq2) = outputs
    same = {
        "docs": docs1 == docs2 and len(docs1) == expected["docs"],
        "normal files": files1 == files2,
        "dlq": dlq1 == dlq2 and sum(dlq1.values()) == expected["dead_letters"],
    }
    identical = all(same.values())
    ratio = seconds[0] / seconds[1]
    detail = ", ".join(f"{k} {'identical' if v else 'DIFFER'}" for k, v in same.items())
    return [
        Row("scale-out", "2 processes / 1 process", round(ratio, 2), "x", "report", None,
            f"{seconds[0]:.1f} s vs {seconds[1]:.1f} s, {n_messages:,} msgs, "
            "6 partitions, start-up included"),
        Row("scale-out", "outputs identical to 1 process", "yes" if identical else "NO", "",
            "identical", identical, f"{len(docs1):,} docs, "
            f"{sum(sum(c.values()) for c in files1.values()):,} lines, "
            f"{sum(dlq1.values()):,} dead letters: {detail}"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    return command(__doc__, measure, argv, MESSAGES, PATIENTS)


if __name__ == "__main__":
    main()
