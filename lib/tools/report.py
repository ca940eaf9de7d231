"""A self-contained HTML report of the dashboard's views, for people without Kibana.

    .venv/bin/python -m lib.tools.report --out report.html [--from 2025-03-01T00:00Z] [--to ...]
                                   [--patient P123]

Reads ``bp-anomalies`` (``BPWATCH_ES_URL``, credentials and ``BPWATCH_NAMESPACE`` as
everywhere) for the event-time range ``[from, to)`` (default: the 24 hours before ``to``;
``to`` defaults to just after the newest reading in the index, so replayed or simulated data
is found), optionally for one patient, and writes one HTML file with the views of the Kibana
dashboard: anomaly-type distribution, anomalies over time (by severity), recent critical
cases, risk-score distribution, risk over time (average and maximum) as embedded PNG charts
(matplotlib, Agg backend) or tables, and two tables:

* home BP averages (``bp-home-averages``): the series that ended in ``[from - 7 days, to)``
  (a home-BP week reaches back that far), the latest per patient, with the number of series
  and of those with home hypertension;
* no-data episodes (``bp-alerts``, condition ``no_data``): the episodes open at ``to``
  (opened before it, not resolved before it) with their tier (``review`` unless
  ``BPWATCH_ALERT_URGENT`` makes ``no_data`` urgent; empty for events from before tiers), and
  the openings and resolutions in range;
* the worklist (``bp-episodes``): the episodes open now, whatever the range, overdue and
  unacknowledged first, then the other unacknowledged, then the acknowledged (with by whom and
  when), each group most severe then oldest first (:mod:`lib.tools.episodes`); left out when
  the index does not exist (a setup older than acknowledgements);
* adherence (``bp-adherence``): each patient's current cycle, the one with the latest
  ``cycle_start`` on or before the last day of the range, counted by band, and the patients
  not on track as of that day (:func:`as_of`: the days left count from that day, so a patient
  who stopped sending is listed, while the document's own ``on_track`` is as of its latest
  reading); and a programs line, the open ``severe_range_bp`` episodes (``bp-episodes``),
  confirmed or awaiting confirmation. Left out when the index does not exist.

This module is a tool, so it does I/O; :func:`collect` (Elasticsearch -> :class:`ReportData`)
and :func:`render_html` (-> str) are separate so each can be tested. matplotlib is the
``report`` extra (``pip install .[report]``) and is imported only when rendering.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from lib.domain import SEVERITIES, utc_iso
from lib.monitor.adherence import BANDS, ON_TRACK_DAYS
from lib.monitor.programs import SEVERE_CONDITION
from lib.tools import episodes

log = logging.getLogger(__name__)

_INTERVALS = [
    ("1m", timedelta(minutes=1)),
    ("5m", timedelta(minutes=5)),
    ("15m", timedelta(minutes=15)),
    ("1h", timedelta(hours=1)),
    ("3h", timedelta(hours=3)),
    ("6h", timedelta(hours=6)),
    ("12h", timedelta(hours=12)),
    ("1d", timedelta(days=1)),
    ("7d", timedelta(days=7)),
]
RISK_BIN = 0.05
HOME_REACH = timedelta(days=7)  # a home-BP series spans up to 7 days
MAX_EPISODES = 10_000  # no-data episodes examined per report
HOME_COLUMNS = (
    "patient_id",
    "series_start",
    "series_end",
    "readings_used",
    "days_used",
    "mean_systolic",
    "mean_diastolic",
    "home_hypertension",
    "ruleset",
)
NO_DATA_COLUMNS = ("patient_id", "opened_at", "observation_ids", "tier")
MAX_WORKLIST = 200  # worklist rows shown (the counts cover every open episode)
WORKLIST_COLUMNS = (
    "state",  # overdue / unacknowledged / acknowledged (episodes.ATTENTION)
    "episode_id",
    "patient_id",
    "condition",
    "severity",
    "tier",
    "opened_at",
    "last_event_at",
    "acknowledged_by",
    "acknowledged_at",
)
MAX_NOT_ON_TRACK = 200  # rows of patients not on track shown (the count covers all)
ADHERENCE_PAGE = 500  # patients per composite-aggregation page
ADHERENCE_COLUMNS = (
    "patient_id",
    "program",
    "cycle_start",
    "cycle_end",
    "days_with_readings",
    "days_left",
    "last_reading_date",
)
CRITICAL_COLUMNS = (
    "effective_at",
    "patient_id",
    "observation_id",
    "category",
    "systolic",
    "diastolic",
    "risk_score",
    "anomaly_types",
)


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the report shows, computed by Elasticsearch aggregations."""

    start: datetime
    end: datetime
    patient: str | None
    interval: str
    total: int
    anomaly_types: list[tuple[str, int]]
    over_time: list[tuple[datetime, dict[str, int]]]  # bucket start -> {severity: count}
    critical: list[dict[str, Any]]  # newest first
    critical_total: int
    risk_histogram: list[tuple[float, int]]  # bin lower edge -> count
    risk_over_time: list[tuple[datetime, float | None, float | None]]  # (bucket, avg, max)
    extra: dict[str, Any] = field(default_factory=dict)
    home: HomeView | None = None
    no_data: NoDataView | None = None
    worklist: WorklistView | None = None
    adherence: AdherenceView | None = None


