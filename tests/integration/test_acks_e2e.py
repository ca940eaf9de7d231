"""The alert loop against the REAL Kafka and Elasticsearch: the monitor as a subprocess with
recovery on, acknowledgements through ``python -m lib.tools.ack`` and straight onto the topic,
a ``kill -9`` with acknowledgements in flight.

Deadlines are wall-clock, so these tests wait for them (seconds: the deadline is a fraction of
a minute here).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from lib.connectors.kafka import produce_all
from lib.domain import Reading
from lib.monitor.alerts import _digest
from lib.settings import Settings
from lib.sim import fhir_writer as obs
from tests.reliability.harness import ROOT, child_env, init_recovery, monitor, read_topic

pytestmark = pytest.mark.integration


def crisis_records(patients: int, start: datetime) -> list[tuple[bytes, bytes, tuple]]:
    """One hypertensive-crisis reading (severity critical) per patient, and a normal one
    before it."""
    out = []
    for p in range(patients):
        pid = f"ack-pt-{p}"
        for i, (s, d) in enumerate(((118.0, 76.0), (188.0, 104.0))):
            r = Reading(f"{pid}-obs-{i}", pid, start + timedelta(minutes=5 * i), s, d)
            out.append((pid.encode(), obs.encode(obs.to_fhir(r, "Jane Testpatient")), []))
    return out


def episode_id(p: int) -> str:
    pid = f"ack-pt-{p}"
    return _digest(pid, "hypertension", f"{pid}-obs-1")


def ack_record(p: int, by: str = "nurse-1") -> tuple[bytes, bytes, tuple]:
    body = {"episode_id": episode_id(p), "by": by, "at": datetime.now(UTC).isoformat()}
    return (f"ack-pt-{p}".encode(), orjson.dumps(body), [])


def episodes(es: Any, settings: Settings) -> dict[str, dict[str, Any]]:
    es.indices.refresh(index=settings.episodes_index)
    hits = es.search(index=settings.episodes_index, size=1000, query={"match_all": {}})
    return {h["_id"]: h["_source"] for h in hits["hits"]["hits"]}


def alert_messages(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for m in read_topic(settings, settings.alerts_topic):
        out.append((dict(m.headers())["bpwatch-id"].decode(), orjson.loads(m.value())))
    return out


def wait_for(check, timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def run_bounded(settings: Settings, recovery: Path, log: Path, **env: str) -> None:
    rc = monitor(settings, recovery, log, **env).start().wait(180)
    assert rc == 0, log.read_text()[-3000:]


def ack_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lib.tools.ack", *args],
        cwd=ROOT,
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_acknowledge_through_the_cli_and_the_rest_go_overdue(settings_factory, es, tmp_path):
    settings = settings_factory(kafka_tail=False)
    start = datetime.now(UTC) - timedelta(hours=2)
    produce_all(settings, settings.observations_topic, crisis_records(6, start))
    rec, log = init_recovery(tmp_path / "rec"), tmp_path / "monitor.log"
    # first pass: the episodes open; a long deadline, so none is due when it ends
    run_bounded(settings, rec, log, BPWATCH_ACK_DEADLINE_MINUTES="60")
    docs = episodes(es, settings)
    assert {episode_id(p) for p in range(6)} <= set(docs)
    assert all(d["status"] == "open" and d["acknowledged"] is False for d in docs.values())

    for p in (0, 1):
        done = ack_cli(settings, episode_id(p), "--by", f"nurse-{p}", "--note", "rang back")
        assert done.returncode == 0, done.stderr
        assert "rang back" not in done.stdout + done.stderr  # the note is not echoed
    unknown = ack_cli(settings, "0" * 32, "--by", "nurse-0")
    assert unknown.returncode == 2 and "--open" in unknown.stdout + unknown.stderr
    # an acknowledgement the tool would refuse, sent straight to the topic: dead-lettered
    stray = (
        b"ack-pt-2",
        orjson.dumps({"episode_id": "f" * 32, "by": "x", "at": "2026-01-01T00:00:00Z"}),
        [],
    )
    produce_all(settings, settings.acks_topic, [stray])

    # second pass: every deadline is due; the end of the bounded run fires the unacknowledged
    run_bounded(settings, rec, log, BPWATCH_ACK_DEADLINE_MINUTES="0.001")
    docs = episodes(es, settings)
    for p in range(6):
        d = docs[episode_id(p)]
        if p in (0, 1):
            assert (d["acknowledged"], d["acknowledged_by"], d["overdue"]) == (
                True, f"nurse-{p}", False,
            )  # fmt: skip
            assert d["ack_note"] == "rang back"
        else:
            assert (d["acknowledged"], d["overdue"]) == (False, True), d
    msgs = alert_messages(settings)
    assert Counter(m["event"] for _, m in msgs) == {"opened": 6, "acknowledged": 2, "overdue": 4}
    assert len({i for i, _ in msgs}) == len(msgs)  # every id once
    assert all("note" not in m for _, m in msgs)  # Kafka never carries the note
    dead = read_topic(settings, settings.acks_dlq_topic)
    assert [dict(m.headers())["error"] for m in dead] == [b"unknown_episode"]
    assert b"ack-pt-2" not in log.read_bytes() and b"rang back" not in log.read_bytes()


def test_kill_9_with_acknowledgements_in_flight(settings_factory, es, tmp_path):
    """Live monitor (tailing), 30 critical episodes; acknowledgements for 15 are sent in three
    parts with a ``kill -9`` after each part; the rest must go overdue exactly once."""
    settings = settings_factory(kafka_tail=True)
    n, acked = 30, set(range(0, 30, 2))
    start = datetime.now(UTC) - timedelta(minutes=30)
    produce_all(settings, settings.observations_topic, crisis_records(n, start))
    rec, log = init_recovery(tmp_path / "rec"), tmp_path / "monitor.log"
    env = {"BPWATCH_ACK_DEADLINE_MINUTES": "0.5", "BPWATCH_ACK_SETTLE_SECONDS": "3"}
    proc = monitor(settings, rec, log, **env).start()
    try:
        wait_for(lambda: len(episodes(es, settings)) >= n, 90, "the episodes to open")
        armed = time.monotonic()
        parts = [sorted(acked)[i::3] for i in range(3)]
        for part in parts:
            produce_all(settings, settings.acks_topic, [ack_record(p) for p in part])
            time.sleep(0.4)  # some read, some in flight
            proc.kill9()
            proc = monitor(settings, rec, log, **env).start()
        assert time.monotonic() - armed < 25, "too slow: acknowledgements past the deadline"

        def settled() -> dict[str, dict[str, Any]] | None:
            docs = episodes(es, settings)
            done = sum(1 for d in docs.values() if d["acknowledged"] or d["overdue"])
            return docs if done >= n else None

        docs = wait_for(settled, 120, "every episode acknowledged or overdue")
        time.sleep(3)  # anything more would now be a duplicate
        docs = episodes(es, settings)
    finally:
        proc.kill9()
    for p in range(n):
        d = docs[episode_id(p)]
        want = (True, False) if p in acked else (False, True)
        assert (d["acknowledged"], d["overdue"]) == want, (p, d)
    msgs = alert_messages(settings)
    ids = Counter(i for i, _ in msgs)
    assert max(ids.values()) == 1, "an alert id was sent twice"
    kinds = Counter(m["event"] for _, m in msgs)
    assert (kinds["opened"], kinds["acknowledged"], kinds["overdue"]) == (n, 15, 15)
    es.indices.refresh(index=settings.alerts_index)
    in_es = es.count(
        index=settings.alerts_index, query={"terms": {"event": ["acknowledged", "overdue"]}}
    )
    assert in_es["count"] == 30
