"""bpwatch's Kibana saved objects, as code. ``saved_objects.ndjson`` is generated from here.

Regenerate after a change (a unit test fails while the committed file is stale)::

    .venv/bin/python -m infra.kibana.objects > infra/kibana/saved_objects.ndjson

Objects (Kibana 8.x format: ``coreMigrationVersion`` 8.8.0, Lens ``formBased`` datasource):

* data views ``bpwatch-anomalies`` (``bp-anomalies*``, time ``effective_at``) and
  ``bpwatch-alerts`` (``bp-alerts*``, time ``event_at``);
* Lens panels: anomaly-type distribution, anomalies over time (by severity), recent critical
  cases (table), risk-score distribution, risk over time (average and maximum), alert events
  over time (by condition);
* dashboard ``bpwatch-overview`` holding the six panels.
"""

from __future__ import annotations

import json
import sys
from typing import Any

ANOMALIES_VIEW = "bpwatch-anomalies"
ALERTS_VIEW = "bpwatch-alerts"
DASHBOARD_ID = "bpwatch-overview"
LAYER = "layer1"

COUNT = {
    "label": "Count of records",
    "dataType": "number",
    "operationType": "count",
    "isBucketed": False,
    "scale": "ratio",
    "sourceField": "___records___",
    "params": {"emptyAsNull": True},
}


def _date_histogram(field: str) -> dict[str, Any]:
    return {
        "label": field,
        "dataType": "date",
        "operationType": "date_histogram",
        "sourceField": field,
        "isBucketed": True,
        "scale": "interval",
        "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False},
    }


def _terms(field: str, order_by: str, size: int = 10, label: str | None = None) -> dict[str, Any]:
    return {
        "label": label or f"Top values of {field}",
        "dataType": "string",
        "operationType": "terms",
        "sourceField": field,
        "isBucketed": True,
        "scale": "ordinal",
        "params": {
            "size": size,
            "orderBy": {"type": "column", "columnId": order_by},
            "orderDirection": "desc",
            "otherBucket": False,
            "missingBucket": False,
        },
    }


def _metric(op: str, field: str, label: str, data_type: str = "number") -> dict[str, Any]:
    return {
        "label": label,
        "dataType": data_type,
        "operationType": op,
        "sourceField": field,
        "isBucketed": False,
        "scale": "ratio" if data_type == "number" else "interval",
        "params": {"emptyAsNull": True},
    }


def _last_value(field: str, label: str, data_type: str) -> dict[str, Any]:
    return {
        "label": label,
        "dataType": data_type,
        "operationType": "last_value",
        "sourceField": field,
        "isBucketed": False,
        "scale": "ratio" if data_type == "number" else "ordinal",
        "params": {"sortField": "effective_at", "showArrayValues": True},
    }


def _xy(series: str, x: str, ys: list[str], split: str | None = None) -> dict[str, Any]:
    layer: dict[str, Any] = {
        "layerId": LAYER,
        "layerType": "data",
        "seriesType": series,
        "xAccessor": x,
        "accessors": ys,
    }
    if split:
        layer["splitAccessor"] = split
    return {
        "legend": {"isVisible": True, "position": "right"},
        "valueLabels": "hide",
        "preferredSeriesType": series,
        "layers": [layer],
    }


def _lens(
    obj_id: str,
    title: str,
    view: str,
    vis_type: str,
    columns: dict[str, dict[str, Any]],
    visualization: dict[str, Any],
    query: str = "",
) -> dict[str, Any]:
    return {
        "id": obj_id,
        "type": "lens",
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.9.0",
        "attributes": {
            "title": title,
            "description": "",
            "visualizationType": vis_type,
            "state": {
                "visualization": visualization,
                "query": {"query": query, "language": "kuery"},
                "filters": [],
                "datasourceStates": {
                    "formBased": {
                        "layers": {
                            LAYER: {
                                "columns": columns,
                                "columnOrder": list(columns),
                                "incompleteColumns": {},
                            }
                        }
                    }
                },
                "internalReferences": [],
                "adHocDataViews": {},
            },
        },
        "references": [
            {"type": "index-pattern", "id": view, "name": f"indexpattern-datasource-layer-{LAYER}"}
        ],
    }


def data_view(obj_id: str, title: str, time_field: str, name: str) -> dict[str, Any]:
    return {
        "id": obj_id,
        "type": "index-pattern",
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.0.0",
        "attributes": {"title": title, "name": name, "timeFieldName": time_field},
        "references": [],
    }


