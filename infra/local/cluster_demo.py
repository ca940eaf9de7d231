"""`make cluster-demo`: the Kubernetes topology of ``infra/k8s``, as processes on this machine.

    .venv/bin/python -m infra.local.cluster_demo [--processes 2] [--messages 20000]

Everything a monitor pod gets is read from the manifests, not restated here: the container's
command, its ``BYTEWAX_*`` environment, the recovery ConfigMap, the hosts-file scheme (one line
per replica, in ordinal order) and the init container that creates the recovery store. Only
what differs on one machine is mapped:

    pod bpwatch-monitor-<k>                  process with BYTEWAX_POD_NAME=bpwatch-monitor-<k>
    bpwatch-monitor-<k>.bpwatch-monitor:2101 127.0.0.1:<free port k>  (the hosts file)
    shared volume at /data                   <workdir>/data (recovery store, normal-case files)
    API port 3030 in every pod               127.0.0.1:<free port>, polled like the readiness probe

The run, against the real local Kafka and Elasticsearch, in a fresh namespace: N processes
start and tail the topic while the simulator (the simulator Job's command) sends its messages;
one process is killed with ``kill -9`` mid-stream; its peers stop by themselves, as a Bytewax
cluster does when it loses a member; the cluster is started again with N+1 processes on the
same recovery store and runs to the end of the topic (``BPWATCH_KAFKA_TAIL=false``). The
outputs are then reconciled exactly against the monitor's pure logic run in-process over the
same messages (``tests.reliability.harness``), and ``lib.tools.summary`` checks them against
the simulator's ground truth. Exit code 0 only if both find 0 lost and 0 duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from lib.settings import Settings
from lib.sim import stream
from lib.tools import summary
from tests.reliability import harness

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- the manifests
@dataclass(frozen=True)
class Topology:
    """What a monitor pod runs, as the manifests in infra/k8s declare it."""

    name: str  # StatefulSet name = pod name prefix
    command: list[str]  # container command + args
    bytewax_env: dict[str, str]  # BYTEWAX_* and RECOVERY_* of the monitor container
    init_script: str  # the recovery-store init container's sh script
    data_mount: str  # where the shared volume is mounted in the pod
    settings: dict[str, str]  # the bpwatch-settings ConfigMap
    simulator_command: list[str]


def load_topology() -> Topology:
    docs = [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]

    def one(kind: str, name: str) -> dict[str, Any]:
        return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)

    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    monitor = next(c for c in spec["containers"] if c["name"] == "monitor")
    init = next(c for c in spec["initContainers"] if c["name"] == "recovery-store")
    env: dict[str, str] = {}
    for source in monitor["envFrom"]:
        ref = source.get("configMapRef", {}).get("name")
        if ref and ref != "bpwatch-settings":
            env.update(one("ConfigMap", ref)["data"])
    env.update({v["name"]: v["value"] for v in monitor["env"] if "value" in v})
    mount = next(m for m in monitor["volumeMounts"] if m["name"] == "data")["mountPath"]
    sim = one("Job", "bpwatch-simulator")["spec"]["template"]["spec"]["containers"][0]
    return Topology(
        name=sts["metadata"]["name"],
        command=[*monitor["command"], *monitor.get("args", [])],
        bytewax_env=env,
        init_script=init["command"][2],
        data_mount=mount,
        settings=one("ConfigMap", "bpwatch-settings")["data"],
        simulator_command=sim["command"],
    )


def local_argv(command: list[str]) -> list[str]:
    """A container command with the image's ``python`` replaced by this interpreter."""
    return [sys.executable, *command[1:]] if command[0] == "python" else command


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


