"""Idempotent Kibana setup: saved objects, connectors and alert rules with fixed ids.

    .venv/bin/python -m infra.kibana.setup --kibana-url http://127.0.0.1:5601 [--namespace NS]
        [--webhook-url URL [--webhook-header NAME:VALUE ...]]

1. ``POST /api/saved_objects/_import?overwrite=true`` with the saved objects of
   :mod:`infra.kibana.objects` (data views, the saved searches, Lens panels, the
   dashboard); overwriting by id makes a re-run harmless.
2. For every connector and rule of ``rules.json``: ``GET`` it by id, then ``POST`` (create,
   404) or ``PUT`` (update) the same id. Rule and connector types cannot change on update,
   so the PUT bodies leave ``rule_type_id`` / ``connector_type_id`` / ``consumer`` out.
3. ``DELETE`` the rules of ``retired_rules`` (rules of earlier versions, such as the
   per-reading stage-2 rules that paged before alert tiers), so that they stop firing.

``--webhook-url URL`` installs ``webhook_connector`` of ``rules.json`` (a ``.webhook``
connector: POST to ``URL``, JSON, no authentication; ``--webhook-header NAME:VALUE`` adds a
header, stored in the connector's config in plain text) instead of the connectors listed
there, and gives every rule action a JSON body of the alert's fields (:func:`webhook_body`).
Kibana creates a ``.webhook`` connector only under a Gold license or better (or a trial).

The connector ids are fixed UUIDs v4: Kibana 8.x refuses any other predefined id for a
connector, whose saved object has encrypted attributes (rule ids may be any string since
8.17). Credentials come from the environment: ``KIBANA_API_KEY``, or ``KIBANA_USERNAME`` /
``KIBANA_PASSWORD``; none for an open local Kibana. ``--namespace NS`` gives every saved
object, data view and rule the id ``NS-<id>`` and a title ending in `` [NS]``, and points the
data views and rules at ``NS-bp-anomalies*`` / ``NS-bp-alerts*`` (the namespaced test/demo
indices), so several namespaces share one Kibana space; the connector is shared by all.

The module also holds :func:`es_query_search`, :func:`es_query_groups` and
:func:`index_threshold_search`: the search each rule type runs and the alerts it reports,
built the way Kibana's stack rules build them, so the rules can be executed against a real
Elasticsearch without Kibana (tests/integration/test_kibana_rules.py).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from infra.kibana import objects
from lib.logs import configure
from lib.settings import load_or_exit

log = logging.getLogger("bpwatch.kibana")

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "rules.json"
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DATE = "strict_date_optional_time"
# x-pack/platform/plugins/shared/alerting/server/config.ts DEFAULT_MAX_ALERTS (the setting
# xpack.alerting.rules.run.alerts.max) and triggers_actions_ui/common/data/lib/build_agg.ts
ALERT_LIMIT = 1000
DEFAULT_GROUPS = 100


# ----------------------------------------------------------------------------- definitions
def load_saved_objects(namespace: str = "") -> list[dict[str, Any]]:
    return objects.saved_objects(namespace)


@dataclass(frozen=True)
class Webhook:
    """Where the rules' actions post (``--webhook-url``), and extra request headers."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)


def load_definitions(namespace: str = "", webhook: Webhook | None = None) -> dict[str, list[Any]]:
    """``{"connectors": [...], "rules": [...], "retired": [ids]}`` from rules.json, the rules
    and retired rule ids namespaced. With ``webhook``: its ``.webhook`` connector instead of
    the listed ones, and every action posting the alert's fields to it."""
    data = json.loads(RULES_FILE.read_text())
    for rule in data["rules"]:
        rule["id"] = objects.namespaced_id(rule["id"], namespace)
        rule["name"] = objects.namespaced_title(rule["name"], namespace)
        rule["params"]["index"] = [
            objects.namespaced_pattern(i, namespace) for i in rule["params"]["index"]
        ]
    connectors = data["connectors"]
    if webhook is not None:
        connector = webhook_connector(data["webhook_connector"], webhook)
        connectors = [connector]
        for rule in data["rules"]:
            rule["actions"] = [
                {**action, "id": connector["id"], "params": {"body": webhook_body(rule, action)}}
                for action in rule["actions"]
            ]
    retired = [objects.namespaced_id(r, namespace) for r in data.get("retired_rules", [])]
    return {"connectors": connectors, "rules": data["rules"], "retired": retired}


