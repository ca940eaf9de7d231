"""lib.monitor.documents against the strict index templates: one list of fields and features."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from lib.domain import FEATURE_NAMES, Assessment, Features, Reading, RetentionGap
from lib.monitor import documents

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "elasticsearch" / "templates"


def _properties(name: str) -> dict:
    return json.loads((TEMPLATES / f"{name}.json").read_text())["template"]["mappings"][
        "properties"
    ]


def _assessment() -> Assessment:
    reading = Reading("obs-1", "pat-1", datetime(2026, 3, 1, 8, tzinfo=UTC), 150.0, 95.0)
    features = Features(*range(len(FEATURE_NAMES)))
    return Assessment(reading, features, "hypertension_stage_2", ("systolic_hypertension",),
                      "high", 0.4, "aha2017")  # fmt: skip


OPTIONAL = {"effective_precision", "body_position", "body_site", "measurement_setting", "device"}
PROGRAM = {"program", "program_band"}  # only for a reading its patient's program covers


def test_anomaly_document_fields_are_the_template_fields() -> None:
    doc = documents.anomaly_doc(_assessment(), None)
    props = _properties("bp-anomalies")
    assert set(doc) == set(props) - OPTIONAL - PROGRAM  # strict template: unknown fields fail
    assert list(doc["features"]) == list(FEATURE_NAMES)
    assert list(props["features"]["properties"]) == list(FEATURE_NAMES)


def test_qualifiers_and_date_precision_appear_only_when_sent() -> None:
    a = _assessment()
    qualified = replace(
        a,
        reading=replace(
            a.reading,
            precision="day",
            body_site="Left arm",
            setting="home",
            device="Cuff X",
            body_position="",
        ),
    )
    doc = documents.anomaly_doc(qualified, None)
    assert set(doc) == set(_properties("bp-anomalies")) - {"body_position"} - PROGRAM
    assert (doc["effective_precision"], doc["measurement_setting"]) == ("day", "home")
    record = documents.normal_record(qualified)
    assert record["body_site"] == "Left arm" and record["device"] == "Cuff X"
    assert "effective_precision" not in documents.normal_record(a)


def test_alert_document_fields_are_the_template_fields() -> None:
    from lib.monitor.alerts import EpisodeTracker

    crisis = Assessment(
        Reading("obs-2", "pat-1", datetime(2026, 3, 1, 9, tzinfo=UTC), 190.0, 125.0),
        Features(*range(len(FEATURE_NAMES))),
        "hypertensive_crisis",
        ("hypertensive_crisis",),
        "critical",
        0.9,
        "aha2017",
    )
    _, (event, *_) = EpisodeTracker().step(None, crisis)
    _, _id, doc = documents.elastic_item(event)
    assert _id == event.alert_id
    assert set(doc) <= set(_properties("bp-alerts"))
    assert not {"program", "confirmed", "confirmation"} & set(doc)  # not enrolled


def test_program_fields_are_template_fields_and_only_for_enrolled_patients() -> None:
    from lib.monitor.programs import SevereRangeEpisode, Transition, severe_event

    a = replace(_assessment(), program="postpartum", program_band="hypertensive_range")
    doc = documents.anomaly_doc(a, None)
    assert (doc["program"], doc["program_band"]) == ("postpartum", "hypertensive_range")
    assert set(doc) <= set(_properties("bp-anomalies"))
    assert documents.normal_record(a)["program"] == "postpartum"
    at = datetime(2026, 3, 1, 9, tzinfo=UTC)
    ep = SevereRangeEpisode("o1", at, at, confirmed=True)
    tr = Transition("escalated", "critical", True, "repeat")
    event = severe_event("pat-1", ep, tr, at, ("o2",), 165.0, 112.0, 0.2, "aha2025", True)
    _, _id, alert = documents.elastic_item(event)
    assert (alert["program"], alert["confirmed"], alert["confirmation"]) == (
        "postpartum", True, "repeat",
    )  # fmt: skip
    assert set(alert) <= set(_properties("bp-alerts"))
    _, (_op, _eid, part) = documents.episode_update(event)
    assert (part["program"], part["confirmed"]) == ("postpartum", True)
    assert set(part) <= set(_properties("bp-episodes"))


def test_category_label_is_the_rule_sets_own_wording() -> None:
    a = _assessment()
    assert documents.anomaly_doc(a, None)["category_label"] == "stage 2 hypertension"
    crisis = replace(a, reading=replace(a.reading, systolic=190.0), ruleset="aha2025",
                     category="hypertensive_crisis",
                     category_label="severe hypertension")  # fmt: skip
    assert documents.anomaly_doc(crisis, None)["category_label"] == "severe hypertension"
    # without a label on the Assessment, the rule set's band gives it
    esh = replace(a, reading=replace(a.reading, systolic=125.0, diastolic=75.0),
                  ruleset="esh2023", category="normal", anomaly_types=())  # fmt: skip
    assert documents.normal_record(esh)["category_label"] == "normal"
    assert documents.normal_record(replace(esh, reading=replace(esh.reading, systolic=115.0))
                                   )["category_label"] == "optimal"  # fmt: skip


def test_news2_systolic_is_on_every_document_and_line() -> None:
    a = _assessment()  # 150/95: NEWS2 systolic 0
    assert documents.anomaly_doc(a, None)["news2_systolic"] == 0
    low = replace(a, reading=replace(a.reading, systolic=88.0, diastolic=55.0))
    assert documents.anomaly_doc(low, None)["news2_systolic"] == 3
    calm = replace(a, reading=replace(a.reading, systolic=105.0, diastolic=70.0))
    assert documents.normal_record(calm)["news2_systolic"] == 1


def test_iso_ts_equals_the_datetime_path() -> None:
    """documents.iso_ts (from POSIX seconds, no datetime) gives what
    iso_ms(datetime.fromtimestamp(ts, UTC)) gives: broker timestamps (whole milliseconds) up to
    its limit, and anything else through the datetime itself."""
    rng = random.Random(31)
    limit = documents._MS_LIMIT
    ms_values = [0, 1, 999, 1000, 59_999, 60_000, limit - 1, limit, limit + 1]
    ms_values += [rng.randrange(0, limit) for _ in range(100_000)]
    ms_values += [rng.randrange(1_700_000_000_000, 1_800_000_000_000) for _ in range(100_000)]
    for ms in ms_values:
        ts = ms / 1000
        assert documents.iso_ts(ts) == documents.iso_ms(datetime.fromtimestamp(ts, UTC)), ms
    others = [rng.uniform(0, 4.2e9) for _ in range(20_000)]  # not whole milliseconds
    others += [1.7e9 + k / 8 for k in range(-8, 9)] + [ms / 1000 + 1e-7 for ms in ms_values[:50]]
    for ts in others:
        assert documents.iso_ts(ts) == documents.iso_ms(datetime.fromtimestamp(ts, UTC)), ts


def test_a_retention_gap_detected_twice_has_one_dead_letter_id():
    """After a crash the gap is found again, maybe longer (the broker deleted more since):
    the same start gives the same id, so the exactly-once DLQ sink sends it once."""
    first = documents.dead_letter_item(documents.dlq_message(RetentionGap("t", 2, 50, 80)))
    again = documents.dead_letter_item(documents.dlq_message(RetentionGap("t", 2, 50, 95)))
    other = documents.dead_letter_item(documents.dlq_message(RetentionGap("t", 3, 50, 80)))
    assert first[1][0] == again[1][0] != other[1][0]
    assert first[1][0].startswith("t:2:50#")
