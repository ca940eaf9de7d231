"""bpwatch's Kibana saved objects, as code. ``saved_objects.ndjson`` is generated from here.

Regenerate after a change (a unit test fails while the committed file is stale)::

    .venv/bin/python -m infra.kibana.objects > infra/kibana/saved_objects.ndjson

Objects (Kibana 8.x format: ``coreMigrationVersion`` 8.8.0, Lens ``formBased`` datasource):

* data views ``bpwatch-anomalies`` (``bp-anomalies*``, time ``effective_at``),
  ``bpwatch-alerts`` (``bp-alerts*``, time ``event_at``), ``bpwatch-home-averages``
  (``bp-home-averages*``, time ``series_end``), ``bpwatch-episodes`` (``bp-episodes*``,
  no time field: the dashboard's time range never hides an episode that is still open) and
  ``bpwatch-adherence`` (``bp-adherence*``, no time field either: a cycle lasts 30 days, and
  its panels choose the current cycles by their dates);
* Lens panels: anomaly-type distribution, anomalies over time (by severity), recent critical
  cases (table), risk-score distribution, risk over time (average and maximum), alert events
  over time (by condition), home BP averages (table, latest series per patient), no-data
  episodes (table, last ``no_data`` event per patient: ``opened`` = still silent), alert
  episodes by tier (table, last event per episode: ``urgent`` pages, ``review`` does not),
  adherence: patients of the current cycles by band (bar);
* saved search ``bpwatch-worklist``: the open episodes of ``bp-episodes``, overdue first, then
  unacknowledged, then by severity and age (Discover's multi-column sort; Lens tables sort by
  one column only);
* saved search ``bpwatch-not-on-track``: the current adherence cycles that can no longer reach
  16 days (``on_track`` false), the cycle closing soonest first;
* dashboard ``bpwatch-overview`` holding the worklist on top, the ten Lens panels, and the
  patients not on track beside the adherence panel.

With a namespace ``NS`` (``saved_objects("NS")``) every id becomes ``NS-<id>``, every title
and name ends in `` [NS]`` and the data views cover ``NS-bp-anomalies*`` (and the others),
so two namespaces live side by side in one Kibana space. The committed NDJSON is the
namespace-less set.
"""

from __future__ import annotations

import json
import sys
from typing import Any

ANOMALIES_VIEW = "bpwatch-anomalies"
ALERTS_VIEW = "bpwatch-alerts"
HOME_VIEW = "bpwatch-home-averages"
EPISODES_VIEW = "bpwatch-episodes"
ADHERENCE_VIEW = "bpwatch-adherence"
WORKLIST_ID = "bpwatch-worklist"
NOT_ON_TRACK_ID = "bpwatch-not-on-track"
DASHBOARD_ID = "bpwatch-overview"
BASE_PATTERNS = {
    ANOMALIES_VIEW: "bp-anomalies*",
    ALERTS_VIEW: "bp-alerts*",
    HOME_VIEW: "bp-home-averages*",
    EPISODES_VIEW: "bp-episodes*",
    ADHERENCE_VIEW: "bp-adherence*",
}
# The worklist: what a clinician needs to act on an open episode, and the order to act in.
# Booleans sort false < true; severity is a keyword, so ascending puts critical before high.
WORKLIST_COLUMNS = (
    "episode_id", "patient_id", "condition", "severity", "tier", "opened_at",
    "acknowledged", "acknowledged_by", "overdue",
)  # fmt: skip
WORKLIST_SORT = (
    ("overdue", "desc"), ("acknowledged", "asc"), ("severity", "asc"), ("opened_at", "asc"),
)  # fmt: skip
WORKLIST_QUERY = 'status : "open"'
# The current adherence cycles: those holding today (cycle_end is the cycle's last day; KQL
# passes date math to Elasticsearch's range query, rounded in the browser's time zone).
CURRENT_CYCLES = 'cycle_start <= "now" and cycle_end >= "now/d"'
NOT_ON_TRACK_QUERY = f"on_track : false and {CURRENT_CYCLES}"
NOT_ON_TRACK_COLUMNS = (
    "patient_id", "program", "band", "days_with_readings", "days_left", "last_reading_date",
    "cycle_start", "cycle_end",
)  # fmt: skip
NOT_ON_TRACK_SORT = (("days_left", "asc"), ("patient_id", "asc"))
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


# ----------------------------------------------------------------------------- namespacing
def namespaced_id(base: str, namespace: str = "") -> str:
    """``NS-<base>``: the id of a saved object or rule in a namespace (``base`` without one)."""
    return f"{namespace}-{base}" if namespace else base


def namespaced_title(title: str, namespace: str = "") -> str:
    return f"{title} [{namespace}]" if namespace else title


