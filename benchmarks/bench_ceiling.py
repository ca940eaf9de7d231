"""The I/O ceiling: a consumer that does the monitor's I/O and none of its logic.

    .venv/bin/python -m benchmarks.bench_ceiling [--messages 200000] [--patients 2000] [--quick]

It reads every message of the observations topic the way the monitor's ``KafkaSource`` does
(one consumer per partition, assigned, batches of ``SOURCE_BATCH_SIZE`` with the same fetch
settings, stopping at the end of each partition), ``orjson``-parses each value, and writes
outputs of the monitor's shape and count through the monitor's own sinks: an anomaly-shaped
document (a real ``bp-anomalies`` document of the same data, with the message's ids) to
Elasticsearch through ``ElasticSink`` for as many messages as the monitor indexes documents,
spread evenly over the input, and a normal-shaped line through ``NormalFileSink`` for as many
as it writes normal lines. Dead letters and alerts (about 1 % of the outputs) are left out.

It runs as its own process (``python -m benchmarks.bench_ceiling consume ...``), timed like
the monitor in ``bench_e2e``: process wall time, start-up included, and its start-up apart
(an empty topic). ``bench_e2e`` runs it on its own filled topic right after the monitor, so
``monitor / ceiling`` compares the two on the same messages and services in the same run;
this command alone fills a namespace of its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks import common
from benchmarks.common import MESSAGES, PATIENTS, Message, Row, load_model, messages
from lib.settings import Settings

TEMPLATE_MESSAGES = 2_000  # messages run through the monitor to find one document of each kind


def templates(msgs: Sequence[Message]) -> dict[str, Any]:
    """One real anomaly document and one real normal record of these messages."""
    from benchmarks.bench_inprocess import source_messages
    from lib.monitor import documents, engine

    results = engine.Monitor(load_model(), "aha2017").process(
        source_messages(msgs[:TEMPLATE_MESSAGES])
    )
    docs = [doc for op, _, doc in documents.elastic_actions(results) if op == "index"]
    normals = [record for _, record in documents.normal_records(results)]
    return {"anomaly": docs[0], "normal": normals[0]}


# -- the consumer (runs in its own process) ------------------------------------------------
def _consumers(settings: Settings, topic: str) -> list[Any]:
    """One consumer per partition, assigned from the beginning, with the source's settings."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from lib.connectors.kafka import SOURCE_FETCH_CONFIG

    config = {
        "group.id": "BYTEWAX_IGNORED",  # as KafkaSource: assigned, no group, no commits
        "enable.auto.commit": "false",
        "enable.partition.eof": "true",
        **SOURCE_FETCH_CONFIG,
        **settings.kafka_client_config(),  # as production_io: the operator's settings win
    }
    consumers = []
    for part in range(settings.kafka_partitions):
        consumer = Consumer(dict(config))
        consumer.assign([TopicPartition(topic, part, OFFSET_BEGINNING)])
        consumers.append(consumer)
    return consumers


def _parse(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None  # the monitor dead-letters it; the outputs stay evenly spread regardless


class _Outputs:
    """The monitor's two main sinks, fed by hand: Elasticsearch actions and normal lines."""

    def __init__(self, settings: Settings, shapes: dict[str, Any], docs: int, total: int) -> None:
        from lib.connectors.elastic import ElasticSink
        from lib.connectors.normal_files import NormalFileSink

        # the monitor's sink as its writing step uses it: one key's logic, the process's writer
        self.elastic = ElasticSink(settings, settings.anomalies_index).logic()
        files = NormalFileSink(settings.normal_dir)
        self.part_fn = files.part_fn
        self.parts = [files.build_part("ceiling", p, None) for p in files.list_parts()]
        self.anomaly, self.normal = shapes["anomaly"], shapes["normal"]
        self.docs, self.total, self.seen = docs, total, 0
        self.written = {"docs": 0, "lines": 0}

    def write(self, batch: list[Any]) -> None:
        """One source batch: parse every value, then one write per sink (as the flow does)."""
        actions = []
        lines: list[list[Any]] = [[] for _ in self.parts]
        for msg in batch:
            _parse(msg.value())
            before = self.seen * self.docs // self.total
            self.seen += 1
            oid = f"{msg.partition()}-{msg.offset()}"
            patient = msg.key().decode()
            if self.seen * self.docs // self.total > before:
                doc = {**self.anomaly, "observation_id": oid, "patient_id": patient}
                actions.append(("index", oid, doc))
            else:
                record = {**self.normal, "observation_id": oid, "patient_id": patient}
                lines[self.part_fn(patient) % len(self.parts)].append(record)
        self.elastic.on_batch(actions)
        for part, records in zip(self.parts, lines, strict=True):
            part.write_batch(records)
            self.written["lines"] += len(records)
        self.written["docs"] += len(actions)

    def close(self) -> None:
        self.elastic.on_eof()
        for part in self.parts:
            part.close()


def consume(settings: Settings, topic: str, shapes: dict[str, Any], docs: int, total: int) -> dict:
    """Read ``topic`` to its end, writing the outputs; what was read and written."""
    from confluent_kafka import KafkaError

    from lib.connectors.kafka import SOURCE_BATCH_SIZE

    consumers = _consumers(settings, topic)
    outputs = _Outputs(settings, shapes, docs, max(total, 1))
    live = list(consumers)
    read = 0
    while live:
        for consumer in list(live):  # round robin over the partitions, as one Bytewax worker
            batch = []
            for msg in consumer.consume(SOURCE_BATCH_SIZE, 0.001):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    live.remove(consumer)
                    break
                if err is not None:
                    raise RuntimeError(f"consume failed: {err}")
                batch.append(msg)
            read += len(batch)
            outputs.write(batch)
    outputs.close()
    for consumer in consumers:
        consumer.close()
    return {"read": read, **outputs.written}


def _consume_main(argv: list[str]) -> None:
    """``consume --topic T --docs N --total M --shapes FILE``: settings from the environment."""
    parser = argparse.ArgumentParser(prog="bench_ceiling consume")
    for flag in ("--topic", "--shapes"):
        parser.add_argument(flag, required=True)
    for flag in ("--docs", "--total"):
        parser.add_argument(flag, type=int, required=True)
    args = parser.parse_args(argv)
    shapes = orjson.loads(Path(args.shapes).read_bytes())
    got = consume(Settings.from_env(), args.topic, shapes, args.docs, args.total)
    print(orjson.dumps(got).decode())


# -- the measurement --------------------------------------------------------------------
def run_ceiling(
    source: Settings, out: Settings, shapes: dict[str, Any], docs: int, total: int
) -> tuple[float, dict[str, int]]:
    """The consumer as a process, reading ``source``'s topic and writing into ``out``'s
    index and folder: (wall seconds, what it read and wrote)."""
    import subprocess

    shapes_file = Path("/tmp") / f"{out.namespace}-shapes.json"
    shapes_file.write_bytes(orjson.dumps(shapes))
    command = [common.PYTHON, "-m", "benchmarks.bench_ceiling", "consume",
               "--topic", source.observations_topic, "--shapes", str(shapes_file),
               "--docs", str(docs), "--total", str(total)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=common.ROOT, env=common.env_of(out), capture_output=True, check=False
    )
    took = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"ceiling consumer failed: {done.stderr.decode()[-2000:]}")
    return took, orjson.loads(done.stdout.splitlines()[-1])


