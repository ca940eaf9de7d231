"""Static checks of the Kibana objects and rules (Kibana itself cannot run here).

Every field a panel, data view or rule references must exist in the index template behind its
index pattern, with a type that fits its use. The setup command is exercised against
``tests/kibana_stub.py``, a local HTTP stand-in that refuses what Kibana 8.19 refuses (ids,
body and rule-param schemas, connectors named by rules, import versions and references), each
rule written from Kibana's source. It is not a Kibana: nothing here was loaded into one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.kibana import objects, setup
from tests import kibana_stub
from tests.kibana_stub import KibanaStub

URGENT, REVIEW = "bpwatch-urgent-alerts", "bpwatch-review-daily"
OVERDUE, SPIKE = "bpwatch-episode-overdue", "bpwatch-anomaly-spike"
RULES = [URGENT, OVERDUE, REVIEW, SPIKE]
SAVED_OBJECTS = 18  # 5 data views, 2 saved searches, 10 Lens panels, 1 dashboard
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


def kql_range_fields(query: str) -> list[str]:
    """The fields of KQL range clauses (``field <= value``)."""
    return re.findall(r"([A-Za-z_][\w.]*)\s*[<>]=?", query)


def check_kql(query: str, mapping: dict[str, str], where: str) -> None:
    """``field : value`` on a keyword or boolean field, ranges on dates or numbers; nothing
    else in the query than these clauses, ``and`` and ``or``."""
    for field in kql_fields(query):
        assert mapping.get(field) in ("keyword", "boolean"), f"{where}: KQL on {field}"
    for field in kql_range_fields(query):
        assert mapping.get(field) in NUMERIC | {"date"}, f"{where}: KQL range on {field}"
    clause = r'[A-Za-z_][\w.]*\s*(?::|[<>]=?)\s*(?:"[^"]*"|\w+)'
    assert re.fullmatch(rf"(?:{clause}(?:\s+(?:and|or)\s+{clause})*)?", query), where


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
        "bp-home-averages*",
        "bp-episodes*",
        "bp-adherence*",
    }
    (dash,) = [o for o in saved if o["type"] == "dashboard"]
    panels = json.loads(dash["attributes"]["panelsJSON"])
    refs = {r["name"]: (r["type"], r["id"]) for r in dash["references"]}
    assert {p["panelRefName"] for p in panels} == set(refs)
    assert {p["panelRefName"]: p["type"] for p in panels} == {k: t for k, (t, _) in refs.items()}
    assert {i for _, i in refs.values()} == by_type["lens"] | by_type["search"]
    json.loads(dash["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    # the views users expect are on the dashboard
    titles = {o["attributes"]["title"] for o in saved if o["type"] in ("lens", "search")}
    for expected in ("Anomaly types", "Anomalies over time", "Recent critical cases",
                     "Risk score distribution", "Risk over time", "Home BP averages",
                     "No-data episodes", "Alert episodes by tier",
                     "Worklist: open episodes", "Adherence: current cycles by band",
                     "Adherence: patients not on track"):  # fmt: skip
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
    untimed = []
    for o in saved:
        if o["type"] == "index-pattern":
            mapping = mapping_for(o["attributes"]["title"])
            if "timeFieldName" not in o["attributes"]:
                untimed.append(o["attributes"]["title"])
                continue
            assert mapping[o["attributes"]["timeFieldName"]] == "date"
    # the dashboard's time range must not hide an episode opened days ago that is still open,
    # nor a 30-day adherence cycle that is still running
    assert untimed == ["bp-episodes*", "bp-adherence*"]


SORTABLE = NUMERIC | {"keyword", "boolean", "date"}


def test_worklist_lists_open_episodes_overdue_and_unacknowledged_first(saved):
    """A saved search on bp-episodes (no time field), status open, sorted overdue first, then
    unacknowledged, then critical before high and oldest first, with the columns a clinician
    acts on; it is the dashboard's first, full-width panel."""
    by_id = {(o["type"], o["id"]): o for o in saved}
    search = by_id["search", "bpwatch-worklist"]
    attrs = search["attributes"]
    ((ref),) = search["references"]
    view = by_id["index-pattern", ref["id"]]["attributes"]
    assert (ref["type"], view["title"]) == ("index-pattern", "bp-episodes*")
    assert "timeFieldName" not in view
    source = json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["indexRefName"] == ref["name"]  # Discover resolves the view through it
    assert source["query"] == {"query": 'status : "open"', "language": "kuery"}
    assert source["filter"] == []
    mapping = mapping_for(view["title"])
    for field in kql_fields(source["query"]["query"]):
        assert mapping[field] == "keyword"
    assert attrs["columns"] == [
        "episode_id", "patient_id", "condition", "severity", "tier", "opened_at",
        "acknowledged", "acknowledged_by", "overdue",
    ]  # fmt: skip
    assert all(column in mapping for column in attrs["columns"])
    assert attrs["sort"] == [
        ["overdue", "desc"], ["acknowledged", "asc"], ["severity", "asc"], ["opened_at", "asc"],
    ]  # fmt: skip
    for field, _ in attrs["sort"]:
        assert mapping[field] in SORTABLE, field
    assert (mapping["overdue"], mapping["acknowledged"]) == ("boolean", "boolean")
    # keyword order puts the two severities that need acknowledgement first
    assert sorted(["high", "moderate", "critical", "low"])[:2] == ["critical", "high"]
    (dash,) = [o for o in saved if o["type"] == "dashboard"]
    panels = json.loads(dash["attributes"]["panelsJSON"])
    refs = {r["name"]: r["id"] for r in dash["references"]}
    (top,) = [p for p in panels if p["gridData"]["y"] == 0]
    assert (top["type"], refs[top["panelRefName"]]) == ("search", search["id"])
    assert top["gridData"]["w"] == 48
    ns = {o["id"]: o for o in objects.saved_objects("w7")}
    assert ns["w7-bpwatch-worklist"]["references"][0]["id"] == "w7-bpwatch-episodes"
    assert ns["w7-bpwatch-episodes"]["attributes"]["title"] == "w7-bp-episodes*"


