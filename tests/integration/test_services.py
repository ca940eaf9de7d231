"""Foundation checks against the real local Kafka and Elasticsearch."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer
from elasticsearch import BadRequestError

from lib.tools import admin


def test_kafka_round_trip_through_real_broker(settings, kafka_config):
    topic = settings.observations_topic
    sent = {f"p{i % 7}".encode(): None for i in range(7)}
    payloads = [(f"p{i % 7}".encode(), f"msg-{i}".encode()) for i in range(200)]
    confirmed: list[bytes] = []
    producer = Producer({**kafka_config, "acks": "all", "enable.idempotence": True})
    for key, value in payloads:
        producer.produce(
            topic, value, key, on_delivery=lambda err, msg: err or confirmed.append(msg.value())
        )
    assert producer.flush(30) == 0
    assert len(confirmed) == len(payloads)

    consumer = Consumer(
        {**kafka_config, "group.id": f"g-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[tuple[bytes, bytes, int]] = []
    while len(got) < len(payloads):
        msg = consumer.poll(10)
        assert msg is not None, f"only {len(got)} of {len(payloads)} messages came back"
        assert msg.error() is None
        got.append((msg.key(), msg.value(), msg.partition()))
    consumer.close()
    assert sorted((k, v) for k, v, _ in got) == sorted(payloads)
    # keyed by patient: every key lives in exactly one partition
    partitions = {}
    for key, _, part in got:
        partitions.setdefault(key, set()).add(part)
    assert set(partitions) == set(sent)
    assert all(len(p) == 1 for p in partitions.values())


def test_elasticsearch_index_and_search_with_strict_template(settings, es):
    index = settings.anomalies_index
    docs = [
        {
            "observation_id": f"obs-{i}",
            "patient_id": f"p{i % 3}",
            "effective_at": f"2026-11-28T10:{i:02d}:00Z",
            "systolic": 150.0 + i,
            "diastolic": 95.0,
            "category": "hypertension_stage_2",
            "anomaly_types": ["systolic_hypertension"],
            "severity": "high",
            "risk_score": 0.5,
            "ruleset": "aha2017",
            "ingested_at": "2026-11-28T10:00:00Z",
        }
        for i in range(10)
    ]
    for d in docs:
        es.index(index=index, id=d["observation_id"], document=d)
    es.indices.refresh(index=index)
    res = es.search(index=index, query={"term": {"patient_id": "p1"}}, size=20)
    assert sorted(h["_id"] for h in res["hits"]["hits"]) == ["obs-1", "obs-4", "obs-7"]
    # the write alias points at the versioned concrete index
    assert list(es.indices.get_alias(name=index)) == [index + admin.INDEX_SUFFIX]
    # strict mapping: an unknown field is refused, not silently added
    import elasticsearch

    try:
        es.index(index=index, id="bad", document={**docs[0], "patient_name": "x"})
    except elasticsearch.BadRequestError as exc:
        assert "strict_dynamic_mapping_exception" in str(exc)
    else:
        raise AssertionError("strict mapping accepted an unknown field")


def test_setup_is_idempotent(settings):
    assert admin.ensure_topics(settings) == []
    assert admin.ensure_elasticsearch(settings) == []


def test_setup_creates_topics_with_their_retention(settings):
    """retention.ms as the broker holds it: the settings' days, the dead letters' longer."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin_client = AdminClient(settings.kafka_client_config())
    want = {
        settings.observations_topic: settings.topic_retention_days,
        settings.alerts_topic: settings.topic_retention_days,
        settings.dlq_topic: settings.dlq_retention_days,
    }
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in want]
    got = {
        res.name: int(fut.result(timeout=30)["retention.ms"].value)
        for res, fut in admin_client.describe_configs(resources).items()
    }
    assert got == {t: int(days * 86_400_000) for t, days in want.items()}
    assert got[settings.dlq_topic] > got[settings.observations_topic]


def test_setup_adds_new_fields_to_an_index_of_an_earlier_version(settings, es):
    """An index made before a field was added to its strict template refuses documents with
    the field; ``setup`` on the existing index puts the new fields on it."""
    body = admin.template_bodies()["bp-anomalies"]
    alias = settings.anomalies_index
    es.indices.delete(index=alias + admin.INDEX_SUFFIX)
    es.indices.delete_index_template(name="bpwatch-bp-anomalies")
    old = dict(body["template"]["mappings"]["properties"])
    del old["device"], old["news2_systolic"]  # fields of a later version
    es.indices.create(
        index=alias + admin.INDEX_SUFFIX,
        mappings={"dynamic": "strict", "properties": old},
        aliases={alias: {"is_write_index": True}},
    )
    doc = {"observation_id": "o-1", "device": "Cuff X", "news2_systolic": 0}
    with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
        es.index(index=alias, id="o-1", document=doc)
    assert admin.ensure_elasticsearch(settings) == []  # nothing created, the fields added
    es.index(index=alias, id="o-1", document=doc, refresh=True)
    assert es.get(index=alias, id="o-1")["_source"]["device"] == "Cuff X"