# ----------------------------------------------------------------------------- the cluster
class Cluster:
    """``size`` monitor processes, each started as pod ``<name>-<k>`` of the StatefulSet."""

    def __init__(
        self, topo: Topology, settings: Settings, data: Path, size: int, snapshot_s: int
    ) -> None:
        self.topo, self.settings, self.data, self.size = topo, settings, data, size
        self.snapshot_s = snapshot_s
        self.ports = free_ports(size)
        self.api_ports = free_ports(size)
        self.hosts = data.parent / f"hosts-{size}"
        self.hosts.write_text("".join(f"127.0.0.1:{p}\n" for p in self.ports))
        self.logs = [data.parent / f"{topo.name}-{k}.log" for k in range(size)]
        self.procs: list[harness.Proc] = []

    def local(self, pod_path: str) -> Path:
        """A path on the pods' shared volume -> the same path under ``data``."""
        return self.data / Path(pod_path).relative_to(self.topo.data_mount)

    def api_dir(self, k: int) -> Path:
        """The pod's /tmp: where the Bytewax API writes its dataflow.json."""
        path = self.data.parent / f"tmp-{self.topo.name}-{k}"
        path.mkdir(exist_ok=True)
        return path

    def pod_env(self, k: int) -> dict[str, str]:
        env = dict(self.topo.bytewax_env)
        recovery = self.local(env["BYTEWAX_RECOVERY_DIRECTORY"])
        env.update(
            BYTEWAX_POD_NAME=f"{self.topo.name}-{k}",
            BYTEWAX_HOSTFILE_PATH=str(self.hosts),
            BYTEWAX_RECOVERY_DIRECTORY=str(recovery),
            BYTEWAX_SNAPSHOT_INTERVAL=str(self.snapshot_s),
            BYTEWAX_DATAFLOW_API_PORT=str(self.api_ports[k]),
            BYTEWAX_DATAFLOW_API_CACHE_PATH=str(self.api_dir(k)),
            HOSTNAME=f"{self.topo.name}-{k}",
        )
        return harness.child_env(self.settings, **env)

    def init_recovery_store(self) -> list[str]:
        """Every pod's init container, all at once (Parallel pod management)."""

        def init(k: int) -> str:
            done = subprocess.run(
                ["/bin/sh", "-c", self.topo.init_script],
                env={**self.pod_env(k), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 0:
                raise RuntimeError(f"init container of pod {k} failed: {done.stderr.strip()}")
            return done.stdout.strip()

        with ThreadPoolExecutor(self.size) as pool:
            return list(pool.map(init, range(self.size)))

    def start(self) -> None:
        argv = local_argv(self.topo.command)
        self.procs = [
            harness.Proc(argv, self.pod_env(k), self.logs[k]).start() for k in range(self.size)
        ]

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Until every process answers on its API port (the readiness probe); seconds."""
        start = time.monotonic()
        for port in self.api_ports:
            while not _answers(f"http://127.0.0.1:{port}/metrics"):
                if time.monotonic() - start > timeout or any(p.poll() for p in self.procs):
                    raise RuntimeError(f"monitor not ready; see {self.logs}")
                time.sleep(0.2)
        return time.monotonic() - start

    def wait(self, timeout: float) -> list[int | None]:
        """Exit codes once all processes ended (None for any still running at the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(0.2)
        return [p.poll() for p in self.procs]

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill9()

    def output_started(self) -> bool:
        return any(log.exists() and b" took=" in log.read_bytes() for log in self.logs)


# ----------------------------------------------------------------------------- the run
def on_volume(topo: Topology, data: Path, pod_path: str) -> Path:
    return data / Path(pod_path).relative_to(topo.data_mount)


def first_cluster(cluster: Cluster, sim: harness.Proc, duration: float, kill: int) -> dict:
    """N processes tail the topic while the simulator sends; kill -9 of one mid-stream."""
    say(f"   init containers: {cluster.init_recovery_store()[0]}")
    cluster.start()
    say(f"   {cluster.size} processes ready (API up) in {cluster.wait_ready():.1f}s")
    sim.start()
    sent_at = time.monotonic()
    first_output = None
    while True:
        now = time.monotonic()
        if first_output is None and cluster.output_started():
            first_output = now
        snapshotted = first_output is not None and now - first_output > cluster.snapshot_s + 0.5
        if snapshotted and now - sent_at >= 0.4 * duration:
            break
        if sim.poll() is not None and now - sent_at > duration + 60:
            raise RuntimeError(f"no monitor output; see {cluster.logs}")
        time.sleep(0.1)
    share = min(1.0, (time.monotonic() - sent_at) / duration)
    cluster.procs[kill].kill9()
    say(f"   kill -9 of {cluster.topo.name}-{kill} at ~{share:.0%} of the stream")
    codes = cluster.wait(60)
    peers = [c for k, c in enumerate(codes) if k != kill]
    stopped = all(c is not None for c in peers)
    cluster.kill_all()
    say(
        "   its peers stopped by themselves (exit codes "
        f"{', '.join(str(c) for c in peers)}), as a pod's containers would before restarting"
        if stopped
        else "   its peers did NOT stop within 60 s; killed them"
    )
    if sim.wait(600) != 0:
        raise RuntimeError(f"simulator failed; see {sim.log_path}")
    return {"share": share, "peers_stopped": stopped}


def second_cluster(cluster: Cluster) -> list[int | None]:
    """N+1 processes on the same recovery store, to the end of the topic."""
    say(f"   init containers: {cluster.init_recovery_store()[0]}")
    cluster.start()
    say(f"   {cluster.size} processes ready (API up) in {cluster.wait_ready():.1f}s")
    codes = cluster.wait(900)
    cluster.kill_all()
    return codes


def demo_settings(s: Settings, topo: Topology, data: Path, args: argparse.Namespace) -> Settings:
    return replace(
        s,
        normal_dir=on_volume(topo, data, topo.settings["BPWATCH_NORMAL_DIR"]),
        sim_count=args.messages,
        sim_patients=args.patients,
        sim_seed=args.seed,
        sim_fault_rate=args.fault_rate,
        sim_rate=args.rate,
        sim_truth=data.parent / "ground_truth.jsonl",
    )


def run(args: argparse.Namespace) -> int:
    topo = load_topology()
    work = Path(args.workdir).resolve()
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    data = work / "data"
    data.mkdir(parents=True)
    started = time.monotonic()
    partitions = Settings.from_env(topo.settings).kafka_partitions
    n = args.processes
    with harness.namespace(
        harness.base_settings(), work, "cluster", kafka_partitions=partitions
    ) as s:
        s = demo_settings(s, topo, data, args)
        say(
            f"== namespace {s.namespace}: {partitions} partitions, {s.sim_count:,} messages from "
            f"{s.sim_patients} patients (fault rate {s.sim_fault_rate}), {s.sim_rate:,.0f}/s"
        )
        exp = harness.expect(s, [m.kafka_record() for m in stream.messages(s)])
        sim_env = harness.child_env(s, BPWATCH_SIM_TRUTH=str(s.sim_truth))
        sim = harness.Proc(local_argv(topo.simulator_command), sim_env, work / "simulator.log")
        say(f"== 1/3 cluster of {n} (snapshots every {args.snapshot}s), tailing the topic")
        tailing = replace(s, kafka_tail=True)
        kill = first_cluster(Cluster(topo, tailing, data, n, args.snapshot), sim,
                             s.sim_count / s.sim_rate, args.kill)  # fmt: skip
        before = summary.collect(s)
        say(
            f"   written before the restart: {len(before.anomaly_ids):,} anomalies, "
            f"{before.normal_lines:,} normal lines, {before.dead_letters:,} dead letters"
        )
        say(f"== 2/3 cluster of {n + 1} from the same recovery store, to the end of the topic")
        codes = second_cluster(Cluster(topo, s, data, n + 1, args.snapshot))
        say(f"   exit codes {codes}")
        say("== 3/3 reconcile")
        tally = harness.reconcile(harness.Tally("cluster"), exp, harness.observe(s))
        tally.runs, tally.faults = 2, 1
        if any(c != 0 for c in codes):
            tally.problems.append(f"second cluster exit codes {codes}")
        if not kill["peers_stopped"]:
            tally.problems.append("the peers of the killed process did not stop by themselves")
        out = summary.collect(s)
        problems, fates = summary.reconcile(out, s.sim_truth)
        say(summary.render(s, out, fates, problems).split("\nwhere to look:")[0])
        say(f"exact reconciliation (tests.reliability.harness): {tally.line()}")
        for p in tally.problems:
            say(f"  - {p}")
    ok = tally.ok and not problems
    say(
        f"\ncluster-demo: {exp.messages:,} messages; {n} processes, kill -9 of one at "
        f"~{kill['share']:.0%} of the stream, resumed as {n + 1}: lost={tally.lost} "
        f"duplicated={tally.duplicated}; {'OK' if ok else 'FAILED'} in "
        f"{time.monotonic() - started:.0f}s (logs in {work})"
    )
    return 0 if ok else 1


def job_defaults() -> dict[str, str]:
    """The simulator Job's BPWATCH_SIM_* values: the demo's defaults."""
    docs = yaml.safe_load_all((K8S / "jobs.yaml").read_text())
    job = next(d for d in docs if d["metadata"]["name"] == "bpwatch-simulator")
    return {v["name"]: v["value"] for v in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def main(argv: list[str] | None = None) -> int:
    sim = job_defaults()
    parser = argparse.ArgumentParser(prog="python -m infra.local.cluster_demo", description=__doc__)
    parser.add_argument("--processes", type=int, default=2, help="N: first cluster (then N+1)")
    parser.add_argument("--kill", type=int, default=1, help="ordinal of the pod to kill -9")
    parser.add_argument("--messages", type=int, default=int(sim["BPWATCH_SIM_COUNT"]))
    parser.add_argument("--patients", type=int, default=int(sim["BPWATCH_SIM_PATIENTS"]))
    parser.add_argument("--fault-rate", type=float, default=float(sim["BPWATCH_SIM_FAULT_RATE"]))
    parser.add_argument("--seed", type=int, default=int(sim["BPWATCH_SIM_SEED"]))
    parser.add_argument("--rate", type=float, default=2500.0, help="simulator messages/s")
    parser.add_argument("--snapshot", type=int, default=2, help="seconds (manifests: 10)")
    parser.add_argument("--workdir", default=str(ROOT / "data" / "cluster-demo"))
    args = parser.parse_args(argv)
    if not 0 <= args.kill < args.processes or args.rate <= 0:
        parser.error("--kill must be an ordinal of the first cluster; --rate must be > 0")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