def webhook_connector(template: dict[str, Any], webhook: Webhook) -> dict[str, Any]:
    """rules.json's ``webhook_connector`` posting to ``webhook.url`` with its headers."""
    connector = copy.deepcopy(template)
    connector["config"]["url"] = webhook.url
    connector["config"]["headers"] = {**connector["config"]["headers"], **webhook.headers}
    return connector


def webhook_body(rule: dict[str, Any], action: dict[str, Any]) -> str:
    """The JSON body a webhook action posts: fixed fields of the rule, and the alert's through
    Kibana's mustache variables (which the ``.webhook`` connector renders JSON-escaped), e.g.
    for the urgent rule::

        {"source": "bpwatch", "rule_id": "{{rule.id}}", "rule": "{{rule.name}}",
         "tags": ["bpwatch", "blood-pressure", "page"], "level": "error",
         "alert_id": "{{alert.id}}", "count": {{context.value}}, "date": "{{context.date}}",
         "message": "bpwatch URGENT alert: {{context.message}}"}

    ``level`` is the urgency the server-log action writes at (``error`` pages). A rule grouped
    by one field names that field with the alert's id (``alert_id`` for the paging rules,
    ``condition`` for the daily review). The rules carry no documents, so no patient data
    beyond the alert's id travels."""
    fields: list[tuple[str, str]] = [
        ("source", json.dumps("bpwatch")),
        ("rule_id", '"{{rule.id}}"'),
        ("rule", '"{{rule.name}}"'),
        ("tags", json.dumps(rule["tags"])),
        ("level", json.dumps(action["params"]["level"])),
    ]
    group = rule["params"].get("termField")
    if isinstance(group, str):
        fields.append((group, '"{{alert.id}}"'))
    fields += [
        ("count", "{{context.value}}"),
        ("date", '"{{context.date}}"'),
        ("message", json.dumps(action["params"]["message"])),
    ]
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields) + "}"


def rule_by_id(rule_id: str, namespace: str = "") -> dict[str, Any]:
    """The rule whose rules.json id is ``rule_id``, as applied in ``namespace``."""
    wanted = objects.namespaced_id(rule_id, namespace)
    for rule in load_definitions(namespace)["rules"]:
        if rule["id"] == wanted:
            return rule
    raise KeyError(rule_id)


def _window(params: dict[str, Any]) -> timedelta:
    return timedelta(**{_UNITS[params["timeWindowUnit"]]: params["timeWindowSize"]})


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def es_query_search(
    rule: dict[str, Any], now: datetime, previous_latest: datetime | None = None
) -> dict[str, Any]:
    """The search body an ``.es-query`` rule (searchType esQuery, aggType count) runs at
    ``now``, as Kibana builds it (stack_alerts/server/rule_types/es_query/lib/
    fetch_es_query.ts, common/build_sorted_events_query.ts, and triggers_actions_ui/common/
    data/lib/build_agg.ts for the groups).

    The user's query, and the time window ``[now - window, now]`` on ``timeField``. With
    ``excludeHitsFromPreviousRun`` and the previous run's newest hit (``previous_latest``;
    Kibana keeps it only for ungrouped rules), also ``not timeField <= previous_latest``.
    Ungrouped: ``size`` hits, newest first; Kibana counts the total. Grouped (``termField``):
    no hits, a ``terms`` aggregation whose ``bucket_selector`` keeps the groups that meet the
    threshold, each group one Kibana alert (:func:`es_query_groups`).
    """
    params = rule["params"]
    if params.get("aggType", "count") != "count":
        raise ValueError("only aggType=count is translated")
    field = params["timeField"]
    grouped = bool(params.get("termField"))
    query: dict[str, Any] = copy.deepcopy(params["esQuery"]["query"])
    if previous_latest is not None and params.get("excludeHitsFromPreviousRun", True):
        seen = {"range": {field: {"lte": _iso(previous_latest), "format": _DATE}}}
        query = _filter(query, {"bool": {"must_not": [_filter(seen)]}})
    window = {"gte": _iso(now - _window(params)), "lte": _iso(now), "format": _DATE}
    body: dict[str, Any] = {
        "size": 0 if grouped else params["size"],
        "track_total_hits": True,
        "docvalue_fields": [{"field": field, "format": _DATE}],
        "query": _filter(query, _filter({"range": {field: window}})),
        "sort": [{field: {"order": "desc", "format": f"{_DATE}||epoch_millis"}}],
    }
    if grouped:
        body["aggs"] = _group_aggs(params)
    return body


