"""``python -m lib.tools.ack`` against the REAL Kafka and Elasticsearch, in a namespace of its
own (``settings`` fixture: ``lib.tools.admin`` setup and teardown). The ``bp-episodes``
documents are indexed here directly, as the monitor would have left them; the
acknowledgements are read back from ``bp.alerts.acks``."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest

from lib.settings import Settings
from tests.reliability.harness import ROOT, child_env, read_topic

pytestmark = pytest.mark.integration

NOTE = "called back, BP re-measured at home"


def episode(i: str, patient: str, severity: str, opened_at: str, **fields: Any) -> dict[str, Any]:
    """A bp-episodes document as the ``opened`` event writes it, with ``fields`` on top."""
    return {
        "episode_id": i, "patient_id": patient, "condition": "hypertensive_crisis",
        "severity": severity, "tier": "urgent", "status": "open", "opened_at": opened_at,
        "last_event_at": opened_at, "resolved_at": None, "acknowledged": False,
        "acknowledged_by": None, "acknowledged_at": None, "ack_note": None, "overdue": False,
        "overdue_at": None, "observation_ids": [f"{i}-obs"], "systolic": 185.0,
        "diastolic": 122.0, "risk_score": 0.6, "ruleset": "aha2025", **fields,
    }  # fmt: skip


WORKLIST = [
    episode("ep-crit-old", "pt-a", "critical", "2026-03-01T01:00:00.000Z", overdue=True,
            overdue_at="2026-03-01T01:15:00.000Z"),
    episode("ep-crit-new", "pt-b", "critical", "2026-03-01T05:00:00.000Z"),
    episode("ep-high", "pt-c", "high", "2026-02-28T09:00:00.000Z"),
    episode("ep-low", "pt-d", "low", "2026-02-20T09:00:00.000Z"),
    episode("ep-acked", "pt-e", "critical", "2026-02-27T09:00:00.000Z", acknowledged=True,
            acknowledged_by="nurse-9", acknowledged_at="2026-02-27T09:05:00.000Z"),
    episode("ep-resolved", "pt-f", "critical", "2026-02-26T09:00:00.000Z", status="resolved",
            resolved_at="2026-02-26T12:00:00.000Z", last_event_at="2026-02-26T12:00:00.000Z"),
]  # fmt: skip


def index_episodes(es: Any, settings: Settings, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        es.index(index=settings.episodes_index, id=doc["episode_id"], document=doc)
    es.indices.refresh(index=settings.episodes_index)


def run(settings: Settings, module: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=child_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def acks_sent(settings: Settings) -> list[tuple[str, dict[str, Any], int, int]]:
    return [
        (m.key().decode(), orjson.loads(m.value()), m.partition(), m.offset())
        for m in read_topic(settings, settings.acks_topic)
    ]


def test_acknowledge_an_open_episode_and_refuse_the_others(settings, es):
    index_episodes(es, settings, WORKLIST)

    done = run(settings, "lib.tools.ack", "ep-crit-new", "--by", "nurse-1", "--note", NOTE,
               "--at", "2026-03-01T06:30:00+01:00")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (sent,) = acks_sent(settings)
    key, message, partition, offset = sent
    assert key == "pt-b"
    assert message == {"episode_id": "ep-crit-new", "by": "nurse-1",
                       "at": "2026-03-01T05:30:00.000+00:00", "note": NOTE}  # fmt: skip
    said = done.stdout
    assert "ep-crit-new" in said and "hypertensive_crisis" in said and "critical" in said
    assert f"{settings.acks_topic} partition {partition} offset {offset}" in said
    assert NOTE not in said + done.stderr and "pt-b" not in said + done.stderr

    unknown = run(settings, "lib.tools.ack", "ep-never", "--by", "nurse-1")
    assert unknown.returncode == 2
    assert "no episode ep-never" in unknown.stderr and "--open" in unknown.stderr
    resolved = run(settings, "lib.tools.ack", "ep-resolved", "--by", "nurse-1")
    assert resolved.returncode == 2
    assert "already resolved at 2026-02-26T12:00:00.000Z" in resolved.stderr
    acked = run(settings, "lib.tools.ack", "ep-acked", "--by", "nurse-1")
    assert acked.returncode == 0
    assert "already acknowledged by nurse-9 at 2026-02-27T09:05:00.000Z" in acked.stdout
    long_note = run(settings, "lib.tools.ack", "ep-high", "--by", "nurse-1", "--note", "x" * 501)
    assert long_note.returncode == 2 and "at most 500" in long_note.stderr
    assert len(acks_sent(settings)) == 1  # the refusals sent nothing


def test_open_lists_the_worklist_most_severe_and_oldest_first(settings, es):
    index_episodes(es, settings, WORKLIST)
    listed = run(settings, "lib.tools.ack", "--open")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[0] == "episode_id"
    rows = [line.split() for line in lines[1:-1]]
    assert [r[0] for r in rows] == ["ep-crit-old", "ep-crit-new", "ep-high", "ep-low"]
    assert rows[0][-1] == "OVERDUE" and all(r[-1] != "OVERDUE" for r in rows[1:])
    assert lines[-1] == "4 open, unacknowledged episodes: 1 overdue"
    assert "pt-" not in listed.stdout

    first = run(settings, "lib.tools.ack", "--open", "--limit", "2")
    assert [line.split()[0] for line in first.stdout.splitlines()[1:-1]] == [
        "ep-crit-old", "ep-crit-new"
    ]  # fmt: skip
    assert "4 open, unacknowledged episodes: the first 2 shown (--limit)" in first.stdout


def test_no_bp_episodes_index_names_the_fix(settings, es):
    es.indices.delete(index=settings.episodes_index + "-v1")
    listed = run(settings, "lib.tools.ack", "--open")
    assert listed.returncode == 1 and "make setup" in listed.stderr
    one = run(settings, "lib.tools.ack", "ep-1", "--by", "nurse-1")
    assert one.returncode == 1 and "make setup" in one.stderr