def measure_on(source: Settings, shapes: dict[str, Any], expected: dict[str, int]) -> dict:
    """The ceiling on ``source``'s filled topic (outputs into a namespace of its own), and its
    start-up on an empty topic: {"rate", "steady", "seconds", "startup", "written"}."""
    docs, total = expected["docs"], expected["messages"]
    with common.namespace("ceil", source.kafka_partitions) as out:
        took, written = run_ceiling(source, out, shapes, docs, total)
        if written["read"] != total:
            raise RuntimeError(f"ceiling read {written['read']} of {total} messages")
        es_docs = common.count_docs(_client(out), out.anomalies_index)
    if es_docs != written["docs"]:
        raise RuntimeError(f"ceiling: {es_docs} documents in Elasticsearch, sent {written['docs']}")
    with common.namespace("ceil0", source.kafka_partitions) as empty:
        startup, _ = run_ceiling(empty, empty, shapes, docs, total)
    observations = expected["observations"]
    return {
        "rate": observations / took,
        "steady": observations / max(took - startup, 1e-9),
        "seconds": took,
        "startup": startup,
        "written": written,
    }


def _client(settings: Settings) -> Any:
    from lib.connectors.elastic import make_client

    return make_client(settings)


def rows(ceiling: dict, monitor: dict | None = None) -> list[Row]:
    """The ceiling's rows, and the monitor's ratio to it when measured in the same run."""
    w = ceiling["written"]
    out = [
        Row("ceiling", "pure I/O consumer", round(ceiling["rate"]), "readings/s", "", None,
            f"{w['read']:,} msgs read, {w['docs']:,} docs, {w['lines']:,} lines; no logic"),
        Row("ceiling", "same, start-up excluded", round(ceiling["steady"]), "readings/s", "",
            None, f"start-up {ceiling['startup']:.1f} s (empty topic)"),
    ]  # fmt: skip
    if monitor is not None:
        ratio = monitor["rate"] / ceiling["rate"]
        steady = monitor["steady"] / ceiling["steady"]
        out += [
            Row("ceiling", "monitor e2e / ceiling", round(ratio, 2), "x", ">= 0.8", ratio >= 0.8,
                "start-up included in both; same messages, same services, same run"),
            Row("ceiling", "same, start-up excluded", round(steady, 2), "x", "", None,
                "both rates without their empty-topic start-up"),
        ]  # fmt: skip
    return out


def measure(n_messages: int, patients: int) -> list[Row]:
    from benchmarks.common import expected_outputs, fill

    msgs = messages(patients, n_messages)
    expected = expected_outputs(msgs)
    with common.namespace("ceiling") as settings:
        fill(settings, msgs)
        ceiling = measure_on(settings, templates(msgs), expected)
    return rows(ceiling)


def main(argv: list[str] | None = None) -> list[Row]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["consume"]:
        _consume_main(argv[1:])
        return []
    return common.command(__doc__, measure, argv, MESSAGES, PATIENTS)


if __name__ == "__main__":
    main()
