"""A local HTTP stand-in for Kibana 8.19 that refuses what Kibana 8.19 refuses, for the calls
``infra.kibana.setup`` makes. Not a Kibana: it stores what it accepts and runs nothing.

    with KibanaStub(auth=("elastic", "pw")) as kibana:
        setup.apply(setup.Kibana(kibana.url, username="elastic", password="pw"))
        kibana.rules, kibana.connectors, kibana.saved_objects, kibana.requests

Every rule below cites the Kibana source file it was written from (paths in elastic/kibana as
of 8.19/main; the older ``packages/core/...`` and ``x-pack/plugins/...`` paths hold the same
code in earlier 8.x). Where the stub is unsure of an 8.19 detail it is stricter than Kibana,
never looser:

* ``POST``/``PUT`` without ``kbn-xsrf`` are refused;
* a connector created with a predefined id that is not a UUID is refused (its saved object has
  encrypted attributes); a rule may have any id (rules opted out in 8.17);
* request bodies are checked like ``@kbn/config-schema`` checks them: unknown keys, missing
  keys and wrong types are refused;
* a rule's ``params`` must pass its rule type's schema (``.es-query`` with ``searchType``
  ``esQuery``, grouped by one ``termField`` or several, ``.index-threshold``); its actions
  must name existing connectors, valid action groups and carry a ``frequency``;
* deleting a rule that does not exist is a 404; a deleted rule is gone (204);
* an import refuses objects of unknown types, objects with a ``typeMigrationVersion`` newer
  than the type's latest known version, and objects whose references resolve nowhere.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = "8.19.21"
NO_CONTENT = object()  # a route's reply for 204 No Content


class Refused(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


# ----------------------------------------------------------------------------- config-schema
# src/platform/packages/shared/kbn-config-schema/src/types/{object,string,number,array}_type.ts:
# an object refuses keys it does not define ("definition for this key is missing"), a missing
# required key is "expected value of type [T] but got [undefined]".
Check = Callable[[Any, str], Any]
UNSET = object()


def _fail(path: str, message: str) -> Refused:
    return Refused(400, f"[{path}]: {message}")


def _type_error(path: str, want: str, value: Any) -> Refused:
    got = "undefined" if value is UNSET else type(value).__name__
    got = {"str": "string", "int": "number", "float": "number", "dict": "Object"}.get(got, got)
    return _fail(path, f"expected value of type [{want}] but got [{got}]")


def string(min_length: int = 0, allowed: tuple[str, ...] = (), pattern: str = "") -> Check:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise _type_error(path, "string", value)
        if len(value) < min_length:
            raise _fail(path, f"value has length [{len(value)}] but it must have a minimum "
                        f"length of [{min_length}].")  # fmt: skip
        if allowed and value not in allowed:
            raise _fail(path, f"must be one of {' | '.join(allowed)}; got {value!r}")
        if pattern and not re.fullmatch(pattern, value):
            raise _fail(path, f"invalid value {value!r}")
        return value

    return check


def number(minimum: float | None = None, maximum: float | None = None) -> Check:
    def check(value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(path, "number", value)
        if minimum is not None and value < minimum:
            raise _fail(path, f"Value must be equal to or greater than [{minimum}].")
        if maximum is not None and value > maximum:
            raise _fail(path, f"Value must be equal to or lower than [{maximum}].")
        return value

    return check


def boolean(value: Any, path: str) -> Any:
    if not isinstance(value, bool):
        raise _type_error(path, "boolean", value)
    return value


def record(value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise _type_error(path, "Object", value)
    return value


def array(item: Check, min_size: int = 0, max_size: int | None = None) -> Check:
    # .../kbn-config-schema/src/types/array_type.ts handleError
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise _type_error(path, "array", value)
        if len(value) < min_size:
            raise _fail(path, f"array size is [{len(value)}], but cannot be smaller than "
                        f"[{min_size}]")  # fmt: skip
        if max_size is not None and len(value) > max_size:
            raise _fail(path, f"array size is [{len(value)}], but cannot be greater than "
                        f"[{max_size}]")  # fmt: skip
        return [item(v, f"{path}.{i}") for i, v in enumerate(value)]

    return check


def one_of(*alternatives: Check) -> Check:
    """.../kbn-config-schema/src/types/union_type.ts: the first alternative that validates;
    when none does, "types that failed validation:" and each alternative's error."""

    def check(value: Any, path: str) -> Any:
        errors = []
        for i, alternative in enumerate(alternatives):
            try:
                return alternative(value, f"{path}.{i}")
            except Refused as exc:
                errors.append(f"- {exc.message}")
        raise _fail(path, "types that failed validation:\n" + "\n".join(errors))

    return check


