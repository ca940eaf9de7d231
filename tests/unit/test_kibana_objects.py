"""Static checks of the Kibana objects and rules (Kibana itself cannot run here).

Every field a panel, data view or rule references must exist in the index template behind its
index pattern, with a type that fits its use. The setup command is exercised against a tiny
local HTTP stub that records requests: a test of request shapes and idempotency only, not a
substitute for a real Kibana.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra.kibana import objects, setup

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "infra" / "elasticsearch" / "templates"
NUMERIC = {"float", "double", "half_float", "scaled_float", "integer", "long", "short", "byte"}
FITS = {
    "terms": {"keyword"},
    "date_histogram": {"date"},
    "average": NUMERIC,
    "sum": NUMERIC,
    "median": NUMERIC,
    "percentile": NUMERIC,
    "range": NUMERIC,
    "max": NUMERIC | {"date"},
    "min": NUMERIC | {"date"},
    "last_value": NUMERIC | {"keyword", "date"},
    "unique_count": {"keyword"} | NUMERIC,
}


def _flatten(props: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, spec in props.items():
        if "properties" in spec:
            out.update(_flatten(spec["properties"], f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = spec["type"]
    return out


def mapping_for(pattern: str) -> dict[str, str]:
    """Field -> type of the template an index pattern (``bp-anomalies*``) resolves to."""
    name = pattern.rstrip("*").split("-bp-")[-1]
    name = name if name.startswith("bp-") else f"bp-{name}"
    path = TEMPLATES / f"{name}.json"
    assert path.exists(), f"no index template for pattern {pattern}"
    return _flatten(json.loads(path.read_text())["template"]["mappings"]["properties"])


def kql_fields(query: str) -> list[str]:
    return re.findall(r"([A-Za-z_][\w.]*)\s*:", query)


def dsl_fields(node: Any) -> list[tuple[str, str]]:
    """(query kind, field) for term/terms/range/exists/match clauses anywhere in a DSL tree."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("term", "terms", "range", "match") and isinstance(value, dict):
                found += [(key, f) for f in value if f != "boost"]
            elif key == "exists":
                found.append((key, value["field"]))
            else:
                found += dsl_fields(value)
    elif isinstance(node, list):
        for item in node:
            found += dsl_fields(item)
    return found


@pytest.fixture(scope="module")
def saved() -> list[dict[str, Any]]:
    return setup.load_saved_objects()


def test_committed_ndjson_is_generated_from_objects_py():
    committed = (ROOT / "infra/kibana/saved_objects.ndjson").read_text()
    assert committed == objects.to_ndjson(objects.saved_objects()), (
        "regenerate: python -m infra.kibana.objects > infra/kibana/saved_objects.ndjson"
    )


