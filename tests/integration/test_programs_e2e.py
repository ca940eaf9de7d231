"""Programs and adherence against the REAL Kafka and Elasticsearch: enrolments on
``bp.enrollments`` beside the readings, ``bp-adherence`` and the ``severe_range_bp`` episodes,
the enrolments' dead letters, and a ``kill -9`` while the readings arrive.

The expected documents are derived here from the readings sent (the local date of each
reading, cycles of 30 days from the enrolment or the first reading), not from the monitor's
code. The readings are 60 days old: no deadline is armed and no ``no_data`` episode opens,
so nothing depends on the wall clock.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from lib.connectors.kafka import produce_all
from lib.domain import Reading
from lib.settings import Settings
from lib.sim import fhir_writer as obs
from tests.reliability.harness import init_recovery, monitor, read_topic

pytestmark = pytest.mark.integration

PATIENTS = 9
DAYS = 33  # a cycle and three days
START = (datetime.now(UTC) - timedelta(days=60)).replace(hour=0, minute=0, second=0, microsecond=0)
OFFSETS = (-300, 60, 0)  # minutes: New York, Berlin in winter, UTC
Record = tuple[bytes, bytes, list]


def pid(p: int) -> str:
    return f"rpm-pt-{p}"


def postpartum(p: int) -> bool:
    return p % 3 == 0


def plan() -> tuple[list[Record], list[Record], list[tuple[str, int, Reading]]]:
    """(enrolments, readings, [(patient, offset, reading)]): patient ``p`` sends on the days
    whose index is a multiple of ``p % 4 + 1`` (every day, every 2nd, 3rd or 4th day: 30, 15,
    10 and 8 days of the first cycle), at 21:30 local time
    (after midnight UTC in New York); postpartum patients a severe pair on day 7 (10 minutes
    apart: confirmed, repeat) and on day 23 (40 minutes apart: persistent), each resolved by
    the clear readings of the days after."""
    enrolments: list[Record] = []
    sent: list[tuple[str, int, Reading]] = []
    for p in range(PATIENTS):
        patient, offset = pid(p), OFFSETS[p % 3]
        tz = timezone(timedelta(minutes=offset))
        first = (START + timedelta(days=1)).astimezone(tz).date()
        if postpartum(p):
            body = {"program": "postpartum", "start": first.isoformat(), "end":
                    (first + timedelta(days=DAYS)).isoformat()}  # fmt: skip
            enrolments.append((patient.encode(), orjson.dumps(body), []))
        for d in range(DAYS):
            pair_day = postpartum(p) and d in (7, 23)
            if d % (p % 4 + 1) and not pair_day:
                continue
            local = datetime.combine(first + timedelta(days=d), datetime.min.time(), tz)
            at = (local + timedelta(hours=21, minutes=30)).astimezone(UTC)
            values = [(at, 128.0, 82.0)]
            if pair_day:
                gap = timedelta(minutes=10 if d == 7 else 40)
                values = [(at, 166.0, 104.0), (at + gap, 158.0, 112.0)]
            for k, (t, s, dia) in enumerate(values):
                sent.append((patient, offset, Reading(f"{patient}-d{d}-{k}", patient, t, s, dia)))
    records = [
        (r.patient_id.encode(),
         obs.encode(obs.to_fhir(r, "Jane Testpatient", utc_offset_min=off, device="cuff-1")),
         [])
        for _, off, r in sent
    ]  # fmt: skip
    return enrolments, records, sent


def expected_cycles(sent: list[tuple[str, int, Reading]]) -> dict[str, tuple[int, str]]:
    """``patient|cycle_start`` -> (days with readings, band), derived from what was sent."""
    days: defaultdict[str, set[date]] = defaultdict(set)
    for patient, offset, r in sent:
        days[patient].add(r.effective_at.astimezone(timezone(timedelta(minutes=offset))).date())
    out = {}
    for patient, ds in days.items():
        anchor = min(ds)  # the enrolment starts on the first reading's date too
        cycles: Counter[date] = Counter(anchor + timedelta(days=30 * ((d - anchor).days // 30))
                                        for d in ds)  # fmt: skip
        for start, n in cycles.items():
            band = "under_2" if n < 2 else "2_to_15" if n <= 15 else "16_plus"
            out[f"{patient}|{start.isoformat()}"] = (n, band)
    return out


def adherence(es: Any, settings: Settings) -> dict[str, dict[str, Any]]:
    es.indices.refresh(index=settings.adherence_index)
    hits = es.search(index=settings.adherence_index, size=1000, query={"match_all": {}})
    return {h["_id"]: h["_source"] for h in hits["hits"]["hits"]}


def severe_alerts(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for m in read_topic(settings, settings.alerts_topic):
        doc = orjson.loads(m.value())
        if doc["condition"] == "severe_range_bp":
            out.append((dict(m.headers())["bpwatch-id"].decode(), doc))
    return out


def run_bounded(settings: Settings, rec: Path, log: Path) -> None:
    rc = monitor(settings, rec, log).start().wait(240)
    assert rc == 0, log.read_text()[-3000:]


def check(es: Any, settings: Settings, sent: list[tuple[str, int, Reading]]) -> dict[str, Any]:
    docs = adherence(es, settings)
    want = expected_cycles(sent)
    assert {k: (d["days_with_readings"], d["band"]) for k, d in docs.items()} == want
    for p in range(PATIENTS):
        mine = [d for k, d in docs.items() if k.startswith(pid(p) + "|")]
        assert all(("program" in d) == postpartum(p) for d in mine), (p, mine)
    alerts = severe_alerts(settings)
    kinds = Counter((m["event"], m.get("confirmation", "")) for _, m in alerts)
    pp = sum(1 for p in range(PATIENTS) if postpartum(p))
    assert kinds == {
        ("opened", ""): 2 * pp, ("escalated", "repeat"): pp, ("escalated", "persistent"): pp,
        ("resolved", ""): 2 * pp,
    }  # fmt: skip
    assert max(Counter(i for i, _ in alerts).values()) == 1
    return docs


def test_enrolments_readings_and_dead_letters_through_kafka_and_elasticsearch(
    settings_factory, es, tmp_path
):
    settings = settings_factory(kafka_tail=False)
    enrolments, records, sent = plan()
    bad = [(b"rpm-pt-1", b'{"program": "antenatal", "start": "2026-01-01"}', [])]
    produce_all(settings, settings.enrollments_topic, [*enrolments, *bad])
    time.sleep(1)  # enrolments first, as a program sends them
    produce_all(settings, settings.observations_topic, records)
    rec, log = init_recovery(tmp_path / "rec"), tmp_path / "monitor.log"
    run_bounded(settings, rec, log)
    check(es, settings, sent)
    dead = read_topic(settings, settings.enrollments_dlq_topic)
    assert [(m.key(), dict(m.headers())["error"]) for m in dead] == [
        (b"rpm-pt-1", b"invalid_enrollment")
    ]
    assert b"rpm-pt-" not in log.read_bytes()  # patient ids stay out of the log


def test_kill_9_while_readings_arrive_gives_the_documents_of_an_uninterrupted_run(
    settings_factory, es, tmp_path
):
    enrolments, records, sent = plan()
    straight = settings_factory(kafka_tail=False)
    produce_all(straight, straight.enrollments_topic, enrolments)
    produce_all(straight, straight.observations_topic, records)
    run_bounded(straight, init_recovery(tmp_path / "a"), tmp_path / "a.log")
    want = check(es, straight, sent)

    killed = settings_factory(kafka_tail=True)
    produce_all(killed, killed.enrollments_topic, enrolments)
    rec, log = init_recovery(tmp_path / "b"), tmp_path / "b.log"
    proc = monitor(killed, rec, log).start()
    try:
        k = len(records) // 3  # the same order as the uninterrupted run, in three parts
        for part in (records[:k], records[k : 2 * k], records[2 * k :]):
            produce_all(killed, killed.observations_topic, part)
            time.sleep(1.5)
            proc.kill9()
            proc = monitor(killed, rec, log).start()
        deadline = time.monotonic() + 120
        while adherence(es, killed) != want and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)
    finally:
        proc.kill9()
    got = adherence(es, killed)
    assert got == want
    ids = {i for i, _ in severe_alerts(killed)}
    assert ids == {i for i, _ in severe_alerts(straight)}