def namespaced_pattern(pattern: str, namespace: str = "") -> str:
    """``bp-anomalies*`` -> ``NS-bp-anomalies*``; other patterns are left alone."""
    known = pattern in BASE_PATTERNS.values()
    return f"{namespace}-{pattern}" if namespace and known else pattern


# ----------------------------------------------------------------------------- Lens columns
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


def _last_value(
    field: str, label: str, data_type: str, sort_field: str = "effective_at"
) -> dict[str, Any]:
    return {
        "label": label,
        "dataType": data_type,
        "operationType": "last_value",
        "sourceField": field,
        "isBucketed": False,
        "scale": "ratio" if data_type == "number" else "ordinal",
        "params": {"sortField": sort_field, "showArrayValues": True},
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


# ----------------------------------------------------------------------------- objects
class _Lens:
    """Builds the Lens objects of one namespace (ids, titles and data view references)."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def panel(
        self,
        obj_id: str,
        title: str,
        view: str,
        vis_type: str,
        columns: dict[str, dict[str, Any]],
        visualization: dict[str, Any],
        query: str = "",
    ) -> dict[str, Any]:
        layer = {"columns": columns, "columnOrder": list(columns), "incompleteColumns": {}}
        return {
            "id": namespaced_id(obj_id, self.ns),
            "type": "lens",
            "coreMigrationVersion": "8.8.0",
            "typeMigrationVersion": "8.9.0",
            "attributes": {
                "title": namespaced_title(title, self.ns),
                "description": "",
                "visualizationType": vis_type,
                "state": {
                    "visualization": visualization,
                    "query": {"query": query, "language": "kuery"},
                    "filters": [],
                    "datasourceStates": {"formBased": {"layers": {LAYER: layer}}},
                    "internalReferences": [],
                    "adHocDataViews": {},
                },
            },
            "references": [
                {
                    "type": "index-pattern",
                    "id": namespaced_id(view, self.ns),
                    "name": f"indexpattern-datasource-layer-{LAYER}",
                }
            ],
        }

    def stacked_over_time(
        self,
        obj_id: str,
        title: str,
        view: str,
        time_field: str,
        split: str,
        size: int,
        query: str = "",
    ) -> dict[str, Any]:
        """Count of records over time, stacked by the top values of ``split``."""
        columns = {
            "time": _date_histogram(time_field),
            split: _terms(split, "count", size=size),
            "count": COUNT,
        }
        visualization = _xy("bar_stacked", "time", ["count"], split=split)
        return self.panel(obj_id, title, view, "lnsXY", columns, visualization, query)

    def table(
        self,
        obj_id: str,
        title: str,
        view: str,
        columns: dict[str, dict[str, Any]],
        sort_by: str,
        query: str = "",
    ) -> dict[str, Any]:
        """A data table, rows sorted by ``sort_by`` descending."""
        table = {
            "layerId": LAYER,
            "layerType": "data",
            "columns": [{"columnId": c} for c in columns],
            "sorting": {"columnId": sort_by, "direction": "desc"},
        }
        return self.panel(obj_id, title, view, "lnsDatatable", columns, table, query)

    def home_averages(self) -> dict[str, Any]:
        """The latest home-BP series of each patient: means, readings and thresholds."""
        last = "series_end"
        columns = {
            "patient": _terms("patient_id", "end", size=50, label="Patient"),
            "end": _metric("max", last, "Series end", data_type="date"),
            "systolic": _last_value("mean_systolic", "Mean systolic", "number", last),
            "diastolic": _last_value("mean_diastolic", "Mean diastolic", "number", last),
            "readings": _last_value("readings_used", "Readings", "number", last),
            "days": _last_value("days_used", "Days", "number", last),
            "limit_sys": _last_value("threshold_systolic", "Threshold sys", "number", last),
            "limit_dia": _last_value("threshold_diastolic", "Threshold dia", "number", last),
        }
        return self.table(
            "bpwatch-home-latest", "Home BP averages (latest series per patient)",
            HOME_VIEW, columns, "end",
        )  # fmt: skip

    def no_data(self) -> dict[str, Any]:
        """The last ``no_data`` event of each patient: ``opened`` means still silent."""
        at = "event_at"
        columns = {
            "patient": _terms("patient_id", "latest", size=50, label="Patient"),
            "latest": _metric("max", at, "Last event", data_type="date"),
            "event": _last_value("event", "Event", "string", at),
            "since": _last_value("opened_at", "Silent since", "date", at),
        }
        return self.table(
            "bpwatch-no-data", "No-data episodes (last event per patient)",
            ALERTS_VIEW, columns, "latest", query='condition : "no_data"',
        )  # fmt: skip

    def alert_episodes(self) -> dict[str, Any]:
        """The last event of each alert episode, with its tier: ``urgent`` (paged) or
        ``review`` (not paged); ``opened`` or ``escalated`` means still open."""
        at = "event_at"
        columns = {
            "episode": _terms("episode_id", "latest", size=100, label="Episode"),
            "latest": _metric("max", at, "Last event", data_type="date"),
            "tier": _last_value("tier", "Tier", "string", at),
            "event": _last_value("event", "Event", "string", at),
            "condition": _last_value("condition", "Condition", "string", at),
            "patient": _last_value("patient_id", "Patient", "string", at),
        }
        return self.table(
            "bpwatch-alert-episodes", "Alert episodes by tier (last event per episode)",
            ALERTS_VIEW, columns, "latest",
        )  # fmt: skip

    def critical_cases(self) -> dict[str, Any]:
        columns = {
            "observation": _terms("observation_id", "latest", size=50, label="Observation"),
            "latest": _metric("max", "effective_at", "Time", data_type="date"),
            "patient": _last_value("patient_id", "Patient", "string"),
            "category": _last_value("category", "Category", "string"),
            "systolic": _last_value("systolic", "Systolic", "number"),
            "diastolic": _last_value("diastolic", "Diastolic", "number"),
            "risk": _last_value("risk_score", "Risk", "number"),
        }
        return self.table(
            "bpwatch-recent-critical",
            "Recent critical cases",
            ANOMALIES_VIEW,
            columns,
            "latest",
            query='severity : "critical"',
        )

    def adherence_by_band(self) -> dict[str, Any]:
        """The patients of the current cycles in each band of days with readings."""
        patients = _metric("unique_count", "patient_id", "Patients")
        return self.panel(
            "bpwatch-adherence-bands", "Adherence: current cycles by band", ADHERENCE_VIEW,
            "lnsXY", {"band": _terms("band", "patients", size=3, label="Band"),
                      "patients": patients},
            _xy("bar", "band", ["patients"]), query=CURRENT_CYCLES,
        )  # fmt: skip

    def risk_distribution(self) -> dict[str, Any]:
        bucket = {
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
        }
        return self.panel(
            "bpwatch-risk-distribution",
            "Risk score distribution",
            ANOMALIES_VIEW,
            "lnsXY",
            {"bucket": bucket, "count": COUNT},
            _xy("bar", "bucket", ["count"]),
        )


def lens_objects(namespace: str = "") -> list[dict[str, Any]]:
    """The ten Lens panels, in dashboard order."""
    lens = _Lens(namespace)
    anomaly_types = lens.panel(
        "bpwatch-anomaly-types",
        "Anomaly types",
        ANOMALIES_VIEW,
        "lnsXY",
        {"type": _terms("anomaly_types", "count", size=12), "count": COUNT},
        _xy("bar_horizontal", "type", ["count"]),
    )
    over_time = lens.stacked_over_time(
        "bpwatch-anomalies-over-time",
        "Anomalies over time (by severity)",
        ANOMALIES_VIEW,
        "effective_at",
        "severity",
        size=4,
    )
    risk_time = lens.panel(
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
    alerts_time = lens.stacked_over_time(
        "bpwatch-alert-events",
        "Alert events over time (by condition)",
        ALERTS_VIEW,
        "event_at",
        "condition",
        size=6,
        query='event : "opened" or event : "escalated"',
    )
    return [
        anomaly_types,
        over_time,
        lens.critical_cases(),
        lens.risk_distribution(),
        risk_time,
        alerts_time,
        lens.home_averages(),
        lens.no_data(),
        lens.alert_episodes(),
        lens.adherence_by_band(),
    ]


def data_view(obj_id: str, title: str, time_field: str | None, name: str) -> dict[str, Any]:
    """A data view; without ``time_field`` the dashboard's time range does not filter it."""
    attributes = {"title": title, "name": name}
    if time_field:
        attributes["timeFieldName"] = time_field
    return {
        "id": obj_id,
        "type": "index-pattern",
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.0.0",
        "attributes": attributes,
        "references": [],
    }


def data_views(namespace: str = "") -> list[dict[str, Any]]:
    views = []
    for view, time_field, name in (
        (ANOMALIES_VIEW, "effective_at", "bpwatch anomalies"),
        (ALERTS_VIEW, "event_at", "bpwatch alerts"),
        (HOME_VIEW, "series_end", "bpwatch home averages"),
        (EPISODES_VIEW, None, "bpwatch episodes"),
        (ADHERENCE_VIEW, None, "bpwatch adherence"),
    ):
        pattern = namespaced_pattern(BASE_PATTERNS[view], namespace)
        obj_id, label = namespaced_id(view, namespace), namespaced_title(name, namespace)
        views.append(data_view(obj_id, pattern, time_field, label))
    return views


def saved_search(
    obj_id: str,
    title: str,
    description: str,
    view: str,
    query: str,
    columns: tuple[str, ...],
    sort: tuple[tuple[str, str], ...],
    namespace: str = "",
) -> dict[str, Any]:
    """A saved search (Discover's table) of ``view``, sorted column after column.

    ``typeMigrationVersion`` 8.0.0 is the version at which ``search`` became a
    multiple-namespace type, so the import migrates it forward without regenerating its id.
    """
    index_ref = "kibanaSavedObjectMeta.searchSourceJSON.index"
    source = {
        "query": {"query": query, "language": "kuery"},
        "filter": [],
        "indexRefName": index_ref,
    }
    return {
        "id": namespaced_id(obj_id, namespace),
        "type": "search",
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.0.0",
        "attributes": {
            "title": namespaced_title(title, namespace),
            "description": description,
            "columns": list(columns),
            "sort": [[field, direction] for field, direction in sort],
            "grid": {},
            "hideChart": True,
            "isTextBasedQuery": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source)},
        },
        "references": [
            {"name": index_ref, "type": "index-pattern", "id": namespaced_id(view, namespace)}
        ],
    }


