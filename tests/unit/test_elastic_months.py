"""Monthly indices and their ILM policy (lib.connectors.elastic_months).

The local Elasticsearch (integ-test zip) has no ILM module, so the policy cannot be put there;
these tests hold the bodies to the rules Elasticsearch applies, taken from its source
(elastic/elasticsearch, paths below), and the integration tests run the monthly indices
themselves on the real Elasticsearch."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import replace

import pytest

from lib.connectors.elastic_months import (
    MONTH_FIELDS,
    MonthRouter,
    monthly_template,
    policy_body,
    policy_name,
)
from lib.settings import Settings
from lib.tools import admin

# x-pack/plugin/core/src/main/java/org/elasticsearch/xpack/core/ilm/TimeseriesLifecycleType.java:
# ORDERED_VALID_PHASES and the actions each phase allows (ALLOWED_ACTIONS); min_age must not
# decrease from one phase to the next (validateMonotonicallyIncreasingPhaseTimings)
PHASES = ("hot", "warm", "cold", "frozen", "delete")
DELETE_ACTIONS = {"wait_for_snapshot", "delete"}
HOT_ACTIONS = {"set_priority", "unfollow", "rollover", "readonly", "downsample", "shrink",
               "forcemerge", "searchable_snapshot"}  # fmt: skip
# libs/core/src/main/java/org/elasticsearch/core/TimeValue.java (parseTimeValue): a number and
# one of these units
TIME_VALUE = re.compile(r"^\d+(nanos|micros|ms|s|m|h|d)$")
_UNIT_S = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: str) -> float:
    number, unit = re.match(r"^(\d+)([a-z]+)$", value).groups()  # type: ignore[union-attr]
    return int(number) * _UNIT_S[unit]


@pytest.mark.parametrize("days", [0, 1, 90, 365.5, 2555])
def test_the_policy_follows_the_timeseries_lifecycle_rules(days):
    body = policy_body(days)
    phases = body["phases"]
    assert list(phases) == [p for p in PHASES if p in phases]
    assert set(phases["hot"]["actions"]) <= HOT_ACTIONS
    ages = [_seconds(p["min_age"]) for p in phases.values()]
    assert all(TIME_VALUE.match(p["min_age"]) for p in phases.values())
    assert ages == sorted(ages)
    if days == 0:
        assert "delete" not in phases  # kept: nothing is ever deleted
    else:
        assert set(phases["delete"]["actions"]) <= DELETE_ACTIONS
        # a month's index is created at its first write: a document of the month's last day
        # is kept at least `days` days
        kept = _seconds(phases["delete"]["min_age"]) / 86400
        assert days + 31 - 1 / 24 <= kept <= days + 31 + 1 / 24


def test_monthly_indices_are_named_by_the_document_time_and_recognised():
    anomalies = MonthRouter("ward7-bp-anomalies", MONTH_FIELDS["bp-anomalies"])
    doc = {"effective_at": "2026-12-31T23:59:59.999Z"}
    assert anomalies.index_of(doc) == "ward7-bp-anomalies-2026.12"
    assert anomalies.index_of({"effective_at": "2027-01-01T00:00:00Z"}) == (
        "ward7-bp-anomalies-2027.01"
    )
    assert anomalies.is_monthly("ward7-bp-anomalies-2026.12")
    for other in ("ward7-bp-anomalies-v1", "ward7-bp-anomalies", "bp-anomalies-2026.12",
                  "ward7-bp-anomalies-2026.12-x", "ward7-bp-alerts-2026.12"):  # fmt: skip
        assert not anomalies.is_monthly(other), other
    with pytest.raises(ValueError, match="effective_at"):
        anomalies.index_of({"effective_at": 1_767_225_599})


def test_the_monthly_template_matches_its_own_months_only_and_outranks_the_shared_one():
    """server/src/main/java/org/elasticsearch/cluster/metadata/MetadataIndexTemplateService.java
    (findConflictingV2Templates): two templates whose patterns overlap must differ in
    priority, and the higher one alone applies; an index matching none gets no mappings."""
    bodies = admin.template_bodies()
    settings = replace(Settings(), namespace="ward7")
    monthly = {}
    for i, base in enumerate(sorted(MONTH_FIELDS)):
        alias = settings.index(base)
        monthly[base] = monthly_template(alias, bodies[base], 300 + i)
    shared_priorities = {b["priority"] for b in bodies.values()}
    for base, tpl in monthly.items():
        alias = settings.index(base)
        (pattern,) = tpl["index_patterns"]
        assert fnmatch.fnmatchcase(f"{alias}-2026.12", pattern)
        assert not fnmatch.fnmatchcase(f"{alias}-v1", pattern)
        assert not fnmatch.fnmatchcase(f"x{alias}-2026.12", pattern)
        assert tpl["priority"] not in shared_priorities
        # the index is read through the alias and follows the alias's policy
        assert tpl["template"]["aliases"] == {alias: {}}
        assert tpl["template"]["settings"]["index.lifecycle.name"] == policy_name(alias)
        assert tpl["template"]["mappings"] == bodies[base]["template"]["mappings"]
    assert len({t["priority"] for t in monthly.values()}) == len(monthly)


def test_retention_settings_choose_each_policy():
    s = replace(Settings(), anomalies_retention_days=730, alerts_retention_days=365)
    assert admin.retention_days(s, "bp-anomalies") == 730
    assert admin.retention_days(s, "bp-alerts") == 365
    assert admin.retention_days(s, "bp-home-averages") == 0
    assert admin.retention_days(s, "bp-adherence") == 0
    env = Settings.from_env({"BPWATCH_ADHERENCE_RETENTION_DAYS": "1095"})
    assert admin.retention_days(env, "bp-adherence") == 1095


def test_bp_adherence_is_monthly_by_cycle_start_with_a_strict_mapping():
    """One document per patient and cycle (docs/contract.md, ``bp-adherence``); its month is
    the month of ``cycle_start``, a date without a time."""
    bodies = admin.template_bodies()
    assert admin.is_monthly("bp-adherence") and MONTH_FIELDS["bp-adherence"] == "cycle_start"
    mappings = bodies["bp-adherence"]["template"]["mappings"]
    assert mappings["dynamic"] == "strict"
    types = {name: spec["type"] for name, spec in mappings["properties"].items()}
    assert types == {
        **dict.fromkeys(("patient_id", "band", "program"), "keyword"),
        **dict.fromkeys(("cycle_start", "cycle_end", "last_reading_date"), "date"),
        **dict.fromkeys(("days_with_readings", "days_left"), "integer"),
        "on_track": "boolean",
    }
    router = MonthRouter("ward7-bp-adherence", MONTH_FIELDS["bp-adherence"])
    assert router.index_of({"cycle_start": "2026-01-31"}) == "ward7-bp-adherence-2026.01"


def test_the_program_fields_reach_every_template_they_belong_to():
    """Programs (docs/contract.md): ``program`` and ``program_band`` on anomalies, ``program``,
    ``confirmed`` and ``confirmation`` on alert events, ``program`` and ``confirmed`` on
    episodes; strict mappings would refuse them otherwise."""
    bodies = admin.template_bodies()

    def types(base: str) -> dict[str, str]:
        props = bodies[base]["template"]["mappings"]["properties"]
        return {name: spec["type"] for name, spec in props.items()}

    assert {k: types("bp-anomalies")[k] for k in ("program", "program_band")} == {
        "program": "keyword", "program_band": "keyword",
    }  # fmt: skip
    assert {k: types("bp-alerts")[k] for k in ("program", "confirmed", "confirmation")} == {
        "program": "keyword", "confirmed": "boolean", "confirmation": "keyword",
    }  # fmt: skip
    assert {k: types("bp-episodes")[k] for k in ("program", "confirmed")} == {
        "program": "keyword", "confirmed": "boolean",
    }  # fmt: skip


def test_bp_episodes_is_one_index_behind_its_alias_not_monthly():
    """An episode's document is updated for as long as the episode lasts, across months:
    ``bp-episodes`` has a strict template but no monthly template and no ILM policy."""
    bodies = admin.template_bodies()
    assert "bp-episodes" in bodies and not admin.is_monthly("bp-episodes")
    assert all(admin.is_monthly(base) for base in MONTH_FIELDS)
    mappings = bodies["bp-episodes"]["template"]["mappings"]
    assert mappings["dynamic"] == "strict"
    types = {name: spec["type"] for name, spec in mappings["properties"].items()}
    assert types == {
        **dict.fromkeys(("episode_id", "patient_id", "condition", "severity", "tier", "status",
                         "acknowledged_by", "ruleset", "observation_ids", "program"), "keyword"),
        **dict.fromkeys(("opened_at", "last_event_at", "resolved_at", "acknowledged_at",
                         "overdue_at"), "date"),
        **dict.fromkeys(("acknowledged", "overdue", "confirmed"), "boolean"),
        **dict.fromkeys(("systolic", "diastolic", "risk_score"), "float"),
        "ack_note": "text",
    }  # fmt: skip
    # distinct priorities: the wildcard patterns of the shared templates may overlap
    assert len({b["priority"] for b in bodies.values()}) == len(bodies)


def test_the_alert_events_fields_of_acknowledgements_reach_the_monthly_template():
    bodies = admin.template_bodies()
    tpl = monthly_template("ward7-bp-alerts", bodies["bp-alerts"], 300)
    properties = tpl["template"]["mappings"]["properties"]
    assert {k: properties[k]["type"] for k in
            ("acknowledged_by", "acknowledged_at", "overdue_minutes", "note")} == {
        "acknowledged_by": "keyword",
        "acknowledged_at": "date",
        "overdue_minutes": "float",
        "note": "text",
    }  # fmt: skip


def test_the_acknowledgement_topics_are_created_and_their_dead_letters_kept_longer():
    s = replace(Settings(), namespace="ward7", topic_retention_days=7, dlq_retention_days=30)
    assert {"bp.alerts.acks", "bp.alerts.acks.dlq"} <= set(admin.TOPICS)
    day = 86_400_000
    assert admin.retention_ms(s, s.acks_topic) == admin.retention_ms(s, s.alerts_topic) == 7 * day
    assert admin.retention_ms(s, s.acks_dlq_topic) == admin.retention_ms(s, s.dlq_topic) == 30 * day


def test_the_enrolment_topics_are_created_like_the_acknowledgement_topics():
    s = replace(Settings(), namespace="ward7", topic_retention_days=7, dlq_retention_days=30)
    assert {"bp.enrollments", "bp.enrollments.dlq"} <= set(admin.TOPICS)
    assert {s.topic(t) for t in admin.TOPICS} >= {s.enrollments_topic, s.enrollments_dlq_topic}
    assert admin.retention_ms(s, s.enrollments_topic) == admin.retention_ms(s, s.acks_topic)
    assert admin.retention_ms(s, s.enrollments_dlq_topic) == admin.retention_ms(s, s.dlq_topic)