def _filter(*clauses: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"filter": list(clauses)}}


def _group_aggs(params: dict[str, Any]) -> dict[str, Any]:
    """build_agg.ts for aggType count with a group: a terms (or multi_terms) aggregation of
    at most the alert limit + 1 groups, filtered by the threshold condition."""
    term_field = params["termField"]
    size = params.get("termSize") or DEFAULT_GROUPS
    size = ALERT_LIMIT + 1 if size > ALERT_LIMIT else size
    if isinstance(term_field, list):
        group: dict[str, Any] = {
            "multi_terms": {"terms": [{"field": f} for f in term_field], "size": size}
        }
    else:
        group = {"terms": {"field": term_field, "size": size}}
    script = comparator_script(params["thresholdComparator"], params["threshold"])
    group["aggs"] = {
        "conditionSelector": {
            "bucket_selector": {"buckets_path": {"compareValue": "_count"}, "script": script}
        }
    }
    if params["size"]:
        group["aggs"]["topHitsAgg"] = {"top_hits": {"size": min(params["size"], 100)}}
    return {
        "groupAgg": group,
        "groupAggCount": {"stats_bucket": {"buckets_path": "groupAgg._count"}},
    }


def comparator_script(comparator: str, threshold: list[float]) -> str:
    """stack_alerts/common/comparator.ts getComparatorScript, on the bucket's count."""
    value = "params.compareValue"

    def num(x: float) -> str:
        return f"{int(x)}L" if float(x).is_integer() else f"{x}"

    lo, hi = num(threshold[0]), num(threshold[-1])
    scripts = {
        "<": f"{value} < {lo}",
        "<=": f"{value} <= {lo}",
        ">": f"{value} > {lo}",
        ">=": f"{value} >= {lo}",
        "between": f"{value} >= {lo} && {value} <= {hi}",
        "notBetween": f"{value} < {lo} || {value} > {hi}",
    }
    return scripts[comparator]


def es_query_groups(rule: dict[str, Any], result: dict[str, Any]) -> dict[str, int]:
    """``{alert id: document count}``: the alerts an ``.es-query`` rule reports for the
    response to :func:`es_query_search` (es_query/executor.ts with triggers_actions_ui's
    parse_aggregation_results.ts). Ungrouped: one alert, ``query matched``, when the total
    meets the threshold; grouped: one alert per group the bucket selector kept, up to the
    alert limit. The selector's condition is checked again on each group's count, so the
    result is the same from an Elasticsearch without the ``bucket_selector`` aggregation
    (the integ-test build of ``make services``), sent the search without it."""
    params = rule["params"]
    if not params.get("termField"):
        total = result["hits"]["total"]["value"]
        return {"query matched": total} if threshold_met(rule, total) else {}
    buckets = result["aggregations"]["groupAgg"]["buckets"]
    met = [b for b in buckets if threshold_met(rule, b["doc_count"])][:ALERT_LIMIT]
    return {_group_name(b["key"]): b["doc_count"] for b in met}


