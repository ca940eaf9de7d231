"""Execute the Kibana alert rules' searches against the REAL local Elasticsearch.

Kibana cannot run here. ``infra.kibana.setup`` builds the search each rule type runs and reads
the alerts the rule would report from the response, as Kibana's stack rules do. These tests
index alert events made by the monitor's own ``EpisodeTracker`` (default policy: tiers and
confirmation as the monitor runs them) into the namespaced monthly ``bp-alerts`` index, and
anomaly documents for the spike rule, and assert which alerts each rule reports and which it
does not. Each alert of the paging rule is one page (``notify_when: onActionGroupChange``).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.kibana import objects, setup
from lib.connectors.elastic_months import MONTH_FIELDS, MonthRouter
from lib.domain import Assessment, Features, Reading, utc_iso
from lib.monitor.alert_events import _digest
from lib.monitor.alerts import AlertEvent, EpisodeTracker
from lib.monitor.deadlines import DeadlineRule, Deadlines
from lib.monitor.documents import episode_update

pytestmark = pytest.mark.integration

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
URGENT, REVIEW = "bpwatch-urgent-alerts", "bpwatch-review-daily"
OVERDUE = "bpwatch-episode-overdue"

# kind: (systolic, diastolic, category, anomaly_types, severity), an AHA 2017 verdict
KINDS: dict[str, tuple[Any, ...]] = {
    "normal": (118, 76, "normal", (), "low"),
    "stage2": (152, 88, "hypertension_stage_2", ("systolic_hypertension",), "high"),
    "dia2": (128, 96, "hypertension_stage_2", ("diastolic_hypertension",), "high"),
    "crisis": (
        186, 100, "hypertensive_crisis", ("hypertensive_crisis", "systolic_hypertension"),
        "critical",
    ),
    "both_crit": (
        196, 124, "hypertensive_crisis",
        ("hypertensive_crisis", "systolic_hypertension", "diastolic_hypertension"), "critical",
    ),
}  # fmt: skip


def assessment(obs_id: str, patient: str, kind: str, at: datetime) -> Assessment:
    sys, dia, category, types, severity = KINDS[kind]
    reading = Reading(obs_id, patient, at, float(sys), float(dia))
    features = Features(1, sys, dia, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, sys, dia)
    return Assessment(reading, features, category, types, severity, 0.3, "aha2017")


def episode(patient: str, kinds: list[str], start: datetime) -> list[AlertEvent]:
    """The alert events of one patient's readings, five minutes apart."""
    tracker, state, events = EpisodeTracker(), None, []
    for i, kind in enumerate(kinds):
        at = start + timedelta(minutes=5 * i)
        state, out = tracker.step(state, assessment(f"{patient}-{i}", patient, kind, at))
        events += out
    return events


def index_alerts(es: Any, alias: str, events: list[AlertEvent]) -> None:
    """Into the monthly indices the monitor writes (their strict template holds ``tier``)."""
    router = MonthRouter(alias, MONTH_FIELDS["bp-alerts"])
    ops: list[dict[str, Any]] = []
    for e in events:
        doc = e.to_doc()
        ops += [{"index": {"_index": router.index_of(doc), "_id": e.alert_id}}, doc]
    result = es.bulk(operations=ops, refresh="wait_for")
    assert not result["errors"], result


def alerts(es: Any, rule: dict[str, Any], now: datetime = NOW) -> dict[str, int]:
    """``{Kibana alert id: document count}`` the rule reports when it runs at ``now``."""
    body = setup.es_query_search(rule, now)
    group = body.get("aggs", {}).get("groupAgg", {})
    if "conditionSelector" in group.get("aggs", {}) and not runs_bucket_selector(es):
        # es_query_groups applies the selector's condition to each group's count
        del group["aggs"]["conditionSelector"]
    result = es.search(index=",".join(rule["params"]["index"]), **body)
    return setup.es_query_groups(rule, result)


def runs_bucket_selector(es: Any) -> bool:
    """Kibana's groups filter with a ``bucket_selector`` (module ``aggregations``) and a
    Painless script (``lang-painless``), in every distribution Kibana runs against; the
    integ-test build of ``make services`` has neither module."""
    nodes = es.nodes.info(metric="plugins")["nodes"].values()
    wanted = {"aggregations", "lang-painless"}
    return all(wanted <= {m["name"] for m in node["modules"]} for node in nodes)


