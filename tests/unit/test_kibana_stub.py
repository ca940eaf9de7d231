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


# ----------------------------------------------------------------------------- .webhook
WEBHOOK = {
    "connector_type_id": ".webhook",
    "name": "hook",
    "config": {"url": "https://hooks.example.org/bp", "method": "post", "hasAuth": False},
    "secrets": {},
}


@pytest.fixture
def gold() -> Iterator[tuple[KibanaStub, setup.Kibana]]:
    with KibanaStub(license="gold") as stub:
        yield stub, setup.Kibana(stub.url)


def webhook(config: dict[str, Any] | None = None, secrets: dict[str, Any] | None = None):
    body = copy.deepcopy(WEBHOOK)
    body["config"].update(config or {})
    body["secrets"].update(secrets or {})
    body["config"] = {k: v for k, v in body["config"].items() if v is not UNSET}
    return body


UNSET = object()


def new_connector() -> str:
    return f"/api/actions/connector/{uuid.uuid4()}"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"url": UNSET}, "[url]: expected value of type [string] but got [undefined]"),
        ({"url": 7}, "[url]: expected value of type [string] but got [number]"),
        ({"method": "POST"}, "[method]: expected value to equal one of [post | put]"),
        ({"method": "patch"}, "[method]: expected value to equal"),  # 9.3, not 8.19
        ({"headers": {"X-Team": 1}}, "[headers.X-Team]: expected value of type [string]"),
        ({"headers": ["X-Team: a"]}, "[headers]: expected value of type [Object]"),
        ({"hasAuth": "no"}, "[hasAuth]: expected value of type [boolean]"),
        ({"authType": "basic"}, "[authType]: expected value to equal one of"),
        ({"certType": "pem"}, "[certType]: expected value to equal one of"),
        ({"verificationMode": "strict"}, "[verificationMode]: expected value to equal one of"),
        ({"secretHeaders": {"a": "b"}}, "[secretHeaders]: definition for this key is missing"),
        ({"accessTokenUrl": "https://x"}, "[accessTokenUrl]: definition for this key is missing"),
        ({"url": "hooks.example.org/bp"}, "unable to parse url"),
        ({"url": "https://"}, "unable to parse url"),
        ({"url": "https://hooks example.org/"}, "unable to parse url"),
        ({"url": "https://hooks.example.org:99999/"}, "unable to parse url"),
        ({"url": "https://[::1/"}, "unable to parse url"),
        ({"url": "https://hooks^example.org/"}, "unable to parse url"),
        ({"url": " https://hooks.example.org/"}, "unable to parse url"),
        (
            {"authType": "webhook-authentication-basic"},
            "authType must be null or undefined if hasAuth is false",
        ),
    ],
)  # fmt: skip
def test_webhook_config_schema(gold, config, expected):
    """stack_connectors/server/connector_types/webhook/schema.ts and validations.ts, with
    common/auth/schema.ts: each rule refuses, and the same body without the change passes."""
    stub, client = gold
    cid = str(uuid.uuid4())
    message = refused(client, "POST", f"/api/actions/connector/{cid}", webhook(config))
    assert message.startswith("error validating action type config: "), message
    assert expected in message, message
    assert not stub.connectors
    client.request("POST", f"/api/actions/connector/{cid}", webhook())


@pytest.mark.parametrize(
    "config",
    [
        {},  # hasAuth false, authType absent: schema.maybe leaves it undefined
        {"authType": None},
        {"hasAuth": True, "authType": "webhook-authentication-basic"},
        {"hasAuth": UNSET},  # defaults to true
        {"method": "put", "headers": {"Content-Type": "application/json"}},
        {"headers": None},
        {"url": "http://[::1]:8080/hook"},
        {"url": "http://user@hooks.example.org/"},
        {"hasAuth": True, "authType": "webhook-authentication-ssl", "certType": "ssl-pfx",
         "verificationMode": "full", "ca": "LS0t"},
    ],
)  # fmt: skip
def test_webhook_configs_kibana_accepts(gold, config):
    stub, client = gold
    _, created = client.request("POST", new_connector(), webhook(config))
    assert stub.connectors[created["id"]]["config"]["method"] in ("post", "put")
    assert "secrets" not in created  # never returned


def test_webhook_defaults_are_stored():
    with KibanaStub(license="trial") as stub:
        client = setup.Kibana(stub.url)
        body = webhook({"method": UNSET, "hasAuth": UNSET})
        _, created = client.request("POST", new_connector(), body)
    assert created["config"] == {
        "url": WEBHOOK["config"]["url"], "method": "post", "headers": None, "hasAuth": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        ({"user": "u"}, "must specify one of the following schemas: user and password"),
        ({"password": "p"}, "must specify one of the following schemas"),
        ({"user": "u", "password": "p", "crt": "c"}, "must specify one of"),
        ({"crt": "c"}, "must specify one of"),
        ({"pfx": "p", "key": "k"}, "must specify one of"),
        ({"user": 7, "password": "p"}, "[user]: expected value of type [string]"),
        ({"secretHeaders": {"Authorization": "x"}}, "definition for this key is missing"),
        ({"clientSecret": "s"}, "[clientSecret]: definition for this key is missing"),
    ],
)
def test_webhook_secrets_schema(gold, secrets, expected):
    _, client = gold
    message = refused(client, "POST", new_connector(), webhook(secrets=secrets))
    assert message.startswith("error validating action type secrets: ") and expected in message


