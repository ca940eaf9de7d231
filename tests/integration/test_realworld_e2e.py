"""Real senders' shapes -> REAL Kafka -> monitor -> REAL Elasticsearch + files + DLQ.

The messages are tests/fixtures/realworld.py's (our own words for the corpus shapes). Every
message is accounted for; the bad message gives one dead letter; valid FHIR that is not a
reading is counted as skipped and sent nowhere.

Several senders: bpwatch keeps their Observation ids apart with **one namespace per sender**
(``BPWATCH_NAMESPACE``: its own topics, indices and normal-case folder, one monitor each), so
two EHRs that both send ``obs-1`` never overwrite each other's documents.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from bytewax.testing import TestingSink, run_main

from dataflows.monitor import build, production_io
from lib.connectors.kafka import produce_all
from lib.connectors.normal_files import iter_records
from lib.monitor import fhir
from tests.fixtures.realworld import panel, realistic_stream
from tests.integration.test_monitor_e2e import _dead_letters, _index, _model

pytestmark = pytest.mark.integration

HEADERS = [("content-type", b"application/fhir+json")]


def _run(settings: Any, model: Any) -> dict[str, int]:
    stats: list[dict[str, int]] = []
    run_main(build(settings, io=production_io(settings, TestingSink(stats)), model=model))
    return stats[-1]


def test_realistic_senders_through_kafka_and_elasticsearch(settings_factory, es, kafka_config):
    settings = settings_factory(kafka_tail=False, kafka_partitions=1)
    messages, counts = realistic_stream()
    produce_all(settings, settings.observations_topic, ((k, v, HEADERS) for k, v in messages))
    model = _model()
    assert _run(settings, model) == counts

    index = _index(es, settings.anomalies_index)
    assert set(index) == {"ehr-2", "syn-1", fhir.pair_id("s-1", "d-1")}
    assert index["ehr-2"]["category"] == "hypertensive_crisis"
    lines = {r["observation_id"]: r for r in iter_records(settings.normal_dir)}
    assert set(lines) == {"eX" + "7q.Z-" * 12 + "Ab3z", "ath-1", "ok-9"}
    assert lines["ath-1"]["effective_precision"] == "day"
    (dead,) = _dead_letters(kafka_config, settings.dlq_topic, 1)
    assert dead.value() == messages[6][1]  # the original bytes, once
    headers = dict(dead.headers())
    assert headers["error"] == b"bad_unit"
    assert headers["error.detail"].startswith(b"entry[1] bad_unit")

    # a second run over the same topic changes nothing (idempotent sinks); without a
    # recovery store the operator must choose what happens to the files already written
    assert _run(dataclasses.replace(settings, normal_on_fresh_start="replace"), model) == counts
    assert set(_index(es, settings.anomalies_index)) == set(index)
    assert len(_dead_letters(kafka_config, settings.dlq_topic, 1)) == 1


def test_two_senders_with_the_same_observation_ids_stay_apart(settings_factory, es):
    model = _model()
    seen = {}
    for sender, values in (("ehr-a", (182, 121)), ("ehr-b", (150, 95))):
        settings = settings_factory(kafka_tail=False, kafka_partitions=1)
        value = orjson.dumps(panel("obs-1", *values))  # both send id obs-1 for patient pt-9
        produce_all(settings, settings.observations_topic, [(b"pt-9", value, HEADERS)])
        assert _run(settings, model)["anomaly"] == 1
        seen[sender] = _index(es, settings.anomalies_index)
    assert {s: set(docs) for s, docs in seen.items()} == {"ehr-a": {"obs-1"}, "ehr-b": {"obs-1"}}
    assert seen["ehr-a"]["obs-1"]["systolic"] == 182.0
    assert seen["ehr-b"]["obs-1"]["systolic"] == 150.0
