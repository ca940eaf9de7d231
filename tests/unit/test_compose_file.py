"""infra/docker-compose.yml: valid against the Compose specification and consistent with the repo.

No Docker engine runs here, so the file is validated against the Compose spec's JSON schema
(vendored from compose-spec/compose-go v2.16.2, tests/fixtures/compose-spec.json), with
`docker compose config` where that plugin exists and `docker-compose config` (Debian's v1
package, which installs without an engine) where that exists. Every service command that
starts a dataflow goes through ``bytewax.run``'s own argument checks with the service's
environment, and the monitor's recovery store is created by the compose file's own init step
and opened by Bytewax. tests/integration/test_compose_setup.py runs the setup service's steps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import jsonschema
import orjson
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "infra" / ".env.example"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ is a literal $
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines())
    return {p[0].strip(): p[1].strip() for p in pairs if len(p) == 2 and not p[0].startswith("#")}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation, with ``env`` as the environment."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        present = name in env and (env[name] != "" or op not in (":-", ":?"))
        if present:
            return env[name]
        if op in (":?", "?"):
            raise AssertionError(f"compose would stop: {name}: {arg}")
        return arg if op in (":-", "-") else ""

    return VARIABLE.sub(one, value)


def service_env(compose: dict, name: str, env: dict[str, str]) -> dict[str, str]:
    raw = compose["services"][name].get("environment", {})
    return {k: interpolate(str(v), env) for k, v in raw.items()}


def dataflow_services(compose: dict) -> dict[str, list[str]]:
    return {
        name: svc["command"]
        for name, svc in compose["services"].items()
        if "bytewax.run" in svc.get("command", [])
    }


def bytewax_run_check(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``command``'s arguments through bytewax.run's own parser and checks, then the import
    of its dataflow, in a process whose environment is only ``env``."""
    assert command[:3] == ["python", "-m", "bytewax.run"], command
    script = (
        "import json, sys\n"
        "from bytewax import run\n"
        "sys.argv = ['python -m bytewax.run', *json.loads(sys.argv[1])]\n"
        "args = run._parse_args()\n"
        "run._locate_dataflow(*run._prepare_import(args.import_str))\n"
        "print(json.dumps({k: str(v) for k, v in vars(args).items()}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, json.dumps(command[3:])],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


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


def test_every_variable_is_in_env_example():
    used = {m.group(1) for m in VARIABLE.finditer(COMPOSE.read_text()) if m.group(1)}
    assert used, "no ${VAR} found: the pattern is broken"
    missing = used - set(env_example())
    assert not missing, f"add to infra/.env.example: {sorted(missing)}"


def test_dataflow_commands_pass_bytewax_run_checks(compose):
    services = dataflow_services(compose)
    assert {"monitor", "simulator"} <= set(services)
    for name, command in services.items():
        proc = bytewax_run_check(command, service_env(compose, name, env_example()))
        assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"
        args = json.loads(proc.stdout.strip().splitlines()[-1])
        if args["recovery_directory"] != "None":
            assert args["snapshot_interval"] == str(timedelta(seconds=10)), name
            assert args["backup_interval"] == str(timedelta(0)), name


def test_bytewax_run_check_can_fail(compose):
    """Without the service's environment the monitor is refused, as bytewax.run refuses it."""
    proc = bytewax_run_check(compose["services"]["monitor"]["command"], {})
    assert proc.returncode == 2
    assert "-s/--snapshot_interval" in proc.stderr


def _mount(svc: dict, path: str) -> tuple[str, str]:
    """(volume, target) of the named volume holding ``path`` in a service."""
    for spec in svc.get("volumes", []):
        source, target = spec.split(":")[:2]
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source, target
    raise AssertionError(f"{path} is not inside a volume of the service")


def test_recovery_store_is_created_inside_the_monitors_volume(compose, tmp_path):
    from bytewax import operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.recovery import RecoveryConfig
    from bytewax.testing import TestingSink, TestingSource, run_main

    services = compose["services"]
    monitor = services["monitor"]
    command = monitor["command"]
    store = command[command.index("-r") + 1]
    volume, target = _mount(monitor, store)
    assert volume in compose["volumes"], "the recovery store must be in a named volume"
    inits = [
        name
        for name, cond in monitor["depends_on"].items()
        if cond["condition"] == "service_completed_successfully"
        and "infra/recovery-init.sh" in services[name]["command"]
    ]
    assert len(inits) == 1, "one init service must create the store before the monitor starts"
    init = services[inits[0]]
    assert _mount(init, store) == (volume, target) and store in init["command"]

    # the init step itself, twice (idempotent), on a directory standing in for the volume
    script = init["command"][init["command"].index("infra/recovery-init.sh")]
    local_store = tmp_path / Path(store).relative_to(target)
    venv = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for _ in range(2):
        proc = subprocess.run(
            ["bash", str(ROOT / script), str(local_store)],
            env={**os.environ, **venv},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    # Bytewax opens it as a recovery store (it refuses a directory without partitions)
    flow = Dataflow("recovery_probe")
    out: list[int] = []
    op.output("out", op.input("in", flow, TestingSource([1, 2])), TestingSink(out))
    run_main(
        flow, epoch_interval=timedelta(seconds=1), recovery_config=RecoveryConfig(str(local_store))
    )
    assert out == [1, 2]


def test_recovery_probe_can_fail(tmp_path):
    from bytewax import operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.recovery import NoPartitionsError, RecoveryConfig
    from bytewax.testing import TestingSink, TestingSource, run_main

    flow = Dataflow("recovery_probe")
    op.output("out", op.input("in", flow, TestingSource([1])), TestingSink([]))
    with pytest.raises(NoPartitionsError):
        run_main(
            flow, epoch_interval=timedelta(seconds=1), recovery_config=RecoveryConfig(str(tmp_path))
        )


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (v1) not installed"
)
def test_docker_compose_v1_config_when_available(compose, tmp_path):
    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text())
    proc = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(env), "config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    # v1's interpolation agrees with the one the checks above use
    for name in dataflow_services(compose):
        assert resolved["services"][name]["environment"] == service_env(
            compose, name, env_example()
        )
        assert resolved["services"][name]["command"] == compose["services"][name]["command"]