def lens_objects() -> list[dict[str, Any]]:
    anomaly_types = _lens(
        "bpwatch-anomaly-types",
        "Anomaly types",
        ANOMALIES_VIEW,
        "lnsXY",
        {"type": _terms("anomaly_types", "count", size=12), "count": COUNT},
        _xy("bar_horizontal", "type", ["count"]),
    )
    over_time = _lens(
        "bpwatch-anomalies-over-time",
        "Anomalies over time (by severity)",
        ANOMALIES_VIEW,
        "lnsXY",
        {
            "time": _date_histogram("effective_at"),
            "severity": _terms("severity", "count", size=4),
            "count": COUNT,
        },
        _xy("bar_stacked", "time", ["count"], split="severity"),
    )
    critical = _lens(
        "bpwatch-recent-critical",
        "Recent critical cases",
        ANOMALIES_VIEW,
        "lnsDatatable",
        {
            "observation": _terms("observation_id", "latest", size=50, label="Observation"),
            "latest": _metric("max", "effective_at", "Time", data_type="date"),
            "patient": _last_value("patient_id", "Patient", "string"),
            "category": _last_value("category", "Category", "string"),
            "systolic": _last_value("systolic", "Systolic", "number"),
            "diastolic": _last_value("diastolic", "Diastolic", "number"),
            "risk": _last_value("risk_score", "Risk", "number"),
        },
        {
            "layerId": LAYER,
            "layerType": "data",
            "columns": [
                {"columnId": c}
                for c in (
                    "observation",
                    "latest",
                    "patient",
                    "category",
                    "systolic",
                    "diastolic",
                    "risk",
                )
            ],
            "sorting": {"columnId": "latest", "direction": "desc"},
        },
        query='severity : "critical"',
    )
    risk_hist = _lens(
        "bpwatch-risk-distribution",
        "Risk score distribution",
        ANOMALIES_VIEW,
        "lnsXY",
        {
            "bucket": {
                "label": "risk_score",
                "dataType": "number",
                "operationType": "range",
                "sourceField": "risk_score",
                "isBucketed": True,
                "scale": "interval",
                "params": {
                    "type": "histogram",
                    "maxBars": 20,
                    "includeEmptyRows": True,
                    "ranges": [{"from": 0, "to": 1, "label": ""}],
                },
            },
            "count": COUNT,
        },
        _xy("bar", "bucket", ["count"]),
    )
    risk_time = _lens(
        "bpwatch-risk-over-time",
        "Risk over time",
        ANOMALIES_VIEW,
        "lnsXY",
        {
            "time": _date_histogram("effective_at"),
            "avg": _metric("average", "risk_score", "Average risk"),
            "max": _metric("max", "risk_score", "Maximum risk"),
        },
        _xy("line", "time", ["avg", "max"]),
    )
    alerts_time = _lens(
        "bpwatch-alert-events",
        "Alert events over time (by condition)",
        ALERTS_VIEW,
        "lnsXY",
        {
            "time": _date_histogram("event_at"),
            "condition": _terms("condition", "count", size=6),
            "count": COUNT,
        },
        _xy("bar_stacked", "time", ["count"], split="condition"),
        query='event : "opened" or event : "escalated"',
    )
    return [anomaly_types, over_time, critical, risk_hist, risk_time, alerts_time]


def dashboard(panels: list[dict[str, Any]]) -> dict[str, Any]:
    layout = [(0, 0, 24, 15), (24, 0, 24, 15), (0, 15, 48, 16), (0, 31, 24, 15)]
    layout += [(24, 31, 24, 15), (0, 46, 48, 14)]
    entries = []
    references = []
    for i, (panel, (x, y, w, h)) in enumerate(zip(panels, layout, strict=True), start=1):
        entries.append(
            {
                "version": "8.8.0",
                "type": "lens",
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i)},
                "panelIndex": str(i),
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{i}",
            }
        )
        references.append({"name": f"panel_{i}", "type": "lens", "id": panel["id"]})
    search_source = {"query": {"query": "", "language": "kuery"}, "filter": []}
    return {
        "id": DASHBOARD_ID,
        "type": "dashboard",
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.9.0",
        "attributes": {
            "title": "bpwatch: blood-pressure anomalies",
            "description": "bpwatch monitor: anomalies (bp-anomalies*) and alerts (bp-alerts*)",
            "panelsJSON": json.dumps(entries, separators=(",", ":")),
            "optionsJSON": json.dumps({"useMargins": True, "hidePanelTitles": False}),
            "timeRestore": True,
            "timeFrom": "now-24h",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 30000},
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search_source)},
        },
        "references": references,
    }


def saved_objects() -> list[dict[str, Any]]:
    """Every object, dependencies first (the order Kibana's export uses)."""
    views = [
        data_view(ANOMALIES_VIEW, "bp-anomalies*", "effective_at", "bpwatch anomalies"),
        data_view(ALERTS_VIEW, "bp-alerts*", "event_at", "bpwatch alerts"),
    ]
    panels = lens_objects()
    return [*views, *panels, dashboard(panels)]


def to_ndjson(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects)


if __name__ == "__main__":
    sys.stdout.write(to_ndjson(saved_objects()))
