"""lib.tools.report against the REAL local Elasticsearch, with documents indexed by the test."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lib.domain import utc_iso
from lib.tools import report

pytestmark = pytest.mark.integration

START = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
END = START + timedelta(hours=6)


def _doc(i: int, patient: str, at: datetime, severity: str, types: list[str], risk: float):
    sys_, dia = (186.0, 122.0) if severity == "critical" else (150.0, 95.0)
    return {
        "observation_id": f"obs-{i:03d}",
        "patient_id": patient,
        "effective_at": utc_iso(at),
        "ingested_at": utc_iso(at + timedelta(seconds=2)),
        "systolic": sys_,
        "diastolic": dia,
        "category": "hypertensive_crisis" if severity == "critical" else "hypertension_stage_2",
        "anomaly_types": types,
        "severity": severity,
        "risk_score": risk,
        "ruleset": "aha2017",
    }


@pytest.fixture
def loaded(settings, es) -> list[dict[str, Any]]:
    docs = []
    # 36 readings, one every 10 minutes inside the range, two patients alternating
    for i in range(36):
        at = START + timedelta(minutes=10 * i)
        patient = "pat-a" if i % 2 == 0 else "pat<b>"
        severity = "critical" if i % 6 == 0 else "high"
        types = (
            ["hypertensive_crisis", "systolic_hypertension"]
            if severity == "critical"
            else ["systolic_hypertension"]
        )
        if i % 4 == 0:
            types = [*types, "diastolic_hypertension"]
        risk = 1.0 if i == 35 else round(0.02 + (i % 10) * 0.1, 2)
        docs.append(_doc(i, patient, at, severity, types, risk))
    # outside the range on both sides (must not be counted)
    docs.append(_doc(900, "pat-a", START - timedelta(minutes=1), "critical", ["hypotension"], 0.5))
    docs.append(_doc(901, "pat-a", END, "critical", ["hypotension"], 0.5))
    ops: list[dict[str, Any]] = []
    for d in docs:
        ops += [{"index": {"_index": settings.anomalies_index, "_id": d["observation_id"]}}, d]
    assert not es.bulk(operations=ops, refresh="wait_for")["errors"]
    return docs[:36]


def test_collect_computes_the_five_views(settings, es, loaded):
    data = report.collect(es, settings.anomalies_index, START, END)
    assert data.total == 36
    assert data.interval == "5m"  # 6 h / 120 buckets
    types = dict(data.anomaly_types)
    assert types == {
        "systolic_hypertension": 36,
        "hypertensive_crisis": 6,
        "diastolic_hypertension": 9,
    }
    assert "hypotension" not in types  # the out-of-range documents are excluded
    # anomalies over time: 72 five-minute buckets, every other one holds one reading
    assert len(data.over_time) == 72
    assert data.over_time[0][0] == START
    assert sum(sum(c.values()) for _, c in data.over_time) == 36
    assert sum(c.get("critical", 0) for _, c in data.over_time) == 6
    assert data.over_time[0][1] == {"critical": 1} and data.over_time[1][1] == {}
    # recent critical cases: newest first, only critical, only in range
    assert data.critical_total == 6
    assert [c["observation_id"] for c in data.critical] == [
        "obs-030", "obs-024", "obs-018", "obs-012", "obs-006", "obs-000",
    ]  # fmt: skip
    # risk histogram: 20 bins of 0.05, a score of 1.0 in the last bin
    assert len(data.risk_histogram) == 20
    assert sum(c for _, c in data.risk_histogram) == 36
    hist = dict(data.risk_histogram)
    expected: dict[float, int] = {}
    for d in loaded:
        edge = min(int(d["risk_score"] / 0.05 + 1e-9) * 0.05, 0.95)
        expected[round(edge, 2)] = expected.get(round(edge, 2), 0) + 1
    assert {k: v for k, v in hist.items() if v} == expected
    # risk over time: per-bucket average and maximum equal the loaded scores
    by_bucket = {t: (a, m) for t, a, m in data.risk_over_time if a is not None}
    first = loaded[0]
    assert by_bucket[START] == pytest.approx((first["risk_score"], first["risk_score"]), abs=1e-6)
    assert len(by_bucket) == 36


def test_patient_filter_and_limit(settings, es, loaded):
    data = report.collect(es, settings.anomalies_index, START, END, "pat-a", critical_limit=2)
    own = [d for d in loaded if d["patient_id"] == "pat-a"]
    assert data.total == len(own) == 18
    assert data.critical_total == sum(1 for d in own if d["severity"] == "critical") == 6
    assert [c["observation_id"] for c in data.critical] == ["obs-030", "obs-024"]
    assert {c["patient_id"] for c in data.critical} == {"pat-a"}
    other = report.collect(es, settings.anomalies_index, START, END, "pat<b>")
    assert other.total == 18 and other.critical_total == 0


def test_render_html_is_self_contained_with_png_charts(settings, es, loaded):
    data = report.collect(es, settings.anomalies_index, START, END)
    page = report.render_html(data)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    for img in images:
        png = base64.b64decode(img)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    assert "http://" not in page and "https://" not in page and "<script" not in page
    rows = re.findall(r"<tr><td>", page)
    assert len(rows) == 6
    assert '<span id="total">36</span>' in page
    # a hostile id is escaped, not interpreted
    hostile = report.collect(es, settings.anomalies_index, START, END, "pat<b>")
    assert "patient pat&lt;b&gt;" in report.render_html(hostile)
    assert "pat<b>" not in report.render_html(hostile)


def test_cli_writes_the_report(settings, es, loaded, tmp_path, monkeypatch):
    monkeypatch.setenv("BPWATCH_NAMESPACE", settings.namespace)
    monkeypatch.setenv("BPWATCH_ES_URL", settings.es_url)
    out = tmp_path / "report.html"
    argv = ["--out", str(out), "--from", "2025-03-01T00:00Z", "--to", "2025-03-01T03:00Z"]
    assert report.main(argv) == 0
    page = out.read_text()
    assert '<span id="total">18</span>' in page  # the first 3 hours only
    assert page.count("data:image/png;base64,") == 4
    assert report.main(["--out", str(out), "--from", "2025-03-01T03:00Z",
                        "--to", "2025-03-01T00:00Z"]) == 2  # fmt: skip


def _home(patient: str, end: datetime, hypertension: bool) -> dict[str, Any]:
    start = end - timedelta(days=6, hours=13)
    return {
        "patient_id": patient,
        "series_start": utc_iso(start),
        "series_end": utc_iso(end),
        "readings_used": 24,
        "days_used": 6,
        "mean_systolic": 138.4 if hypertension else 121.6,
        "mean_diastolic": 86.0 if hypertension else 74.2,
        "home_hypertension": hypertension,
        "threshold_systolic": 130.0,
        "threshold_diastolic": 80.0,
        "ruleset": "aha2025",
        "origin": "protocol",
        "observation_id": "",
    }


def _alert(episode: str, patient: str, event: str, at: datetime, condition: str = "no_data"):
    tier = "urgent" if patient == "pat-d" else "review"  # pat-d: no_data set to page
    return {
        "alert_id": f"{episode}-{event}",
        "episode_id": episode,
        "patient_id": patient,
        "condition": condition,
        "event": event,
        "severity": "moderate",
        "opened_at": utc_iso(at),
        "event_at": utc_iso(at),
        "observation_ids": [f"last-{patient}"],
        "systolic": 0.0,
        "diastolic": 0.0,
        "risk_score": 0.0,
        "ruleset": "",
        "conditions": [condition],
        "tier": tier,
    }


@pytest.fixture
def home_and_silence(settings, es) -> None:
    d, h = timedelta(days=1), timedelta(hours=1)
    homes = [
        _home("pat-a", START - 8 * d, True),  # ended before the 7-day reach: not shown
        _home("pat-a", START - 2 * d, True),
        _home("pat-a", START + h, False),  # pat-a's latest series
        _home("pat<b>", START + 2 * h, True),
        _home("pat-c", END, False),  # ends at the end of the range: outside
        _home("pat-d", START - 6 * d, False),
    ]
    alerts = [
        _alert("ep1", "pat-a", "opened", START - 2 * d),  # open (before the range)
        _alert("ep2", "pat<b>", "opened", START + h),
        _alert("ep2", "pat<b>", "resolved", START + 3 * h),  # closed in range
        _alert("ep3", "pat-c", "opened", START + 4 * h),  # open
        _alert("ep4", "pat-d", "opened", START - d),
        _alert("ep4", "pat-d", "resolved", END + h),  # resolved only after the range: open
        _alert("ep5", "pat-e", "opened", END + h),  # after the range
        _alert("ep6", "pat-a", "opened", START + h, condition="hypertensive_crisis"),
    ]
    ops: list[dict[str, Any]] = []
    for doc in homes:
        _id = f"{doc['patient_id']}|{doc['series_start']}"
        ops += [{"index": {"_index": settings.home_averages_index, "_id": _id}}, doc]
    for doc in alerts:
        ops += [{"index": {"_index": settings.alerts_index, "_id": doc["alert_id"]}}, doc]
    assert not es.bulk(operations=ops, refresh="wait_for")["errors"]


def test_home_averages_and_no_data_views(settings, es, home_and_silence):
    kw = {"home_index": settings.home_averages_index, "alerts_index": settings.alerts_index}
    data = report.collect(es, settings.anomalies_index, START, END, **kw)
    assert data.total == 0
    home = data.home
    assert (home.series, home.hypertension, home.patients) == (4, 2, 3)
    assert [(x["patient_id"], x["home_hypertension"]) for x in home.latest] == [
        ("pat<b>", True), ("pat-a", False), ("pat-d", False),
    ]  # fmt: skip
    silent = data.no_data
    assert [x["patient_id"] for x in silent.open] == ["pat-c", "pat-d", "pat-a"]
    assert (silent.opened, silent.resolved) == (2, 1)
    assert silent.open[0]["observation_ids"] == ["last-pat-c"]

    one = report.collect(es, settings.anomalies_index, START, END, "pat-d", **kw)
    assert (one.home.series, one.home.hypertension, one.home.patients) == (1, 0, 1)
    assert [x["patient_id"] for x in one.no_data.open] == ["pat-d"]
    assert (one.no_data.opened, one.no_data.resolved) == (0, 0)
    # without the indices the views are left out, as before
    assert report.collect(es, settings.anomalies_index, START, END).home is None


def test_html_shows_the_home_and_no_data_views(settings, es, home_and_silence, tmp_path,
                                               monkeypatch):  # fmt: skip
    monkeypatch.setenv("BPWATCH_NAMESPACE", settings.namespace)
    monkeypatch.setenv("BPWATCH_ES_URL", settings.es_url)
    out = tmp_path / "report.html"
    assert report.main(["--out", str(out), "--from", "2025-03-01T00:00Z",
                        "--to", "2025-03-01T06:00Z"]) == 0  # fmt: skip
    page = out.read_text()
    assert '<span id="home_series">4</span>' in page
    assert '<span id="home_hypertension">2</span>' in page
    assert '<span id="no_data_open">3</span>' in page
    home = page.split('<section id="home">')[1].split("</section>")[0]
    assert home.count("<tr><td>") == 3 and "<td>138.4</td>" in home and "<td>yes</td>" in home
    assert "pat&lt;b&gt;" in home and "pat<b>" not in home
    silent = page.split('<section id="no_data">')[1].split("</section>")[0]
    assert silent.count("<tr><td>") == 3 and "last-pat-c" in silent
    assert "<th>tier</th>" in silent
    assert silent.count("<td>review</td>") == 2 and silent.count("<td>urgent</td>") == 1


def _episode(i: str, patient: str, severity: str, opened: str, **fields: Any) -> dict[str, Any]:
    return {
        "episode_id": i, "patient_id": patient, "condition": "hypertensive_crisis",
        "severity": severity, "tier": "urgent", "status": "open", "opened_at": opened,
        "last_event_at": opened, "resolved_at": None, "acknowledged": False,
        "acknowledged_by": None, "acknowledged_at": None, "ack_note": None, "overdue": False,
        "overdue_at": None, "observation_ids": [f"{i}-obs"], "systolic": 185.0,
        "diastolic": 122.0, "risk_score": 0.6, "ruleset": "aha2025", **fields,
    }  # fmt: skip


ACKED = {"acknowledged": True, "acknowledged_by": "nurse-3",
         "acknowledged_at": "2025-03-01T02:00:00.000Z"}  # fmt: skip
EPISODES = [
    _episode("ep-acked-crit", "pat-a", "critical", "2025-02-01T00:00:00.000Z", **ACKED),
    _episode("ep-high", "pat-a", "high", "2025-02-20T00:00:00.000Z"),
    _episode("ep-over-high", "pat<b>", "high", "2025-02-10T00:00:00.000Z", overdue=True),
    _episode("ep-crit", "pat-c", "critical", "2025-02-25T00:00:00.000Z"),
    _episode("ep-over-crit", "pat-c", "critical", "2025-02-28T00:00:00.000Z", overdue=True),
    # overdue, then acknowledged: an acknowledged episode, not an overdue one
    _episode("ep-acked-over", "pat-d", "moderate", "2025-01-01T00:00:00.000Z", overdue=True,
             **ACKED),
    _episode("ep-closed", "pat-d", "critical", "2025-01-01T00:00:00.000Z", status="resolved",
             resolved_at="2025-01-02T00:00:00.000Z"),
]  # fmt: skip


@pytest.fixture
def worklist(settings, es) -> None:
    ops: list[dict[str, Any]] = []
    for doc in EPISODES:
        ops += [{"index": {"_index": settings.episodes_index, "_id": doc["episode_id"]}}, doc]
    assert not es.bulk(operations=ops, refresh="wait_for")["errors"]


def test_the_worklist_puts_overdue_then_unacknowledged_then_acknowledged(settings, es, worklist):
    view = report.collect_worklist(es, settings.episodes_index, None)
    # overdue and unacknowledged (critical, then high), unacknowledged (critical, then high),
    # acknowledged (critical, then moderate); the resolved episode is not on the list
    assert [(r["episode_id"], r["state"]) for r in view.rows] == [
        ("ep-over-crit", "overdue"), ("ep-over-high", "overdue"),
        ("ep-crit", "unacknowledged"), ("ep-high", "unacknowledged"),
        ("ep-acked-crit", "acknowledged"), ("ep-acked-over", "acknowledged"),
    ]  # fmt: skip
    assert (view.overdue, view.unacknowledged, view.acknowledged, view.total) == (2, 2, 2, 6)
    assert view.rows[4]["acknowledged_by"] == "nurse-3"
    first = report.collect_worklist(es, settings.episodes_index, None, limit=3)
    assert [r["episode_id"] for r in first.rows] == ["ep-over-crit", "ep-over-high", "ep-crit"]
    assert first.total == 6
    one = report.collect_worklist(es, settings.episodes_index, "pat-c")
    assert [r["episode_id"] for r in one.rows] == ["ep-over-crit", "ep-crit"]
    # without the index (a setup before acknowledgements): no view
    assert report.collect_worklist(es, settings.episodes_index + "-none", None) is None


def test_html_shows_the_worklist(settings, es, worklist, tmp_path, monkeypatch):
    monkeypatch.setenv("BPWATCH_NAMESPACE", settings.namespace)
    monkeypatch.setenv("BPWATCH_ES_URL", settings.es_url)
    out = tmp_path / "report.html"
    assert report.main(["--out", str(out), "--from", "2025-03-01T00:00Z",
                        "--to", "2025-03-01T06:00Z"]) == 0  # fmt: skip
    page = out.read_text()
    section = page.split('<section id="worklist">')[1].split("</section>")[0]
    assert '<span id="worklist_open">6</span>' in section
    assert '<span id="worklist_overdue">2</span>' in section
    assert '<span id="worklist_acknowledged">2</span>' in section
    rows = re.findall(r"<tr><td>(\w+)</td><td>([\w-]+)</td>", section)
    assert rows == [
        ("overdue", "ep-over-crit"), ("overdue", "ep-over-high"),
        ("unacknowledged", "ep-crit"), ("unacknowledged", "ep-high"),
        ("acknowledged", "ep-acked-crit"), ("acknowledged", "ep-acked-over"),
    ]  # fmt: skip
    assert section.count("<td>nurse-3</td>") == 2 and "2025-03-01T02:00:00.000Z" in section
    assert "pat&lt;b&gt;" in section and "pat<b>" not in section


def _cycle(patient: str, start: str, reading_days: list[int], **extra: Any) -> dict[str, Any]:
    """A bp-adherence document as the monitor's cycle writes it (``CycleDays.doc``)."""
    from lib.monitor.adherence import CycleDays

    cycle = CycleDays(datetime.fromisoformat(start).date())
    for d in reading_days:
        cycle.add(cycle.start + timedelta(days=d))
    return {**cycle.doc(patient), **extra}


