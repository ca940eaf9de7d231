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
* a connector's ``config`` and ``secrets`` must pass its type's schemas (``.server-log``:
  empty; ``.webhook``: url, method, headers and the auth fields, the url parsed and checked
  against ``xpack.actions.allowedHosts``, the secrets' combinations) and its type's license
  (``.webhook`` needs Gold: the stub runs ``basic`` unless told otherwise, as the compose
  Kibana does);
* request bodies are checked like ``@kbn/config-schema`` checks them: unknown keys, missing
  keys and wrong types are refused;
* a rule's ``params`` must pass its rule type's schema (``.es-query`` with ``searchType``
  ``esQuery``, grouped by one ``termField`` or several, ``.index-threshold``); its actions
  must name existing connectors, valid action groups and carry a ``frequency``; stricter than
  Kibana, which finds these only when an action runs: an action's ``params`` must pass its
  connector type's params schema, and its mustache variables must be ones Kibana provides;
* deleting a rule that does not exist is a 404; a deleted rule is gone (204);
* an import refuses objects of unknown types, objects with a ``typeMigrationVersion`` newer
  than the type's latest known version, objects whose references resolve nowhere, and saved
  searches whose attributes fail the ``search`` type's schema.
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


def literal(*values: Any) -> Check:
    """``schema.oneOf([schema.literal(a), schema.literal(b), ...])`` (literal_type.ts)."""

    def check(value: Any, path: str) -> Any:
        if value is UNSET or not any(value == v and type(value) is type(v) for v in values):
            shown = " | ".join("null" if v is None else str(v) for v in values)
            raise _fail(path, f"expected value to equal one of [{shown}] but got [{value}]")
        return value

    return check


def record_of(key: Check, value_check: Check) -> Check:
    """``schema.recordOf(key, value)`` (.../kbn-config-schema/src/types/record_type.ts)."""

    def check(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _type_error(path, "Object", value)
        prefix = f"{path}." if path else ""
        return {
            key(k, f"{prefix}key({k!r})"): value_check(v, f"{prefix}{k}") for k, v in value.items()
        }

    return check


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


@dataclass(frozen=True)
class RuleType:
    params: Check
    action_groups: frozenset[str]
    context: frozenset[str]  # the rule type's actionVariables.context: {{context.NAME}}


# Action groups: x-pack/platform/plugins/shared/stack_alerts/server/rule_types/es_query/
# constants.ts (ActionGroupId "query matched") and .../index_threshold/rule_type.ts ("threshold
# met"); "recovered" is the framework's recovery group (alerting/common/
# builtin_action_groups.ts). Context variables: actionVariables.context of .../es_query/
# rule_type.ts and .../index_threshold/rule_type.ts.
RULE_TYPES: dict[str, RuleType] = {
    ".es-query": RuleType(
        ES_QUERY_PARAMS,
        frozenset({"query matched", "recovered"}),
        frozenset({"message", "title", "date", "value", "hits", "conditions", "link"}),
    ),
    ".index-threshold": RuleType(
        INDEX_THRESHOLD_PARAMS,
        frozenset({"threshold met", "recovered"}),
        frozenset({"message", "title", "group", "date", "value", "conditions"}),
    ),
}

# The variables an action's mustache templates can use: x-pack/platform/plugins/shared/
# alerting/server/task_runner/transform_action_params.ts transformActionParams (the legacy
# top-level names, and rule.* and alert.*). Kibana renders an unknown variable as an empty
# string when the action runs; the stub refuses it when the rule is saved (stricter).
ACTION_VARIABLES = frozenset(
    {"alertId", "alertName", "spaceId", "tags", "alertInstanceId", "alertActionGroup",
     "alertActionGroupName", "context", "date", "state", "kibanaBaseUrl", "params", "rule",
     "alert"}
)  # fmt: skip
RULE_VARIABLES = frozenset({"params", "id", "name", "type", "spaceId", "tags", "url"})
ALERT_VARIABLES = frozenset({"id", "uuid", "actionGroup", "actionGroupName", "flapping"})
MUSTACHE_TAG = re.compile(r"\{\{\{?\s*([#^/&]?)\s*([^{}\s]*)\s*\}?\}\}")


def unknown_variables(params: Any, context: frozenset[str]) -> list[str]:
    """The mustache variables in an action's params (any string, at any depth) that Kibana
    does not provide. A section's relative names are not resolved: they count as unknown."""
    if isinstance(params, dict):
        return [v for value in params.values() for v in unknown_variables(value, context)]
    if isinstance(params, list):
        return [v for value in params for v in unknown_variables(value, context)]
    if not isinstance(params, str):
        return []
    unknown = []
    for _, name in MUSTACHE_TAG.findall(params):
        root, _, rest = name.partition(".")
        child = rest.partition(".")[0]
        known = root in ACTION_VARIABLES and (
            (root == "context" and child in context)
            or (root == "rule" and child in RULE_VARIABLES)
            or (root == "alert" and child in ALERT_VARIABLES)
            or root not in ("context", "rule", "alert")
        )
        if not known:
            unknown.append(name)
    return unknown


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

# ----------------------------------------------------------------------------- connector types
# x-pack/platform/plugins/shared/licensing/common/types.ts LICENSE_TYPE: a connector type is
# enabled when the license ranks at least its minimumLicenseRequired (license.ts hasAtLeast)
LICENSE_RANK = {"basic": 10, "standard": 20, "gold": 30, "platinum": 40, "enterprise": 50,
                "trial": 60}  # fmt: skip


@dataclass(frozen=True)
class ConnectorType:
    config: Check
    secrets: Check
    params: Check
    minimum_license: str
    # the config's customValidator; raises ValueError with Kibana's message
    validate_config: Callable[[dict[str, Any], KibanaStub], None] | None = None


# x-pack/platform/plugins/shared/stack_connectors/server/connector_types/server_log/index.ts:
# config and secrets are empty objects; params message and level; Basic license
SERVER_LOG = ConnectorType(
    config=obj({}),
    secrets=obj({}),
    params=obj(
        {
            "message": Key(string()),
            "level": Key(
                literal("trace", "debug", "info", "warn", "error", "fatal"), default="info"
            ),
        }
    ),
    minimum_license="basic",
)

# The webhook connector of 8.19: x-pack/platform/plugins/shared/stack_connectors/server/
# connector_types/webhook/schema.ts (ConfigSchema, ParamsSchema) with the shared
# .../stack_connectors/common/auth/schema.ts (AuthConfiguration, SecretConfigurationSchema) and
# .../common/auth/constants.ts (AuthType, SSLCertType, WebhookMethods). Not in 8.19, so refused
# here as unknown keys: the methods patch/get/delete (9.3, elastic/kibana#238072), secret
# headers (``secretHeaders``, 9.2, elastic/kibana#230042) and OAuth2 (``accessTokenUrl`` ...).
WEBHOOK_AUTH_BASIC, WEBHOOK_AUTH_SSL = "webhook-authentication-basic", "webhook-authentication-ssl"
WEBHOOK_CERT_CRT, WEBHOOK_CERT_PFX = "ssl-crt-key", "ssl-pfx"
WEBHOOK_CONFIG = obj(
    {
        "url": Key(string()),
        "method": Key(literal("post", "put"), default="post"),
        "headers": Key(nullable(record_of(string(), string())), default=None),
        # AuthConfiguration: hasAuth defaults to true; authType is schema.maybe(...), which
        # leaves it undefined when absent (kbn-config-schema maybe_type.ts drops the inner
        # default), so hasAuth false with no authType passes the custom validator
        "hasAuth": Key(boolean, default=True),
        "authType": optional(literal(WEBHOOK_AUTH_BASIC, WEBHOOK_AUTH_SSL, None)),
        "certType": optional(literal(WEBHOOK_CERT_CRT, WEBHOOK_CERT_PFX)),
        "ca": optional(string()),
        "verificationMode": optional(literal("none", "certificate", "full")),
    }
)


def _webhook_secrets_error(s: dict[str, Any]) -> str | None:
    # common/auth/schema.ts SecretConfigurationSchemaValidation (JavaScript truthiness)
    user, password, crt, key, pfx = (s[k] for k in ("user", "password", "crt", "key", "pfx"))
    if not password and not user and not crt and not key and not pfx:
        return None
    if password and user and not crt and not key and not pfx:
        return None
    if crt and key and not user and not pfx:
        return None
    if not crt and not key and not user and pfx:
        return None
    return (
        "must specify one of the following schemas: user and password; crt and key (with "
        "optional password); or pfx (with optional password)"
    )


WEBHOOK_SECRETS = obj(
    {k: Key(nullable(string()), default=None) for k in ("user", "password", "crt", "key", "pfx")},
    _webhook_secrets_error,
)
# WHATWG URL special schemes: they need a host (url.spec.whatwg.org, "special scheme")
_SPECIAL_SCHEMES = ("http", "https", "ws", "wss", "ftp")


def _validate_webhook_config(config: dict[str, Any], stub: KibanaStub) -> None:
    """webhook/validations.ts validateConnectorTypeConfig: the url parses (``new URL``), its
    host is allowed (actions/server/actions_config.ts ensureUriAllowed: the hostname Node's
    ``url.parse`` finds must be in ``xpack.actions.allowedHosts``, or that list holds ``*``;
    no hostname is refused even then), ``authType`` is unset when ``hasAuth`` is false, and a
    ``pfx`` certificate needs ``xpack.actions.webhook.ssl.pfx.enabled`` (default true).

    Stricter than ``new URL``, which also accepts ``http:host`` and strips surrounding
    blanks: the stub wants ``scheme://host`` and no whitespace or control characters."""
    url = config["url"]
    prefix = "error validation webhook action config"
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([/?#][^\s]*)?", url)
    try:
        if not match or re.search(r"[\s\x00-\x1f\x7f]", url):
            raise ValueError
        parts = urllib.parse.urlsplit(url)  # refuses an unbalanced [IPv6] host
        parts.port  # noqa: B018 (raises ValueError for a port that is not 0..65535)
        host = parts.hostname or ""
        if match.group(1).lower() in _SPECIAL_SCHEMES and not host:
            raise ValueError
        written = match.group(2).rpartition("@")[2]
        if not written.startswith("[") and re.search(
            r"[#%/<>?@\[\\\]^|]", written.partition(":")[0]
        ):
            raise ValueError  # WHATWG forbidden host code points
    except ValueError:
        raise ValueError(f"{prefix}: unable to parse url: TypeError: Invalid URL") from None
    if not host or ("*" not in stub.allowed_hosts and host not in stub.allowed_hosts):
        raise ValueError(
            f'{prefix}: target url "{url}" is not added to the Kibana config '
            "xpack.actions.allowedHosts"
        )
    if config.get("authType") and not config["hasAuth"]:
        raise ValueError(f"{prefix}: authType must be null or undefined if hasAuth is false")
    if config.get("certType") == WEBHOOK_CERT_PFX and not stub.webhook_pfx_enabled:
        raise ValueError(f'{prefix}: certType "{WEBHOOK_CERT_PFX}" is disabled')


WEBHOOK = ConnectorType(
    config=WEBHOOK_CONFIG,
    secrets=WEBHOOK_SECRETS,
    params=obj({"body": optional(string())}),
    minimum_license="gold",  # webhook/index.ts getConnectorType
    validate_config=_validate_webhook_config,
)
CONNECTOR_TYPES: dict[str, ConnectorType] = {".server-log": SERVER_LOG, ".webhook": WEBHOOK}

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
# dashboard_saved_object/migrations 8.9.0; src/platform/plugins/shared/saved_search/server/
# saved_objects/search.ts: search_migrations.ts up to 7.9.3 and the conversion to a
# multiple-namespace type at convertToMultiNamespaceTypeVersion 8.0.0). Types that also
# declare model versions accept 10.x.0 in Kibana; the stub refuses those, i.e. it is
# stricter, never looser.
LATEST_TYPE_VERSION = {
    "index-pattern": "8.0.0",
    "lens": "8.9.0",
    "dashboard": "8.9.0",
    "search": "8.0.0",
}

# The attributes of a saved search, as the import validates them after migrating the object
# (src/core/packages/saved-objects/api-server-internal/src/lib/apis/bulk_create.ts
# validateObjectForCreate, with the type's latest modelVersions[n].schemas.create): the
# saved_search plugin's SCHEMA_SEARCH_MODEL_VERSION_5 (src/platform/plugins/shared/
# saved_search/server/saved_objects/schema.ts, later schema_legacy.ts: SCHEMA_SEARCH_BASE plus
# sampleSize, headerRowHeight, visContext, viewMode patterns and density). Stricter: the
# ``visContext`` and ``tabs`` keys (model versions 3 and 6) are refused as unknown.
SEARCH_ATTRIBUTES = obj(
    {
        "title": Key(string()),
        "description": Key(string(), default=""),
        "columns": Key(array(string()), default=[]),
        "sort": Key(
            one_of(array(array(string(), max_size=2)), array(string(), max_size=2)), default=[]
        ),
        "grid": Key(
            obj({"columns": optional(record_of(string(), obj({"width": optional(number())})))}),
            default={},
        ),
        "rowHeight": optional(number()),
        "rowsPerPage": optional(number()),
        "hideChart": Key(boolean, default=False),
        "breakdownField": optional(string()),
        "kibanaSavedObjectMeta": Key(obj({"searchSourceJSON": Key(string())})),
        "isTextBasedQuery": Key(boolean, default=False),
        "usesAdHocDataView": optional(boolean),
        "timeRestore": optional(boolean),
        "timeRange": optional(obj({"from": Key(string()), "to": Key(string())})),
        "refreshInterval": optional(obj({"pause": Key(boolean), "value": Key(number())})),
        "viewMode": optional(literal("documents", "patterns", "aggregated")),
        "hideAggregatedPreview": optional(boolean),
        "hits": optional(number()),
        "version": optional(number()),
        "sampleSize": optional(number(minimum=1, maximum=10000)),  # saved_search common/index.ts
        "headerRowHeight": optional(number()),
        "density": optional(literal("compact", "expanded", "normal")),
    }
)
ATTRIBUTE_SCHEMAS = {"search": SEARCH_ATTRIBUTES}


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
    schema = ATTRIBUTE_SCHEMAS.get(kind)
    if schema:
        try:
            schema(obj_.get("attributes", UNSET), "attributes")
        except Refused as exc:
            # .../import/lib/extract_errors.ts: a bulkCreate error becomes an "unknown" error
            return {"type": "unknown", "statusCode": 400, "message": exc.message}
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
    # the Elasticsearch license Kibana sees (infra/docker-compose.yml runs ``basic``), and
    # kibana.yml's xpack.actions.allowedHosts and xpack.actions.webhook.ssl.pfx.enabled
    license: str = "basic"
    allowed_hosts: tuple[str, ...] = ("*",)
    webhook_pfx_enabled: bool = True
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
            names = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
            error = names.get(exc.status, "Bad Request")
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
            type_id = body["connector_type_id"]
            if type_id not in CONNECTOR_TYPES:
                # x-pack/platform/plugins/shared/actions/server/action_type_registry.ts
                raise Refused(400, f'Action type "{type_id}" is not registered.')
            self._validate_connector(type_id, body)
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
            body["connector_type_id"] = self.connectors[connector_id]["connector_type_id"]
            self._validate_connector(body["connector_type_id"], body)
            self.connectors[connector_id] = _connector_view(connector_id, body)
            return self.connectors[connector_id]
        raise Refused(404, f"no route for {method} connector")

    def _validate_connector(self, type_id: str, body: dict[str, Any]) -> None:
        """actions/server/application/connector/methods/{create,update}/*.ts, in their order:
        validateConfig (the type's config schema, then its customValidator), validateSecrets,
        then actionTypeRegistry.ensureActionTypeEnabled (license: actions/server/lib/
        license_state.ts ensureLicenseForActionType, a 403). The messages are those of
        actions/server/lib/validate_with_schema.ts. ``body`` gets the validated values (the
        schemas' defaults), as Kibana stores them."""
        kind = CONNECTOR_TYPES[type_id]
        for part, schema in (("config", kind.config), ("secrets", kind.secrets)):
            try:
                body[part] = schema(body[part], "")
                if part == "config" and kind.validate_config:
                    kind.validate_config(body[part], self)
            except Refused as exc:
                raise Refused(400, f"error validating action type {part}: {exc.message}") from None
            except ValueError as exc:
                raise Refused(400, f"error validating action type {part}: {exc}") from None
        if LICENSE_RANK[self.license] < LICENSE_RANK[kind.minimum_license]:
            raise Refused(
                403,
                f"Action type {type_id} is disabled because your {self.license} license does "
                "not support it. Please upgrade your license.",
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
        rule_type = RULE_TYPES[rule_type_id]
        try:
            # x-pack/platform/plugins/shared/alerting/server/lib/validate_rule_type_params.ts
            body["params"] = rule_type.params(body["params"], "")
        except Refused as exc:
            raise Refused(400, f"params invalid: {exc.message}") from None
        self._check_actions(body, rule_type)
        if method == "POST":
            rule_id = rule_id or _random_id()
            if rule_id in self.rules:
                raise Refused(409, f"Saved object [alert/{rule_id}] conflict")
            self.rules[rule_id] = {"id": rule_id, **body}
        else:
            self.rules[rule_id] = {**self.rules[rule_id], **body}
        return self.rules[rule_id]

    def _check_actions(self, body: dict[str, Any], rule_type: RuleType) -> None:
        """x-pack/platform/plugins/shared/alerting/server/rules_client/lib/validate_actions.ts"""
        actions = body["actions"]
        groups = rule_type.action_groups
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
        self._check_action_params(actions, rule_type)
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

    def _check_action_params(self, actions: list[dict[str, Any]], rule_type: RuleType) -> None:
        """Stricter than Kibana, which checks these only when an action runs (actions/server/
        lib/action_executor.ts validateParams with the connector type's params schema, after
        alerting's transform_action_params.ts renders the mustache variables): each action's
        params must pass its connector type's params schema, and use known variables only."""
        for i, action in enumerate(actions):
            connector = self.connectors.get(action["id"]) or self.preconfigured[action["id"]]
            kind = CONNECTOR_TYPES.get(connector.get("connector_type_id", ""))
            try:
                if kind:
                    kind.params(action["params"], "")
            except Refused as exc:
                raise Refused(
                    400, f"[actions.{i}.params] error validating action params: {exc.message}"
                ) from None
            unknown = unknown_variables(action["params"], rule_type.context)
            if unknown:
                raise Refused(
                    400,
                    f"[actions.{i}.params] unknown mustache variables: {', '.join(unknown)}",
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
