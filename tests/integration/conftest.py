"""Fixtures for integration tests against the REAL local Kafka and Elasticsearch.

The session fixture starts both with ``infra/local/services.sh start`` (idempotent; fetched
with mvn on first use). Set ``BPWATCH_TEST_EXTERNAL=1`` to use already-running services at
``BPWATCH_KAFKA_BROKERS`` / ``BPWATCH_ES_URL`` instead. Each test gets its own namespace, so
its topics and indices are unique and disposable (``settings`` fixture).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lib.connectors.elastic import make_client
from lib.settings import Settings
from lib.tools import admin

ROOT = Path(__file__).resolve().parents[2]
ES_SECURE_CREDENTIALS = ROOT / ".cache" / "run" / "es-secure" / "credentials.env"


def _start(what: str, *args: str, timeout: float) -> None:
    """``infra/local/services.sh start ARGS`` (idempotent); the test fails if it cannot."""
    cmd = ["bash", str(ROOT / "infra/local/services.sh"), "start", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{what} did not start:\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="session")
def services() -> Settings:
    """Base settings pointing at running services (started here if needed)."""
    if os.environ.get("BPWATCH_TEST_EXTERNAL") != "1":
        _start("local services", timeout=900)
    env = {k: v for k, v in os.environ.items() if k.startswith("BPWATCH_")}
    env.pop("BPWATCH_NAMESPACE", None)
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def es_secure_env(services: Settings) -> dict[str, str]:
    """The ``BPWATCH_ES_*`` variables of the secured Elasticsearch (``services.sh start
    es-secure``: TLS with a generated CA and a file-realm user), started here if needed."""
    _start("secured Elasticsearch", "es-secure", timeout=600)
    env = {}
    for line in ES_SECURE_CREDENTIALS.read_text().splitlines():
        name, _, value = line.partition("=")
        env[name.strip()] = value.strip()
    return env


@pytest.fixture
def settings_factory(services: Settings, tmp_path: Path) -> Iterator[Any]:
    """Make settings with a fresh namespace whose topics, templates and indices exist."""
    made: list[Settings] = []

    def make(**overrides: Any) -> Settings:
        ns = "t" + uuid.uuid4().hex[:10]
        s = replace(
            services,
            namespace=ns,
            kafka_partitions=overrides.pop("kafka_partitions", 3),
            normal_dir=tmp_path / f"normal-{ns}",
            **overrides,
        )
        admin.ensure_topics(s)
        admin.ensure_elasticsearch(s)
        made.append(s)
        return s

    yield make
    for s in made:
        try:
            admin.teardown(s)
        except Exception as exc:  # cleanup must not hide the test's own result
            print(f"teardown of namespace {s.namespace} failed: {exc}")


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    """Settings with a unique namespace (topics, index templates and aliases created)."""
    return settings_factory()


@pytest.fixture
def es(services: Settings) -> Iterator[Any]:
    client = make_client(services)
    yield client
    client.close()


@pytest.fixture
def monitor_run(tmp_path: Path) -> Callable[..., tuple[Any, str]]:
    """Run the monitor as a subprocess (recovery on) to the end of its input; return its outputs
    reconciled against an expectation (``tests.reliability.harness.Tally``) and its log."""
    from tests.reliability.harness import (
        Expected,
        Tally,
        init_recovery,
        monitor,
        observe,
        reconcile,
    )

    def run(settings: Settings, expected: Expected, name: str) -> tuple[Tally, str]:
        logs = tmp_path / "monitor.log"
        rc = monitor(settings, init_recovery(tmp_path / "rec"), logs).start().wait(180)
        assert rc == 0, logs.read_text()[-2000:]
        return reconcile(Tally(name), expected, observe(settings)), logs.read_text()

    return run


@pytest.fixture
def kafka_config(services: Settings) -> dict[str, Any]:
    return services.kafka_client_config()