CYCLES = [
    _cycle("pat-a", "2025-01-01", list(range(20))),  # an earlier cycle: not current
    # current (ends on the report's day): on track as of its latest reading (10 + 9), not as
    # of the report's day (10 + 1)
    _cycle("pat-a", "2025-01-31", list(range(11, 21)), program="hypertension"),
    _cycle("pat<b>", "2025-02-15", [0, 5, 13]),  # 3 + 16 days left: on track
    _cycle("pat-c", "2025-02-10", [0], program="postpartum"),  # 1 + 11 days left: behind
    _cycle("pat-d", "2025-02-03", list(range(16))),  # 16_plus
    _cycle("pat-d", "2025-03-05", [0]),  # starts after the report's day: not yet current
]
SEVERE = [
    _episode("ep-sev-conf", "pat-c", "critical", "2025-02-28T00:00:00.000Z",
             condition="severe_range_bp", program="postpartum", confirmed=True),
    _episode("ep-sev-wait", "pat-e", "high", "2025-02-28T00:00:00.000Z",
             condition="severe_range_bp", program="postpartum", confirmed=False),
    _episode("ep-sev-done", "pat-f", "critical", "2025-02-20T00:00:00.000Z",
             condition="severe_range_bp", program="postpartum", confirmed=True,
             status="resolved", resolved_at="2025-02-21T00:00:00.000Z"),
    _episode("ep-crisis", "pat-c", "critical", "2025-02-28T00:00:00.000Z"),
]  # fmt: skip


