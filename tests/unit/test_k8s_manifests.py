"""infra/k8s: valid Kubernetes objects, and what the pods would really run.

No cluster runs here, so every manifest is validated against the Kubernetes JSON schemas that
``kubernetes-validate`` ships (offline, strict: unknown fields are errors). Then the pods are
rendered as Kubernetes would start them: their ``BPWATCH_*`` environment goes through
``lib.settings.Settings.from_env``, and each monitor pod's command and environment go through
``bytewax.run``'s own argument parser and checks (process id from the pod name, addresses from
the hosts file, recovery directory, snapshot and backup intervals). The recovery-store init
container's script runs for real with ``sh`` against a temporary folder.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from bytewax import run as bytewax_run

from lib.errors import ConfigError
from lib.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
VERSIONS = ("1.29", "1.37")  # oldest and newest Kubernetes checked
REPLICAS = 3


def _docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


DOCS = _docs()


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return copy.deepcopy(found[0])


def _container(pod_spec: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    key = "initContainers" if init else "containers"
    return next(c for c in pod_spec[key] if c["name"] == name)


def _env_of(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The environment Kubernetes gives ``container`` (envFrom, then env; fieldRef name)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(_one("Secret", source["secretRef"]["name"])["stringData"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = pod_name
    return env


@pytest.fixture
def statefulset() -> dict[str, Any]:
    return _one("StatefulSet", "bpwatch-monitor")


# ----------------------------------------------------------------------------- schemas
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("file", "doc"), DOCS, ids=[f"{f}:{d['kind']}" for f, d in DOCS])
def test_manifest_matches_the_kubernetes_schema(file, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_rejects_broken_objects(statefulset):
    """The check above can fail: a misspelled field, and a wrong type, are refused."""
    typo = copy.deepcopy(statefulset)
    typo["spec"]["template"]["spec"]["containers"][0]["envfrom"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, VERSIONS[-1], strict=True)
    wrong = copy.deepcopy(statefulset)
    wrong["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    images = {c["image"].split(":")[0] for _, d in DOCS for c in _all_containers(d)}
    assert images == {i["name"] for i in kustomization["images"]}


def _all_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("initContainers", []) + spec.get("containers", [])


# ----------------------------------------------------------------------------- settings
def _documented_variables() -> set[str]:
    contract = (ROOT / "docs" / "contract.md").read_text()
    table = contract.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(BPWATCH_[A-Z_]+)`", table))


def test_every_bpwatch_variable_is_a_real_setting():
    """Settings.from_env ignores unknown names, so a typo would silently fall back to a default."""
    known = _documented_variables()
    assert "BPWATCH_KAFKA_BROKERS" in known
    for _, doc in DOCS:
        names = set(doc.get("data", {})) | set(doc.get("stringData", {}))
        for container in _all_containers(doc):
            names |= {v["name"] for v in container.get("env", [])}
        unknown = {n for n in names if n.startswith("BPWATCH_")} - known
        assert not unknown, f"{doc['kind']}/{doc['metadata']['name']}: {unknown}"


@pytest.mark.parametrize(
    ("kind", "name", "container", "init"),
    [
        ("StatefulSet", "bpwatch-monitor", "monitor", False),
        ("Job", "bpwatch-setup", "setup", False),
        ("Job", "bpwatch-simulator", "simulator", False),
    ],
)
def test_pods_get_valid_settings(kind, name, container, init):
    spec = _one(kind, name)["spec"]["template"]["spec"]
    env = _env_of(_container(spec, container, init), f"{name}-0")
    settings = Settings.from_env(env)
    assert settings.kafka_brokers.endswith(":9092")
    assert settings.es_url.startswith("https://")
    assert settings.es_api_key is None and settings.es_username is None  # empty = unset
    assert settings.kafka_config == {}
    # the image's WORKDIR is the repository root: the model path resolves there
    assert (ROOT / settings.model_path).is_file()
    if container == "monitor":
        mount = next(m for m in _container(spec, "monitor")["volumeMounts"] if m["name"] == "data")
        assert settings.normal_dir.is_relative_to(mount["mountPath"])
        assert settings.kafka_tail
    if container == "simulator":
        assert (settings.sim_count, settings.sim_patients) == (20_000, 500)


def test_rendered_settings_catch_a_bad_value():
    """The rendering above can fail: a bad value in the ConfigMap is refused."""
    env = dict(_one("ConfigMap", "bpwatch-settings")["data"])
    env["BPWATCH_KAFKA_PARTITIONS"] = "twelve"
    with pytest.raises(ConfigError, match="BPWATCH_KAFKA_PARTITIONS"):
        Settings.from_env(env)


# ------------------------------------------------------------------------ the monitor's command
def _bytewax_args(
    statefulset: dict[str, Any],
    ordinal: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    drop: frozenset[str] = frozenset(),
) -> Any:
    """Parse pod ``ordinal``'s command with bytewax.run's own parser, in the pod's environment
    (less the variables in ``drop``)."""
    spec = statefulset["spec"]["template"]["spec"]
    monitor = _container(spec, "monitor")
    env = _env_of(monitor, f"{statefulset['metadata']['name']}-{ordinal}")
    # the hosts ConfigMap, where the pod mounts it -> a local file
    hosts_mount = next(m for m in monitor["volumeMounts"] if m["name"] == "hosts")
    cm_name = next(v for v in spec["volumes"] if v["name"] == "hosts")["configMap"]["name"]
    hosts = tmp_path / "hosts"
    for key, text in _one("ConfigMap", cm_name)["data"].items():
        assert env["BYTEWAX_HOSTFILE_PATH"] == f"{hosts_mount['mountPath']}/{key}"
        hosts.write_text(text)
    env["BYTEWAX_HOSTFILE_PATH"] = str(hosts)
    env = {k: v for k, v in env.items() if k not in drop}
    for name in [n for n in os.environ if n.startswith("BYTEWAX_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert monitor["command"] == ["python", "-m", "bytewax.run"]
    monkeypatch.setattr(sys, "argv", ["python -m bytewax.run", *monitor["args"]])
    return bytewax_run._parse_args()


@pytest.mark.parametrize("ordinal", range(REPLICAS))
def test_each_monitor_pod_runs_its_process_of_the_cluster(
    statefulset, ordinal, tmp_path, monkeypatch
):
    assert statefulset["spec"]["replicas"] == REPLICAS
    args = _bytewax_args(statefulset, ordinal, tmp_path, monkeypatch)
    service = statefulset["spec"]["serviceName"]
    port = next(
        p["containerPort"]
        for p in _container(statefulset["spec"]["template"]["spec"], "monitor")["ports"]
        if p["name"] == "bytewax"
    )
    assert args.process_id == ordinal  # -i
    assert args.addresses.split(";") == [  # -a
        f"bpwatch-monitor-{k}.{service}:{port}" for k in range(REPLICAS)
    ]
    recovery = _one("ConfigMap", "bpwatch-monitor-recovery")["data"]
    assert args.recovery_directory == Path(recovery["BYTEWAX_RECOVERY_DIRECTORY"])  # -r
    assert args.snapshot_interval == timedelta(seconds=10)  # -s
    assert args.backup_interval == timedelta(seconds=0)  # -b
    assert args.workers_per_process is None  # one worker per process
    assert bytewax_run._prepare_import(args.import_str) == ("dataflows.monitor", "flow")


def test_bytewax_checks_refuse_recovery_without_a_backup_interval(
    statefulset, tmp_path, monkeypatch, capsys
):
    """bytewax.run's own check can fail: recovery without -b stops it."""
    with pytest.raises(SystemExit):
        _bytewax_args(
            statefulset,
            0,
            tmp_path,
            monkeypatch,
            drop=frozenset({"BYTEWAX_RECOVERY_BACKUP_INTERVAL"}),
        )
    assert "backup_interval" in capsys.readouterr().err