def worklist(namespace: str = "") -> dict[str, Any]:
    """The open episodes of ``bp-episodes`` as a saved search: overdue first, then
    unacknowledged, then by severity (critical first) and age (oldest first)."""
    return saved_search(
        WORKLIST_ID,
        "Worklist: open episodes",
        "Every open alert episode, overdue first, then unacknowledged, then by severity and "
        "age. Acknowledge one: python -m lib.tools.ack EPISODE_ID --by USER",
        EPISODES_VIEW,
        WORKLIST_QUERY,
        WORKLIST_COLUMNS,
        WORKLIST_SORT,
        namespace,
    )


def not_on_track(namespace: str = "") -> dict[str, Any]:
    """The current adherence cycles that can no longer reach 16 days with readings
    (``on_track`` false, as of the patient's latest reading), the fewest days left first."""
    return saved_search(
        NOT_ON_TRACK_ID,
        "Adherence: patients not on track",
        "The current 30-day cycles whose days with readings plus the days left after the "
        "latest reading are below 16 (CPT 99454), the cycle with the fewest days left first. "
        "on_track is as of the patient's latest reading, so a patient who stopped sending "
        "keeps the on_track of that reading (python -m lib.tools.report counts to its end).",
        ADHERENCE_VIEW,
        NOT_ON_TRACK_QUERY,
        NOT_ON_TRACK_COLUMNS,
        NOT_ON_TRACK_SORT,
        namespace,
    )


