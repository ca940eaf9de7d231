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
        settings.acks_topic: settings.topic_retention_days,
        settings.dlq_topic: settings.dlq_retention_days,
        settings.acks_dlq_topic: settings.dlq_retention_days,
        settings.enrollments_topic: settings.topic_retention_days,
        settings.enrollments_dlq_topic: settings.dlq_retention_days,
    }
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in want]
    got = {
        res.name: int(fut.result(timeout=30)["retention.ms"].value)
        for res, fut in admin_client.describe_configs(resources).items()
    }
    assert got == {t: int(days * 86_400_000) for t, days in want.items()}
    assert got[settings.dlq_topic] > got[settings.observations_topic]
    assert got[settings.acks_dlq_topic] > got[settings.acks_topic]
    assert got[settings.enrollments_dlq_topic] > got[settings.enrollments_topic]


def test_teardown_removes_every_topic_and_index_of_the_namespace(services, es):
    """Setup then teardown of a fresh namespace: the acknowledgement topics and the
    ``bp-episodes`` index go with the others, and nothing of the namespace is left."""
    from dataclasses import replace

    from confluent_kafka.admin import AdminClient

    ns = "t" + uuid.uuid4().hex[:10]
    s = replace(services, namespace=ns, kafka_partitions=1)
    listing = AdminClient(s.kafka_client_config())
    try:
        admin.setup(s)
        topics = set(listing.list_topics(timeout=30).topics)
        assert {s.topic(t) for t in admin.TOPICS} <= topics
        assert {s.acks_topic, s.acks_dlq_topic} <= topics
        assert {s.enrollments_topic, s.enrollments_dlq_topic} <= topics
        assert es.indices.exists_alias(name=s.episodes_index)
        assert es.indices.exists_alias(name=s.adherence_index)
        assert es.indices.exists_index_template(name=f"bpwatch-{s.adherence_index}-monthly")
    finally:
        admin.teardown(s)
    assert not {t for t in listing.list_topics(timeout=30).topics if t.startswith(ns + ".")}
    assert not list(es.indices.get(index=f"{ns}-*", allow_no_indices=True))
    assert not es.indices.exists_index_template(name=f"bpwatch-{ns}-bp-alerts-monthly")
    assert not es.indices.exists_index_template(name=f"bpwatch-{ns}-bp-adherence-monthly")


def test_bp_episodes_is_one_write_index_without_months_and_takes_partial_updates(settings, es):
    """``bp-episodes``: the alias over ``-v1`` alone (its write index), no monthly template;
    a partial update with upsert through the alias reaches that index."""
    alias = settings.episodes_index
    aliases = es.indices.get_alias(name=alias).body
    assert list(aliases) == [alias + admin.INDEX_SUFFIX]
    assert aliases[alias + admin.INDEX_SUFFIX]["aliases"][alias]["is_write_index"] is True
    assert not es.indices.exists_index_template(name=f"bpwatch-{alias}-monthly")
    assert es.indices.exists_index_template(name=f"bpwatch-{settings.alerts_index}-monthly")
    es.update(index=alias, id="ep-1", doc={"episode_id": "ep-1", "status": "open",
              "acknowledged": False}, doc_as_upsert=True)  # fmt: skip
    es.update(index=alias, id="ep-1", doc={"acknowledged": True, "ack_note": "seen"},
              doc_as_upsert=True, refresh=True)  # fmt: skip
    hit = es.search(index=alias, query={"ids": {"values": ["ep-1"]}})["hits"]["hits"][0]
    assert hit["_index"] == alias + admin.INDEX_SUFFIX
    assert hit["_source"] == {"episode_id": "ep-1", "status": "open", "acknowledged": True,
                              "ack_note": "seen"}  # fmt: skip
    with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
        es.update(index=alias, id="ep-1", doc={"patient_name": "x"}, doc_as_upsert=True)
    assert admin.ensure_elasticsearch(settings) == []  # idempotent: still one index
    assert list(es.indices.get_alias(name=alias)) == [alias + admin.INDEX_SUFFIX]