def nullable(inner: Check) -> Check:
    return lambda value, path: None if value is None else inner(value, path)


@dataclass(frozen=True)
class Key:
    check: Check
    required: bool = True
    default: Any = UNSET


def obj(spec: dict[str, Key], validate: Callable[[dict[str, Any]], str | None] | None = None):
    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _type_error(path, "Object", value)
        prefix = f"{path}." if path else ""
        for key in value:
            if key not in spec:
                raise _fail(f"{prefix}{key}", "definition for this key is missing")
        out = {}
        for key, k in spec.items():
            if key in value:
                out[key] = k.check(value[key], f"{prefix}{key}")
            elif k.default is not UNSET:
                out[key] = k.default
            elif k.required:
                k.check(UNSET, f"{prefix}{key}")  # raises the type error of the key
                raise _type_error(f"{prefix}{key}", "any", UNSET)
        message = validate(out) if validate else None
        if message:
            raise Refused(400, message)
        return out

    return check


def optional(check: Check) -> Key:
    return Key(check, required=False)


# ----------------------------------------------------------------------------- rule params
# src/platform/packages/shared/response-ops/rule_params/common/{constants,utils}.ts
COMPARATORS = (">", "<", ">=", "<=", "between", "notBetween")
TIME_UNITS = ("s", "m", "h", "d")
AGG_TYPES = ("count", "avg", "min", "max", "sum")
GROUP_BY = ("all", "top", "row")
ES_QUERY_MAX_HITS_PER_EXECUTION = 10000
MAX_GROUPS = 1000
MAX_SELECTABLE_SOURCE_FIELDS = 5
MAX_SELECTABLE_GROUP_BY_TERMS = 4


def _core_query_errors(p: dict[str, Any]) -> str | None:
    # rule_params/index_threshold/v1.ts validateCoreQueryBody (es_query/v1.ts has the same)
    if p["thresholdComparator"] in ("between", "notBetween") and len(p["threshold"]) == 1:
        return (
            f'[threshold]: must have two elements for the "{p["thresholdComparator"]}" comparator'
        )
    if p["aggType"] != "count" and not p.get("aggField"):
        return f'[aggField]: must have a value when [aggType] is "{p["aggType"]}"'
    if p["groupBy"] == "top":
        if p.get("termField") is None:
            return "[termField]: termField required when [groupBy] is top"
        if p.get("termSize") is None:
            return "[termSize]: termSize required when [groupBy] is top"
        if p["termSize"] > MAX_GROUPS:
            return f"[termSize]: must be less than or equal to {MAX_GROUPS}"
    return None


def _es_query_errors(p: dict[str, Any]) -> str | None:
    # rule_params/es_query/v1.ts validateParams (searchType esQuery)
    error = _core_query_errors(p)
    if error:
        return error
    if p["groupBy"] == "row":
        return "[groupBy]: groupBy should be all or top when [searchType] is not esqlQuery"
    try:
        parsed = json.loads(p["esQuery"])
    except ValueError:
        return "[esQuery]: must be valid JSON"
    if parsed and not (isinstance(parsed, dict) and parsed.get("query")):
        return '[esQuery]: must contain "query"'
    return None


_THRESHOLD = {
    "thresholdComparator": Key(string(allowed=COMPARATORS)),
    "threshold": Key(array(number(), min_size=1, max_size=2)),
    "timeWindowSize": Key(number(minimum=1)),
    "timeWindowUnit": Key(string(allowed=TIME_UNITS)),
    "aggType": Key(string(allowed=AGG_TYPES), default="count"),
    "aggField": optional(string(min_length=1)),
    "groupBy": Key(string(allowed=GROUP_BY), default="all"),
    "termSize": optional(number(minimum=1)),
}