def by_event(events: list[AlertEvent]) -> dict[tuple[str, str], AlertEvent]:
    return {(e.event, e.tier): e for e in events}


@pytest.fixture
def episodes(settings, es) -> dict[str, list[AlertEvent]]:
    """Four patients' episodes within the paging rule's hour, and one from before it."""
    start = NOW - timedelta(minutes=40)
    made = {
        # a crisis opens as review; the confirming reading escalates it to urgent
        "crisis": episode("pat-crisis", ["crisis", "crisis"] + ["normal"] * 3, start),
        # combined critical pages at once
        "combined": episode("pat-combined", ["both_crit"] + ["normal"] * 3, start),
        # stage 2 is review only
        "stage2": episode("pat-stage2", ["stage2", "stage2"] + ["normal"] * 3, start),
        "dia2": episode("pat-dia2", ["dia2"], start + timedelta(minutes=1)),
        # an urgent opening 2 hours ago: paged then, outside the window now
        "earlier": episode("pat-earlier", ["both_crit"], NOW - timedelta(hours=2)),
    }
    assert [(e.event, e.tier) for e in made["crisis"]] == [
        ("opened", "review"), ("escalated", "urgent"), ("resolved", "urgent"),
    ]  # fmt: skip
    assert [(e.event, e.tier) for e in made["combined"]] == [
        ("opened", "urgent"), ("resolved", "urgent"),
    ]  # fmt: skip
    assert [(e.event, e.tier) for e in made["stage2"]] == [
        ("opened", "review"), ("resolved", "review"),
    ]  # fmt: skip
    assert [(e.event, e.tier) for e in made["dia2"]] == [("opened", "review")]
    index_alerts(es, settings.alerts_index, [e for events in made.values() for e in events])
    return made


def test_urgent_rule_pages_once_per_urgent_opening_or_escalation(settings, es, episodes):
    rule = setup.rule_by_id(URGENT, settings.namespace)
    crisis, combined = by_event(episodes["crisis"]), by_event(episodes["combined"])
    paged = alerts(es, rule)
    assert paged == {
        combined["opened", "urgent"].alert_id: 1,
        crisis["escalated", "urgent"].alert_id: 1,
    }
    # not paged: review openings (stage 2, diastolic, an unconfirmed crisis), resolutions of
    # urgent and review episodes, and the urgent opening before the window
    not_paged = {
        crisis["opened", "review"].alert_id,
        crisis["resolved", "urgent"].alert_id,
        combined["resolved", "urgent"].alert_id,
        *(e.alert_id for e in episodes["stage2"] + episodes["dia2"] + episodes["earlier"]),
    }
    assert len(not_paged) == 7 and not not_paged & set(paged)


def test_urgent_rule_alert_ids_are_stable_across_runs_and_replays(settings, es, episodes):
    """The same events give the same Kibana alerts a minute later (still active: no new
    page), a replayed document adds none, and each leaves once out of the window."""
    rule = setup.rule_by_id(URGENT, settings.namespace)
    first = alerts(es, rule)
    index_alerts(es, settings.alerts_index, episodes["combined"])  # a replay, same _id
    assert alerts(es, rule, NOW + timedelta(minutes=1)) == first
    opened = by_event(episodes["combined"])["opened", "urgent"]
    window = timedelta(minutes=rule["params"]["timeWindowSize"])
    later = alerts(es, rule, opened.event_at + window + timedelta(minutes=1))
    assert opened.alert_id not in later and later  # the escalation is 5 minutes younger


def test_two_urgent_events_in_one_minute_are_two_pages(settings, es):
    rule = setup.rule_by_id(URGENT, settings.namespace)
    at = NOW - timedelta(seconds=30)
    events = episode("pat-x", ["both_crit"], at) + episode("pat-y", ["both_crit"], at)
    index_alerts(es, settings.alerts_index, events)
    assert alerts(es, rule) == {e.alert_id: 1 for e in events}


def test_an_urgent_event_older_than_the_window_when_indexed_is_not_paged(settings, es):
    """The rule's clock is ``event_at``: an urgent event that reaches Elasticsearch more than
    the window after its reading was taken is not paged by Kibana (docs/kibana.md)."""
    rule = setup.rule_by_id(URGENT, settings.namespace)
    window = timedelta(minutes=rule["params"]["timeWindowSize"])
    late = episode("pat-late", ["both_crit"], NOW - window - timedelta(minutes=1))
    index_alerts(es, settings.alerts_index, late)
    assert alerts(es, rule) == {}
    assert alerts(es, rule, NOW - timedelta(minutes=2)) == {late[0].alert_id: 1}


