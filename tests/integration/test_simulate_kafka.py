"""Simulator into the REAL local Kafka: every message confirmed, consumed back identical."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import defaultdict
from dataclasses import replace

import pytest
from bytewax.testing import run_main

from dataflows import simulate
from lib.connectors.kafka import ConfirmedKafkaSink, produce_all
from lib.errors import KafkaDeliveryError
from lib.settings import Settings
from lib.sim import stream
from lib.tools.summary import topic_size
from tests.reliability.harness import read_topic

pytestmark = pytest.mark.integration


def test_flow_delivers_n_messages_and_all_come_back(settings: Settings) -> None:
    s = replace(settings, sim_patients=40, sim_count=5000, sim_seed=21, sim_fault_rate=0.1)
    run_main(simulate.build(s))
    sent = list(stream.messages(s))
    got = read_topic(s, s.observations_topic)
    assert len(got) == len(sent) == 5000
    assert topic_size(s, s.observations_topic) == 5000
    assert sorted((m.key(), m.value()) for m in got) == sorted((m.key, m.value) for m in sent)
    # a patient's messages stay in one partition, in the order sent
    by_key = defaultdict(list)
    parts = defaultdict(set)
    for m in got:
        by_key[m.key()].append(m.value())
        parts[m.key()].add(m.partition())
    assert all(len(p) == 1 for p in parts.values())
    for key, values in by_key.items():
        assert values == [m.value for m in sent if m.key == key]
    assert dict(got[0].headers()) == {"content-type": b"application/fhir+json"}


def test_produce_all_confirms_every_message(settings: Settings) -> None:
    s = replace(settings, sim_count=2000, sim_patients=10)
    records = [m.kafka_record() for m in stream.messages(s)]
    assert produce_all(s, s.observations_topic, records) == 2000
    assert topic_size(s, s.observations_topic) == 2000


def test_undeliverable_messages_raise_instead_of_vanishing(settings: Settings) -> None:
    missing = f"{settings.namespace}.no-such-topic-{uuid.uuid4().hex[:6]}"
    with pytest.raises(KafkaDeliveryError, match="did not confirm 3 of 3"):
        produce_all(
            settings,
            missing,
            [(b"k", b"v", [])] * 3,
            **{"message.timeout.ms": 3000, "allow.auto.create.topics": False},
        )


def test_flow_stops_with_delivery_error_when_broker_is_unreachable(settings: Settings) -> None:
    s = replace(settings, kafka_brokers="127.0.0.1:1", sim_count=50, sim_patients=5)
    sink = ConfirmedKafkaSink(s, s.observations_topic, **{"message.timeout.ms": 2000})
    with pytest.raises(Exception) as info:
        run_main(simulate.build(s, sink=sink))
    chain = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, KafkaDeliveryError) for e in chain), chain
    assert "did not confirm" in str(next(e for e in chain if isinstance(e, KafkaDeliveryError)))


def test_throughput_into_the_broker(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    s = replace(settings, sim_patients=200, sim_count=50_000, sim_seed=3, sim_fault_rate=0.05)
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    run_main(simulate.build(s))
    took = time.monotonic() - started
    assert topic_size(s, s.observations_topic) == 50_000
    rate = 50_000 / took
    logging.getLogger(__name__).info("sim_throughput target=kafka msgs=50000 rate=%.0f/s", rate)
    print(f"\nsimulator -> kafka: {rate:.0f} msgs/s ({took:.1f}s for 50000)")
    assert rate > 1000


def test_the_sink_logs_one_key_value_line_per_batch(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    s = replace(settings, sim_patients=10, sim_count=2500)
    caplog.set_level(logging.INFO, logger="lib.connectors.kafka")
    run_main(simulate.build(s))
    pattern = re.compile(
        rf"kafka_batch worker=0 topic={re.escape(s.observations_topic)} "
        r"msgs=(\d+) took=\d+\.\d{3}s"
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "lib.connectors.kafka"]
    batches = [pattern.fullmatch(line) for line in lines if line.startswith("kafka_batch")]
    assert batches and all(batches)
    assert sum(int(m[1]) for m in batches) == 2500
    assert len(batches) <= 10  # per batch (the simulator emits up to 1,000), never per message


def test_enrolments_are_on_kafka_before_the_first_observation(settings: Settings) -> None:
    """BPWATCH_SIM_POSTPARTUM_SHARE: one enrolment per postpartum patient on bp.enrollments,
    keyed like its readings, produced (and confirmed) before any observation of the run."""
    s = replace(
        settings, sim_patients=100, sim_count=3000, sim_seed=4,
        sim_postpartum_share=0.05, sim_low_adherence_share=0.05,
    )  # fmt: skip
    run_main(simulate.build(s))
    sent = [e.kafka_record() for e in stream.enrollments(s)]
    got = read_topic(s, s.enrollments_topic)
    assert len(sent) == 5
    assert sorted((m.key(), m.value()) for m in got) == sorted((k, v) for k, v, _ in sent)
    assert {dict(m.headers())["content-type"] for m in got} == {b"application/json"}
    observations = read_topic(s, s.observations_topic)
    assert len(observations) == 3000
    last_enrolment = max(m.timestamp()[1] for m in got)
    assert last_enrolment <= min(m.timestamp()[1] for m in observations)
    # an enrolment is keyed by its patient id, as the patient's readings
    assert {m.key() for m in got} <= {m.key() for m in observations}