# rule_params/es_query/v1.ts EsQueryRuleParamsSchema; searchType "searchSource" and
# "esqlQuery" take other keys (schema.conditional) and are not modelled: refused here.
# termField: one field, or 2 to MAX_SELECTABLE_GROUP_BY_TERMS fields (a multi_terms group);
# Kibana ignores excludeHitsFromPreviousRun when a termField groups the rule
# (stack_alerts/server/rule_types/es_query/executor.ts keeps latestTimestamp for ungrouped
# rules only), but does not refuse it.
ES_QUERY_PARAMS = obj(
    {
        **_THRESHOLD,
        "size": Key(number(minimum=0, maximum=ES_QUERY_MAX_HITS_PER_EXECUTION)),
        "excludeHitsFromPreviousRun": Key(boolean, default=True),
        "termField": optional(
            one_of(
                string(min_length=1),
                array(string(), min_size=2, max_size=MAX_SELECTABLE_GROUP_BY_TERMS),
            )
        ),
        "searchType": Key(string(allowed=("esQuery",)), default="esQuery"),
        "timeField": Key(string(min_length=1)),
        "esQuery": Key(string(min_length=1)),
        "index": Key(array(string(min_length=1), min_size=1)),
        "sourceFields": optional(
            array(
                obj({"label": Key(string()), "searchPath": Key(string())}),
                max_size=MAX_SELECTABLE_SOURCE_FIELDS,
            )
        ),
    },
    _es_query_errors,
)


def _index_list(value: Any, path: str) -> Any:
    if isinstance(value, str):
        return string(min_length=1)(value, path)
    return array(string(min_length=1), min_size=1)(value, path)


# rule_params/index_threshold/v1.ts ParamsSchema (CoreQueryParamsSchemaProperties + threshold)
INDEX_THRESHOLD_PARAMS = obj(
    {
        **_THRESHOLD,
        "index": Key(_index_list),
        "timeField": Key(string(min_length=1)),
        "termField": optional(string(min_length=1)),
        "filterKuery": optional(string()),
    },
    _core_query_errors,
)

# x-pack/platform/plugins/shared/stack_alerts/server/rule_types/es_query/constants.ts
# (ActionGroupId "query matched") and .../index_threshold/rule_type.ts ("threshold met");
# "recovered" is the framework's recovery group (alerting/common/builtin_action_groups.ts).
RULE_TYPES: dict[str, tuple[Check, frozenset[str]]] = {
    ".es-query": (ES_QUERY_PARAMS, frozenset({"query matched", "recovered"})),
    ".index-threshold": (INDEX_THRESHOLD_PARAMS, frozenset({"threshold met", "recovered"})),
}

# ----------------------------------------------------------------------------- request bodies
# x-pack/platform/plugins/shared/alerting/common/routes/rule/validation/validate_duration/v1.ts
DURATION = string(pattern=r"\d+[smhd]")
# x-pack/platform/plugins/shared/alerting/common/routes/rule/response/schemas/v1.ts notifyWhen
NOTIFY_WHEN = string(allowed=("onActionGroupChange", "onActiveAlert", "onThrottleInterval"))

# x-pack/platform/plugins/shared/alerting/common/routes/rule/apis/create/schemas/v1.ts
ACTION = obj(
    {
        "group": optional(string()),
        "id": Key(string()),
        "params": Key(record, default={}),
        "frequency": optional(
            obj(
                {
                    "summary": Key(boolean),
                    "notify_when": Key(NOTIFY_WHEN),
                    "throttle": Key(nullable(DURATION), default=None),
                }
            )
        ),
        "uuid": optional(string()),
        "alerts_filter": optional(record),
        "use_alert_data_for_template": optional(boolean),
    }
)
_RULE_COMMON = {
    "name": Key(string()),
    "tags": Key(array(string()), default=[]),
    "throttle": optional(nullable(DURATION)),
    "params": Key(record, default={}),
    "schedule": Key(obj({"interval": Key(DURATION)})),
    "actions": Key(array(ACTION), default=[]),
    "notify_when": optional(nullable(NOTIFY_WHEN)),
    "alert_delay": optional(obj({"active": Key(number(minimum=0))})),
    "flapping": optional(nullable(record)),
}
CREATE_RULE = obj(
    {
        **_RULE_COMMON,
        "rule_type_id": Key(string()),
        "enabled": Key(boolean, default=True),
        "consumer": Key(string()),
        "dashboards": optional(array(obj({"id": Key(string())}))),
    }
)
# x-pack/platform/plugins/shared/alerting/common/routes/rule/apis/update/schemas/v1.ts
UPDATE_RULE = obj(_RULE_COMMON)