def test_review_rule_counts_review_openings_per_condition(settings, es, episodes):
    rule = setup.rule_by_id(REVIEW, settings.namespace)
    assert alerts(es, rule) == {
        "hypertensive_crisis": 1,  # opened as review, then paged by its escalation
        "systolic_hypertension": 1,
        "diastolic_hypertension": 1,
    }
    assert alerts(es, rule, NOW + timedelta(days=2)) == {}


def test_anomaly_spike_rule_fires_on_a_burst_only(settings, es):
    rule = setup.rule_by_id("bpwatch-anomaly-spike", settings.namespace)
    threshold = rule["params"]["threshold"][0]
    quiet_start = NOW - timedelta(hours=2)
    # a burst: threshold + 5 anomalies within the last 10 minutes (event time), and a quiet
    # period of one anomaly a minute, 10 per window
    times = [NOW - timedelta(seconds=20 * i + 1) for i in range(threshold + 5)]
    times += [quiet_start - timedelta(minutes=i) for i in range(30)]
    ops: list[dict[str, Any]] = []
    for i, at in enumerate(times):
        a = assessment(f"obs-{i}", f"pat-{i % 7}", "stage2", at)
        ops += [{"index": {"_index": settings.anomalies_index, "_id": f"obs-{i}"}},
                anomaly_doc(a, NOW - timedelta(hours=1))]  # fmt: skip
    assert not es.bulk(operations=ops, refresh="wait_for")["errors"]

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


def anomaly_doc(a: Assessment, ingested_at: datetime) -> dict[str, Any]:
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


def test_alert_events_fit_the_strict_alerts_template(settings, es, episodes):
    """The monitor's alert documents, ``tier`` included, index into both the alias's first
    index and its monthly indices (strict mappings), and a replay overwrites by ``_id``."""
    events = [e for made in episodes.values() for e in made]
    ops: list[dict[str, Any]] = []
    for e in events:  # the alias's write index (-v1), beside the monthly copies
        ops += [{"index": {"_index": settings.alerts_index, "_id": e.alert_id}}, e.to_doc()]
    result = es.bulk(operations=ops, refresh="wait_for")
    assert not result["errors"], result
    index_alerts(es, settings.alerts_index, events)  # a replay
    assert es.count(index=settings.alerts_index)["count"] == 2 * len(events)
    mapping = es.indices.get_mapping(index=f"{settings.alerts_index}-{NOW:%Y.%m}")
    (props,) = [m["mappings"]["properties"] for m in mapping.values()]
    assert props["tier"] == {"type": "keyword"}
    by_tier = es.search(
        index=settings.alerts_index,
        size=0,
        query={"term": {"_index": f"{settings.alerts_index}-{NOW:%Y.%m}"}},
        aggs={"t": {"terms": {"field": "tier"}}},
    )["aggregations"]["t"]["buckets"]
    tiers = [e.tier for e in events]
    assert {b["key"]: b["doc_count"] for b in by_tier} == {
        "urgent": tiers.count("urgent"),
        "review": tiers.count("review"),
    }


# ----------------------------------------------------------------------------- alert loop
DEADLINE = DeadlineRule(deadline_s=15 * 60.0, settle_s=0.0, lookback_s=365 * 86400.0)


def overdue(events: list[AlertEvent]) -> list[AlertEvent]:
    """The ``overdue`` events the monitor's deadlines give when none of ``events`` is
    acknowledged: each arming event, emitted at its reading's time, is overdue at + 15 min."""
    out = []
    for e in events:
        deadlines = Deadlines()
        at = e.event_at.timestamp()
        deadlines.follow(DEADLINE, [e], at)
        out += deadlines.fire(DEADLINE, at + DEADLINE.deadline_s)
    return out


def acknowledged(e: AlertEvent, by: str, at: datetime) -> AlertEvent:
    """An ``acknowledged`` event of ``e``'s episode (docs/contract.md, the alert loop)."""
    return replace(
        e, alert_id=_digest(e.episode_id, "acknowledged", e.severity), event="acknowledged",
        event_at=at, acknowledged_by=by, acknowledged_at=at, observation_ids=(), systolic=0.0,
        diastolic=0.0, risk_score=0.0,
    )  # fmt: skip