@dataclass(frozen=True, slots=True)
class HomeView:
    """Home-BP series that ended in ``[start - HOME_REACH, end)``."""

    series: int  # documents in range
    hypertension: int  # of which home hypertension
    patients: int
    latest: list[dict[str, Any]]  # the latest series per patient, newest first (up to a limit)


@dataclass(frozen=True, slots=True)
class NoDataView:
    """No-data episodes: open at ``end``, and events in ``[start, end)``."""

    open: list[dict[str, Any]]  # the opening event of each open episode, newest first
    opened: int
    resolved: int


@dataclass(frozen=True, slots=True)
class WorklistView:
    """The episodes open now (``bp-episodes``), in the worklist's order."""

    rows: list[dict[str, Any]]  # up to MAX_WORKLIST, each with its "state"
    overdue: int  # open, overdue and unacknowledged
    unacknowledged: int  # open, unacknowledged, not overdue
    acknowledged: int  # open, acknowledged at the current level

    @property
    def total(self) -> int:
        return self.overdue + self.unacknowledged + self.acknowledged


@dataclass(frozen=True, slots=True)
class AdherenceView:
    """Each patient's current adherence cycle as of ``day``, and the open program episodes."""

    day: date  # the last day of the range
    bands: dict[str, int]  # band -> patients, in BANDS order
    not_on_track: list[dict[str, Any]]  # up to MAX_NOT_ON_TRACK, fewest days left first
    not_on_track_total: int
    severe_confirmed: int | None = None  # open severe_range_bp episodes, confirmed
    severe_unconfirmed: int | None = None  # ... awaiting confirmation

    @property
    def patients(self) -> int:
        return sum(self.bands.values())


def pick_interval(start: datetime, end: datetime, max_buckets: int = 120) -> str:
    """The smallest fixed interval that keeps the histogram at ``max_buckets`` or fewer."""
    span = end - start
    for name, width in _INTERVALS:
        if span / width <= max_buckets:
            return name
    return _INTERVALS[-1][0]


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a UTC offset, e.g. 2025-03-01T00:00Z")
    return value.astimezone(UTC)