def test_setup_adds_the_acknowledgement_fields_to_existing_monthly_alert_indices(settings, es):
    """A month of ``bp-alerts`` created before the acknowledgement fields refuses an
    ``acknowledged`` event; ``setup`` puts the fields on it (and on ``-v1``)."""
    alias = settings.alerts_index
    body = admin.template_bodies()["bp-alerts"]
    new = ("acknowledged_by", "acknowledged_at", "overdue_minutes", "note")
    old = {k: v for k, v in body["template"]["mappings"]["properties"].items() if k not in new}
    month = f"{alias}-2026.01"
    # the month as an earlier version's monthly template made it: a template of this
    # namespace's month alone, above the current ones (the shared templates stay untouched)
    earlier = f"bpwatch-{month}-earlier"
    es.indices.put_index_template(
        name=earlier,
        index_patterns=[month],
        priority=400,
        template={"mappings": {"dynamic": "strict", "properties": old}, "aliases": {alias: {}}},
    )
    try:
        es.indices.create(index=month)
    finally:
        es.indices.delete_index_template(name=earlier)
    doc = {"alert_id": "a-1", "event": "acknowledged", "event_at": "2026-01-05T10:00:00Z",
           "acknowledged_by": "u-1", "acknowledged_at": "2026-01-05T10:00:00Z", "note": "ok",
           "overdue_minutes": 0.0}  # fmt: skip
    with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
        es.index(index=month, id="a-1", document=doc)
    assert admin.ensure_elasticsearch(settings) == []
    for index in (month, alias + admin.INDEX_SUFFIX):
        properties = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert {k: properties[k]["type"] for k in new} == {
            "acknowledged_by": "keyword", "acknowledged_at": "date",
            "overdue_minutes": "float", "note": "text",
        }  # fmt: skip
    es.index(index=month, id="a-1", document=doc, refresh=True)


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


def test_adherence_documents_go_to_the_month_of_their_cycle_start(settings, es):
    """``bp-adherence``: the monthly template of the alias makes ``<alias>-YYYY.MM`` by
    ``cycle_start`` on first write, with the strict mapping; the alias reads it."""
    from lib.connectors.elastic_months import MONTH_FIELDS, MonthRouter

    alias = settings.adherence_index
    doc = {"patient_id": "pt-1", "cycle_start": "2026-01-20", "cycle_end": "2026-02-18",
           "days_with_readings": 3, "last_reading_date": "2026-01-25", "days_left": 24,
           "band": "2_to_15", "on_track": True, "program": "postpartum"}  # fmt: skip
    month = MonthRouter(alias, MONTH_FIELDS["bp-adherence"]).index_of(doc)
    assert month == f"{alias}-2026.01"
    es.index(index=month, id="pt-1|2026-01-20", document=doc, refresh=True)
    (hit,) = es.search(index=alias, query={"term": {"band": "2_to_15"}})["hits"]["hits"]
    assert (hit["_index"], hit["_source"]) == (month, doc)
    mapping = es.indices.get_mapping(index=month)[month]["mappings"]
    assert mapping["dynamic"] == "strict" and mapping["properties"]["on_track"]["type"] == "boolean"
    with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
        es.index(index=month, id="x", document={**doc, "patient_name": "x"})


def test_setup_adds_the_program_fields_to_existing_indices(settings, es):
    """Indices made before programs (a month of ``bp-anomalies`` and of ``bp-alerts``, and
    ``bp-episodes-v1``) refuse the program fields; ``setup`` puts them on every one."""
    new = {
        "bp-anomalies": {"program": "keyword", "program_band": "keyword"},
        "bp-alerts": {"program": "keyword", "confirmed": "boolean", "confirmation": "keyword"},
        "bp-episodes": {"program": "keyword", "confirmed": "boolean"},
    }
    bodies = admin.template_bodies()
    indices = {}
    for base, fields in new.items():
        alias = settings.index(base)
        props = bodies[base]["template"]["mappings"]["properties"]
        old = {k: v for k, v in props.items() if k not in fields}
        # the index as an earlier version made it: a template of this index alone, above the
        # current ones (the shared templates stay untouched)
        if base == "bp-episodes":
            index, alias_spec = alias + admin.INDEX_SUFFIX, {"is_write_index": True}
            es.indices.delete(index=index)
        else:
            index, alias_spec = f"{alias}-2026.01", {}
        earlier = f"bpwatch-{index}-earlier"
        mappings = {"dynamic": "strict", "properties": old}
        es.indices.put_index_template(
            name=earlier,
            index_patterns=[index],
            priority=400,
            template={"mappings": mappings, "aliases": {alias: alias_spec}},
        )
        try:
            es.indices.create(index=index)
        finally:
            es.indices.delete_index_template(name=earlier)
        indices[base] = index
        with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
            es.index(index=index, id="x", document={"program": "postpartum"})
    assert admin.ensure_elasticsearch(settings) == []
    for base, index in indices.items():
        properties = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert {k: properties[k]["type"] for k in new[base]} == new[base]
        es.index(index=index, id="x", document={"program": "postpartum"}, refresh=True)
