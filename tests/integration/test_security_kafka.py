"""Kafka with SASL/SCRAM on the REAL local broker (listener 127.0.0.1:9094).

A SCRAM user is created per test through the Admin API on the PLAINTEXT listener; the simulator
and the monitor then connect with credentials given only through ``BPWATCH_KAFKA_CONFIG``.
Wrong credentials must give one clear error naming that variable, quickly, without a retry
storm, and never print the password.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from lib.connectors.kafka import preflight, produce_all
from lib.errors import ConfigError, ServiceError
from lib.settings import Settings
from lib.sim import stream
from tests.reliability.harness import ROOT, expect, init_recovery, monitor, simulator

pytestmark = pytest.mark.integration

# the SASL/SCRAM listener of infra/local/services.sh (KAFKA_SASL_PORT, default 9094)
SASL_BROKERS = f"127.0.0.1:{os.environ.get('KAFKA_SASL_PORT', '9094')}"


@pytest.fixture
def scram_user(services: Settings) -> Iterator[tuple[str, str]]:
    admin = AdminClient(services.kafka_client_config())
    user, password = f"bpw-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    for fut in admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, info, password.encode())]
    ).values():
        fut.result(timeout=30)
    time.sleep(0.5)  # credentials propagate to the listener through the metadata log
    yield user, password
    for fut in admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)]
    ).values():
        fut.result(timeout=30)


def _sasl(settings: Settings, user: str, password: str, **kw: Any) -> Settings:
    return replace(
        settings,
        kafka_brokers=SASL_BROKERS,
        kafka_config={
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
        },
        model_path=(ROOT / settings.model_path).resolve(),
        kafka_tail=False,
        **kw,
    )


def test_preflight_accepts_good_and_refuses_wrong_credentials_at_once(
    settings: Settings, scram_user: tuple[str, str]
) -> None:
    user, password = scram_user
    assert (preflight(_sasl(settings, user, password)) or 0) >= 3  # sees the namespace's topics
    wrong = _sasl(settings, user, password + "x")
    started = time.monotonic()
    with pytest.raises(ServiceError) as info:
        preflight(wrong)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "BPWATCH_KAFKA_CONFIG" in message and "refused the credentials" in message
    assert password not in message
    with pytest.raises(ConfigError, match="BPWATCH_KAFKA_CONFIG"):
        preflight(replace(wrong, kafka_config={"no.such.setting": 1}))


def test_simulator_and_monitor_work_over_scram(
    settings: Settings, scram_user: tuple[str, str], tmp_path: Path, monitor_run: Any
) -> None:
    s = _sasl(settings, *scram_user, sim_count=800, sim_patients=20, sim_fault_rate=0.1)
    exp = expect(s, [m.kafka_record() for m in stream.messages(s)])
    sim = simulator(s, tmp_path / "sim.log").start()
    assert sim.wait(120) == 0, (tmp_path / "sim.log").read_text()[-2000:]
    tally, log = monitor_run(s, exp, "scram")
    assert tally.ok, tally.problems
    assert tally.messages == 800 and tally.notes["anomalies"] > 0
    assert scram_user[1] not in log + (tmp_path / "sim.log").read_text()


def test_simulator_with_wrong_password_stops_with_one_clear_error(
    settings: Settings, scram_user: tuple[str, str], tmp_path: Path
) -> None:
    user, password = scram_user
    s = _sasl(settings, user, "not-" + password, sim_count=100, sim_patients=5)
    log = tmp_path / "sim.log"
    started = time.monotonic()
    rc = simulator(s, log).start().wait(60)
    took = time.monotonic() - started
    text = log.read_text()
    assert rc != 0
    assert took < 20, f"took {took:.0f}s"
    assert "refused the credentials" in text and "BPWATCH_KAFKA_CONFIG" in text
    assert text.count("Authentication failed") <= 2, "retry storm in the log"
    assert password not in text
    # nothing was written
    assert produce_all(settings, settings.observations_topic, []) == 0


def test_monitor_with_wrong_password_stops_with_one_clear_error(
    settings: Settings, scram_user: tuple[str, str], tmp_path: Path
) -> None:
    user, password = scram_user
    s = _sasl(settings, user, "not-" + password)
    log = tmp_path / "monitor.log"
    proc = monitor(s, init_recovery(tmp_path / "rec"), log).start()
    try:
        rc: int | None = proc.wait(20)
    except Exception:
        rc = None
    text = log.read_text()
    assert password not in text
    assert rc not in (None, 0), "the monitor kept retrying the wrong credentials"
    assert "refused the credentials" in text and "BPWATCH_KAFKA_CONFIG" in text
    assert text.count("Authentication failed") <= 2, "retry storm in the log"
