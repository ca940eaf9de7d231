"""The CI subset of the reliability suite: every fault, small, against the REAL services.

Each test runs one scenario of ``tests/reliability/scenarios.py`` at its CI size and requires an
exact reconciliation: expected anomaly ids = documents in ``bp-anomalies``, expected normal
readings = lines in the files (none twice), expected dead letters = DLQ messages (none twice), no
alert id twice. The full sizes run with ``python -m tests.reliability.run --full``.
The ``es-write-block`` scenario's CI size runs in ``test_elastic_write_block.py``, beside the
sink-level write-block tests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from lib.settings import Settings
from tests.reliability import scenarios
from tests.reliability.harness import ROOT, Expected, Observed, Tally, reconcile

pytestmark = pytest.mark.integration


@pytest.fixture
def base(services: Settings) -> Settings:
    return replace(services, model_path=(ROOT / services.model_path).resolve())


def _check(tally: Tally) -> None:
    print(tally.line())
    assert tally.problems == []
    assert tally.lost == 0
    assert tally.duplicated == 0
    assert tally.messages > 0


def test_reconcile_counts_what_is_missing_or_doubled() -> None:
    """The harness itself: one missing document, one doubled line, one missing dead letter."""
    exp = Expected(
        messages=5,
        anomaly_ids={"a", "b"},
        normal_keys={("n1", "1"), ("n2", "")},
        dead_letters=Counter({"d1": 2}),
    )
    obs = Observed(
        anomaly_ids={"a"},
        normal_keys=Counter({("n1", "1"): 2, ("n2", ""): 1}),
        dead_letters=Counter({"d1": 1}),
        alert_ids=Counter({"x": 1, "y": 2}),
        alerts_es=2,
    )
    tally = reconcile(Tally("self-test"), exp, obs)
    assert (tally.lost, tally.duplicated) == (2, 2)
    assert not tally.ok
    clean = reconcile(
        Tally("clean"),
        exp,
        Observed(
            anomaly_ids={"a", "b"},
            normal_keys=Counter({("n1", "1"): 1, ("n2", ""): 1}),
            dead_letters=Counter({"d1": 2}),
        ),
    )
    assert clean.ok, clean.problems


def test_crash_kill9_and_recover(base: Settings, tmp_path: Path) -> None:
    tally = scenarios.crash(base, tmp_path, scenarios.CI["crash"])
    assert tally.faults == scenarios.CI["crash"].kills
    assert tally.runs == tally.faults + 1
    _check(tally)


def test_elasticsearch_outage_blocks_and_catches_up(base: Settings, tmp_path: Path) -> None:
    tally = scenarios.es_outage(base, tmp_path, scenarios.CI["es-outage"])
    assert tally.notes["blocked_not_crashed"] is True
    assert tally.notes["es_retries"] > 0
    assert tally.notes["monitor_restarts"] == 0
    # bounded memory: the outage does not grow the process by more than 64 MB
    assert tally.notes["rss_mb_max_outage"] - tally.notes["rss_mb_before"] < 64
    _check(tally)


def test_unwritable_normal_folder_is_a_clear_error_without_loss(
    base: Settings, tmp_path: Path
) -> None:
    tally = scenarios.disk(base, tmp_path, scenarios.CI["disk"])
    assert tally.faults == 2
    assert tally.notes["errors_logged"] >= 1
    _check(tally)


def test_bad_input_every_message_accounted_for(base: Settings, tmp_path: Path) -> None:
    tally = scenarios.fuzzing(base, tmp_path, scenarios.CI["fuzz"])
    assert tally.notes["dead_letters"] == tally.notes["expected_dead"] >= scenarios.CI["fuzz"].fuzz
    assert "enormous" in tally.notes["kinds"]
    _check(tally)


def test_out_of_order_duplicates_and_retractions_give_the_clean_state(
    base: Settings, tmp_path: Path
) -> None:
    tally = scenarios.ordering_poison(base, tmp_path, scenarios.CI["ordering"])
    assert tally.notes["duplicate"] > 0 and tally.notes["bogus_then_retraction"] > 0
    _check(tally)


def test_late_redelivery_beyond_the_window_is_not_written_twice(
    base: Settings, tmp_path: Path
) -> None:
    size = replace(scenarios.CI["ordering"], readings=1_000, patients=10)
    tally = scenarios.ordering_poison(base, tmp_path, size, dup_spread=(14, 60))
    _check(tally)


def test_kafka_broker_outage(base: Settings, tmp_path: Path) -> None:
    """Stops and restarts the shared local broker (8 s in CI, 20 s with --full)."""
    tally = scenarios.kafka_outage(base, tmp_path, scenarios.CI["kafka-outage"])
    assert tally.faults == 1
    assert tally.notes["outage_s"] >= scenarios.CI["kafka-outage"].outage_s
    _check(tally)


def test_elasticsearch_process_stopped_and_resumed(base: Settings, tmp_path: Path) -> None:
    """``kill -STOP`` the local Elasticsearch for 8 s mid-run (hung requests, not refused
    ones), then ``kill -CONT``: nothing lost or duplicated, the monitor never stopped."""
    tally = scenarios.es_stop(base, tmp_path, scenarios.CI["es-stop"])
    assert tally.faults == 1
    assert tally.notes["blocked_not_crashed"] is True
    assert tally.notes["monitor_restarts"] == 0
    _check(tally)