def test_adherence_panels_show_the_current_cycles_by_band_and_who_is_not_on_track(saved):
    """bp-adherence (no time field): the Lens bar counts the patients of the current cycles
    per band; the saved search lists the current cycles not on track, fewest days left first,
    and sits beside the bar at the bottom of the dashboard."""
    by_id = {(o["type"], o["id"]): o for o in saved}
    view = by_id["index-pattern", "bpwatch-adherence"]["attributes"]
    assert view["title"] == "bp-adherence*" and "timeFieldName" not in view
    mapping = mapping_for(view["title"])
    current = 'cycle_start <= "now" and cycle_end >= "now/d"'

    bands = by_id["lens", "bpwatch-adherence-bands"]
    assert bands["references"][0]["id"] == "bpwatch-adherence"
    state = bands["attributes"]["state"]
    assert state["query"] == {"query": current, "language": "kuery"}
    columns = state["datasourceStates"]["formBased"]["layers"]["layer1"]["columns"]
    assert (columns["band"]["operationType"], columns["band"]["sourceField"]) == ("terms", "band")
    assert columns["band"]["params"]["size"] >= 3  # under_2, 2_to_15, 16_plus
    assert (columns["patients"]["operationType"], columns["patients"]["sourceField"]) == (
        "unique_count", "patient_id",
    )  # fmt: skip

    search = by_id["search", "bpwatch-not-on-track"]
    attrs = search["attributes"]
    (ref,) = search["references"]
    assert (ref["type"], ref["id"]) == ("index-pattern", "bpwatch-adherence")
    source = json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["indexRefName"] == ref["name"]
    assert source["query"] == {"query": f"on_track : false and {current}", "language": "kuery"}
    check_kql(source["query"]["query"], mapping, search["id"])
    assert mapping["on_track"] == "boolean"
    assert attrs["sort"][0] == ["days_left", "asc"]
    for field, _ in attrs["sort"]:
        assert mapping[field] in SORTABLE, field
    assert {"patient_id", "days_with_readings", "days_left", "cycle_start"} <= set(attrs["columns"])
    assert all(column in mapping for column in attrs["columns"])

    (dash,) = [o for o in saved if o["type"] == "dashboard"]
    panels = {p["panelRefName"]: p["gridData"] for p in json.loads(
        dash["attributes"]["panelsJSON"])}  # fmt: skip
    refs = {r["id"]: r["name"] for r in dash["references"]}
    bar, table = panels[refs["bpwatch-adherence-bands"]], panels[refs["bpwatch-not-on-track"]]
    assert bar["y"] == table["y"] and bar["x"] + bar["w"] == table["x"]
    assert "bp-adherence*" in dash["attributes"]["description"]


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
            check_kql(state["query"]["query"], mapping, lens["id"])
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