def test_objects_parse_and_references_resolve(saved):
    ids = [(o["type"], o["id"]) for o in saved]
    assert len(ids) == len(set(ids))
    by_type: dict[str, set[str]] = {}
    for o in saved:
        by_type.setdefault(o["type"], set()).add(o["id"])
        assert o["coreMigrationVersion"] and o["typeMigrationVersion"]
        for ref in o["references"]:
            assert ref["id"] in by_type.get(ref["type"], set()), f"{o['id']} -> {ref}"
    assert {o["attributes"]["title"] for o in saved if o["type"] == "index-pattern"} == {
        "bp-anomalies*",
        "bp-alerts*",
    }
    (dash,) = [o for o in saved if o["type"] == "dashboard"]
    panels = json.loads(dash["attributes"]["panelsJSON"])
    refs = {r["name"]: r["id"] for r in dash["references"]}
    assert {p["panelRefName"] for p in panels} == set(refs)
    assert set(refs.values()) == by_type["lens"]
    json.loads(dash["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    # the five views users expect are on the dashboard
    titles = {o["attributes"]["title"] for o in saved if o["type"] == "lens"}
    for expected in ("Anomaly types", "Anomalies over time", "Recent critical cases",
                     "Risk score distribution", "Risk over time"):  # fmt: skip
        assert any(t.startswith(expected) for t in titles), expected
    # panels do not overlap on the 48-column grid
    cells = set()
    for p in panels:
        g = p["gridData"]
        assert g["x"] + g["w"] <= 48
        box = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & box
        cells |= box


def test_data_view_time_fields_are_dates(saved):
    for o in saved:
        if o["type"] == "index-pattern":
            mapping = mapping_for(o["attributes"]["title"])
            assert mapping[o["attributes"]["timeFieldName"]] == "date"


def test_every_lens_field_exists_with_a_fitting_type(saved):
    views = {o["id"]: o["attributes"]["title"] for o in saved if o["type"] == "index-pattern"}
    checked = 0
    for lens in (o for o in saved if o["type"] == "lens"):
        state = lens["attributes"]["state"]
        refs = {r["name"]: r["id"] for r in lens["references"]}
        for layer_id, layer in state["datasourceStates"]["formBased"]["layers"].items():
            mapping = mapping_for(views[refs[f"indexpattern-datasource-layer-{layer_id}"]])
            order = layer["columnOrder"]
            assert sorted(order) == sorted(layer["columns"])
            bucketed = [layer["columns"][c]["isBucketed"] for c in order]
            assert bucketed == sorted(bucketed, reverse=True), "buckets before metrics"
            for col_id, col in layer["columns"].items():
                op = col["operationType"]
                if op == "count":
                    continue
                field = col["sourceField"]
                assert field in mapping, f"{lens['id']}.{col_id}: {field} not in template"
                assert mapping[field] in FITS[op], (
                    f"{lens['id']}.{col_id}: {op} on {mapping[field]}"
                )
                sort_field = col.get("params", {}).get("sortField")
                if sort_field:
                    assert mapping[sort_field] == "date"
                order = col.get("params", {}).get("orderBy", {}).get("columnId")
                if order:
                    assert order in layer["columns"]
                checked += 1
            for field in kql_fields(state["query"]["query"]):
                assert mapping.get(field) == "keyword", f"{lens['id']}: KQL on {field}"
        vis = state["visualization"]
        accessors = {a for lay in vis.get("layers", []) for a in lay.get("accessors", [])}
        accessors |= {
            lay[k]
            for lay in vis.get("layers", [])
            for k in ("xAccessor", "splitAccessor")
            if k in lay
        }
        accessors |= {c["columnId"] for c in vis.get("columns", [])}
        all_cols = {c for lay in state["datasourceStates"]["formBased"]["layers"].values()
                    for c in lay["columns"]}  # fmt: skip
        assert accessors == all_cols, lens["id"]
    assert checked >= 15


def test_rules_reference_existing_fields_and_connectors():
    defs = setup.load_definitions()
    connectors = {c["id"]: c for c in defs["connectors"]}
    assert all(c["connector_type_id"] in (".server-log", ".index") for c in connectors.values())
    groups = {".es-query": "query matched", ".index-threshold": "threshold met"}
    names = set()
    for rule in defs["rules"]:
        assert rule["rule_type_id"] in groups  # Basic-license stack rule types
        params = rule["params"]
        (index,) = params["index"]
        mapping = mapping_for(index)
        assert mapping[params["timeField"]] == "date"
        for action in rule["actions"]:
            assert action["id"] in connectors
            assert action["group"] == groups[rule["rule_type_id"]]
            assert "{{" in action["params"]["message"]
        if rule["rule_type_id"] == ".es-query":
            fields = dsl_fields(params["esQuery"])
            assert fields
            for kind, field in fields:
                assert field in mapping, f"{rule['id']}: {field}"
                want = {"keyword"} if kind in ("term", "terms") else NUMERIC | {"date"}
                assert mapping[field] in want, f"{rule['id']}: {kind} on {field}"
        names.add(rule["name"])
    assert {r["id"] for r in defs["rules"]} == {
        "bpwatch-systolic-hypertension",
        "bpwatch-diastolic-hypertension",
        "bpwatch-combined-critical",
        "bpwatch-anomaly-spike",
    }
    assert len(names) == 4


def test_namespace_rewrites_index_patterns_only():
    defs = setup.load_definitions("t123")
    assert all(r["params"]["index"] == ["t123-bp-anomalies*"] for r in defs["rules"])
    titles = {o["attributes"]["title"] for o in setup.load_saved_objects("t123")
              if o["type"] == "index-pattern"}  # fmt: skip
    assert titles == {"t123-bp-anomalies*", "t123-bp-alerts*"}
    assert setup.load_definitions()["rules"][0]["params"]["index"] == ["bp-anomalies*"]


# ----------------------------------------------------------------------------- stub Kibana
class _Stub(BaseHTTPRequestHandler):
    store: dict[str, Any]
    log: list[tuple[str, str, dict[str, str], bytes]]

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.log.append((self.command, self.path, headers, body))
        if self.headers.get("kbn-xsrf") is None and self.command != "GET":
            return self._reply(400, {"message": "Request must contain a kbn-xsrf header."})
        if self.path.startswith("/api/saved_objects/_import"):
            count = body.count(b'"coreMigrationVersion"')
            return self._reply(200, {"success": True, "successCount": count})
        if self.command == "GET":
            if self.path in self.store:
                return self._reply(200, self.store[self.path])
            return self._reply(404, {"message": "not found"})
        if self.command == "POST" and self.path in self.store:
            return self._reply(409, {"message": "already exists"})
        self.store[self.path] = json.loads(body)
        return self._reply(200, self.store[self.path])

    do_GET = do_POST = do_PUT = _handle

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub():
    handler = type("Handler", (_Stub,), {"store": {}, "log": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def test_setup_creates_then_updates_by_fixed_id(stub):
    url, handler = stub
    kibana = setup.Kibana(url, username="elastic", password="pw")
    first = setup.apply(kibana)
    assert first["saved_objects"] == 9
    assert {v for k, v in first.items() if k != "saved_objects"} == {"created"}
    calls = [(m, p) for m, p, _, _ in handler.log]
    assert calls[0] == ("POST", "/api/saved_objects/_import?overwrite=true")
    assert ("POST", "/api/alerting/rule/bpwatch-combined-critical") in calls
    # the import is multipart with the NDJSON file; every call carries kbn-xsrf and auth
    _, _, headers, body = handler.log[0]
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'filename="bpwatch.ndjson"' in body and b'"id": "bpwatch-overview"' in body
    assert all(
        h.get("kbn-xsrf") and h["authorization"].startswith("Basic ") for _, _, h, _ in handler.log
    )
    created = handler.store["/api/alerting/rule/bpwatch-systolic-hypertension"]
    assert created["rule_type_id"] == ".es-query" and created["consumer"] == "stackAlerts"
    assert isinstance(created["params"]["esQuery"], str)
    assert json.loads(created["params"]["esQuery"])["query"]["bool"]["filter"]

    handler.log.clear()
    second = setup.apply(kibana)
    assert {v for k, v in second.items() if k != "saved_objects"} == {"updated"}
    puts = [(p, json.loads(b)) for m, p, _, b in handler.log if m == "PUT"]
    assert len(puts) == 5  # 1 connector + 4 rules, no POST create the second time
    assert not [p for m, p, _, _ in handler.log if m == "POST" and "/_import" not in p]
    for _path, body in puts:
        assert (
            "rule_type_id" not in body
            and "consumer" not in body
            and "connector_type_id" not in body
        )
        assert "id" not in body


def test_setup_cli_reports_unreachable_kibana(capsys):
    assert setup.main(["--kibana-url", "http://127.0.0.1:9"]) == 1
    assert "not reachable" in capsys.readouterr().err
