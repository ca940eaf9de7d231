"""Execute the Kibana alert rules' searches against the REAL local Elasticsearch.

Kibana cannot run here. ``infra.kibana.setup`` builds the search each rule type runs (the
``.es-query`` DSL inside its time window; the ``.index-threshold`` count aggregation); these
tests load known anomaly documents into a namespaced ``bp-anomalies`` index and assert which
documents each rule sees and which it does not. The combined-critical rule is also checked
for agreement with ``lib.monitor.alerts.conditions_of`` (the real-time alert path).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.kibana import setup
from lib.domain import Assessment, Features, Reading, utc_iso
from lib.monitor.alerts import EpisodeTracker, conditions_of

pytestmark = pytest.mark.integration

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RECENT = NOW - timedelta(minutes=2)  # inside the 5-minute window of the case rules
OLD = NOW - timedelta(minutes=20)  # outside it

# name: (systolic, diastolic, category, anomaly_types, severity, risk, ruleset)
CASES: dict[str, tuple[Any, ...]] = {
    "sys_stage2": (
        152, 88, "hypertension_stage_2", ("systolic_hypertension",), "high", 0.3, "aha2017",
    ),
    "dia_stage2": (
        128, 94, "hypertension_stage_2", ("diastolic_hypertension",), "high", 0.3, "aha2017",
    ),
    "both_stage2": (
        156, 98, "hypertension_stage_2", ("systolic_hypertension", "diastolic_hypertension"),
        "high", 0.4, "aha2017",
    ),
    "crisis_low_risk": (
        186, 100, "hypertensive_crisis", ("hypertensive_crisis", "systolic_hypertension"),
        "critical", 0.5, "aha2017",
    ),
    "crisis_high_risk": (
        184, 104, "hypertensive_crisis", ("hypertensive_crisis", "systolic_hypertension"),
        "critical", 0.91, "aha2017",
    ),
    "both_critical_aha": (
        196, 124, "hypertensive_crisis",
        ("hypertensive_crisis", "systolic_hypertension", "diastolic_hypertension"),
        "critical", 0.6, "aha2017",
    ),
    "esh_182_112": (
        182, 112, "hypertensive_crisis",
        ("hypertensive_crisis", "systolic_hypertension", "diastolic_hypertension"),
        "critical", 0.6, "esh2023",
    ),
    "aha_182_112": (
        182, 112, "hypertensive_crisis",
        ("hypertensive_crisis", "systolic_hypertension", "diastolic_hypertension"),
        "critical", 0.6, "aha2017",
    ),
    "hypotension": (82, 50, "hypotension", ("hypotension",), "high", 0.7, "aha2017"),
}  # fmt: skip


def assessment(obs_id: str, case: str, effective_at: datetime) -> Assessment:
    sys, dia, category, types, severity, risk, ruleset = CASES[case]
    reading = Reading(obs_id, f"pat-{case}", effective_at, float(sys), float(dia))
    features = Features(1, sys, dia, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, sys, dia)
    return Assessment(reading, features, category, types, severity, risk, ruleset)


def doc(a: Assessment, ingested_at: datetime) -> dict[str, Any]:
    r = a.reading
    return {
        "observation_id": r.observation_id,
        "patient_id": r.patient_id,
        "effective_at": utc_iso(r.effective_at),
        "ingested_at": utc_iso(ingested_at),
        "systolic": r.systolic,
        "diastolic": r.diastolic,
        "category": a.category,
        "anomaly_types": list(a.anomaly_types),
        "severity": a.severity,
        "risk_score": a.risk_score,
        "ruleset": a.ruleset,
    }


def load(es: Any, index: str, docs: list[dict[str, Any]]) -> None:
    ops: list[dict[str, Any]] = []
    for d in docs:
        ops += [{"index": {"_index": index, "_id": d["observation_id"]}}, d]
    result = es.bulk(operations=ops, refresh="wait_for")
    assert not result["errors"], result


@pytest.fixture
def case_docs(settings, es) -> dict[str, Assessment]:
    """Each case twice: a recent copy (ingested 2 min ago) and an old one (20 min ago)."""
    event_time = NOW - timedelta(hours=3)  # far from the spike rule's window
    assessments = {}
    docs = []
    for case in CASES:
        for age, ingested in (("recent", RECENT), ("old", OLD)):
            a = assessment(f"{case}-{age}", case, event_time)
            assessments[a.reading.observation_id] = a
            docs.append(doc(a, ingested))
    load(es, settings.anomalies_index, docs)
    return assessments


def hits(es: Any, rule: dict[str, Any], **kw: Any) -> set[str]:
    body = setup.es_query_search(rule, NOW, **kw)
    result = es.search(index=",".join(rule["params"]["index"]), **body)
    ids = {h["_source"]["observation_id"] for h in result["hits"]["hits"]}
    assert result["hits"]["total"]["value"] == len(ids) <= rule["params"]["size"]
    return ids


def test_systolic_rule_sees_recent_systolic_hypertension_only(settings, es, case_docs):
    rule = setup.rule_by_id("bpwatch-systolic-hypertension", settings.namespace)
    seen = hits(es, rule)
    expected = {f"{c}-recent" for c, spec in CASES.items() if "systolic_hypertension" in spec[3]}
    assert seen == expected
    assert "dia_stage2-recent" not in seen and "hypotension-recent" not in seen
    assert not {s for s in seen if s.endswith("-old")}
    assert setup.threshold_met(rule, len(seen))


def test_diastolic_rule_sees_recent_diastolic_hypertension_only(settings, es, case_docs):
    rule = setup.rule_by_id("bpwatch-diastolic-hypertension", settings.namespace)
    seen = hits(es, rule)
    assert seen == {
        "dia_stage2-recent",
        "both_stage2-recent",
        "both_critical_aha-recent",
        "esh_182_112-recent",
        "aha_182_112-recent",
    }


def test_combined_critical_rule_matches_the_realtime_alert_definition(settings, es, case_docs):
    rule = setup.rule_by_id("bpwatch-combined-critical", settings.namespace)
    seen = hits(es, rule)
    assert seen == {"crisis_high_risk-recent", "both_critical_aha-recent", "esh_182_112-recent"}
    # the very same cases lib.monitor.alerts would page as combined_critical
    policy = EpisodeTracker().policy
    agreed = {
        oid
        for oid, a in case_docs.items()
        if oid.endswith("-recent") and "combined_critical" in conditions_of(a, policy)
    }
    assert seen == agreed
    assert "aha_182_112-recent" not in seen  # AHA needs diastolic >= 120
    assert "crisis_low_risk-recent" not in seen


def test_exclude_hits_from_previous_run(settings, es, case_docs):
    rule = setup.rule_by_id("bpwatch-systolic-hypertension", settings.namespace)
    assert hits(es, rule)
    # the previous run's newest hit was ingested at RECENT: nothing new since then
    assert hits(es, rule, previous_latest=RECENT) == set()
    a = assessment("late-arrival", "sys_stage2", NOW - timedelta(hours=1))
    load(es, settings.anomalies_index, [doc(a, NOW - timedelta(seconds=30))])
    assert hits(es, rule, previous_latest=RECENT) == {"late-arrival"}
    assert not setup.threshold_met(rule, len(hits(es, rule, previous_latest=NOW)))


def test_anomaly_spike_rule_fires_on_a_burst_only(settings, es):
    rule = setup.rule_by_id("bpwatch-anomaly-spike", settings.namespace)
    threshold = rule["params"]["threshold"][0]
    quiet_start = NOW - timedelta(hours=2)
    docs = []
    # a burst: threshold + 5 anomalies within the last 10 minutes (event time)
    for i in range(threshold + 5):
        a = assessment(f"burst-{i}", "sys_stage2", NOW - timedelta(seconds=20 * i + 1))
        docs.append(doc(a, NOW - timedelta(hours=1)))
    # a quiet period: one anomaly a minute, 10 per window
    for i in range(30):
        a = assessment(f"quiet-{i}", "dia_stage2", quiet_start - timedelta(minutes=i))
        docs.append(doc(a, NOW - timedelta(hours=1)))
    load(es, settings.anomalies_index, docs)

    def count_at(now: datetime) -> int:
        body = setup.index_threshold_search(rule, now)
        result = es.search(index=",".join(rule["params"]["index"]), **body)
        (bucket,) = result["aggregations"]["dateAgg"]["buckets"]
        return bucket["doc_count"]

    assert count_at(NOW) == threshold + 5
    assert setup.threshold_met(rule, count_at(NOW))
    quiet = count_at(quiet_start)
    assert 0 < quiet <= 11
    assert not setup.threshold_met(rule, quiet)


def test_alert_events_fit_the_strict_alerts_template(settings, es):
    """The real-time alert documents index cleanly into bp-alerts (strict mapping)."""
    tracker = EpisodeTracker()
    state = None
    events = []
    kinds = ["sys_stage2", "crisis_low_risk", "both_critical_aha"]
    for i, case in enumerate(kinds + ["hypotension"] * 3):
        a = assessment(f"obs-{i}", case, NOW + timedelta(minutes=10 * i))
        a = Assessment(
            Reading(a.reading.observation_id, "pat-1", a.reading.effective_at,
                    a.reading.systolic, a.reading.diastolic),
            a.features, a.category, a.anomaly_types, a.severity, a.risk_score, a.ruleset,
        )  # fmt: skip
        state, out = tracker.step(state, a)
        events += out
    assert [e.event for e in events] == ["opened", "escalated", "escalated", "opened", "resolved"]
    ops: list[dict[str, Any]] = []
    for e in events + events:  # twice: a replay overwrites by _id
        ops += [{"index": {"_index": settings.alerts_index, "_id": e.alert_id}}, e.to_doc()]
    result = es.bulk(operations=ops, refresh="wait_for")
    assert not result["errors"], result
    assert es.count(index=settings.alerts_index)["count"] == len(events)
    by_condition = es.search(
        index=settings.alerts_index,
        size=0,
        aggs={"c": {"terms": {"field": "condition"}}},
    )["aggregations"]["c"]["buckets"]
    assert {b["key"]: b["doc_count"] for b in by_condition} == {
        "systolic_hypertension": 1,
        "hypertensive_crisis": 1,
        "combined_critical": 2,
        "hypotension": 1,
    }
