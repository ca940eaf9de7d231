"""The reliability scenarios: one function per fault, each returning a reconciled :class:`Tally`.

Used by ``python -m tests.reliability.run`` (full and CI sizes) and by the CI subset in
``tests/integration/test_reliability_*.py``. Every scenario uses its own namespace and tears it
down; randomness (kill moments, mutations) comes from a seeded generator, so a failing run can be
repeated with the same ``seed``.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from lib.connectors.elastic import BLOCK_LOG_EVERY_S, make_client
from lib.settings import Settings
from lib.sim import cohort, stream
from tests.reliability import fuzz, ordering
from tests.reliability.harness import (
    ROOT,
    Proc,
    Tally,
    expect,
    init_recovery,
    monitor,
    namespace,
    observe,
    phi_leaks,
    reconcile,
    send,
    services,
    simulator,
)
from tests.reliability.relay import Relay

log = logging.getLogger("bpwatch.reliability")


@dataclass(frozen=True)
class Size:
    readings: int
    patients: int
    kills: int = 0
    outage_s: float = 0.0
    fuzz: int = 0


CI = {
    "crash": Size(readings=12_000, patients=60, kills=3),
    "kafka-outage": Size(readings=3_000, patients=40, outage_s=8.0),
    "es-outage": Size(readings=30_000, patients=100, outage_s=8.0),  # lasts past the first write
    "es-write-block": Size(readings=30_000, patients=100, outage_s=8.0),
    "es-stop": Size(readings=30_000, patients=100, outage_s=8.0),
    "disk": Size(readings=3_000, patients=30),
    "fuzz": Size(readings=1_000, patients=20, fuzz=3_000),
    "ordering": Size(readings=2_000, patients=20),
}
FULL = {
    "crash": Size(readings=200_000, patients=400, kills=12),
    "kafka-outage": Size(readings=30_000, patients=200, outage_s=20.0),
    "es-outage": Size(readings=60_000, patients=200, outage_s=30.0),
    "es-write-block": Size(readings=60_000, patients=200, outage_s=75.0),  # two log lines
    "es-stop": Size(readings=60_000, patients=200, outage_s=45.0),  # past a 30 s request timeout
    "disk": Size(readings=30_000, patients=200),
    "fuzz": Size(readings=10_000, patients=100, fuzz=100_000),
    "ordering": Size(readings=40_000, patients=200),
}


def _sim_settings(s: Settings, size: Size, seed: int, fault_rate: float = 0.1) -> Settings:
    return replace(
        s,
        sim_count=size.readings,
        sim_patients=size.patients,
        sim_seed=seed,
        sim_fault_rate=fault_rate,
    )


def _prepare(s: Settings, work: Path, size: Size, seed: int, fault_rate: float = 0.05):
    """Send the cohort: ``(settings, expected outputs, recovery dir, monitor log)``."""
    s = _sim_settings(s, size, seed, fault_rate=fault_rate)
    records = [m.kafka_record() for m in stream.messages(s)]
    send(s, records)
    exp = expect(s, records)
    return (
        s,
        exp,
        init_recovery(work / s.namespace / "recovery"),
        work / s.namespace / "monitor.log",
    )


def _names(s: Settings) -> list[str]:
    return [p.name for p in cohort.cohort(s.sim_patients, s.sim_seed)]


def _finish(tally: Tally, s: Settings, exp, logs: list[Path]) -> Tally:
    reconcile(tally, exp, observe(s))
    text = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())
    leaks = phi_leaks(text, _names(s))
    if leaks:
        tally.problems.append(f"PHI in monitor logs: {len(leaks)} kinds, e.g. a patient name")
    return tally


def _run_to_end(mon: Proc, tally: Tally, timeout: float) -> int:
    tally.runs += 1
    return mon.start().wait(timeout)


# ----------------------------------------------------------------------------- crash
def crash(base: Settings, work: Path, size: Size, seed: int = 7) -> Tally:
    """kill -9 the monitor at random moments; restart it with recovery each time."""
    rng = random.Random(seed)
    tally = Tally("crash")
    with namespace(base, work) as s:
        s, exp, rec, logs = _prepare(s, work, size, seed, fault_rate=0.1)
        started = time.monotonic()
        rc = None
        mid_output = 0
        while rc != 0:
            offset = logs.stat().st_size if logs.exists() else 0
            mon = monitor(s, rec, logs).start()
            tally.runs += 1
            if tally.faults < size.kills:
                # a random moment: during start-up and recovery, or while writing outputs
                writing = rng.random() < 0.6
                if writing:
                    _wait_for(logs, " took=", mon, 120, offset=offset)
                    time.sleep(rng.uniform(0.0, 0.5))
                else:
                    time.sleep(rng.uniform(0.3, 2.5))
                if mon.poll() is None:
                    mon.kill9()
                    tally.faults += 1
                    mid_output += writing
                    continue
            rc = mon.wait(600)
            if rc != 0 and tally.runs > size.kills + 5:
                tally.problems.append(f"monitor exited with {rc}; see {logs}")
                break
        tally.notes["took_s"] = round(time.monotonic() - started, 1)
        tally.notes["kills_while_writing"] = mid_output
        return _finish(tally, s, exp, [logs])


def _wait_for(path: Path, needle: str, proc: Proc, timeout: float, offset: int = 0) -> bool:
    """Wait until ``needle`` appears in the log ``path`` after byte ``offset`` (False if the
    process ended first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with path.open("rb") as fh:
                fh.seek(offset)
                if needle.encode() in fh.read():
                    return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _supervise(s: Settings, rec: Path, logs: Path, tally: Tally, first: Proc | None = None) -> int:
    """Run the monitor to its end, restarting it (with recovery) after any crash; restarts."""
    restarts = 0
    mon = first
    while True:
        if mon is None:
            mon = monitor(s, rec, logs).start()
            tally.runs += 1
        rc = mon.wait(900)
        if rc == 0:
            return restarts
        restarts += 1
        if restarts > 20:
            tally.problems.append(f"monitor keeps failing (rc={rc}); see {logs}")
            return restarts
        time.sleep(1.0)
        mon = None


# ----------------------------------------------------------------------------- Kafka outage
def kafka_outage(base: Settings, work: Path, size: Size, seed: int = 11) -> Tally:
    """Stop the broker for ``outage_s`` while the simulator sends and the monitor reads.

    The simulator is given a delivery timeout longer than the outage (``message.timeout.ms``
    through BPWATCH_KAFKA_CONFIG) and its idempotent producer resends without duplicates. The
    monitor tails the topic; a crash of it during the outage is restarted with recovery (a
    supervisor's job). When the simulator is done, the tailing monitor is stopped and one run
    without tailing drains the rest.
    """
    tally = Tally("kafka-outage")
    with namespace(base, work) as s:
        s = _sim_settings(s, size, seed, fault_rate=0.1)
        exp = expect(s, [m.kafka_record() for m in stream.messages(s)])
        rate = size.readings / (size.outage_s + 12.0)
        sim_s = replace(
            s,
            sim_rate=rate,
            kafka_config={**s.kafka_config, "message.timeout.ms": 180_000},
        )
        rec = init_recovery(work / s.namespace / "recovery")
        logs = work / s.namespace / "monitor.log"
        sim = simulator(sim_s, work / s.namespace / "simulator.log").start()
        tail = replace(s, kafka_tail=True)
        mon = monitor(tail, rec, logs).start()
        tally.runs += 1
        time.sleep(4.0)
        services("stop", "kafka")
        tally.faults += 1
        stopped = time.monotonic()
        time.sleep(size.outage_s)
        services("start", "kafka")
        tally.notes["outage_s"] = round(time.monotonic() - stopped, 1)
        restarts = 0
        while sim.poll() is None:
            if mon.poll() is not None:  # crashed while the broker was away: restart it
                restarts += 1
                mon = monitor(tail, rec, logs).start()
                tally.runs += 1
            time.sleep(0.5)
        if sim.poll() != 0:
            tally.problems.append(f"simulator exited with {sim.poll()}; see simulator.log")
        time.sleep(3.0)  # let the tailing monitor read the last messages
        if mon.poll() is None:
            mon.kill9()
        restarts += _supervise(s, rec, logs, tally)
        tally.notes["monitor_restarts"] = restarts
        return _finish(tally, s, exp, [logs])


# ----------------------------------------------------------------------------- ES outage
def es_outage(base: Settings, work: Path, size: Size, seed: int = 13) -> Tally:
    """Cut the monitor's way to Elasticsearch for ``outage_s`` mid-run (a relay port).

    The monitor must block and back off (not crash, not drop), keep its memory bounded, and
    catch up when Elasticsearch is back. The shared Elasticsearch keeps running.
    """
    tally = Tally("es-outage")
    relay = Relay("127.0.0.1", int(base.es_url.rsplit(":", 1)[1].split("/")[0])).start()
    try:
        with namespace(base, work) as s:
            s, exp, rec, logs = _prepare(s, work, size, seed, fault_rate=0.05)
            via_relay = replace(s, es_url=relay.url)
            mon = monitor(via_relay, rec, logs).start()
            tally.runs += 1
            if not _wait_for(logs, f"index={s.anomalies_index}", mon, 120):
                tally.problems.append("the monitor ended before the outage could start")
            relay.cut()
            tally.faults += 1
            rss_before = mon.rss_kb()
            rss_max = rss_before
            crashed = False
            cut_at = time.monotonic()
            while time.monotonic() - cut_at < size.outage_s:
                rss_max = max(rss_max, mon.rss_kb())
                crashed = crashed or mon.poll() is not None
                time.sleep(0.5)
            relay.restore()
            backoffs = logs.read_text(errors="replace").count("es_retry")
            tally.notes.update(
                outage_s=size.outage_s,
                blocked_not_crashed=not crashed,
                es_retries=backoffs,
                rss_mb_before=round(rss_before / 1024),
                rss_mb_max_outage=round(rss_max / 1024),
            )
            if crashed:
                tally.problems.append("the monitor stopped during the outage instead of waiting")
            if backoffs == 0:
                tally.problems.append("no es_retry (backoff) line during the outage")
            restarts = _supervise(via_relay, rec, logs, tally, first=mon)
            tally.notes["monitor_restarts"] = restarts
            return _finish(tally, s, exp, [logs])
    finally:
        relay.close()


def _mid_run(s: Settings, work: Path, size: Size, seed: int, tally: Tally, what: str):
    """Send the cohort, start the monitor with recovery and wait until it has written
    anomalies: ``(settings, expected, recovery dir, log, running monitor)``, for a fault to
    strike mid-run."""
    s, exp, rec, logs = _prepare(s, work, size, seed)
    mon = monitor(s, rec, logs).start()
    tally.runs += 1
    if not _wait_for(logs, f"index={s.anomalies_index}", mon, 120):
        tally.problems.append(f"the monitor ended before the {what} could start")
    return s, exp, rec, logs, mon


# ----------------------------------------------------------------------------- ES process stop
ES_PID_FILE = ROOT / ".cache" / "run" / "es-pid" / "es.pid"


def es_stop(base: Settings, work: Path, size: Size, seed: int = 31) -> Tally:
    """Stop the Elasticsearch process itself (``kill -STOP``) for ``outage_s`` mid-run, then
    let it go on (``kill -CONT``): connections stay open and requests hang, unlike the relay
    cut of ``es_outage``, where they fail at once. The monitor must wait (time out and retry,
    or get its answers late), not crash and not drop, and reconcile exactly once the process
    runs again. Needs the local Elasticsearch of ``make services`` (its pid file)."""
    tally = Tally("es-stop")
    pid = int(ES_PID_FILE.read_text().strip())
    with namespace(base, work) as s:
        s, exp, rec, logs, mon = _mid_run(s, work, size, seed, tally, "stop")
        os.kill(pid, signal.SIGSTOP)
        tally.faults += 1
        crashed = False
        try:
            stopped_at = time.monotonic()
            while time.monotonic() - stopped_at < size.outage_s:
                crashed = crashed or mon.poll() is not None
                time.sleep(0.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        tally.notes.update(outage_s=size.outage_s, blocked_not_crashed=not crashed)
        if crashed:
            tally.problems.append("the monitor stopped while Elasticsearch was stopped")
        restarts = _supervise(s, rec, logs, tally, first=mon)
        tally.notes["monitor_restarts"] = restarts
        return _finish(tally, s, exp, [logs])


# ----------------------------------------------------------------------------- ES write block
FLOOD_STAGE = "index.blocks.read_only_allow_delete"
_INFO_INTERVAL = "cluster.info.update.interval"


@contextmanager
def no_flood_auto_release(es):
    """Hold a hand-set flood-stage block: Elasticsearch's disk monitor (``DiskThresholdMonitor``)
    releases ``read_only_allow_delete`` from the indices of a node below the high watermark
    each time the cluster info refreshes (``cluster.info.update.interval``, 30 s), and also
    when the disk threshold is disabled, which made a block set by hand vanish mid-test. The
    refresh is pushed out to an hour while held (set before the block, so the refresh that
    the change may trigger finds nothing to release)."""
    es.cluster.put_settings(persistent={_INFO_INTERVAL: "1h"})
    try:
        yield
    finally:
        es.cluster.put_settings(persistent={_INFO_INTERVAL: None})


def es_write_block(base: Settings, work: Path, size: Size, seed: int = 29) -> Tally:
    """Elasticsearch refuses writes for ``outage_s`` mid-run: ``index.blocks.write`` on
    bp-anomalies, the flood-stage disk watermark's block on bp-alerts and bp-home-averages
    (set by hand: the shared cluster's disk is not filled), then lifted as the log line says.

    The monitor must wait (not crash, not drop), say so in one ``es_write_blocked`` line per
    blocked index and minute (not one per retry), and catch up once the blocks are lifted.
    """
    tally = Tally("es-write-block")
    with namespace(base, work) as s:
        s, exp, rec, logs, mon = _mid_run(s, work, size, seed, tally, "block")
        blocks = {
            s.anomalies_index: "index.blocks.write",
            s.alerts_index: FLOOD_STAGE,
            s.home_averages_index: FLOOD_STAGE,
        }
        es = make_client(s)
        rss_before = mon.rss_kb()
        rss_max = rss_before
        crashed = False
        with no_flood_auto_release(es):
            try:
                for index, setting in blocks.items():
                    es.indices.put_settings(index=index, settings={setting: True})
                tally.faults += 1
                blocked_at = time.monotonic()
                while time.monotonic() - blocked_at < size.outage_s:
                    rss_max = max(rss_max, mon.rss_kb())
                    crashed = crashed or mon.poll() is not None
                    time.sleep(0.5)
            finally:
                for index, setting in blocks.items():
                    es.indices.put_settings(index=index, settings={setting: None})
        es.close()
        text = logs.read_text(errors="replace")
        notices = [line for line in text.splitlines() if "es_write_blocked" in line]
        per_index = {i: sum(f"index={i} " in line for line in notices) for i in blocks}
        tally.notes.update(
            outage_s=size.outage_s,
            blocked_not_crashed=not crashed,
            es_write_blocked_lines=len(notices),
            es_retry_lines=text.count("es_retry"),
            rss_mb_before=round(rss_before / 1024),
            rss_mb_max_outage=round(rss_max / 1024),
        )
        if crashed:
            tally.problems.append("the monitor stopped during the block instead of waiting")
        if not per_index[s.anomalies_index]:
            tally.problems.append("no es_write_blocked line for the blocked bp-anomalies")
        most = 1 + int(size.outage_s // BLOCK_LOG_EVERY_S) + 1  # + 1: a retry after the lift
        if max(per_index.values()) > most:
            tally.problems.append(f"es_write_blocked lines per index {per_index}: over {most}")
        if "PUT " not in "".join(notices[:1]):
            tally.problems.append("the es_write_blocked line does not name the fix")
        restarts = _supervise(s, rec, logs, tally, first=mon)
        tally.notes["monitor_restarts"] = restarts
        return _finish(tally, s, exp, [logs])


# ----------------------------------------------------------------------------- disk
def disk(base: Settings, work: Path, size: Size, seed: int = 17) -> Tally:
    """The normal-case folder cannot be written: at start, then mid-run (a day folder blocked).

    Each time the monitor must stop with one clear error naming BPWATCH_NORMAL_DIR (no silent
    loss); once the folder is fixed, a restart with recovery completes and reconciles exactly.
    """
    tally = Tally("disk")
    with namespace(base, work) as s:
        s, exp, rec, logs = _prepare(s, work, size, seed, fault_rate=0.05)

        # 1. unwritable at start: a path below a regular file (root ignores permission bits)
        blocker = work / s.namespace / "not-a-folder"
        blocker.write_text("")
        bad = replace(s, normal_dir=blocker / "normal")
        rc = _run_to_end(monitor(bad, rec, logs), tally, 300)
        tally.faults += 1
        text = logs.read_text(errors="replace")
        if rc == 0 or "BPWATCH_NORMAL_DIR" not in text:
            tally.problems.append(f"unwritable folder at start: rc={rc}, no clear error")

        # 2. mid-run: the folder of a later day is a regular file, so its shard files fail
        days = sorted(exp.normal_days)
        day = days[len(days) // 2]
        s.normal_dir.mkdir(parents=True, exist_ok=True)
        (s.normal_dir / f"date={day}").write_text("")
        before = len(logs.read_text(errors="replace"))
        rc = _run_to_end(monitor(s, rec, logs), tally, 300)
        tally.faults += 1
        text = logs.read_text(errors="replace")[before:]
        if rc == 0 or "BPWATCH_NORMAL_DIR" not in text or f"date={day}" not in text:
            tally.problems.append(f"unwritable day folder mid-run: rc={rc}, no clear error")
        tally.notes["errors_logged"] = text.count("cannot write normal readings")

        (s.normal_dir / f"date={day}").unlink()
        _supervise(s, rec, logs, tally)
        return _finish(tally, s, exp, [logs])


# ----------------------------------------------------------------------------- fuzz
def fuzzing(base: Settings, work: Path, size: Size, seed: int = 19) -> Tally:
    """Mutated and random messages among clean ones: no crash, each bad one a dead letter."""
    tally = Tally("fuzz")
    with namespace(base, work) as s:
        s = _sim_settings(s, size, seed, fault_rate=0.0)
        clean = [m.kafka_record() for m in stream.messages(s)]
        fz = fuzz.mixed(clean, size.fuzz, seed)
        send(s, fz.records)
        exp = expect(s, fz.records)
        if exp.counts["dead_letter"] != fz.expected_dead:
            tally.problems.append(
                f"parser dead-lettered {exp.counts['dead_letter']} of {fz.expected_dead} bad"
            )
        rec = init_recovery(work / s.namespace / "recovery")
        logs = work / s.namespace / "monitor.log"
        rc = _run_to_end(monitor(s, rec, logs), tally, 900)
        if rc != 0:
            tally.problems.append(f"monitor crashed on bad input (rc={rc}); see {logs}")
        tally.notes.update(bad=size.fuzz, expected_dead=fz.expected_dead)
        tally = _finish(tally, s, exp, [logs])
        tally.notes["kinds"] = ",".join(f"{k}:{v}" for k, v in sorted(fz.kinds.items()))
        return tally


# ----------------------------------------------------------------------------- ordering
VALUE_ANOMALIES = {
    "hypertension_stage_1",
    "hypertension_stage_2",
    "hypertensive_crisis",
    "hypotension",
}


def semantic_state(s: Settings, records: list, model=None) -> dict[str, dict[str, object]]:
    """id -> {category, anomaly (by value)} of every live reading, from the monitor's logic."""
    from lib.monitor import engine
    from lib.monitor.risk import RiskModel
    from tests.reliability.harness import _Msg

    mon = engine.Monitor(model or RiskModel.load(s.model_path), s.ruleset)
    state: dict[str, dict[str, object]] = {}
    for i in range(0, len(records), 500):
        res = mon.process([_Msg(k, v) for k, v, _ in records[i : i + 500]])
        for _, r in res:
            for o in r.outcomes:
                rid = getattr(getattr(o, "reading", None), "observation_id", None)
                if rid is not None and hasattr(o, "category"):
                    state[rid] = {
                        "category": o.category,
                        "values": (o.reading.systolic, o.reading.diastolic),
                    }
                elif type(o).__name__ == "Retraction":
                    state.pop(o.observation_id, None)
    return state


def ordering_poison(
    base: Settings, work: Path, size: Size, seed: int = 23, dup_spread: tuple[int, int] = (0, 8)
) -> Tally:
    """Out-of-order, duplicated and retracted readings interleaved: the clean final state."""
    tally = Tally("ordering")
    with namespace(base, work) as s:
        s = replace(s, sim_patients=size.patients, sim_seed=seed)
        per_patient = max(1, size.readings // size.patients)
        pert = ordering.perturb(
            cohort.cohort(size.patients, seed), seed, per_patient, dup_spread=dup_spread
        )
        send(s, pert.records)
        exp = expect(s, pert.records)
        rec = init_recovery(work / s.namespace / "recovery")
        logs = work / s.namespace / "monitor.log"
        rc = _run_to_end(monitor(s, rec, logs), tally, 900)
        if rc != 0:
            tally.problems.append(f"monitor exited with {rc}; see {logs}")
        tally = _finish(tally, s, exp, [logs])
        # the real outputs equal ``exp`` exactly (reconciled); now ``exp`` against the clean run
        clean = semantic_state(s, pert.clean)
        got = semantic_state(s, pert.records)
        if got != clean:
            diff = set(got) ^ set(clean) | {k for k in got if k in clean and got[k] != clean[k]}
            tally.problems.append(
                f"final state differs from the clean sequence's for {len(diff)} ids"
            )
        if (exp.anomaly_ids | {k for k, _ in exp.normal_keys}) & pert.bogus_ids:
            tally.problems.append("a retracted (bogus) reading is in the outputs")
        clean_value = {k for k, v in clean.items() if v["category"] in VALUE_ANOMALIES}
        if not clean_value <= exp.anomaly_ids:
            tally.problems.append("a reading anomalous by value is missing from bp-anomalies")
        tally.notes.update({k: v for k, v in pert.kinds.items()})
        tally.messages = len(pert.records)
        return tally


SCENARIOS = {
    "crash": crash,
    "kafka-outage": kafka_outage,
    "es-outage": es_outage,
    "es-write-block": es_write_block,
    "es-stop": es_stop,
    "disk": disk,
    "fuzz": fuzzing,
    "ordering": ordering_poison,
}
