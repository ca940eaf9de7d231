"""The Kibana stub refuses what Kibana 8.19 refuses (tests/kibana_stub.py cites the sources).

Each test sends one request Kibana would refuse next to one it would accept, so a stub that
accepts everything, or refuses everything, fails here.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from infra.kibana import objects, setup
from tests.kibana_stub import KibanaStub

ES_QUERY, THRESHOLD = "bpwatch-urgent-alerts", "bpwatch-anomaly-spike"
SERVER_LOG = {"connector_type_id": ".server-log", "name": "log", "config": {}, "secrets": {}}


@pytest.fixture
def kibana() -> Iterator[tuple[KibanaStub, setup.Kibana]]:
    with KibanaStub() as stub:
        yield stub, setup.Kibana(stub.url)


def refused(client: setup.Kibana, method: str, path: str, body: Any, status: int = 400) -> str:
    with pytest.raises(setup.KibanaError) as info:
        client.request(method, path, body)
    assert f"-> {status}:" in str(info.value), info.value
    return json.loads(str(info.value).split(f"-> {status}: ", 1)[1])["message"]


def connector(client: setup.Kibana) -> str:
    connector_id = str(uuid.uuid4())
    client.request("POST", f"/api/actions/connector/{connector_id}", SERVER_LOG)
    return connector_id


def rule_body(rule_id: str, connector_id: str) -> dict[str, Any]:
    rule = copy.deepcopy(setup.rule_by_id(rule_id))
    for action in rule["actions"]:
        action["id"] = connector_id
    return setup.create_body("rule", rule)


def test_connector_ids_must_be_uuids_rule_ids_need_not(kibana):
    _, client = kibana
    message = refused(client, "POST", "/api/actions/connector/bpwatch-server-log", SERVER_LOG)
    assert "Predefined IDs are not allowed" in message and "UUID" in message
    connector_id = connector(client)
    client.request(
        "POST", "/api/alerting/rule/my-rule", rule_body("bpwatch-anomaly-spike", connector_id)
    )
    refused(client, "POST", f"/api/actions/connector/{connector_id}", SERVER_LOG, status=409)


def test_connector_body_schema(kibana):
    _, client = kibana
    cid = str(uuid.uuid4())
    assert "is not registered" in refused(
        client,
        "POST",
        f"/api/actions/connector/{cid}",
        {**SERVER_LOG, "connector_type_id": ".nope"},
    )
    assert "[request body.name]" in refused(
        client, "POST", f"/api/actions/connector/{cid}", {**SERVER_LOG, "name": " "}
    )
    client.request("POST", f"/api/actions/connector/{cid}", SERVER_LOG)
    # the type cannot change on update: connector_type_id is not a key of the update body
    message = refused(client, "PUT", f"/api/actions/connector/{cid}", SERVER_LOG)
    assert "[request body.connector_type_id]: definition for this key is missing" in message
    client.request(
        "PUT", f"/api/actions/connector/{cid}", setup.update_body("connector", SERVER_LOG)
    )


def test_rule_naming_a_missing_connector_is_refused(kibana):
    stub, client = kibana
    body = rule_body(ES_QUERY, str(uuid.uuid4()))
    message = refused(client, "POST", "/api/alerting/rule/r1", body)
    assert message.startswith("Failed to load action") and "not found" in message
    assert not stub.rules
    client.request("POST", "/api/alerting/rule/r1", rule_body(ES_QUERY, connector(client)))
    assert list(stub.rules) == ["r1"]


def test_rule_actions_need_valid_groups_and_frequency(kibana):
    _, client = kibana
    body = rule_body("bpwatch-anomaly-spike", connector(client))
    wrong_group = copy.deepcopy(body)
    wrong_group["actions"][0]["group"] = "query matched"  # an .es-query group
    assert "Invalid action groups: query matched" in refused(
        client, "POST", "/api/alerting/rule/a", wrong_group
    )
    no_frequency = copy.deepcopy(body)
    del no_frequency["actions"][0]["frequency"]
    assert "Actions missing frequency parameters" in refused(
        client, "POST", "/api/alerting/rule/a", no_frequency
    )


@pytest.mark.parametrize(
    ("rule_id", "change", "expected"),
    [
        (ES_QUERY, {"esQuery": {"query": {}}}, "[esQuery]: expected value of type [string]"),
        (ES_QUERY, {"esQuery": "{not json"}, "[esQuery]: must be valid JSON"),
        (ES_QUERY, {"esQuery": '{"size": 1}'}, '[esQuery]: must contain "query"'),
        (ES_QUERY, {"size": 20000}, "lower than [10000]"),
        (ES_QUERY, {"timeWindowUnit": "w"}, "[timeWindowUnit]"),
        (ES_QUERY, {"timeField": None}, "[timeField]"),
        (ES_QUERY, {"thresholdComparator": "between"}, "must have two elements"),
        (ES_QUERY, {"termField": None}, "[termField]: termField required"),
        (ES_QUERY, {"termSize": None}, "[termSize]: termSize required"),
        (ES_QUERY, {"termSize": 1001}, "[termSize]: must be less than or equal to 1000"),
        (ES_QUERY, {"termField": ""}, "[termField]: types that failed validation"),
        (ES_QUERY, {"termField": ["alert_id"]}, "but cannot be smaller than [2]"),
        (ES_QUERY, {"termField": list("abcde")}, "but cannot be greater than [4]"),
        (ES_QUERY, {"termField": ["alert_id", 7]}, "[termField.1.1]: expected value of type"),
        (ES_QUERY, {"groupBy": "row"}, "[groupBy]: groupBy should be all or top"),
        (ES_QUERY, {"sourceFields": [{"label": "x"}]}, "[sourceFields.0.searchPath]"),
        (ES_QUERY, {"searchType": "searchSource"}, "[searchType]"),
        (THRESHOLD, {"searchType": "esQuery"}, "[searchType]: definition for this key is missing"),
        (THRESHOLD, {"aggType": "avg"}, "[aggField]: must have a value"),
        (THRESHOLD, {"threshold": []}, "[threshold]"),
        (THRESHOLD, {"timeWindowSize": 0}, "[timeWindowSize]"),
    ],
)  # fmt: skip
def test_rule_params_schemas(kibana, rule_id, change, expected):
    _, client = kibana
    body = rule_body(rule_id, connector(client))
    body["params"].update(change)
    body["params"] = {k: v for k, v in body["params"].items() if v is not None}
    message = refused(client, "POST", "/api/alerting/rule/x", body)
    assert message.startswith("params invalid: ") and expected in message, message
    client.request("POST", "/api/alerting/rule/x", rule_body(rule_id, connector(client)))


def test_rule_body_schemas_and_unknown_rule_types(kibana):
    _, client = kibana
    body = rule_body(ES_QUERY, connector(client))
    assert "is not registered" in refused(
        client, "POST", "/api/alerting/rule/z", {**body, "rule_type_id": ".nope"}
    )
    bad_interval = {**body, "schedule": {"interval": "1 minute"}}
    assert "[request body.schedule.interval]" in refused(
        client, "POST", "/api/alerting/rule/z", bad_interval
    )
    client.request("POST", "/api/alerting/rule/z", body)
    # rule_type_id and consumer are not keys of the update body
    assert "definition for this key is missing" in refused(
        client, "PUT", "/api/alerting/rule/z", body
    )
    client.request(
        "PUT",
        "/api/alerting/rule/z",
        {k: v for k, v in body.items() if k not in ("rule_type_id", "consumer")},
    )


def test_es_query_groups_by_one_field_or_two_to_four(kibana):
    """rule_params/es_query/v1.ts termField: a field name, or 2 to 4 of them."""
    _, client = kibana
    for i, term_field in enumerate(["alert_id", ["alert_id", "condition"], list("abcd")]):
        body = rule_body(ES_QUERY, connector(client))
        body["params"]["termField"] = term_field
        client.request("POST", f"/api/alerting/rule/g{i}", body)
    body["params"]["termField"] = {"field": "alert_id"}
    assert "types that failed validation" in refused(client, "POST", "/api/alerting/rule/g", body)


def test_deleting_a_rule(kibana):
    stub, client = kibana
    message = refused(client, "DELETE", "/api/alerting/rule/gone", None, status=404)
    assert message == "Saved object [alert/gone] not found"
    client.request("POST", "/api/alerting/rule/d1", rule_body(THRESHOLD, connector(client)))
    assert client.request("DELETE", "/api/alerting/rule/d1") == (204, None)
    assert not stub.rules
    refused(client, "GET", "/api/alerting/rule/d1", None, status=404)


def test_writes_need_kbn_xsrf(kibana):
    stub, client = kibana
    del client.headers["kbn-xsrf"]
    assert "kbn-xsrf" in refused(
        client, "POST", f"/api/actions/connector/{uuid.uuid4()}", SERVER_LOG
    )
    client.request("GET", "/api/status")
    assert not stub.connectors


def test_import_refuses_newer_versions_unknown_types_and_dangling_references(kibana):
    stub, client = kibana
    good = objects.saved_objects()
    newer = copy.deepcopy(good)
    newer[2]["typeMigrationVersion"] = "99.0.0"
    result = _import(client, newer)
    assert result["success"] is False and result["successCount"] == len(good) - 1
    (error,) = result["errors"]
    assert "belongs to a more recent version of Kibana [99.0.0]" in error["error"]["message"]

    stub.saved_objects.clear()
    dangling = [o for o in good if o["type"] != "index-pattern"]
    result = _import(client, dangling)
    assert {e["error"]["type"] for e in result["errors"]} == {"missing_references"}
    assert result["successCount"] == 1  # the dashboard: its panels are in the file

    unknown = [{**good[0], "type": "canvas-workpad"}]
    assert _import(client, unknown)["errors"][0]["error"]["type"] == "unsupported_type"
    result = _import(client, good)
    assert result["success"] is True and result["successCount"] == len(good)


def test_import_needs_an_ndjson_file(kibana):
    _, client = kibana
    with pytest.raises(setup.KibanaError, match="Invalid file extension"):
        _post_file(client, objects.to_ndjson(objects.saved_objects()), "bpwatch.json")


def _import(client: setup.Kibana, objs: list[dict[str, Any]]) -> dict[str, Any]:
    return _post_file(client, objects.to_ndjson(objs), "bpwatch.ndjson")


def _post_file(client: setup.Kibana, text: str, filename: str) -> dict[str, Any]:
    boundary = "stub-test"
    data = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: application/ndjson\r\n\r\n{text}\r\n--{boundary}--\r\n"
    ).encode()
    _, result = client.request(
        "POST",
        "/api/saved_objects/_import?overwrite=true",
        data=data,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    return result