def test_home_and_no_data_panels_read_their_own_data():
    """The home panel reads bp-home-averages (time series_end); the no-data panel reads only
    no_data alert events, with the last event of each patient (opened = still silent)."""
    saved = objects.saved_objects()
    by_id = {o["id"]: o for o in saved}
    views = {o["id"]: o["attributes"] for o in saved if o["type"] == "index-pattern"}
    home, silent = by_id["bpwatch-home-latest"], by_id["bpwatch-no-data"]
    assert home["type"] == silent["type"] == "lens"
    home_view = views[home["references"][0]["id"]]
    assert (home_view["title"], home_view["timeFieldName"]) == ("bp-home-averages*", "series_end")
    cols = home["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]["layer1"]
    fields = {c["sourceField"] for c in cols["columns"].values()}
    assert {"patient_id", "series_end", "mean_systolic", "mean_diastolic"} <= fields
    assert views[silent["references"][0]["id"]]["title"] == "bp-alerts*"
    assert silent["attributes"]["state"]["query"]["query"] == 'condition : "no_data"'
    layer = silent["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]["layer1"]
    event = layer["columns"]["event"]
    assert (event["operationType"], event["sourceField"]) == ("last_value", "event")
    assert event["params"]["sortField"] == "event_at"
    ns = {o["id"] for o in objects.saved_objects("w7")}
    assert {"w7-bpwatch-home-latest", "w7-bpwatch-home-averages", "w7-bpwatch-no-data"} <= ns
    assert len(by_id) == len(saved)  # ids are unique across types too


def test_alert_episodes_panel_shows_each_episodes_tier_and_last_event():
    (panel,) = [o for o in objects.saved_objects() if o["id"] == "bpwatch-alert-episodes"]
    views = {o["id"]: o["attributes"]["title"] for o in objects.saved_objects()}
    assert views[panel["references"][0]["id"]] == "bp-alerts*"
    state = panel["attributes"]["state"]
    assert state["query"]["query"] == ""  # every tier and condition
    columns = state["datasourceStates"]["formBased"]["layers"]["layer1"]["columns"]
    assert columns["episode"]["sourceField"] == "episode_id"
    for name in ("tier", "event", "condition", "patient"):
        assert columns[name]["operationType"] == "last_value"
        assert columns[name]["params"]["sortField"] == "event_at"
    assert (columns["tier"]["sourceField"], columns["event"]["sourceField"]) == ("tier", "event")
    assert mapping_for("bp-alerts*")["tier"] == "keyword"


def test_rules_reference_existing_fields_and_connectors():
    defs = setup.load_definitions()
    connectors = {c["id"]: c for c in defs["connectors"]}
    assert [c["connector_type_id"] for c in connectors.values()] == [".server-log"]
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
            if params.get("termField"):
                assert mapping[params["termField"]] == "keyword", rule["id"]
        names.add(rule["name"])
    assert [r["id"] for r in defs["rules"]] == RULES
    assert len(names) == len(RULES)
    assert not {r["id"] for r in defs["rules"]} & set(defs["retired"])


def _filters(rule: dict[str, Any]) -> dict[str, Any]:
    """``{field: value or values}`` of a rule's ``bool.filter`` of term / terms clauses."""
    out: dict[str, Any] = {}
    for clause in rule["params"]["esQuery"]["query"]["bool"]["filter"]:
        ((kind, spec),) = clause.items()
        ((field, value),) = spec.items()
        out[field] = set(value) if kind == "terms" else value
    return out


def test_only_urgent_and_overdue_alert_events_page():
    """Two rules page: urgent alert events that open or escalate an episode, and overdue
    events (an acknowledgement deadline missed); one Kibana alert (one page) per alert event.
    The per-reading rules on bp-anomalies are retired."""
    from lib.domain import TIERS
    from lib.monitor.alerts import EVENTS

    defs = setup.load_definitions()
    pages = [r for r in defs["rules"] if "page" in r["tags"]]
    assert [r["id"] for r in pages] == [URGENT, OVERDUE]
    rule = pages[0]
    assert _filters(rule) == {"tier": "urgent", "event": {"opened", "escalated"}}
    assert _filters(pages[1]) == {"event": "overdue"}
    assert {"urgent", "review"} == set(TIERS)
    assert {"opened", "escalated", "overdue"} < set(EVENTS)
    for paging in pages:
        params = paging["params"]
        assert (params["index"], params["timeField"]) == (["bp-alerts*"], "event_at")
        # one Kibana alert per alert event, notified when it becomes active, never again
        assert (params["groupBy"], params["termField"]) == ("top", "alert_id")
        assert params["termSize"] == setup.ALERT_LIMIT == kibana_stub.MAX_GROUPS
        assert params["excludeHitsFromPreviousRun"] is False  # Kibana ignores it when grouped
        assert params["size"] == 0  # no documents travel with a page
        ((action),) = paging["actions"]
        assert action["frequency"]["notify_when"] == "onActionGroupChange"
        assert action["params"]["level"] == "error"
        # every run sees an event for several runs: a late index or a Kibana restart is covered
        interval = timedelta(minutes=int(paging["schedule"]["interval"][:-1]))
        assert setup._window(params) > 10 * interval
    # nothing else writes at the paging level, and no rule reads the per-reading anomalies
    # for a clinical condition (the spike rule counts volume only)
    others = [r for r in defs["rules"] if r not in pages]
    assert all(a["params"]["level"] != "error" for r in others for a in r["actions"])
    assert all(
        "esQuery" not in r["params"] for r in others if "bp-anomalies*" in r["params"]["index"]
    )
    assert set(defs["retired"]) == {
        "bpwatch-systolic-hypertension",
        "bpwatch-diastolic-hypertension",
        "bpwatch-combined-critical",
    }


def test_overdue_rule_pages_each_overdue_event_as_an_escalation():
    rule = setup.rule_by_id(OVERDUE)
    assert {"page", "escalation"} <= set(rule["tags"]) and "critical" in rule["name"]
    urgent = setup.rule_by_id(URGENT)
    # the same shape as the urgent rule: only the query, name, tags and message differ
    same = {k: v for k, v in rule["params"].items() if k != "esQuery"}
    assert same == {k: v for k, v in urgent["params"].items() if k != "esQuery"}
    assert rule["schedule"] == urgent["schedule"]
    ((action),) = rule["actions"]
    assert action["id"] == urgent["actions"][0]["id"]
    assert "OVERDUE" in action["params"]["message"]


def test_review_rule_is_a_daily_summary_by_condition():
    rule = setup.rule_by_id(REVIEW)
    params = rule["params"]
    assert "page" not in rule["tags"] and "review" in rule["tags"]
    assert _filters(rule) == {"tier": "review", "event": "opened"}
    assert rule["schedule"]["interval"] == "1d" and setup._window(params) == timedelta(days=1)
    assert params["excludeHitsFromPreviousRun"] is False  # the window is the day
    assert (params["groupBy"], params["termField"]) == ("top", "condition")
    ((action),) = rule["actions"]
    assert action["params"]["level"] == "info"
    assert action["frequency"]["notify_when"] == "onActiveAlert"  # every day with news


def test_grouped_search_is_the_search_kibana_builds():
    """fetch_es_query.ts + build_sorted_events_query.ts + build_agg.ts, for the paging rule."""
    rule = setup.rule_by_id(URGENT)
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    body = setup.es_query_search(rule, now, previous_latest=now)  # ignored: grouped in Kibana
    assert body["size"] == 0 and body["track_total_hits"] is True
    query, time_filter = body["query"]["bool"]["filter"]
    assert query == rule["params"]["esQuery"]["query"]
    assert time_filter == {"bool": {"filter": [{"range": {"event_at": {
        "gte": "2025-03-01T11:00:00.000Z", "lte": "2025-03-01T12:00:00.000Z",
        "format": "strict_date_optional_time",
    }}}]}}  # fmt: skip
    group = body["aggs"]["groupAgg"]
    assert group["terms"] == {"field": "alert_id", "size": 1000}
    selector = group["aggs"]["conditionSelector"]["bucket_selector"]
    assert selector == {"buckets_path": {"compareValue": "_count"},
                        "script": "params.compareValue > 0L"}  # fmt: skip
    assert "topHitsAgg" not in group["aggs"]  # size 0: no documents travel with the alert
    assert body["aggs"]["groupAggCount"] == {"stats_bucket": {"buckets_path": "groupAgg._count"}}
    # termSize above the alert limit asks for one group more, to see the limit was reached
    rule["params"]["termSize"] = 5000
    assert setup.es_query_search(rule, now)["aggs"]["groupAgg"]["terms"]["size"] == 1001
    assert setup.comparator_script("between", [1, 2.5]) == (
        "params.compareValue >= 1L && params.compareValue <= 2.5"
    )
    # an ungrouped rule excludes the previous run's hits, as Kibana's must_not range
    rule["params"].update(termField=None, groupBy="all", excludeHitsFromPreviousRun=True)
    ungrouped = setup.es_query_search(rule, now, previous_latest=now)
    assert "aggs" not in ungrouped and ungrouped["size"] == rule["params"]["size"]
    assert ungrouped["query"]["bool"]["filter"][0]["bool"]["filter"][1] == {"bool": {"must_not": [
        {"bool": {"filter": [{"range": {"event_at": {
            "lte": "2025-03-01T12:00:00.000Z", "format": "strict_date_optional_time"
        }}}]}}
    ]}}  # fmt: skip


def test_namespace_changes_ids_names_and_patterns():
    defs = setup.load_definitions("t123")
    base = setup.load_definitions()
    assert [r["params"]["index"] for r in defs["rules"]] == [
        [f"t123-{i}" for i in r["params"]["index"]] for r in base["rules"]
    ]
    assert {i for r in defs["rules"] for i in r["params"]["index"]} == {
        "t123-bp-alerts*", "t123-bp-anomalies*",
    }  # fmt: skip
    assert [r["id"] for r in defs["rules"]] == [f"t123-{r}" for r in RULES]
    assert all(r["id"].startswith("t123-bpwatch-") for r in defs["rules"])
    assert all(r["name"].endswith(" [t123]") for r in defs["rules"])
    assert defs["retired"] == [f"t123-{r}" for r in base["retired"]]
    saved = setup.load_saved_objects("t123")
    titles = {o["attributes"]["title"] for o in saved if o["type"] == "index-pattern"}
    assert titles == {
        "t123-bp-anomalies*", "t123-bp-alerts*", "t123-bp-home-averages*", "t123-bp-episodes*",
        "t123-bp-adherence*",
    }  # fmt: skip
    assert all(o["id"].startswith("t123-bpwatch-") for o in saved)
    assert all(r["id"].startswith("t123-") for o in saved for r in o["references"])
    assert all(o["attributes"].get("title", "").endswith("[t123]") for o in saved
               if o["type"] != "index-pattern")  # fmt: skip
    # without a namespace nothing changes
    assert base["rules"][0]["params"]["index"] == ["bp-alerts*"]
    assert setup.rule_by_id("bpwatch-anomaly-spike", "t123")["id"] == "t123-bpwatch-anomaly-spike"
    base_ids = {o["id"] for o in setup.load_saved_objects()}
    assert not base_ids & {o["id"] for o in saved}


# ----------------------------------------------------------------------------- stub Kibana
@pytest.fixture
def stub() -> Iterator[KibanaStub]:
    with KibanaStub(auth=("elastic", "pw")) as kibana:
        yield kibana


def test_setup_creates_then_updates_by_fixed_id(stub):
    kibana = setup.Kibana(stub.url, username="elastic", password="pw")
    rules = RULES
    # a Kibana set up by an earlier version, whose per-reading rules paged on stage 2
    for old in ("bpwatch-systolic-hypertension", "bpwatch-combined-critical"):
        stub.rules[old] = {"id": old, "rule_type_id": ".es-query", "consumer": "stackAlerts"}
    first = setup.apply(kibana)
    assert first["saved_objects"] == SAVED_OBJECTS == len(stub.saved_objects)
    (connector_id,) = stub.connectors
    assert {first[k] for k in [connector_id, *rules]} == {"created"}
    assert first["bpwatch-systolic-hypertension"] == first["bpwatch-combined-critical"]
    assert first["bpwatch-combined-critical"] == "deleted"
    assert first["bpwatch-diastolic-hypertension"] == "absent"
    assert sorted(stub.rules) == sorted(rules)
    calls = [(r.method, r.path) for r in stub.requests]
    assert calls[0] == ("POST", "/api/saved_objects/_import?overwrite=true")
    assert ("POST", f"/api/alerting/rule/{URGENT}") in calls
    assert ("DELETE", "/api/alerting/rule/bpwatch-combined-critical") in calls
    # the import is multipart with the NDJSON file; every call carries kbn-xsrf and auth
    first_call = stub.requests[0]
    assert first_call.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'"id": "bpwatch-overview"' in first_call.body
    assert all(r.headers.get("kbn-xsrf") for r in stub.requests)
    created = stub.rules[URGENT]
    assert created["rule_type_id"] == ".es-query" and created["consumer"] == "stackAlerts"
    assert json.loads(created["params"]["esQuery"])["query"]["bool"]["filter"]
    assert created["params"]["termField"] == "alert_id"
    assert all(a["id"] == connector_id for r in stub.rules.values() for a in r["actions"])

    stub.requests.clear()
    second = setup.apply(kibana)
    assert {second[k] for k in [connector_id, *rules]} == {"updated"}
    assert {second[k] for k in setup.load_definitions()["retired"]} == {"absent"}
    puts = [r for r in stub.requests if r.method == "PUT"]
    assert len(puts) == 1 + len(RULES)  # the connector and the rules, no POST create this time
    assert not [r for r in stub.requests if r.method == "POST" and "/_import" not in r.path]
    assert len(stub.rules) == len(RULES) and len(stub.saved_objects) == SAVED_OBJECTS


def test_connector_ids_are_ids_kibana_8_accepts():
    """Kibana 8.x refuses a predefined connector id that is not a UUID (encrypted type)."""
    for connector in setup.load_definitions()["connectors"]:
        kibana_stub.check_connector_id(connector["id"])
        assert uuid.UUID(connector["id"]).version == 4


def test_two_namespaces_share_one_space_without_overwriting(stub):
    kibana = setup.Kibana(stub.url, username="elastic", password="pw")
    setup.apply(kibana, "alpha")
    before = {key: json.dumps(o, sort_keys=True) for key, o in stub.saved_objects.items()}
    rules_before = {k: json.dumps(v, sort_keys=True) for k, v in stub.rules.items()}
    setup.apply(kibana, "beta")
    assert len(stub.saved_objects) == 2 * SAVED_OBJECTS
    assert len(stub.rules) == 2 * len(RULES) and len(stub.connectors) == 1
    for key, text in before.items():  # alpha's objects and rules are untouched
        assert json.dumps(stub.saved_objects[key], sort_keys=True) == text
    for key, text in rules_before.items():
        assert json.dumps(stub.rules[key], sort_keys=True) == text
    assert ("dashboard", "beta-bpwatch-overview") in stub.saved_objects
    beta_panels = [
        o for (t, i), o in stub.saved_objects.items() if t in ("lens", "search") and "beta" in i
    ]
    assert {r["id"] for o in beta_panels for r in o["references"]} == {
        "beta-bpwatch-anomalies",
        "beta-bpwatch-alerts",
        "beta-bpwatch-home-averages",
        "beta-bpwatch-episodes",
        "beta-bpwatch-adherence",
    }
    names = [r["name"] for r in stub.rules.values()]
    assert len(set(names)) == 2 * len(RULES)


def test_setup_cli_reports_a_refusal(stub, monkeypatch, capsys):
    monkeypatch.setenv("KIBANA_USERNAME", "elastic")
    monkeypatch.setenv("KIBANA_PASSWORD", "wrong")
    assert setup.main(["--kibana-url", stub.url]) == 1
    assert "401" in capsys.readouterr().err


def test_setup_cli_reports_unreachable_kibana(capsys):
    assert setup.main(["--kibana-url", "http://127.0.0.1:9"]) == 1
    assert "not reachable" in capsys.readouterr().err


# ----------------------------------------------------------------------------- webhook
HOOK = setup.Webhook("https://pager.example.org/hooks/bp", {"X-Team": "cardio"})


def render_json_mustache(template: str, variables: dict[str, Any]) -> str:
    """Kibana's mustache rendering with JSON escaping, as the ``.webhook`` connector renders
    its body (actions/server/lib/mustache_renderer.ts, escape ``json``): a variable's value
    is written as the inside of a JSON string; numbers as they are."""

    def value(match: re.Match[str]) -> str:
        node: Any = variables
        for part in match.group(1).split("."):
            node = node[part]
        return str(node) if isinstance(node, int | float) else json.dumps(str(node))[1:-1]

    return re.sub(r"\{\{\s*([\w.]+)\s*\}\}", value, template)


def test_webhook_actions_post_the_alerts_fields_as_json():
    defs = setup.load_definitions(webhook=HOOK)
    ((connector),) = defs["connectors"]
    assert connector["connector_type_id"] == ".webhook"
    assert connector["config"] == {
        "url": HOOK.url,
        "method": "post",
        "headers": {"Content-Type": "application/json", "X-Team": "cardio"},
        "hasAuth": False,
        "authType": None,
    }
    assert connector["secrets"] == {}  # every secret of the schema is nullable: none needed
    uuid.UUID(connector["id"])
    plain = {r["id"]: r for r in setup.load_definitions()["rules"]}
    message = 'Document count is 1 in the last 60m for "a1"\nin bp-alerts* index.'
    for rule in defs["rules"]:
        (action,) = rule["actions"]
        ((before),) = plain[rule["id"]]["actions"]
        assert action["id"] == connector["id"] and set(action["params"]) == {"body"}
        assert action["group"] == before["group"] and action["frequency"] == before["frequency"]
        variables = {
            "rule": {"id": rule["id"], "name": rule["name"]},
            "alert": {"id": "a1b2"},
            "context": {"value": 3, "date": "2025-03-01T12:00:00.000Z", "message": message},
        }
        body = json.loads(render_json_mustache(action["params"]["body"], variables))
        assert body["source"] == "bpwatch" and body["rule_id"] == rule["id"]
        assert body["tags"] == rule["tags"] and body["level"] == before["params"]["level"]
        assert (body["count"], body["date"]) == (3, "2025-03-01T12:00:00.000Z")
        prefix = before["params"]["message"].split("{{")[0]
        assert body["message"] == prefix + message  # quotes and newlines survive
        group = rule["params"].get("termField")
        if group:
            assert body[group] == "a1b2"
    # the paging rules name the alert event's id: the receiver finds it in bp-alerts
    assert {r["id"] for r in defs["rules"] if r["params"].get("termField") == "alert_id"} == {
        URGENT, OVERDUE,
    }  # fmt: skip
    # the rules themselves do not change
    assert [r["params"] for r in defs["rules"]] == [r["params"] for r in plain.values()]


def test_setup_with_webhook_url_installs_a_webhook_connector_the_rules_use(capsys):
    with KibanaStub(license="gold") as stub:
        argv = ["--kibana-url", stub.url, "--webhook-url", HOOK.url, "--webhook-header",
                "X-Team: cardio"]  # fmt: skip
        assert setup.main(argv) == 0
        ((connector_id, connector),) = stub.connectors.items()
        assert connector["connector_type_id"] == ".webhook"
        assert connector["config"]["url"] == HOOK.url
        assert connector["config"]["headers"]["X-Team"] == "cardio"
        assert sorted(stub.rules) == sorted(RULES)
        for rule in stub.rules.values():
            assert [a["id"] for a in rule["actions"]] == [connector_id]
            assert (
                json.loads(render_json_mustache(rule["actions"][0]["params"]["body"], _SAMPLE))[
                    "source"
                ]
                == "bpwatch"
            )
        stub.requests.clear()
        assert setup.main(argv) == 0  # a re-run updates the same connector and rules
        assert len(stub.connectors) == 1 and len(stub.rules) == len(RULES)
        assert [r.method for r in stub.requests].count("PUT") == 1 + len(RULES)
        # the server-log connector again: the rules point back at it
        assert setup.main(["--kibana-url", stub.url]) == 0
        server_log = next(i for i, c in stub.connectors.items() if i != connector_id)
        assert {a["id"] for r in stub.rules.values() for a in r["actions"]} == {server_log}
    assert HOOK.url not in capsys.readouterr().err  # the URL may hold a token: never logged


_SAMPLE = {
    "rule": {"id": "r", "name": "n"},
    "alert": {"id": "a"},
    "context": {"value": 1, "date": "d", "message": "m"},
}


def test_webhook_needs_a_gold_license(capsys):
    """The compose Kibana runs a Basic license: Kibana refuses a .webhook connector (403),
    and setup says why."""
    with KibanaStub() as stub:
        assert setup.main(["--kibana-url", stub.url, "--webhook-url", HOOK.url]) == 1
        assert not stub.connectors and not stub.rules
    err = capsys.readouterr().err
    assert "403" in err and "basic license does not support it" in err
    assert "needs a Gold license" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--webhook-url", "ftp://pager.example.org/x"],
        ["--webhook-url", "https:///no-host"],
        ["--webhook-url", HOOK.url, "--webhook-header", "no-colon"],
        ["--webhook-url", HOOK.url, "--webhook-header", "Bad Name: x"],
        ["--webhook-url", HOOK.url, "--webhook-header", "X-Empty:"],
        ["--webhook-header", "X-Team: cardio"],
    ],
)
def test_setup_cli_refuses_a_bad_webhook_option(argv, capsys):
    with pytest.raises(SystemExit) as info:
        setup.main(["--kibana-url", "http://127.0.0.1:9", *argv])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