def dashboard(panels: list[dict[str, Any]], namespace: str = "") -> dict[str, Any]:
    """The overview: ``panels`` are the worklist (full width, on top), then the ten Lens
    panels in :func:`lens_objects` order, then the patients not on track (beside the
    adherence panel, the last Lens panel)."""
    layout = [(0, 0, 48, 16)]  # the worklist
    layout += [(0, 16, 24, 15), (24, 16, 24, 15), (0, 31, 48, 16), (0, 47, 24, 15)]
    layout += [(24, 47, 24, 15), (0, 62, 48, 14), (0, 76, 24, 16), (24, 76, 24, 16)]
    layout += [(0, 92, 48, 16)]
    layout += [(0, 108, 16, 16), (16, 108, 32, 16)]  # adherence: by band, not on track
    entries = []
    references = []
    for i, (panel, (x, y, w, h)) in enumerate(zip(panels, layout, strict=True), start=1):
        entries.append(
            {
                "version": "8.8.0",
                "type": panel["type"],
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i)},
                "panelIndex": str(i),
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{i}",
            }
        )
        references.append({"name": f"panel_{i}", "type": panel["type"], "id": panel["id"]})
    search_source = {"query": {"query": "", "language": "kuery"}, "filter": []}
    anomalies, alerts, home, episodes, adherence = (
        namespaced_pattern(p, namespace) for p in BASE_PATTERNS.values()
    )
    return {
        "id": namespaced_id(DASHBOARD_ID, namespace),
        "type": "dashboard",
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.9.0",
        "attributes": {
            "title": namespaced_title("bpwatch: blood-pressure anomalies", namespace),
            "description": (
                f"bpwatch monitor: open episodes ({episodes}), anomalies ({anomalies}), "
                f"alerts ({alerts}), home BP averages ({home}) and adherence ({adherence})"
            ),
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


def saved_objects(namespace: str = "") -> list[dict[str, Any]]:
    """Every object, dependencies first (the order Kibana's export uses)."""
    panels = [worklist(namespace), *lens_objects(namespace), not_on_track(namespace)]
    return [*data_views(namespace), *panels, dashboard(panels, namespace)]


def to_ndjson(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects)


if __name__ == "__main__":
    sys.stdout.write(to_ndjson(saved_objects()))