@pytest.mark.parametrize(
    "secrets",
    [
        {},
        {"user": None, "password": None},
        {"user": "", "password": ""},  # blank is falsy in the schema's validate
        {"user": "u", "password": "p"},
        {"crt": "c", "key": "k"},
        {"crt": "c", "key": "k", "password": "p"},
        {"pfx": "p"},
        {"pfx": "p", "password": "p"},
    ],
)
def test_webhook_secrets_kibana_accepts(gold, secrets):
    _, client = gold
    client.request("POST", new_connector(), webhook(secrets=secrets))


def test_webhook_needs_gold_after_its_schema_is_checked(kibana):
    """webhook/index.ts minimumLicenseRequired gold; actions' create.ts validates config and
    secrets before ensureActionTypeEnabled checks the license (403)."""
    stub, client = kibana  # basic
    message = refused(client, "POST", new_connector(), webhook(), status=403)
    assert message == (
        "Action type .webhook is disabled because your basic license does not support it. "
        "Please upgrade your license."
    )
    assert "unable to parse url" in refused(
        client, "POST", new_connector(), webhook({"url": "nope"})
    )
    client.request("POST", new_connector(), SERVER_LOG)  # basic is enough
    for license in ("gold", "platinum", "enterprise", "trial"):
        stub.license = license
        client.request("POST", new_connector(), webhook())
    stub.license = "standard"
    refused(client, "POST", new_connector(), webhook(), status=403)


def test_webhook_update_is_checked_like_a_create(gold):
    stub, client = gold
    cid = str(uuid.uuid4())
    client.request("POST", f"/api/actions/connector/{cid}", webhook())
    update = setup.update_body("connector", webhook({"method": "delete"}))
    assert "[method]" in refused(client, "PUT", f"/api/actions/connector/{cid}", update)
    update = setup.update_body("connector", webhook({"url": "https://other.example.org/"}))
    client.request("PUT", f"/api/actions/connector/{cid}", update)
    assert stub.connectors[cid]["config"]["url"] == "https://other.example.org/"
    stub.license = "basic"  # a downgraded license refuses the update too
    refused(client, "PUT", f"/api/actions/connector/{cid}", update, status=403)


def test_webhook_url_must_be_an_allowed_host():
    """actions_config.ts ensureUriAllowed with xpack.actions.allowedHosts."""
    with KibanaStub(license="gold", allowed_hosts=("hooks.example.org",)) as stub:
        client = setup.Kibana(stub.url)
        message = refused(client, "POST", new_connector(), webhook({"url": "https://evil.test/x"}))
        assert 'target url "https://evil.test/x" is not added to the Kibana config' in message
        client.request("POST", new_connector(), webhook())


def test_webhook_pfx_can_be_disabled():
    with KibanaStub(license="gold", webhook_pfx_enabled=False) as stub:
        client = setup.Kibana(stub.url)
        pfx = {"hasAuth": True, "authType": "webhook-authentication-ssl", "certType": "ssl-pfx"}
        message = refused(client, "POST", new_connector(), webhook(pfx))
        assert 'certType "ssl-pfx" is disabled' in message
        pfx["certType"] = "ssl-crt-key"
        client.request("POST", new_connector(), webhook(pfx))


# ----------------------------------------------------------------------------- action params
def test_action_params_must_fit_the_connectors_type(gold):
    """Kibana checks these when the action runs (action_executor.ts validateParams); the stub
    at once: a server-log action's params on a webhook connector, a bad level, no body."""
    stub, client = gold
    _, hook = client.request("POST", new_connector(), webhook())
    log_id = connector(client)
    body = rule_body(ES_QUERY, hook["id"])  # server-log params {level, message}
    message = refused(client, "POST", "/api/alerting/rule/p", body)
    assert "[actions.0.params] error validating action params: [level]: definition" in message
    body = rule_body(ES_QUERY, log_id)
    body["actions"][0]["params"]["level"] = "critical"
    assert "[level]: expected value to equal one of" in refused(
        client, "POST", "/api/alerting/rule/p", body
    )
    body["actions"][0]["params"] = {"level": "error"}
    assert "[message]: expected value of type [string]" in refused(
        client, "POST", "/api/alerting/rule/p", body
    )
    body["actions"][0]["params"] = {"message": "m"}  # level defaults to info
    client.request("POST", "/api/alerting/rule/p", body)
    body = rule_body(ES_QUERY, hook["id"])
    body["actions"][0]["params"] = {"body": '{"a": "{{alert.id}}"}'}
    client.request("POST", "/api/alerting/rule/q", body)
    assert set(stub.rules) == {"p", "q"}


