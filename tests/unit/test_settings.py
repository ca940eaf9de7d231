"""Settings: contract defaults, validation messages that name the fix, no secret leaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lib.errors import ConfigError
from lib.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_contract():
    s = Settings.from_env({})
    assert s.kafka_brokers == "127.0.0.1:9092"
    assert s.es_url == "http://127.0.0.1:9200"
    assert s.normal_dir == Path("data/normal_cases")
    assert s.model_path == Path("models/bp_risk.joblib")
    assert s.ruleset == "aha2025"
    assert s.kafka_tail is True
    assert (s.observations_topic, s.dlq_topic, s.alerts_topic) == (
        "bp.observations",
        "bp.observations.dlq",
        "bp.alerts",
    )
    assert (s.anomalies_index, s.alerts_index) == ("bp-anomalies", "bp-alerts")


def test_namespace_prefixes_every_topic_and_index():
    s = Settings.from_env({"BPWATCH_NAMESPACE": "ward7"})
    assert s.observations_topic == "ward7.bp.observations"
    assert s.dlq_topic == "ward7.bp.observations.dlq"
    assert s.anomalies_index == "ward7-bp-anomalies"


@pytest.mark.parametrize(
    ("env", "must_name"),
    [
        ({"BPWATCH_RULESET": "who1999"}, "BPWATCH_RULESET"),
        ({"BPWATCH_KAFKA_TAIL": "maybe"}, "BPWATCH_KAFKA_TAIL"),
        ({"BPWATCH_ALERT_MIN_SEVERITY": "urgent"}, "BPWATCH_ALERT_MIN_SEVERITY"),
        ({"BPWATCH_SIM_PATIENTS": "many"}, "BPWATCH_SIM_PATIENTS"),
        ({"BPWATCH_SIM_PATIENTS": "0"}, "BPWATCH_SIM_PATIENTS"),
        ({"BPWATCH_SIM_FAULT_RATE": "1.5"}, "BPWATCH_SIM_FAULT_RATE"),
        ({"BPWATCH_SIM_HOME_SHARE": "-0.1"}, "BPWATCH_SIM_HOME_SHARE"),
        ({"BPWATCH_SIM_HOME_SHARE": "half"}, "BPWATCH_SIM_HOME_SHARE"),
        ({"BPWATCH_SIM_SPEEDUP": "-1"}, "BPWATCH_SIM_SPEEDUP"),
        ({"BPWATCH_SIM_SPEEDUP": "fast"}, "BPWATCH_SIM_SPEEDUP"),
        ({"BPWATCH_SIM_SPEEDUP": "60", "BPWATCH_SIM_RATE": "100"}, "BPWATCH_SIM_SPEEDUP"),
        ({"BPWATCH_SIM_START": "2025-03-03T00:00:00"}, "BPWATCH_SIM_START"),
        ({"BPWATCH_SIM_START": "yesterday"}, "BPWATCH_SIM_START"),
        ({"BPWATCH_KAFKA_BROKERS": "localhost"}, "BPWATCH_KAFKA_BROKERS"),
        ({"BPWATCH_ES_URL": "127.0.0.1:9200"}, "BPWATCH_ES_URL"),
        ({"BPWATCH_NAMESPACE": "a b"}, "BPWATCH_NAMESPACE"),
        ({"BPWATCH_NAMESPACE": "Ward"}, "BPWATCH_NAMESPACE"),
        ({"BPWATCH_KAFKA_CONFIG": "{not json"}, "BPWATCH_KAFKA_CONFIG"),
        ({"BPWATCH_KAFKA_CONFIG": "[1]"}, "BPWATCH_KAFKA_CONFIG"),
        ({"BPWATCH_KAFKA_CONFIG": "@/nonexistent/x.json"}, "BPWATCH_KAFKA_CONFIG"),
        ({"BPWATCH_ES_CA_CERTS": "/nonexistent/ca.pem"}, "BPWATCH_ES_CA_CERTS"),
    ],
)
def test_invalid_values_name_the_variable(env, must_name):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    assert must_name in str(exc.value)


def test_simulator_home_share_and_start():
    default = Settings.from_env({})
    assert default.sim_home_share == 0.0 and default.sim_start is None
    s = Settings.from_env(
        {"BPWATCH_SIM_HOME_SHARE": "0.1", "BPWATCH_SIM_START": "2026-11-30T14:00:00+01:00"}
    )
    assert s.sim_home_share == 0.1
    assert s.sim_start == datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    assert Settings.from_env({"BPWATCH_SIM_START": "2026-11-30T13:00Z"}).sim_start == s.sim_start


def test_kafka_config_passthrough_inline_and_from_file(tmp_path):
    cfg = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "bp",
        "sasl.password": "s3cret",
    }
    inline = Settings.from_env({"BPWATCH_KAFKA_CONFIG": json.dumps(cfg)})
    f = tmp_path / "k.json"
    f.write_text(json.dumps(cfg))
    from_file = Settings.from_env({"BPWATCH_KAFKA_CONFIG": f"@{f}"})
    assert inline.kafka_config == from_file.kafka_config == cfg
    merged = inline.kafka_client_config(**{"group.id": "g"})
    assert merged["bootstrap.servers"] == "127.0.0.1:9092" and merged["sasl.username"] == "bp"
    assert merged["group.id"] == "g"


def test_secrets_are_not_in_repr():
    s = Settings.from_env(
        {
            "BPWATCH_ES_PASSWORD": "pw-123",
            "BPWATCH_ES_USERNAME": "elastic",
            "BPWATCH_ES_API_KEY": "key-456",
            "BPWATCH_KAFKA_CONFIG": '{"sasl.password": "kafka-789"}',
        }
    )
    text = repr(s)
    for secret in ("pw-123", "key-456", "kafka-789"):
        assert secret not in text


def test_es_credentials_prefer_api_key():
    s = Settings.from_env({"BPWATCH_ES_API_KEY": "k", "BPWATCH_ES_USERNAME": "u"})
    assert s.es_client_kwargs()["api_key"] == "k" and "basic_auth" not in s.es_client_kwargs()
    s = Settings.from_env({"BPWATCH_ES_USERNAME": "u", "BPWATCH_ES_PASSWORD": "p"})
    assert s.es_client_kwargs()["basic_auth"] == ("u", "p")


def test_entry_point_stops_with_one_line_naming_the_fix():
    env = {**os.environ, "BPWATCH_RULESET": "nope"}
    proc = subprocess.run(
        [sys.executable, "-m", "lib.tools.admin", "setup"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1, proc.stderr
    assert "BPWATCH_RULESET" in lines[0] and "aha2017" in lines[0]


def test_reading_setting_and_home_index():
    assert Settings.from_env({}).reading_setting == "as_sent"
    assert Settings.from_env({"BPWATCH_READING_SETTING": "home"}).reading_setting == "home"
    with pytest.raises(ConfigError, match="BPWATCH_READING_SETTING"):
        Settings.from_env({"BPWATCH_READING_SETTING": "clinic"})
    s = Settings.from_env({"BPWATCH_NAMESPACE": "ward7"})
    assert s.home_averages_index == "ward7-bp-home-averages"


def test_normal_on_fresh_start_refuses_by_default():
    assert Settings.from_env({}).normal_on_fresh_start == "refuse"
    env = {"BPWATCH_NORMAL_ON_FRESH_START": "append"}
    assert Settings.from_env(env).normal_on_fresh_start == "append"
    with pytest.raises(ConfigError, match="BPWATCH_NORMAL_ON_FRESH_START"):
        Settings.from_env({"BPWATCH_NORMAL_ON_FRESH_START": "delete"})


def test_log_level_and_retention_settings():
    s = Settings.from_env({})
    assert (s.log_level, s.normal_retention_days, s.alert_reminder_hours) == ("INFO", 0.0, 0.0)
    assert (s.topic_retention_days, s.dlq_retention_days) == (7.0, 30.0)
    env = {"BPWATCH_LOG_LEVEL": "warning", "BPWATCH_NORMAL_RETENTION_DAYS": "90"}
    s = Settings.from_env(env)
    assert (s.log_level, s.normal_retention_days) == ("WARNING", 90.0)
    with pytest.raises(ConfigError, match="BPWATCH_LOG_LEVEL"):
        Settings.from_env({"BPWATCH_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="BPWATCH_DLQ_RETENTION_DAYS"):
        Settings.from_env({"BPWATCH_DLQ_RETENTION_DAYS": "0"})


def test_every_variable_the_code_reads_is_in_the_contract_and_back():
    """The contract's settings table is the one list: a variable read by lib/settings.py, or
    set in infra/ for the dataflows, must be in it, and each of its rows must be read."""
    import re

    contract = (ROOT / "docs" / "contract.md").read_text()
    table = contract.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"BPWATCH_[A-Z_]*[A-Z]", table))
    read = set(re.findall(r'"(BPWATCH_[A-Z_]*[A-Z])"', (ROOT / "lib" / "settings.py").read_text()))
    infra = {
        name
        for path in (ROOT / "infra").rglob("*")
        if path.is_file() and path.suffix in (".yml", ".yaml", ".example", ".env")
        for name in re.findall(r"BPWATCH_[A-Z_]*[A-Z]", path.read_text(errors="replace"))
    }
    assert read - documented == set()
    assert infra - documented == set()
    assert documented - read - infra == set()


def test_alert_tiers_from_the_environment():
    default = Settings.from_env({})
    assert default.alert_urgent == (
        "hypertensive_crisis", "combined_critical", "systolic_hypotension", "severe_range_bp"
    )  # fmt: skip
    assert default.alert_confirm_readings == 2
    assert default.alert_critical_risk == 0.5
    assert Settings.from_env({"BPWATCH_ALERT_CRITICAL_RISK": "0.16"}).alert_critical_risk == 0.16
    with pytest.raises(ConfigError, match=r"BPWATCH_ALERT_CRITICAL_RISK=1\.5 is out of range"):
        Settings.from_env({"BPWATCH_ALERT_CRITICAL_RISK": "1.5"})
    every = Settings.from_env({"BPWATCH_ALERT_URGENT": "ALL"}).alert_urgent
    assert "no_data" in every and "diastolic_hypotension" in every and len(every) == 10
    assert Settings.from_env({"BPWATCH_ALERT_URGENT": "none"}).alert_urgent == ()
    listed = Settings.from_env({"BPWATCH_ALERT_URGENT": " high_risk , combined_critical,high_risk"})
    assert listed.alert_urgent == ("high_risk", "combined_critical")
    with pytest.raises(ConfigError, match="BPWATCH_ALERT_URGENT names crisis: use all, none"):
        Settings.from_env({"BPWATCH_ALERT_URGENT": "crisis"})
    with pytest.raises(ConfigError, match="BPWATCH_ALERT_CONFIRM_READINGS=0 is below 1"):
        Settings.from_env({"BPWATCH_ALERT_CONFIRM_READINGS": "0"})
