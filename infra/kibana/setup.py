"""Idempotent Kibana setup: saved objects, connectors and alert rules with fixed ids.

    .venv/bin/python -m infra.kibana.setup --kibana-url http://127.0.0.1:5601 [--namespace NS]

1. ``POST /api/saved_objects/_import?overwrite=true`` with the saved objects of
   :mod:`infra.kibana.objects` (data views, Lens panels, the dashboard); overwriting by id makes
   a re-run harmless.
2. For every connector and rule of ``rules.json``: ``GET`` it by id, then ``POST`` (create,
   404) or ``PUT`` (update) the same id. Rule and connector types cannot change on update,
   so the PUT bodies leave ``rule_type_id`` / ``connector_type_id`` / ``consumer`` out.

The connector id is a fixed UUID v4: Kibana 8.x refuses any other predefined id for a
connector, whose saved object has encrypted attributes (rule ids may be any string since
8.17). Credentials come from the environment: ``KIBANA_API_KEY``, or ``KIBANA_USERNAME`` /
``KIBANA_PASSWORD``; none for an open local Kibana. ``--namespace NS`` gives every saved
object, data view and rule the id ``NS-<id>`` and a title ending in `` [NS]``, and points the
data views and rules at ``NS-bp-anomalies*`` / ``NS-bp-alerts*`` (the namespaced test/demo
indices), so several namespaces share one Kibana space; the connector is shared by all.

The module also holds :func:`es_query_search` and :func:`index_threshold_search`: the search
each rule type runs, built the way Kibana's stack rules build it, so the rules can be
executed against a real Elasticsearch without Kibana (tests/integration/test_kibana_rules.py).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from infra.kibana import objects
from lib.monitor.rules import RULESETS

log = logging.getLogger("bpwatch.kibana")

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "rules.json"
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


# ----------------------------------------------------------------------------- definitions
def load_saved_objects(namespace: str = "") -> list[dict[str, Any]]:
    return objects.saved_objects(namespace)


def critical_clauses() -> list[dict[str, Any]]:
    """One query clause per rule set of the registry: both values at or above its
    combined-critical thresholds (``RuleSet.critical``, as ``lib.monitor.alerts`` pages)."""
    return [
        {"bool": {"filter": [
            {"term": {"ruleset": rs.name}},
            {"range": {"systolic": {"gte": rs.critical[0]}}},
            {"range": {"diastolic": {"gte": rs.critical[1]}}},
        ]}}
        for rs in RULESETS.values()
    ]  # fmt: skip


def load_definitions(namespace: str = "") -> dict[str, list[dict[str, Any]]]:
    """``{"connectors": [...], "rules": [...]}`` from rules.json, rules namespaced.

    The combined-critical rule gets its per-rule-set thresholds from the registry
    (:func:`critical_clauses`), so a new rule set needs no edit here.
    """
    data = json.loads(RULES_FILE.read_text())
    for rule in data["rules"]:
        if rule["id"] == "bpwatch-combined-critical":
            query = rule["params"]["esQuery"]["query"]["bool"]
            query["should"] = critical_clauses() + query["should"]
        rule["id"] = objects.namespaced_id(rule["id"], namespace)
        rule["name"] = objects.namespaced_title(rule["name"], namespace)
        rule["params"]["index"] = [
            objects.namespaced_pattern(i, namespace) for i in rule["params"]["index"]
        ]
    return {"connectors": data["connectors"], "rules": data["rules"]}


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
    """The search body an ``.es-query`` rule (searchType esQuery) runs at ``now``.

    As Kibana builds it: the user's query in a bool filter together with the time window
    ``[now - window, now]`` on ``timeField``; with ``excludeHitsFromPreviousRun`` also
    ``timeField > latest hit of the previous run``. Sorted newest first, ``size`` hits.
    """
    params = rule["params"]
    field = params["timeField"]
    time_range: dict[str, Any] = {
        "gte": _iso(now - _window(params)),
        "lte": _iso(now),
        "format": "strict_date_optional_time",
    }
    filters: list[dict[str, Any]] = [
        copy.deepcopy(params["esQuery"]["query"]),
        {"range": {field: time_range}},
    ]
    if previous_latest is not None and params.get("excludeHitsFromPreviousRun"):
        filters.append(
            {"range": {field: {"gt": _iso(previous_latest), "format": "strict_date_optional_time"}}}
        )
    return {
        "size": params["size"],
        "track_total_hits": True,
        "query": {"bool": {"filter": filters}},
        "sort": [{field: {"order": "desc", "format": "strict_date_optional_time||epoch_millis"}}],
    }


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


def apply(kibana: Kibana, namespace: str = "") -> dict[str, Any]:
    """Import saved objects, then upsert connectors and rules. Safe to run again."""
    summary: dict[str, Any] = {}
    result = kibana.import_saved_objects(objects.to_ndjson(load_saved_objects(namespace)))
    summary["saved_objects"] = result.get("successCount", 0)
    definitions = load_definitions(namespace)
    for connector in definitions["connectors"]:
        summary[connector["id"]] = kibana.upsert("connector", connector)
    for rule in definitions["rules"]:
        summary[rule["id"]] = kibana.upsert("rule", rule)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.kibana.setup", description=__doc__)
    parser.add_argument(
        "--kibana-url", default=os.environ.get("KIBANA_URL", "http://127.0.0.1:5601")
    )
    parser.add_argument("--namespace", default=os.environ.get("BPWATCH_NAMESPACE", ""))
    parser.add_argument("--space", default="", help="Kibana space id (default space if empty)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for Kibana")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
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
        summary = apply(kibana, args.namespace)
    except KibanaError as exc:
        sys.stderr.write(f"bpwatch: kibana setup failed: {exc}\n")
        return 1
    log.info("kibana setup done %s", " ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