# ----------------------------------------------------------------------------- cluster shape
def test_headless_service_gives_the_pods_stable_names(statefulset):
    service = _one("Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    pdb = _one("PodDisruptionBudget", "bpwatch-monitor")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_partitions_cover_the_workers(statefulset):
    """Kafka partitions and recovery partitions >= replicas x workers per process."""
    workers = statefulset["spec"]["replicas"] * 1
    settings = Settings.from_env(_one("ConfigMap", "bpwatch-settings")["data"])
    recovery = _one("ConfigMap", "bpwatch-monitor-recovery")["data"]
    assert settings.kafka_partitions >= workers
    assert int(recovery["RECOVERY_PARTITIONS"]) >= workers
    # the largest size planned is bounded by the Kafka partitions, and the resume time by the
    # patients per recovery partition (about 16,000 each: docs/operations.md)
    assert int(recovery["RECOVERY_PARTITIONS"]) >= settings.kafka_partitions
    patients = int(statefulset["metadata"]["annotations"]["bpwatch/patients-per-pod"])
    assert int(recovery["RECOVERY_PARTITIONS"]) * 16_000 >= patients * workers


def test_recovery_and_normal_files_live_on_one_shared_volume(statefulset):
    spec = statefulset["spec"]["template"]["spec"]
    claim = next(v for v in spec["volumes"] if v["name"] == "data")["persistentVolumeClaim"]
    pvc = _one("PersistentVolumeClaim", claim["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "volumeClaimTemplates" not in statefulset["spec"]  # no per-pod copies
    mount = next(m for m in _container(spec, "monitor")["volumeMounts"] if m["name"] == "data")
    recovery = _one("ConfigMap", "bpwatch-monitor-recovery")["data"]
    assert Path(recovery["BYTEWAX_RECOVERY_DIRECTORY"]).is_relative_to(mount["mountPath"])


def test_readiness_uses_the_bytewax_api_port(statefulset):
    monitor = _container(statefulset["spec"]["template"]["spec"], "monitor")
    probe = monitor["readinessProbe"]["httpGet"]
    api = next(p for p in monitor["ports"] if p["name"] == probe["port"])
    env = _env_of(monitor, "bpwatch-monitor-0")
    assert env["BYTEWAX_DATAFLOW_API_ENABLED"] == "true"
    assert str(api["containerPort"]) == env["BYTEWAX_DATAFLOW_API_PORT"]


def _benchmark_bytes_per_patient() -> int:
    text = (ROOT / "benchmarks" / "README.md").read_text()
    found = re.search(r"\| memory \| RSS per active patient \| ([\d,]+) \| bytes", text)
    assert found, "benchmarks/README.md: memory row not found"
    return int(found.group(1).replace(",", ""))


def _quantity(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(value[:-2]) * units[value[-2:]] if value[-2:] in units else int(value)


def test_memory_request_is_sized_from_the_benchmark(statefulset):
    """request >= 1.5 x (260 MiB per process + patients per pod x bytes per patient)."""
    patients = int(statefulset["metadata"]["annotations"]["bpwatch/patients-per-pod"])
    resources = _container(statefulset["spec"]["template"]["spec"], "monitor")["resources"]
    need = 1.5 * (260 * 2**20 + patients * _benchmark_bytes_per_patient())
    assert _quantity(resources["requests"]["memory"]) >= need
    assert _quantity(resources["limits"]["memory"]) >= _quantity(resources["requests"]["memory"])


# ----------------------------------------------------------------------------- init container
def _init_script(statefulset: dict[str, Any]) -> str:
    init = _container(statefulset["spec"]["template"]["spec"], "recovery-store", init=True)
    assert init["command"][:2] == ["/bin/sh", "-c"]
    return init["command"][2]


def _run_init(script: str, store: Path, pod: str, partitions: int) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOSTNAME": pod,
        "BYTEWAX_RECOVERY_DIRECTORY": str(store),
        "RECOVERY_PARTITIONS": str(partitions),
    }
    return subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


def test_init_container_creates_the_store_once_for_all_pods(statefulset, tmp_path):
    script = _init_script(statefulset)
    store = tmp_path / "data" / "recovery"
    store.parent.mkdir()
    pods = [f"bpwatch-monitor-{k}" for k in (2, 1, 0)]  # all at once, pod 0 last
    with ThreadPoolExecutor(len(pods)) as pool:
        results = list(pool.map(lambda p: _run_init(script, store, p, 4), pods))
    for r in results:
        assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in store.iterdir())
    assert names == [f"part-{k}.sqlite3" for k in range(4)]
    assert [p.name for p in store.parent.iterdir()] == ["recovery"]  # no scratch left
    before = {p.name: p.stat().st_mtime_ns for p in store.iterdir()}
    again = _run_init(script, store, "bpwatch-monitor-0", 4)  # a restart: harmless
    assert again.returncode == 0, again.stderr
    assert "4 partitions" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in store.iterdir()} == before


def test_creating_the_store_twice_would_fail(tmp_path):
    """Why the init container checks first: bytewax.recovery refuses an existing store."""
    store = tmp_path / "recovery"
    store.mkdir()
    cmd = [sys.executable, "-m", "bytewax.recovery", str(store), "2"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    assert subprocess.run(cmd, capture_output=True, timeout=60).returncode != 0


def test_init_container_fails_when_pod_0_never_creates_the_store(statefulset, tmp_path):
    script = _init_script(statefulset).replace("-ge 300", "-ge 2")
    result = _run_init(script, tmp_path / "recovery", "bpwatch-monitor-1", 4)
    assert result.returncode != 0
    assert "not created by pod 0" in result.stderr


# ----------------------------------------------------------------------------- the layout decision
_FLOW = """
from bytewax.dataflow import Dataflow
import bytewax.operators as op
from bytewax.testing import TestingSource
from bytewax.connectors.stdio import StdOutSink
flow = Dataflow("layout")
s = op.key_on("key", op.input("inp", flow, TestingSource(range(30))), lambda x: str(x % 3))
op.output("out", op.stateful_map("sum", s, lambda st, x: ((st or 0) + x,) * 2), StdOutSink())
"""


def _cluster(flow_dir: Path, dirs: list[Path]) -> list[subprocess.CompletedProcess]:
    import socket

    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        ports = [a.getsockname()[1], b.getsockname()[1]]
    addresses = ";".join(f"127.0.0.1:{p}" for p in ports[: len(dirs)])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "flow", "-r", str(d), "-s", "1", "-b", "0"]
            + (["-i", str(i), "-a", addresses] if len(dirs) > 1 else []),
            cwd=flow_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, d in enumerate(dirs)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(60), *p.communicate()) for p in procs]