# x-pack/platform/plugins/shared/actions/common/routes/connector/apis/create/schemas/v1.ts
# and .../update/schemas/v1.ts; validateEmptyStrings refuses blank strings.
NON_BLANK = string(pattern=r"(?s).*\S.*")
CREATE_CONNECTOR = obj(
    {
        "name": Key(NON_BLANK),
        "connector_type_id": Key(NON_BLANK),
        "config": Key(record, default={}),
        "secrets": Key(record, default={}),
    }
)
UPDATE_CONNECTOR = obj(
    {"name": Key(NON_BLANK), "config": Key(record, default={}), "secrets": Key(record, default={})}
)
# connector types whose config and secrets schemas are empty objects
# (x-pack/platform/plugins/shared/stack_connectors/server/connector_types/server_log/index.ts)
CONNECTOR_TYPES = (".server-log",)

# ----------------------------------------------------------------------------- saved objects
# src/core/packages/saved-objects/utils-server/src/saved_objects_utils.ts UUID_REGEX
UUID_REGEX = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    r"|00000000-0000-0000-0000-000000000000)$",
    re.IGNORECASE,
)
# The latest version each importable type migrates to. Lower bounds for 8.19: the last
# legacy migration of each type (data_views/server/saved_objects/index_pattern_migrations.ts
# 8.0.0; lens/server/migrations/saved_object_migrations.ts 8.9.0; dashboard/server/
# dashboard_saved_object/migrations 8.9.0). Types that also declare model versions accept
# 10.x.0 in Kibana; the stub refuses those, i.e. it is stricter, never looser.
LATEST_TYPE_VERSION = {"index-pattern": "8.0.0", "lens": "8.9.0", "dashboard": "8.9.0"}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def check_connector_id(connector_id: str) -> None:
    """src/core/packages/saved-objects/api-server-internal/src/lib/apis/helpers/common.ts
    getValidId: a predefined id of an encrypted type must be a UUID unless the type sets
    ``enforceRandomId: false``. The ``action`` type does not in 8.19
    (x-pack/platform/plugins/shared/actions/server/saved_objects/index.ts); the ``alert``
    type does since 8.17 (x-pack/platform/plugins/shared/alerting/server/saved_objects/
    index.ts), so rule ids are not checked."""
    if not UUID_REGEX.match(connector_id):
        raise Refused(
            400,
            "Predefined IDs are not allowed for saved objects with encrypted attributes "
            "unless the ID is a UUID.",
        )


def import_errors(obj_: dict[str, Any], known: set[tuple[str, str]]) -> dict[str, Any] | None:
    """The error Kibana's import reports for one object, or None."""
    kind, version = obj_.get("type"), obj_.get("typeMigrationVersion")
    # src/core/packages/saved-objects/import-export-server-internal/src/import/lib/
    # collect_saved_objects.ts: types not importable here are "unsupported_type"
    if kind not in LATEST_TYPE_VERSION:
        return {"type": "unsupported_type"}
    # src/core/packages/saved-objects/migration-server-internal/src/document_migrator/
    # document_migrator.ts (downgrade refused on import) and pipelines/upgrade_pipeline.ts
    # assertCompatibility
    latest = LATEST_TYPE_VERSION[kind]
    if version and _version(version) > _version(latest):
        return {
            "type": "unknown",
            "statusCode": 400,
            "message": f'Document "{obj_["id"]}" belongs to a more recent version of Kibana '
            f"[{version}] when the last known version is [{latest}].",
        }
    # .../import/lib/validate_references.ts: every reference must be in the file or in Kibana
    missing = [
        {"type": r["type"], "id": r["id"]}
        for r in obj_.get("references", [])
        if (r["type"], r["id"]) not in known
    ]
    if missing:
        return {"type": "missing_references", "references": missing}
    return None