def test_overdue_rule_pages_once_per_overdue_event(settings, es):
    """Urgent and review openings at critical severity that nobody acknowledged become
    overdue 15 minutes later; each overdue event is one page, an acknowledged or older one is
    not, and the urgent rule does not page them again."""
    rule = setup.rule_by_id(OVERDUE, settings.namespace)
    start = NOW - timedelta(minutes=40)
    combined = episode("pat-ov1", ["both_crit"], start)  # critical, urgent
    crisis = episode("pat-ov2", ["crisis"], start + timedelta(minutes=1))  # critical, review
    stage2 = episode("pat-ov3", ["stage2"], start)  # high: no deadline
    acked = episode("pat-ov4", ["both_crit"], start)
    earlier = episode("pat-ov5", ["both_crit"], NOW - timedelta(hours=3))
    due = overdue(combined + crisis + stage2 + earlier)
    assert [(e.patient_id, e.event, e.severity) for e in due] == [
        ("pat-ov1", "overdue", "critical"), ("pat-ov2", "overdue", "critical"),
        ("pat-ov5", "overdue", "critical"),
    ]  # fmt: skip
    assert due[0].overdue_minutes == 15.0
    ack = acknowledged(acked[0], "nurse-7", acked[0].event_at + timedelta(minutes=3))
    index_alerts(es, settings.alerts_index, combined + crisis + stage2 + acked + earlier)
    index_alerts(es, settings.alerts_index, [*due, ack])
    assert alerts(es, rule) == {due[0].alert_id: 1, due[1].alert_id: 1}
    urgent = alerts(es, setup.rule_by_id(URGENT, settings.namespace))
    assert not {e.alert_id for e in due} & set(urgent)
    assert urgent == {combined[0].alert_id: 1, acked[0].alert_id: 1}


def worklist_search(namespace: str) -> dict[str, Any]:
    """The saved search's query and sort as the Elasticsearch search Discover runs: its one
    KQL clause ``field : "value"`` is a match_phrase; its sort is field order by field."""
    search = objects.worklist(namespace)
    source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    ((field, value),) = re.findall(r'^(\w+) : "([^"]*)"$', source["query"]["query"])
    return {
        "query": {"bool": {"filter": [{"match_phrase": {field: value}}]}},
        "sort": [{f: {"order": d}} for f, d in search["attributes"]["sort"]],
        "size": 100,
    }


def test_worklist_orders_open_episodes_overdue_then_unacknowledged(settings, es):
    """The monitor's bp-episodes documents, searched as the dashboard's worklist: overdue
    first, then unacknowledged (critical before high, oldest first), then acknowledged; a
    resolved episode is not listed, whenever it was opened."""
    days_ago = NOW - timedelta(days=9)  # older than any dashboard time range
    made = {
        "overdue": episode("pat-w1", ["both_crit"], NOW - timedelta(minutes=50)),
        "critical": episode("pat-w2", ["both_crit"], NOW - timedelta(minutes=5)),
        "high_old": episode("pat-w3", ["stage2"], days_ago),
        "high_new": episode("pat-w4", ["stage2"], NOW - timedelta(hours=2)),
        "acked": episode("pat-w5", ["both_crit"], NOW - timedelta(hours=3)),
        "resolved": episode("pat-w6", ["stage2"] + ["normal"] * 3, NOW - timedelta(hours=4)),
    }
    events = [e for made_events in made.values() for e in made_events]
    events += overdue(made["overdue"])
    first = made["acked"][0]
    events.append(acknowledged(first, "nurse-7", first.event_at + timedelta(minutes=2)))
    ops: list[dict[str, Any]] = []
    for e in sorted(events, key=lambda e: e.event_at):  # event order, as the monitor writes
        _, (_, episode_id, part) = episode_update(e)
        ops += [{"update": {"_index": settings.episodes_index, "_id": episode_id}},
                {"doc": part, "doc_as_upsert": True}]  # fmt: skip
    result = es.bulk(operations=ops, refresh="wait_for")
    assert not result["errors"], result
    hits = es.search(index=f"{settings.namespace}-bp-episodes*", **worklist_search(
        settings.namespace))["hits"]["hits"]  # fmt: skip
    rows = [h["_source"] for h in hits]
    assert [r["patient_id"] for r in rows] == ["pat-w1", "pat-w2", "pat-w3", "pat-w4", "pat-w5"]
    assert [(r["overdue"], r["acknowledged"], r["severity"]) for r in rows] == [
        (True, False, "critical"), (False, False, "critical"), (False, False, "high"),
        (False, False, "high"), (False, True, "critical"),
    ]  # fmt: skip
    assert rows[-1]["acknowledged_by"] == "nurse-7"
    columns = objects.worklist()["attributes"]["columns"]
    assert all(column in row for row in rows for column in columns)