@pytest.fixture
def adherence(settings, es) -> None:
    from lib.connectors.elastic_months import MONTH_FIELDS, MonthRouter

    router = MonthRouter(settings.adherence_index, MONTH_FIELDS["bp-adherence"])
    ops: list[dict[str, Any]] = []
    for doc in CYCLES:
        _id = f"{doc['patient_id']}|{doc['cycle_start']}"
        ops += [{"index": {"_index": router.index_of(doc), "_id": _id}}, doc]
    for doc in SEVERE:
        ops += [{"index": {"_index": settings.episodes_index, "_id": doc["episode_id"]}}, doc]
    assert not es.bulk(operations=ops, refresh="wait_for")["errors"]


def test_adherence_counts_current_cycles_by_band_and_lists_who_is_behind(settings, es,
                                                                          adherence):  # fmt: skip
    assert [(c["on_track"], c["days_left"]) for c in CYCLES[1:2]] == [(True, 9)]
    view = report.collect_adherence(es, settings.adherence_index, END, None,
                                    settings.episodes_index)  # fmt: skip
    assert view.day.isoformat() == "2025-03-01"
    assert view.bands == {"under_2": 1, "2_to_15": 2, "16_plus": 1} and view.patients == 4
    assert [(r["patient_id"], r["days_left"], r["on_track"]) for r in view.not_on_track] == [
        ("pat-a", 1, False), ("pat-c", 11, False),
    ]  # fmt: skip
    assert view.not_on_track[0]["cycle_start"] == "2025-01-31"
    assert (view.severe_confirmed, view.severe_unconfirmed) == (1, 1)

    one = report.collect_adherence(es, settings.adherence_index, END, "pat-c",
                                   settings.episodes_index)  # fmt: skip
    assert one.bands == {"under_2": 1, "2_to_15": 0, "16_plus": 0}
    assert (one.severe_confirmed, one.severe_unconfirmed) == (1, 0)
    # pages of the composite aggregation: one patient per page gives the same view
    from unittest import mock

    with mock.patch.object(report, "ADHERENCE_PAGE", 1):
        paged = report.collect_adherence(es, settings.adherence_index, END, None)
    assert paged.bands == view.bands and paged.not_on_track == view.not_on_track
    assert paged.severe_confirmed is None  # without the episodes index: no programs line
    assert report.collect_adherence(es, settings.adherence_index + "-none", END, None) is None


def test_html_shows_the_adherence_view(settings, es, adherence, tmp_path, monkeypatch):
    monkeypatch.setenv("BPWATCH_NAMESPACE", settings.namespace)
    monkeypatch.setenv("BPWATCH_ES_URL", settings.es_url)
    out = tmp_path / "report.html"
    assert report.main(["--out", str(out), "--from", "2025-03-01T00:00Z",
                        "--to", "2025-03-01T06:00Z"]) == 0  # fmt: skip
    section = out.read_text().split('<section id="adherence">')[1].split("</section>")[0]
    assert '<span id="adherence_patients">4</span>' in section
    assert '<span id="adherence_2_to_15">2</span>' in section
    assert '<span id="not_on_track">2</span>' in section
    assert '<span id="severe_confirmed">1</span>' in section
    rows = re.findall(r"<tr><td>([^<]*)</td>", section)
    assert rows == ["pat-a", "pat-c"]
    assert "<td>postpartum</td>" in section and "pat&lt;b&gt;" not in section