# ----------------------------------------------------------------------------- the server
@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class KibanaStub:
    """Kibana 8.19's HTTP API for saved-object import, connectors and rules, in memory."""

    auth: tuple[str, str] | None = None
    preconfigured: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    saved_objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    url: str = ""

    def __enter__(self) -> KibanaStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, reply = stub.handle(self.command, self.path, headers, body)
                if status == 204:
                    self.send_response(status)
                    self.end_headers()
                    return
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ dispatch
    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        self.requests.append(Request(method, raw_path, headers, body))
        path = urllib.parse.urlsplit(raw_path).path
        try:
            self._check_auth(headers)
            # src/core/packages/http/server-internal/src/lifecycle_handlers.ts
            # createXsrfPostAuthHandler: state-changing requests need kbn-xsrf
            if method not in ("GET", "HEAD") and "kbn-xsrf" not in headers:
                raise Refused(400, "Request must contain a kbn-xsrf header.")
            reply = self._route(method, path, headers, body)
            return (204, None) if reply is NO_CONTENT else (200, reply)
        except Refused as exc:
            error = {401: "Unauthorized", 404: "Not Found", 409: "Conflict"}.get(
                exc.status, "Bad Request"
            )
            return exc.status, {
                "statusCode": exc.status,
                "error": error,
                "message": exc.message,
                **exc.extra,
            }

    def _check_auth(self, headers: dict[str, str]) -> None:
        if self.auth is None:
            return
        token = base64.b64encode(":".join(self.auth).encode()).decode()
        if headers.get("authorization") != f"Basic {token}":
            raise Refused(401, "[security_exception]: unable to authenticate user")

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if method == "GET" and path == "/api/status":
            return {"version": {"number": VERSION}, "status": {"overall": {"level": "available"}}}
        if method == "POST" and path == "/api/saved_objects/_import":
            return self._import(headers, body)
        match = re.fullmatch(r"/api/(actions/connector|alerting/rule)(?:/([^/]+))?", path)
        if not match:
            raise Refused(404, f"no route for {method} {path}")
        kind, item_id = match.group(1), urllib.parse.unquote(match.group(2) or "")
        payload = json.loads(body) if body else {}
        if kind == "actions/connector":
            return self._connector(method, item_id, payload)
        return self._rule(method, item_id, payload)

    # ------------------------------------------------------------------ connectors
    def _connector(self, method: str, connector_id: str, payload: Any) -> Any:
        # x-pack/platform/plugins/shared/actions/server/routes/connector/{get,create,update}
        preconfigured = self.preconfigured.get(connector_id)
        if method == "GET":
            found = preconfigured or self.connectors.get(connector_id)
            if not found:
                raise Refused(404, f"Saved object [action/{connector_id}] not found")
            return found
        if preconfigured:
            # actions/server/application/connector/methods/{create,update}: a preconfigured
            # connector can be neither created over nor updated
            raise Refused(400, f"This {connector_id} is a preconfigured connector.")
        if method == "POST":
            body = CREATE_CONNECTOR(payload, "request body")
            if body["connector_type_id"] not in CONNECTOR_TYPES:
                # x-pack/platform/plugins/shared/actions/server/action_type_registry.ts
                raise Refused(400, f'Action type "{body["connector_type_id"]}" is not registered.')
            self._check_empty_config(body)
            connector_id = connector_id or _random_id()
            check_connector_id(connector_id)
            if connector_id in self.connectors:
                raise Refused(409, f"Saved object [action/{connector_id}] conflict")
            self.connectors[connector_id] = _connector_view(connector_id, body)
            return self.connectors[connector_id]
        if method == "PUT":
            body = UPDATE_CONNECTOR(payload, "request body")
            if connector_id not in self.connectors:
                raise Refused(404, f"Saved object [action/{connector_id}] not found")
            self._check_empty_config(body)
            type_id = self.connectors[connector_id]["connector_type_id"]
            body["connector_type_id"] = type_id
            self.connectors[connector_id] = _connector_view(connector_id, body)
            return self.connectors[connector_id]
        raise Refused(404, f"no route for {method} connector")

    @staticmethod
    def _check_empty_config(body: dict[str, Any]) -> None:
        # actions/server/lib/validate_with_schema.ts: config/secrets against the type's schema
        for part in ("config", "secrets"):
            for key in body[part]:
                raise Refused(
                    400,
                    f"error validating action type {part}: [{key}]: definition for this "
                    "key is missing",
                )

    # ------------------------------------------------------------------ rules
    def _rule(self, method: str, rule_id: str, payload: Any) -> Any:
        # x-pack/platform/plugins/shared/alerting/server/routes/rule/apis/{get,create,update}
        if method in ("GET", "DELETE"):
            if rule_id not in self.rules:
                raise Refused(404, f"Saved object [alert/{rule_id}] not found")
            if method == "GET":
                return self.rules[rule_id]
            # .../routes/rule/apis/delete/delete_rule_route.ts: get (404 when missing), delete,
            # then res.noContent()
            del self.rules[rule_id]
            return NO_CONTENT
        if method == "POST":
            body = CREATE_RULE(payload, "request body")
            rule_type_id = body["rule_type_id"]
        elif method == "PUT":
            body = UPDATE_RULE(payload, "request body")
            if rule_id not in self.rules:
                raise Refused(404, f"Saved object [alert/{rule_id}] not found")
            rule_type_id = self.rules[rule_id]["rule_type_id"]
        else:
            raise Refused(404, f"no route for {method} rule")
        if rule_type_id not in RULE_TYPES:
            # x-pack/platform/plugins/shared/alerting/server/rule_type_registry.ts get()
            raise Refused(400, f'Rule type "{rule_type_id}" is not registered.')
        params_schema, groups = RULE_TYPES[rule_type_id]
        try:
            # x-pack/platform/plugins/shared/alerting/server/lib/validate_rule_type_params.ts
            body["params"] = params_schema(body["params"], "")
        except Refused as exc:
            raise Refused(400, f"params invalid: {exc.message}") from None
        self._check_actions(body, groups)
        if method == "POST":
            rule_id = rule_id or _random_id()
            if rule_id in self.rules:
                raise Refused(409, f"Saved object [alert/{rule_id}] conflict")
            self.rules[rule_id] = {"id": rule_id, **body}
        else:
            self.rules[rule_id] = {**self.rules[rule_id], **body}
        return self.rules[rule_id]

    def _check_actions(self, body: dict[str, Any], groups: frozenset[str]) -> None:
        """x-pack/platform/plugins/shared/alerting/server/rules_client/lib/validate_actions.ts"""
        actions = body["actions"]
        if not actions:
            return
        for action in actions:
            # actions_client.ts getBulk: a connector that does not exist fails the request
            if action["id"] not in self.connectors and action["id"] not in self.preconfigured:
                raise Refused(
                    400,
                    f"Failed to load action {action['id']} (404): "
                    f"Saved object [action/{action['id']}] not found",
                )
        errors = []
        bad_groups = [str(a.get("group")) for a in actions if a.get("group") not in groups]
        if bad_groups:
            errors.append(f"Invalid action groups: {', '.join(bad_groups)}")
        rule_level = "notify_when" in body or body.get("throttle")
        with_freq = [str(a.get("group")) for a in actions if a.get("frequency")]
        without = [str(a.get("group")) for a in actions if not a.get("frequency")]
        if rule_level and with_freq:
            errors.append(
                "Cannot specify per-action frequency params when notify_when or throttle "
                f"are defined at the rule level: {', '.join(with_freq)}"
            )
        if not rule_level and without:
            errors.append(f"Actions missing frequency parameters: {', '.join(without)}")
        if errors:
            raise Refused(
                400, "Failed to validate actions due to the following error: " + "; ".join(errors)
            )

    # ------------------------------------------------------------------ import
    def _import(self, headers: dict[str, str], body: bytes) -> Any:
        """src/core/packages/saved-objects/server-internal/src/routes/import.ts and
        .../import-export-server-internal/src/import/import_saved_objects.ts"""
        filename, ndjson = _multipart_file(headers.get("content-type", ""), body)
        if not filename.endswith(".ndjson"):
            raise Refused(400, f"Invalid file extension {filename.rpartition('.')[2]}")
        objs = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
        known = set(self.saved_objects) | {(o.get("type"), o.get("id")) for o in objs}
        errors, results = [], []
        for o in objs:
            error = import_errors(o, known)
            if error:
                title = o.get("attributes", {}).get("title")
                errors.append(
                    {"id": o.get("id"), "type": o.get("type"), "meta": {"title": title},
                     "error": error}
                )  # fmt: skip
                continue
            self.saved_objects[(o["type"], o["id"])] = o
            results.append({"id": o["id"], "type": o["type"]})
        return {
            "success": not errors,
            "successCount": len(results),
            "successResults": results,
            "errors": errors,
            "warnings": [],
        }


def _connector_view(connector_id: str, body: dict[str, Any]) -> dict[str, Any]:
    # actions/server/routes/connector/common_transforms: secrets are never returned
    return {
        "id": connector_id,
        "name": body["name"],
        "connector_type_id": body["connector_type_id"],
        "config": body["config"],
        "is_preconfigured": False,
        "is_deprecated": False,
        "is_missing_secrets": False,
        "is_system_action": False,
    }


def _random_id() -> str:
    return str(uuid.uuid4())


def _multipart_file(content_type: str, body: bytes) -> tuple[str, str]:
    match = re.search(r"boundary=([^;]+)", content_type)
    if not content_type.startswith("multipart/form-data") or not match:
        raise Refused(
            400, "[request body.file]: expected value of type [Stream] but got [undefined]"
        )
    for part in body.split(b"--" + match.group(1).strip('"').encode()):
        head, _, content = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="file"; filename="([^"]*)"', head)
        if name:
            return name.group(1).decode(), content.rsplit(b"\r\n", 1)[0].decode()
    raise Refused(400, "[request body.file]: expected value of type [Stream] but got [undefined]")