def _ts(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def _anomaly_aggs(start: datetime, end: datetime, interval: str) -> dict[str, Any]:
    """The aggregations of the anomaly views: types, severity and risk over time, risk bins."""
    bounds = {"min": utc_iso(start), "max": utc_iso(end - timedelta(milliseconds=1))}
    return {
        "types": {"terms": {"field": "anomaly_types", "size": 50}},
        "over_time": {
            "date_histogram": {
                "field": "effective_at",
                "fixed_interval": interval,
                "min_doc_count": 0,
                "extended_bounds": bounds,
            },
            "aggs": {
                "severity": {"terms": {"field": "severity", "size": len(SEVERITIES)}},
                "avg_risk": {"avg": {"field": "risk_score"}},
                "max_risk": {"max": {"field": "risk_score"}},
            },
        },
        "risk": {
            "histogram": {
                "field": "risk_score",
                "interval": RISK_BIN,
                "min_doc_count": 0,
                "extended_bounds": {"min": 0.0, "max": 1.0 - RISK_BIN},
            }
        },
    }


def collect(
    es: Any,
    index: str,
    start: datetime,
    end: datetime,
    patient: str | None = None,
    *,
    critical_limit: int = 25,
    home_index: str | None = None,
    alerts_index: str | None = None,
    episodes_index: str | None = None,
    adherence_index: str | None = None,
) -> ReportData:
    """Run one aggregation search and one search for critical cases; no client-side scans.
    With ``home_index`` / ``alerts_index`` / ``episodes_index`` / ``adherence_index`` also
    the home-average, no-data, worklist and adherence views."""
    interval = pick_interval(start, end)
    filters: list[dict[str, Any]] = [
        {"range": {"effective_at": {"gte": utc_iso(start), "lt": utc_iso(end)}}}
    ]
    if patient:
        filters.append({"term": {"patient_id": patient}})
    query = {"bool": {"filter": filters}}
    aggs = _anomaly_aggs(start, end, interval)
    result = es.search(index=index, query=query, aggs=aggs, size=0, track_total_hits=True)
    agg = result["aggregations"]
    critical = es.search(
        index=index,
        query={"bool": {"filter": [*filters, {"term": {"severity": "critical"}}]}},
        sort=[{"effective_at": "desc"}, {"observation_id": "asc"}],
        size=critical_limit,
        source_includes=list(CRITICAL_COLUMNS),
        track_total_hits=True,
    )
    over_time = []
    risk_time = []
    for b in agg["over_time"]["buckets"]:
        at = _ts(b["key"])
        over_time.append((at, {s["key"]: s["doc_count"] for s in b["severity"]["buckets"]}))
        risk_time.append((at, b["avg_risk"]["value"], b["max_risk"]["value"]))
    risk_hist: dict[float, int] = {}
    for b in agg["risk"]["buckets"]:
        # a score of exactly 1.0 belongs to the last bin, not a bin of its own
        edge = min(round(b["key"], 2), round(1.0 - RISK_BIN, 2))
        risk_hist[edge] = risk_hist.get(edge, 0) + b["doc_count"]
    return ReportData(
        start=start,
        end=end,
        patient=patient,
        interval=interval,
        total=result["hits"]["total"]["value"],
        anomaly_types=[(b["key"], b["doc_count"]) for b in agg["types"]["buckets"]],
        over_time=over_time,
        critical=[h["_source"] for h in critical["hits"]["hits"]],
        critical_total=critical["hits"]["total"]["value"],
        risk_histogram=sorted(risk_hist.items()),
        risk_over_time=risk_time,
        home=collect_home(es, home_index, start, end, patient) if home_index else None,
        no_data=collect_no_data(es, alerts_index, start, end, patient) if alerts_index else None,
        worklist=collect_worklist(es, episodes_index, patient) if episodes_index else None,
        adherence=(
            collect_adherence(es, adherence_index, end, patient, episodes_index)
            if adherence_index
            else None
        ),
    )


def _patient_filter(patient: str | None) -> list[dict[str, Any]]:
    return [{"term": {"patient_id": patient}}] if patient else []


def collect_home(
    es: Any, index: str, start: datetime, end: datetime, patient: str | None, limit: int = 100
) -> HomeView:
    """Home series that ended in ``[start - HOME_REACH, end)``: counts and the latest series
    of each patient (field collapsing on ``patient_id``)."""
    since = {"gte": utc_iso(start - HOME_REACH), "lt": utc_iso(end)}
    query = {"bool": {"filter": [{"range": {"series_end": since}}, *_patient_filter(patient)]}}
    res = es.search(
        index=index,
        query=query,
        collapse={"field": "patient_id"},
        sort=[{"series_end": "desc"}, {"patient_id": "asc"}],
        size=limit,
        source_includes=list(HOME_COLUMNS),
        track_total_hits=True,
        aggs={
            "patients": {"cardinality": {"field": "patient_id"}},
            "hypertension": {"filter": {"term": {"home_hypertension": True}}},
        },
    )
    agg = res["aggregations"]
    return HomeView(
        series=res["hits"]["total"]["value"],
        hypertension=agg["hypertension"]["doc_count"],
        patients=agg["patients"]["value"],
        latest=[h["_source"] for h in res["hits"]["hits"]],
    )


def collect_no_data(
    es: Any, index: str, start: datetime, end: datetime, patient: str | None
) -> NoDataView:
    """Episodes open at ``end`` (one terms bucket per episode: opened, not resolved before
    ``end``) and the openings and resolutions in ``[start, end)``."""
    filters = [
        {"term": {"condition": "no_data"}},
        {"range": {"event_at": {"lt": utc_iso(end)}}},
        *_patient_filter(patient),
    ]
    in_range = {"range": {"event_at": {"gte": utc_iso(start), "lt": utc_iso(end)}}}
    opening = {"top_hits": {"size": 1, "_source": {"includes": list(NO_DATA_COLUMNS)}}}
    aggs = {
        "episodes": {
            "terms": {"field": "episode_id", "size": MAX_EPISODES},
            "aggs": {
                "resolved": {"filter": {"term": {"event": "resolved"}}},
                "opened": {"filter": {"term": {"event": "opened"}}, "aggs": {"hit": opening}},
            },
        },
        "opened": {"filter": {"bool": {"filter": [in_range, {"term": {"event": "opened"}}]}}},
        "resolved": {"filter": {"bool": {"filter": [in_range, {"term": {"event": "resolved"}}]}}},
    }
    res = es.search(index=index, query={"bool": {"filter": filters}}, aggs=aggs, size=0)
    agg = res["aggregations"]
    still_open = [
        b["opened"]["hit"]["hits"]["hits"][0]["_source"]
        for b in agg["episodes"]["buckets"]
        if b["resolved"]["doc_count"] == 0 and b["opened"]["doc_count"]
    ]
    still_open.sort(key=lambda d: (d["opened_at"], d["patient_id"]), reverse=True)
    return NoDataView(still_open, agg["opened"]["doc_count"], agg["resolved"]["doc_count"])


def collect_worklist(
    es: Any, index: str, patient: str | None, limit: int = MAX_WORKLIST
) -> WorklistView | None:
    """The open episodes, overdue and unacknowledged first (one ``msearch``); None without
    the index."""
    if not es.indices.exists(index=index):
        return None
    fields = [c for c in WORKLIST_COLUMNS if c != "state"] + ["acknowledged", "overdue"]
    filters = [episodes.OPEN, *_patient_filter(patient)]
    rows, totals = episodes.ordered(es, index, filters, episodes.by_attention(), limit, fields)
    for row in rows:
        row["state"] = episodes.ATTENTION[episodes.attention(row)][0]
    n = len(totals) // len(episodes.ATTENTION)
    overdue, unacknowledged, acknowledged = (sum(totals[i : i + n]) for i in range(0, 3 * n, n))
    return WorklistView(rows, overdue, unacknowledged, acknowledged)


def as_of(doc: dict[str, Any], day: date) -> dict[str, Any]:
    """A cycle's document with ``days_left`` and ``on_track`` as of ``day``: the days of the
    cycle still able to get a reading, from ``day`` (or the day after the latest reading, if
    later) to ``cycle_end``. The stored ones are as of the latest reading."""
    end = date.fromisoformat(doc["cycle_end"][:10])
    last = doc.get("last_reading_date")
    first_open = max(day, date.fromisoformat(last[:10]) + timedelta(days=1)) if last else day
    left = max(0, (end - first_open).days + 1)
    days = int(doc.get("days_with_readings") or 0)
    return {**doc, "days_left": left, "on_track": days + left >= ON_TRACK_DAYS}


def current_cycles(es: Any, index: str, day: date, patient: str | None) -> Iterator[dict[str, Any]]:
    """Each patient's cycle with the latest ``cycle_start`` on or before ``day``: one
    composite bucket per patient with its top hit, page after page."""
    filters = [{"range": {"cycle_start": {"lte": day.isoformat()}}}, *_patient_filter(patient)]
    latest = {"top_hits": {"size": 1, "sort": [{"cycle_start": "desc"}],
                           "_source": {"includes": [*ADHERENCE_COLUMNS, "band"]}}}  # fmt: skip
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {
            "size": ADHERENCE_PAGE,
            "sources": [{"patient": {"terms": {"field": "patient_id"}}}],
        }
        if after:
            composite["after"] = after
        res = es.search(
            index=index,
            query={"bool": {"filter": filters}},
            size=0,
            aggs={"patients": {"composite": composite, "aggs": {"latest": latest}}},
        )
        agg = res["aggregations"]["patients"]
        for bucket in agg["buckets"]:
            yield bucket["latest"]["hits"]["hits"][0]["_source"]
        after = agg.get("after_key")
        if not after or len(agg["buckets"]) < ADHERENCE_PAGE:
            return


def collect_adherence(
    es: Any,
    index: str,
    end: datetime,
    patient: str | None,
    episodes_index: str | None = None,
    limit: int = MAX_NOT_ON_TRACK,
) -> AdherenceView | None:
    """The current cycles as of the last day of ``[start, end)`` and, with
    ``episodes_index``, the open ``severe_range_bp`` episodes; None without the index."""
    if not es.indices.exists(index=index):
        return None
    day = (end - timedelta(milliseconds=1)).astimezone(UTC).date()
    bands = dict.fromkeys(BANDS, 0)
    behind = []
    for doc in current_cycles(es, index, day, patient):
        bands[doc.get("band", "")] = bands.get(doc.get("band", ""), 0) + 1
        now = as_of(doc, day)
        if not now["on_track"]:
            behind.append(now)
    behind.sort(key=lambda d: (d["days_left"], str(d["patient_id"])))
    confirmed = unconfirmed = None
    if episodes_index and es.indices.exists(index=episodes_index):
        severe = [episodes.OPEN, {"term": {"condition": SEVERE_CONDITION}},
                  *_patient_filter(patient)]  # fmt: skip
        res = es.search(
            index=episodes_index,
            query={"bool": {"filter": severe}},
            size=0,
            aggs={"confirmed": {"filter": {"term": {"confirmed": True}}}},
            track_total_hits=True,
        )
        confirmed = res["aggregations"]["confirmed"]["doc_count"]
        unconfirmed = res["hits"]["total"]["value"] - confirmed
    return AdherenceView(day, bands, behind[:limit], len(behind), confirmed, unconfirmed)


# ----------------------------------------------------------------------------- rendering
_SEV_COLORS = {"low": "#9ecae1", "moderate": "#fdae6b", "high": "#e6550d", "critical": "#a50f15"}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode()


def charts(data: ReportData) -> dict[str, str]:
    """``{view name: base64 PNG}`` for the four chart views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    try:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        names = [n for n, _ in reversed(data.anomaly_types)]
        ax.barh(names, [c for _, c in reversed(data.anomaly_types)], color="#3182bd")
        ax.set_xlabel("anomalous readings")
        if not names:
            ax.text(0.5, 0.5, "no anomalies", ha="center", transform=ax.transAxes)
        out["anomaly_types"] = _png(fig)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(9, 3.6))
        times = mdates.date2num([t for t, _ in data.over_time])
        bottom = [0] * len(times)
        width = _bar_width(data)
        for sev in SEVERITIES:
            counts = [c.get(sev, 0) for _, c in data.over_time]
            if any(counts):
                ax.bar(times, counts, width=width, bottom=bottom, label=sev,
                       color=_SEV_COLORS[sev], align="edge")  # fmt: skip
                bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        ax.set_ylabel(f"anomalies per {data.interval}")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=UTC))
        if any(bottom):
            ax.legend(loc="upper left")
        fig.autofmt_xdate()
        out["over_time"] = _png(fig)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 3.6))
        edges = [e for e, _ in data.risk_histogram]
        ax.bar(edges, [c for _, c in data.risk_histogram], width=RISK_BIN, align="edge",
               color="#756bb1", edgecolor="white")  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_xlabel("risk score")
        ax.set_ylabel("anomalous readings")
        out["risk_histogram"] = _png(fig)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(9, 3.6))
        pts = [(t, a, m) for t, a, m in data.risk_over_time if a is not None and m is not None]
        x = mdates.date2num([t for t, _, _ in pts])
        ax.plot(x, [a for _, a, _ in pts], marker=".", label="average")
        ax.plot(x, [m for _, _, m in pts], marker=".", label="maximum")
        ax.set_ylim(0, 1)
        ax.set_ylabel("risk score")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=UTC))
        ax.legend(loc="lower left")
        fig.autofmt_xdate()
        out["risk_over_time"] = _png(fig)
        plt.close(fig)
    finally:
        plt.close("all")
    return out


def _bar_width(data: ReportData) -> float:
    width = dict(_INTERVALS)[data.interval]
    return width / timedelta(days=1) * 0.9  # matplotlib date units are days


def _cell(name: str, value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    elif isinstance(value, bool):
        value = "yes" if value else "no"
    elif isinstance(value, float):
        places = 2 if name == "risk_score" else 1 if name.startswith("mean_") else 0
        value = f"{value:.{places}f}"
    return f"<td>{html.escape(str(value if value is not None else ''))}</td>"


def _table(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(_cell(c, row.get(c)) for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def _home_section(view: HomeView | None) -> str:
    if view is None:
        return ""
    return (
        '<section id="home"><h2>Home BP averages (latest series per patient)</h2>\n'
        f'<p class="summary"><span id="home_series">{view.series}</span> series of '
        f"{view.patients} patients ended in the range or the 7 days before it; "
        f'<span id="home_hypertension">{view.hypertension}</span> with home hypertension.</p>\n'
        f"{_table(HOME_COLUMNS, view.latest)}</section>"
    )


def _no_data_section(view: NoDataView | None) -> str:
    if view is None:
        return ""
    return (
        '<section id="no_data"><h2>No-data episodes (open at the end of the range)</h2>\n'
        f'<p class="summary"><span id="no_data_open">{len(view.open)}</span> patients silent; '
        f"in the range {view.opened} episodes opened and {view.resolved} resolved.</p>\n"
        f"{_table(NO_DATA_COLUMNS, view.open)}</section>"
    )


def _worklist_section(view: WorklistView | None) -> str:
    if view is None:
        return ""
    shown = f" (the first {len(view.rows)} shown)" if len(view.rows) < view.total else ""
    return (
        '<section id="worklist"><h2>Worklist (episodes open now, whatever the range)</h2>\n'
        f'<p class="summary"><span id="worklist_open">{view.total}</span> open episodes: '
        f'<span id="worklist_overdue">{view.overdue}</span> overdue and unacknowledged, '
        f'<span id="worklist_unacknowledged">{view.unacknowledged}</span> unacknowledged, '
        f'<span id="worklist_acknowledged">{view.acknowledged}</span> acknowledged{shown}. '
        "Acknowledge with <code>python -m lib.tools.ack EPISODE_ID --by USER</code>.</p>\n"
        f"{_table(WORKLIST_COLUMNS, view.rows)}</section>"
    )


def _adherence_section(view: AdherenceView | None) -> str:
    if view is None:
        return ""
    counts = ", ".join(
        f'<span id="adherence_{band}">{n}</span> {html.escape(band)}'
        for band, n in view.bands.items()
    )
    shown = (
        f" (the first {len(view.not_on_track)} shown)"
        if len(view.not_on_track) < view.not_on_track_total
        else ""
    )
    programs = ""
    if view.severe_confirmed is not None:
        programs = (
            '<p class="summary">Programs: <span id="severe_confirmed">'
            f"{view.severe_confirmed}</span> confirmed {SEVERE_CONDITION} episodes open, "
            f'<span id="severe_unconfirmed">{view.severe_unconfirmed}</span> awaiting '
            "confirmation.</p>\n"
        )
    return (
        '<section id="adherence"><h2>Adherence (each patient\'s current 30-day cycle)</h2>\n'
        f'<p class="summary"><span id="adherence_patients">{view.patients}</span> patients, '
        f"their latest cycle started on or before {view.day.isoformat()}, by days with "
        f"readings: {counts}. "
        f'<span id="not_on_track">{view.not_on_track_total}</span> not on track: their days '
        f"with readings plus the days left from {view.day.isoformat()} (or after their latest "
        f"reading) stay below {ON_TRACK_DAYS}{shown}, fewest days left first.</p>\n"
        f"{programs}{_table(ADHERENCE_COLUMNS, view.not_on_track)}</section>"
    )


def render_html(data: ReportData) -> str:
    images = charts(data)
    scope = f"patient {html.escape(data.patient)}" if data.patient else "all patients"
    rows = "\n".join(
        "<tr>" + "".join(_cell(c, case.get(c)) for c in CRITICAL_COLUMNS) + "</tr>"
        for case in data.critical
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in CRITICAL_COLUMNS)
    shown = (
        f"{len(data.critical)} most recent of {data.critical_total}"
        if data.critical_total > len(data.critical)
        else f"{data.critical_total}"
    )

    def figure(key: str, title: str) -> str:
        return (
            f'<section id="{key}"><h2>{title}</h2>'
            f'<img alt="{title}" src="data:image/png;base64,{images[key]}"></section>'
        )

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>bpwatch report {utc_iso(data.start)} to {utc_iso(data.end)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f2f2f2; }}
img {{ max-width: 100%; }}
.summary {{ color: #555; }}
</style></head>
<body>
<h1>bpwatch: blood-pressure anomalies</h1>
<p class="summary">Event time {utc_iso(data.start)} to {utc_iso(data.end)} (UTC), {scope}.
<span id="total">{data.total}</span> anomalous readings; histogram interval {data.interval}.</p>
{figure("anomaly_types", "Anomaly types")}
{figure("over_time", "Anomalies over time (by severity)")}
<section id="critical"><h2>Recent critical cases ({shown})</h2>
<table><thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody></table></section>
{figure("risk_histogram", "Risk score distribution")}
{figure("risk_over_time", "Risk over time (average and maximum)")}
{_home_section(data.home)}
{_no_data_section(data.no_data)}
{_worklist_section(data.worklist)}
{_adherence_section(data.adherence)}
</body></html>
"""


def _latest(es: Any, index: str) -> datetime | None:
    """Just after the newest ``effective_at`` in the index (None when it is empty)."""
    res = es.search(index=index, size=0, aggs={"last": {"max": {"field": "effective_at"}}})
    value = res["aggregations"]["last"]["value"]
    if value is None:
        return None
    return datetime.fromtimestamp(value / 1000.0, UTC) + timedelta(milliseconds=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib.tools.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="HTML file to write")
    parser.add_argument("--from", dest="start", type=_parse_time, help="ISO time with offset")
    parser.add_argument("--to", dest="end", type=_parse_time, help="ISO time with offset")
    parser.add_argument("--patient", help="only this patient id")
    parser.add_argument("--critical-limit", type=int, default=25)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

    from elasticsearch import ApiError, TransportError

    from lib.connectors.elastic import TOOL_RETRIES, make_client
    from lib.errors import ServiceError
    from lib.settings import load_or_exit

    settings = load_or_exit()
    es = make_client(settings, max_retries=TOOL_RETRIES)
    try:
        end = args.end or _latest(es, settings.anomalies_index) or datetime.now(UTC)
        start = args.start or end - timedelta(hours=24)
        if start >= end:
            sys.stderr.write("bpwatch: --from must be before --to\n")
            return 2
        data = collect(es, settings.anomalies_index, start, end, args.patient,
                       critical_limit=args.critical_limit,
                       home_index=settings.home_averages_index,
                       alerts_index=settings.alerts_index,
                       episodes_index=settings.episodes_index,
                       adherence_index=settings.adherence_index)  # fmt: skip
    except (ApiError, TransportError) as exc:
        sys.stderr.write(
            f"bpwatch: Elasticsearch at {settings.es_url} failed ({type(exc).__name__}): "
            "check BPWATCH_ES_URL and that `make setup` ran\n"
        )
        return 1
    except ServiceError as exc:
        sys.stderr.write(f"bpwatch: {exc}\n")
        return 1
    finally:
        es.close()
    args.out.write_text(render_html(data), encoding="utf-8")
    log.info("report written out=%s anomalies=%d critical=%d", args.out, data.total,
             data.critical_total)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