def _emitted(runs: list[subprocess.CompletedProcess]) -> int:
    """Items written by StdOutSink (key, sum); Timely also prints connection retries."""
    return sum(line.startswith("('") for r in runs for line in r.stdout.splitlines())


def test_bytewax_resumes_when_the_cluster_as_a_whole_sees_every_partition(tmp_path):
    """The evidence behind the shared volume: each process may see only some recovery
    partitions, but a partition no process sees stops the resume (MissingPartitionsError)."""
    (tmp_path / "flow.py").write_text(_FLOW)
    store, left, right = (tmp_path / n for n in ("store", "left", "right"))
    for d in (store, left, right):
        d.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(store), "4"], check=True)
    for k in range(4):
        (store / f"part-{k}.sqlite3").rename((left if k < 2 else right) / f"part-{k}.sqlite3")
    first = _cluster(tmp_path, [left, right])
    assert [r.returncode for r in first] == [0, 0], first[0].stderr + first[1].stderr
    assert _emitted(first) == 30
    resumed = _cluster(tmp_path, [left, right])  # each process: 2 of the 4 partitions
    assert [r.returncode for r in resumed] == [0, 0]
    # resumed from the snapshots (a fresh start would emit all 30 again)
    assert _emitted(resumed) < 30
    (right / "part-3.sqlite3").rename(tmp_path / "part-3.sqlite3")
    for name in os.listdir(right):
        (right / name).rename(left / name)
    (missing,) = _cluster(tmp_path, [left])
    assert missing.returncode != 0
    assert "MissingPartitionsError: Missing recovery partitions {PartitionIndex(3)}" in (
        missing.stderr
    )