@pytest.mark.parametrize(
    ("rule_id", "template", "ok"),
    [
        (ES_QUERY, "{{context.message}} {{rule.name}} {{alert.id}} {{date}}", True),
        (ES_QUERY, "{{ context.value }} {{{context.title}}} {{rule.tags}}", True),
        (ES_QUERY, "{{context.mesage}}", False),  # a typo renders as an empty string
        (ES_QUERY, "{{context.group}}", False),  # .es-query has no context.group
        (THRESHOLD, "{{context.group}} {{context.conditions}}", True),
        (THRESHOLD, "{{context.hits}}", False),
        (ES_QUERY, "{{alert.name}}", False),
        (ES_QUERY, "{{rule.owner}}", False),
        (ES_QUERY, "{{patient_id}}", False),
    ],
)
def test_action_mustache_variables_must_exist(kibana, rule_id, template, ok):
    """alerting/server/task_runner/transform_action_params.ts and each rule type's
    actionVariables.context."""
    stub, client = kibana
    body = rule_body(rule_id, connector(client))
    body["actions"][0]["params"]["message"] = template
    if ok:
        client.request("POST", "/api/alerting/rule/m", body)
        assert "m" in stub.rules
    else:
        message = refused(client, "POST", "/api/alerting/rule/m", body)
        assert "[actions.0.params] unknown mustache variables:" in message


# ----------------------------------------------------------------------------- saved searches
def _worklist() -> list[dict[str, Any]]:
    """A data view and a saved search on it, as Kibana 8.19 exports them."""
    ref = "kibanaSavedObjectMeta.searchSourceJSON.index"
    source = {"query": {"query": 'status : "open"', "language": "kuery"}, "filter": [],
              "indexRefName": ref}  # fmt: skip
    view = {
        "id": "v", "type": "index-pattern", "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.0.0", "attributes": {"title": "bp-episodes*"}, "references": [],
    }  # fmt: skip
    search = {
        "id": "bpwatch-worklist",
        "type": "search",
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.0.0",
        "attributes": {
            "title": "Worklist",
            "columns": ["episode_id", "overdue"],
            "sort": [["overdue", "desc"], ["opened_at", "asc"]],
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source)},
        },
        "references": [{"name": ref, "type": "index-pattern", "id": "v"}],
    }
    return [view, search]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"columns": "episode_id"}, "[attributes.columns]: expected value of type [array]"),
        ({"sort": [["overdue", "desc", "x"]]}, "[attributes.sort]: types that failed"),
        ({"sort": "overdue"}, "[attributes.sort]: types that failed"),
        ({"kibanaSavedObjectMeta": UNSET}, "[attributes.kibanaSavedObjectMeta]: expected"),
        ({"kibanaSavedObjectMeta": {}}, "[attributes.kibanaSavedObjectMeta.searchSourceJSON]"),
        ({"hideChart": "yes"}, "[attributes.hideChart]: expected value of type [boolean]"),
        ({"title": UNSET}, "[attributes.title]: expected value of type [string]"),
        ({"sampleSize": 0}, "[attributes.sampleSize]: Value must be equal to or greater"),
        ({"viewMode": "table"}, "[attributes.viewMode]: expected value to equal one of"),
        ({"tabs": []}, "[attributes.tabs]: definition for this key is missing"),
        ({"query": 'status : "open"'}, "[attributes.query]: definition for this key"),
    ],
)
def test_import_checks_saved_search_attributes(kibana, change, expected):
    """saved_search/server/saved_objects/schema.ts (model version 5), which the import's
    bulkCreate applies to the migrated object."""
    stub, client = kibana
    objs = _worklist()
    objs[-1]["attributes"].update(change)
    objs[-1]["attributes"] = {k: v for k, v in objs[-1]["attributes"].items() if v is not UNSET}
    result = _import(client, objs)
    (error,) = result["errors"]
    assert error["id"] == "bpwatch-worklist" and error["error"]["type"] == "unknown"
    assert expected in error["error"]["message"], error
    assert ("search", "bpwatch-worklist") not in stub.saved_objects
    assert _import(client, _worklist())["success"] is True


def test_import_refuses_a_saved_search_newer_than_it_knows(kibana):
    _, client = kibana
    objs = _worklist()
    objs[-1]["typeMigrationVersion"] = "8.1.0"
    ((error),) = _import(client, objs)["errors"]
    assert "belongs to a more recent version of Kibana [8.1.0]" in error["error"]["message"]
    objs[-1]["typeMigrationVersion"] = "7.9.3"  # older versions are migrated forward
    assert _import(client, objs)["success"] is True