def _group_name(key: Any) -> str:
    # a multi_terms key is a list; JavaScript's `${key}` joins it with commas
    return ",".join(str(k) for k in key) if isinstance(key, list) else str(key)


def index_threshold_search(rule: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The search an ``.index-threshold`` rule (aggType count, groupBy all) runs at ``now``.

    As Kibana's time-series query: a range filter on the window and a ``date_range``
    aggregation over it; the rule fires when the bucket's doc_count passes the threshold.
    """
    params = rule["params"]
    if params["aggType"] != "count" or params["groupBy"] != "all":
        raise ValueError("only aggType=count, groupBy=all is translated")
    field = params["timeField"]
    start, end = _iso(now - _window(params)), _iso(now)
    return {
        "size": 0,
        "query": {
            "bool": {
                "filter": [
                    {"range": {field: {"gte": start, "lt": end, "format": "strict_date_time"}}}
                ]
            }
        },
        "aggs": {
            "dateAgg": {
                "date_range": {
                    "field": field,
                    "format": "strict_date_time",
                    "ranges": [{"from": start, "to": end}],
                }
            }
        },
    }


def threshold_met(rule: dict[str, Any], value: float) -> bool:
    params = rule["params"]
    comparator = params["thresholdComparator"]
    threshold = params["threshold"]
    if comparator == ">":
        return value > threshold[0]
    if comparator == ">=":
        return value >= threshold[0]
    if comparator == "<":
        return value < threshold[0]
    if comparator == "<=":
        return value <= threshold[0]
    if comparator == "between":
        return threshold[0] <= value <= threshold[1]
    if comparator == "notBetween":
        return not threshold[0] <= value <= threshold[1]
    raise ValueError(f"unknown thresholdComparator {comparator!r}")


def create_body(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in item.items() if k != "id"}
    if kind == "rule":
        body["params"] = _api_params(body["params"])
    return body


def update_body(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    fixed = {"connector": ("connector_type_id",), "rule": ("rule_type_id", "consumer")}[kind]
    return {k: v for k, v in create_body(kind, item).items() if k not in fixed}


def _api_params(params: dict[str, Any]) -> dict[str, Any]:
    params = dict(params)
    if isinstance(params.get("esQuery"), dict):
        params["esQuery"] = json.dumps(params["esQuery"])  # Kibana wants the DSL as a string
    return params


# ----------------------------------------------------------------------------- HTTP
class KibanaError(RuntimeError):
    """Kibana refused a request (the message holds the method, path, status and reason)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Kibana:
    """A tiny Kibana API client over urllib (no extra dependency)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        space: str = "",
        timeout: float = 30.0,
    ) -> None:
        self.base = url.rstrip("/") + (f"/s/{space}" if space else "")
        self.timeout = timeout
        self.headers = {"kbn-xsrf": "bpwatch", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"ApiKey {api_key}"
        elif username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        ok_missing: bool = False,
    ) -> tuple[int, Any]:
        if body is not None:
            data = json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and ok_missing:
                return 404, None
            detail = exc.read()[:500].decode(errors="replace")
            raise KibanaError(f"{method} {path} -> {exc.code}: {detail}", exc.code) from None
        except urllib.error.URLError as exc:
            raise KibanaError(f"{method} {path}: Kibana not reachable ({exc.reason})") from None

    def wait_until_available(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, body = self.request("GET", "/api/status")
                level = (body or {}).get("status", {}).get("overall", {}).get("level")
                if status == 200 and level in (None, "available"):
                    return
            except KibanaError as exc:
                if exc.status in (401, 403):  # waiting does not fix credentials
                    raise
            if time.monotonic() > deadline:
                raise KibanaError(f"Kibana at {self.base} not available after {timeout:.0f}s")
            time.sleep(2.0)

    def import_saved_objects(self, ndjson: str) -> dict[str, Any]:
        boundary = f"bpwatch-{uuid.uuid4().hex}"
        data = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="bpwatch.ndjson"\r\n'
            "Content-Type: application/ndjson\r\n\r\n"
            f"{ndjson}\r\n--{boundary}--\r\n"
        ).encode()
        _, result = self.request(
            "POST",
            "/api/saved_objects/_import?overwrite=true",
            data=data,
            content_type=f"multipart/form-data; boundary={boundary}",
        )
        if not result or not result.get("success"):
            errors = (result or {}).get("errors", [])
            raise KibanaError(f"saved objects import failed: {json.dumps(errors)[:1000]}")
        return result

    def upsert(self, kind: str, item: dict[str, Any]) -> str:
        """Create or update a connector or rule by its fixed id; returns created|updated."""
        path = {"connector": "/api/actions/connector/", "rule": "/api/alerting/rule/"}[kind]
        path += item["id"]
        status, _ = self.request("GET", path, ok_missing=True)
        if status == 404:
            self.request("POST", path, create_body(kind, item))
            return "created"
        self.request("PUT", path, update_body(kind, item))
        return "updated"

    def delete_rule(self, rule_id: str) -> str:
        """Delete a rule by id if it exists; returns deleted|absent."""
        status, _ = self.request("DELETE", f"/api/alerting/rule/{rule_id}", ok_missing=True)
        return "absent" if status == 404 else "deleted"


def apply(kibana: Kibana, namespace: str = "", webhook: Webhook | None = None) -> dict[str, Any]:
    """Import saved objects, upsert connectors and rules, delete retired rules. Safe to run
    again."""
    summary: dict[str, Any] = {}
    result = kibana.import_saved_objects(objects.to_ndjson(load_saved_objects(namespace)))
    summary["saved_objects"] = result.get("successCount", 0)
    definitions = load_definitions(namespace, webhook)
    for connector in definitions["connectors"]:
        summary[connector["id"]] = kibana.upsert("connector", connector)
    for rule in definitions["rules"]:
        summary[rule["id"]] = kibana.upsert("rule", rule)
    for rule_id in definitions["retired"]:
        summary[rule_id] = kibana.delete_rule(rule_id)
    return summary


# RFC 9110 field-name: a token
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _webhook_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s) URL with a host: {text!r}")
    return text


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _HEADER_NAME.fullmatch(name) or not value:
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    settings = load_or_exit()  # BPWATCH_NAMESPACE and BPWATCH_LOG_LEVEL, validated
    parser = argparse.ArgumentParser(
        prog="python -m infra.kibana.setup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--kibana-url", default=os.environ.get("KIBANA_URL", "http://127.0.0.1:5601")
    )
    parser.add_argument("--namespace", default=settings.namespace)
    parser.add_argument("--space", default="", help="Kibana space id (default space if empty)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for Kibana")
    parser.add_argument(
        "--webhook-url",
        type=_webhook_url,
        help="the rules' connector is a .webhook connector posting JSON here (Gold license)",
    )
    parser.add_argument(
        "--webhook-header",
        type=_header,
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a header of the webhook's requests (repeatable; stored in plain text)",
    )
    args = parser.parse_args(argv)
    if args.webhook_header and not args.webhook_url:
        parser.error("--webhook-header needs --webhook-url")
    configure(settings.log_level)
    webhook = Webhook(args.webhook_url, dict(args.webhook_header)) if args.webhook_url else None
    kibana = Kibana(
        args.kibana_url,
        api_key=os.environ.get("KIBANA_API_KEY") or None,
        username=os.environ.get("KIBANA_USERNAME") or None,
        password=os.environ.get("KIBANA_PASSWORD") or None,
        space=args.space,
    )
    try:
        if args.wait:
            kibana.wait_until_available(args.wait)
        summary = apply(kibana, args.namespace, webhook)
    except KibanaError as exc:
        hint = ""
        if webhook and exc.status == 403:
            hint = " (a .webhook connector needs a Gold license or better, or a trial)"
        sys.stderr.write(f"bpwatch: kibana setup failed: {exc}{hint}\n")
        return 1
    log.info("kibana setup done %s", " ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
