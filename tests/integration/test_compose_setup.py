"""The compose ``setup`` service's steps, run for real without Docker.

``infra/compose-setup.sh`` runs with the setup service's environment from
``infra/docker-compose.yml`` (values from ``infra/.env.example``), its hostnames mapped to the
local services: ``kafka:9092`` and ``elasticsearch:9200`` to the REAL local Kafka and
Elasticsearch, ``kibana:5601`` to ``tests/kibana_stub.py`` (Kibana cannot run here). The
``kibana-system-password`` step needs Elasticsearch with security on: it runs against the
secured local instance (``infra/local/services.sh start es-secure``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from infra.kibana import objects
from infra.kibana import setup as kibana_setup
from lib.settings import Settings
from lib.tools import admin
from tests.kibana_stub import KibanaStub
from tests.unit.test_compose_file import env_example, service_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "compose-setup.sh"
SECURE_CREDENTIALS = ROOT / ".cache" / "run" / "es-secure" / "credentials.env"


def script_steps() -> list[str]:
    match = re.search(r"^steps=\(([^)]*)\)", SCRIPT.read_text(), re.MULTILINE)
    assert match, "compose-setup.sh lists its steps in steps=(...)"
    return match.group(1).split()


def setup_env(services: Settings, kibana_url: str, namespace: str) -> dict[str, str]:
    """The setup service's environment with compose hostnames mapped to local endpoints."""
    compose = yaml.safe_load((ROOT / "infra/docker-compose.yml").read_text())
    assert compose["services"]["setup"]["command"] == ["bash", "infra/compose-setup.sh"]
    env = service_env(compose, "setup", env_example())
    endpoints = {
        "kafka:9092": services.kafka_brokers,
        "http://elasticsearch:9200": services.es_url,
        "http://kibana:5601": kibana_url,
    }
    for key, value in env.items():
        env[key] = endpoints.get(value, value)
    unmapped = {k: v for k, v in env.items() if re.search(r"kafka:|elasticsearch:|kibana:", v)}
    assert not unmapped, f"a compose hostname is not mapped: {unmapped}"
    venv = str(Path(sys.executable).parent)
    return {**env, "PATH": f"{venv}:{os.environ['PATH']}", "BPWATCH_NAMESPACE": namespace}


def run_steps(env: dict[str, str], *steps: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *steps],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def namespaced(services: Settings) -> Iterator[Settings]:
    s = replace(services, namespace="t" + uuid.uuid4().hex[:10])
    yield s
    admin.teardown(s)


def test_setup_steps_against_local_services_and_kibana_stub(services, namespaced, es):
    assert script_steps() == ["kibana-system-password", "topics", "kibana"]
    password = env_example()["ELASTIC_PASSWORD"]
    with KibanaStub(auth=("elastic", password)) as kibana:
        env = setup_env(services, kibana.url, namespaced.namespace)
        proc = run_steps(env, "topics", "kibana")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        ns = namespaced.namespace
        rules = {r["id"] for r in kibana_setup.load_definitions(ns)["rules"]}
        saved = len(objects.saved_objects(ns))
        assert set(kibana.rules) == rules and all(r.startswith(f"{ns}-") for r in rules)
        assert len(kibana.connectors) == 1 and len(kibana.saved_objects) == saved
        # a second `up` runs the setup again: everything is updated in place
        again = run_steps(env, "topics", "kibana")
        assert again.returncode == 0, again.stderr[-3000:]
        assert set(kibana.rules) == rules and len(kibana.saved_objects) == saved
    assert es.indices.exists_alias(name=namespaced.anomalies_index)
    assert es.indices.exists_alias(name=namespaced.alerts_index)


def test_setup_fails_when_kibana_refuses(services, namespaced):
    """The script stops with an error when Kibana refuses (here: the wrong password)."""
    with KibanaStub(auth=("elastic", "another-password")) as kibana:
        proc = run_steps(setup_env(services, kibana.url, namespaced.namespace), "kibana")
    assert proc.returncode == 1
    assert "kibana setup failed" in proc.stderr and "401" in proc.stderr


def test_kibana_system_password_step_against_secured_elasticsearch(services):
    proc = subprocess.run(
        ["bash", str(ROOT / "infra/local/services.sh"), "start", "es-secure"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"secured Elasticsearch did not start:\n{proc.stderr[-3000:]}")
    secure = dict(
        line.split("=", 1) for line in SECURE_CREDENTIALS.read_text().splitlines() if "=" in line
    )
    env = setup_env(services, "http://127.0.0.1:9", "unused")
    env.update({k: v for k, v in secure.items() if k.startswith("BPWATCH_ES_")})
    env["KIBANA_PASSWORD"] = "kibana-" + uuid.uuid4().hex[:12]
    result = run_steps(env, "kibana-system-password")
    if result.returncode != 0 and _lacks_security_index(secure):
        pytest.skip(
            "the local Elasticsearch build lacks the analysis-common module, so it cannot "
            "create the .security index that native/reserved user passwords live in"
        )
    assert result.returncode == 0, result.stderr[-2000:]
    # kibana_system now authenticates with the new password, and not with another one
    for password, expected in ((env["KIBANA_PASSWORD"], "200"), ("wrong-password", "401")):
        probe = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
             "--cacert", secure["BPWATCH_ES_CA_CERTS"], "-u", f"kibana_system:{password}",
             f"{secure['BPWATCH_ES_URL']}/_security/_authenticate"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert probe.stdout == expected, probe.stderr


def _lacks_security_index(secure: dict[str, str]) -> bool:
    probe = subprocess.run(
        ["curl", "-sS", "--cacert", secure["BPWATCH_ES_CA_CERTS"],
         "-u", f"{secure['BPWATCH_ES_USERNAME']}:{secure['BPWATCH_ES_PASSWORD']}",
         "-H", "Content-Type: application/json", "-X", "POST",
         f"{secure['BPWATCH_ES_URL']}/_security/user/kibana_system/_password",
         "-d", '{"password":"probe-password-1"}'],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return "Unknown filter type [pattern_capture]" in probe.stdout