def kql_search(query: str) -> dict[str, Any]:
    """The query of a KQL conjunction as Kibana's ``toElasticsearchQuery`` builds it
    (src/platform/packages/shared/kbn-es-query/src/kuery/functions/{is,range,and}.ts): an
    unquoted ``field : value`` is a ``match``, a quoted one a ``match_phrase``, ``field >= v``
    a ``range`` whose date math Elasticsearch resolves (the browser's time zone left out)."""
    ops = {"<=": "lte", ">=": "gte", "<": "lt", ">": "gt"}
    clauses = []
    for part in query.split(" and "):
        field, op, value = re.fullmatch(r'(\w+) (:|<=|>=|<|>) ("[^"]*"|\w+)', part).groups()
        quoted, value = value.startswith('"'), value.strip('"')
        if op == ":":
            kind = "match_phrase" if quoted else "match"
            clauses.append({kind: {field: value}})
        else:
            clauses.append({"range": {field: {ops[op]: value}}})
    return {"bool": {"filter": clauses}}


def test_adherence_panels_find_the_current_cycles_and_who_is_not_on_track(settings, es):
    """``bp-adherence`` documents made by the monitor's own cycle (``CycleDays.doc``), dated
    around today: the bar's query and aggregation count the patients of the current cycles by
    band; the saved search lists the current cycles not on track, fewest days left first,
    and leaves out an ended cycle."""
    from lib.monitor.adherence import CycleDays

    today = datetime.now(UTC).date()

    def cycle(patient: str, started_days_ago: int, reading_days: list[int]) -> dict[str, Any]:
        days = CycleDays(today - timedelta(days=started_days_ago))
        for d in reading_days:
            days.add(days.start + timedelta(days=d))
        return days.doc(patient)

    docs = [
        cycle("pat-a", 25, [20]),  # 1 day, 9 left: not on track (under_2)
        cycle("pat-b", 28, [25, 26]),  # 2 days, 3 left: not on track (2_to_15)
        cycle("pat-c", 5, [0, 1, 2, 3, 4]),  # 5 days, 25 left: on track
        cycle("pat-d", 60, [29]),  # an ended cycle, not on track: not current
        cycle("pat-e", 29, list(range(16))),  # ends today, 16 days: 16_plus
    ]
    assert [(d["on_track"], d["days_left"]) for d in docs[:2]] == [(False, 9), (False, 3)]
    alias = settings.adherence_index
    router = MonthRouter(alias, MONTH_FIELDS["bp-adherence"])
    ops: list[dict[str, Any]] = []
    for doc in docs:
        _id = f"{doc['patient_id']}|{doc['cycle_start']}"
        ops += [{"index": {"_index": router.index_of(doc), "_id": _id}}, doc]
    result = es.bulk(operations=ops, refresh="wait_for")
    assert not result["errors"], result
    pattern = f"{settings.namespace}-bp-adherence*"

    search = objects.not_on_track(settings.namespace)
    source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    hits = es.search(
        index=pattern,
        query=kql_search(source["query"]["query"]),
        sort=[{f: {"order": d}} for f, d in search["attributes"]["sort"]],
    )["hits"]["hits"]
    assert [h["_source"]["patient_id"] for h in hits] == ["pat-b", "pat-a"]
    columns = search["attributes"]["columns"]
    assert all(c in h["_source"] for h in hits for c in columns if c != "program")

    (bar,) = [o for o in objects.lens_objects() if o["id"] == "bpwatch-adherence-bands"]
    query = bar["attributes"]["state"]["query"]["query"]
    res = es.search(
        index=pattern,
        query=kql_search(query),
        size=0,
        aggs={"band": {"terms": {"field": "band", "size": 3},
                       "aggs": {"patients": {"cardinality": {"field": "patient_id"}}}}},
    )  # fmt: skip
    got = {b["key"]: b["patients"]["value"] for b in res["aggregations"]["band"]["buckets"]}
    assert got == {"under_2": 1, "2_to_15": 2, "16_plus": 1}
