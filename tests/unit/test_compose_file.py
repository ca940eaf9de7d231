"""infra/docker-compose.yml: valid against the Compose specification and consistent with the repo.

No Docker engine runs here, so the file is validated against the Compose spec's JSON schema
(vendored from compose-spec/compose-go v2.16.2, tests/fixtures/compose-spec.json), and with
`docker compose config` where that plugin exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import orjson
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_schema(compose):
    schema = orjson.loads((ROOT / "tests/fixtures/compose-spec.json").read_bytes())
    jsonschema.validate(compose, schema)


def test_schema_rejects_a_broken_file(compose):
    """The validation above can fail: a misspelled key is refused."""
    schema = orjson.loads((ROOT / "tests/fixtures/compose-spec.json").read_bytes())
    broken = {
        **compose,
        "services": {
            **compose["services"],
            "kafka": {**compose["services"]["kafka"], "imagee": "x"},
        },
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_stack_versions_match_local_launcher(compose):
    launcher = (ROOT / "infra/local/services.sh").read_text()
    kafka_v = re.search(r"KAFKA_VERSION=\$\{KAFKA_VERSION:-([\d.]+)\}", launcher).group(1)
    es_v = re.search(r"ES_VERSION=\$\{ES_VERSION:-([\d.]+)\}", launcher).group(1)
    svc = compose["services"]
    assert svc["kafka"]["image"].endswith(f":-{kafka_v}}}")
    assert svc["elasticsearch"]["image"].endswith(f":-{es_v}}}")
    assert svc["kibana"]["image"].endswith(f":-{es_v}}}")
    # the Python client's major must equal the server's major
    pyproject = (ROOT / "pyproject.toml").read_text()
    major = es_v.split(".")[0]
    assert f'"elasticsearch>={major}.' in pyproject and f'<{int(major) + 1}"' in pyproject


def test_elasticsearch_security_stays_on_with_passwords_from_env(compose):
    es = compose["services"]["elasticsearch"]["environment"]
    assert es["xpack.security.enabled"] == "true"
    assert es["ELASTIC_PASSWORD"].startswith("${ELASTIC_PASSWORD:?")
    example = (ROOT / "infra/.env.example").read_text()
    for var in ("ELASTIC_PASSWORD", "KIBANA_PASSWORD", "KIBANA_ENCRYPTION_KEY"):
        assert f"{var}=" in example
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_setup_service_runs_the_setup_command(compose):
    setup = compose["services"]["setup"]
    script = (ROOT / setup["command"][1]).read_text()
    assert "lib.tools.admin setup" in script


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_config_when_available(tmp_path):
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    env = tmp_path / ".env"
    env.write_text((ROOT / "infra/.env.example").read_text())
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
