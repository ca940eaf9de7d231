"""Reconciled summary of a run: what went in, where each Observation ended, what is missing.

``python -m lib.tools.summary [--truth data/demo/ground_truth.jsonl]`` reads the real
outputs (Kafka topic offsets, Elasticsearch counts and ids, the normal-case files) and, when the
simulator's ground truth is given, checks them against the expected fate of every Observation:

* dead letters on the DLQ = Observations the simulator made faulty on purpose;
* every reading that should be live (not retracted) is in ``bp-anomalies`` or a normal file;
* no retracted reading is left in ``bp-anomalies``; no normal line is written twice;
* home averages (the simulator's home cohort): one ``bp-home-averages`` document per patient
  whose week gives an average, with the series start and the home-hypertension verdict the
  truth names, and no other protocol document;
* no-data episodes: silence is measured on the wall clock, and the simulator's readings have
  fixed dates, so the summary derives the expected set from the truth *at the time it runs*:
  every patient with at least 3 readings whose last reading lies between
  ``BPWATCH_NO_DATA_LOOKBACK_DAYS`` and ``BPWATCH_NO_DATA_HOURS`` before now must have a
  ``no_data`` episode open at the end (opened, not resolved), and nobody else. Patients within
  an hour of either edge are left out of the comparison (the monitor checked a little
  earlier) and counted. ``make demo`` sets ``BPWATCH_SIM_START`` to a day ago, so the
  simulator's silent patients fall inside the window and everyone else is recent. Episodes
  opened and resolved during the catch-up (a check ran before a patient's later readings
  were read) are counted, not failures;
* alert quality (a figure, never a failure): the precision, recall and burden of the urgent
  reading alerts against the truth (:mod:`lib.tools.alert_quality`);
* episodes (``bp-episodes``, when it exists; with or without ``--truth``): the open ones, and
  those that need an acknowledgement (open at ``BPWATCH_ACK_MIN_SEVERITY`` or above, or
  acknowledged or overdue). With ``BPWATCH_SIM_ACK_SHARE`` above 0 (``make demo``, whose
  :mod:`lib.tools.demo_acks` acknowledged that share) the acknowledged ones must be exactly
  those :func:`lib.tools.demo_acks.chosen` picks, and the overdue ones among the open exactly
  the others still open (:func:`reconcile_episodes`);
* remote monitoring (the simulator's postpartum and low-adherence cohorts, when the truth holds
  them): the ``bp-adherence`` documents of those patients against the cycles their readings
  make (:func:`expected_cycles`, :func:`reconcile_adherence`: anchored at the enrolment's start,
  else at the first reading's local date; 30-day cycles; the days are the distinct local dates
  of the readings), and the ``severe_range_bp`` alert events against the truth's planned
  severe-range readings (:func:`reconcile_severe`): ``opened`` on each ``first`` and ``single``
  reading, ``escalated`` (confirmed) on each ``repeat`` and ``persistent`` one, with that
  ``confirmation``.

Exit code 0 when everything reconciles, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from lib.monitor.no_data import MIN_READINGS
from lib.settings import Settings, load_or_exit
from lib.tools import alert_quality
from lib.tools.demo_acks import chosen
from lib.tools.episodes import severity_at_least

log = logging.getLogger(__name__)


NO_DATA_EDGE_S = 3600.0  # patients this close to an edge of the no-data window are not compared
NO_DATA_MIN_READINGS = MIN_READINGS  # the monitor's own rule (lib.monitor.no_data)
EPISODE_FIELDS = ["episode_id", "status", "severity", "acknowledged", "overdue"]
ADHERENCE_FIELDS = ["patient_id", "cycle_start", "days_with_readings", "band"]
SEVERE_CONDITION = "severe_range_bp"
CYCLE_DAYS = 30  # the contract's adherence cycle ("bp-adherence"), derived here independently
BANDS = ("under_2", "2_to_15", "16_plus")


def band_of(days: int) -> str:
    """The contract's adherence band of a count of days with readings (0-1, 2-15, 16-30)."""
    return BANDS[0] if days < 2 else BANDS[1] if days <= 15 else BANDS[2]


@dataclass
class RpmPatient:
    """What the truth says of a remote-monitoring patient."""

    program: str = ""
    program_start: str | None = None  # the enrolment's start (ISO date), None when not enrolled
    dates: set[str] = field(default_factory=set)  # local dates of its readings


@dataclass
class Truth:
    """What the simulator's ground truth says a run must produce."""

    fates: Counter[str] = field(default_factory=Counter)
    live: set[str] = field(default_factory=set)
    retracted: set[str] = field(default_factory=set)
    last_reading: dict[str, tuple[float, int]] = field(default_factory=dict)  # (ts, readings)
    home: dict[str, bool] = field(default_factory=dict)  # average _id -> home hypertension
    home_no_average: set[str] = field(default_factory=set)  # patients too short for one
    home_cut: set[str] = field(default_factory=set)  # weeks cut short by BPWATCH_SIM_COUNT
    silent: set[str] = field(default_factory=set)  # patients the simulator made stop
    rpm: dict[str, RpmPatient] = field(default_factory=dict)  # remote-monitoring patients
    severe: dict[str, str] = field(default_factory=dict)  # observation id -> severe-range mark


@dataclass
class Figures:
    """Expected and found home averages and no-data episodes."""

    home_expected: int = 0
    home_expected_hypertension: int = 0
    home_found: int = 0
    home_found_hypertension: int = 0
    home_cut: int = 0
    home_rpm: int = 0  # home averages of the RPM cohorts' patients (not compared)
    no_data_expected: int = 0
    no_data_open: int = 0
    no_data_transient: int = 0
    no_data_edge: int = 0
    silent_designed: int = 0
    silent_in_window: int = 0


@dataclass
class RunOutputs:
    messages_in: int = 0
    dead_letters: int = 0
    alerts_kafka: int = 0
    alerts_es: int = 0
    anomaly_ids: set[str] = field(default_factory=set)
    normal_lines: int = 0
    normal_ids: set[str] = field(default_factory=set)
    normal_duplicate_lines: int = 0
    normal_files: int = 0
    home_docs: dict[str, bool] = field(default_factory=dict)  # protocol averages: _id -> verdict
    no_data_events: list[tuple[str, str, str]] = field(default_factory=list)  # patient, ep, event
    alert_docs: list[dict[str, Any]] = field(default_factory=list)  # for lib.tools.alert_quality
    episode_docs: list[dict[str, Any]] | None = None  # bp-episodes (None: no such index)
    adherence_docs: list[dict[str, Any]] = field(default_factory=list)  # bp-adherence


@dataclass(frozen=True)
class AdherenceFigures:
    """The RPM patients' adherence cycles, expected and found, by band."""

    patients: int
    expected: dict[str, int]
    found: dict[str, int]


@dataclass(frozen=True)
class SevereFigures:
    """The ``severe_range_bp`` events, expected from the truth and found."""

    opened_expected: int
    opened: int
    repeat_expected: int
    repeat: int
    persistent_expected: int
    persistent: int


@dataclass(frozen=True)
class EpisodeFigures:
    """The episodes of ``bp-episodes``: found, and expected from the demo's acknowledger."""

    open: int
    need: int  # open at BPWATCH_ACK_MIN_SEVERITY or above, or acknowledged, or overdue
    acknowledged: int
    overdue: int  # of the open ones
    checked: bool  # BPWATCH_SIM_ACK_SHARE > 0: the expectations below were compared
    acknowledged_expected: int = 0
    overdue_expected: int = 0


def topic_size(settings: Settings, topic: str) -> int:
    """Messages in a topic: the sum over partitions of high - low watermark."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka_client_config(), "group.id": "bpwatch-summary"})
    try:
        md = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if md is None or md.error is not None:
            return 0
        total = 0
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += high - low
        return total
    finally:
        consumer.close()


def es_hits(
    es: Any, index: str, source: list[str] | bool = False, query: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """All hits of an index (scroll-free: search_after on _id is not allowed, so PIT)."""
    from elasticsearch import NotFoundError

    try:
        es.indices.refresh(index=index)
    except NotFoundError:
        return []
    out: list[dict[str, Any]] = []
    pit = es.open_point_in_time(index=index, keep_alive="1m")["id"]
    try:
        after = None
        while True:
            kwargs: dict[str, Any] = {
                "size": 5000,
                "pit": {"id": pit, "keep_alive": "1m"},
                "sort": [{"_shard_doc": "asc"}],
                "_source": source,
            }
            if query is not None:
                kwargs["query"] = query
            if after is not None:
                kwargs["search_after"] = after
            hits = es.search(**kwargs)["hits"]["hits"]
            if not hits:
                return out
            out += hits
            after = hits[-1]["sort"]
    finally:
        es.close_point_in_time(id=pit)


def es_ids(es: Any, index: str) -> set[str]:
    """All document ids of an index."""
    return {h["_id"] for h in es_hits(es, index)}


def read_normals(directory: Path, out: RunOutputs) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for path in sorted(directory.rglob("*.jsonl")):
        out.normal_files += 1
        with path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = orjson.loads(line)
                out.normal_lines += 1
                seen[(rec["observation_id"], str(rec.get("version", "")))] += 1
                out.normal_ids.add(rec["observation_id"])
    out.normal_duplicate_lines = sum(c - 1 for c in seen.values() if c > 1)


def elastic_outputs(settings: Settings, out: RunOutputs) -> None:
    """Anomaly ids, home averages, the alert documents and their no-data events."""
    from lib.connectors.elastic import TOOL_RETRIES, make_client

    es = make_client(settings, max_retries=TOOL_RETRIES)
    try:
        out.anomaly_ids = es_ids(es, settings.anomalies_index)
        protocol = {"term": {"origin": "protocol"}}
        for h in es_hits(es, settings.home_averages_index, ["home_hypertension"], protocol):
            out.home_docs[h["_id"]] = bool(h["_source"]["home_hypertension"])
        fields = ["patient_id", "episode_id", "condition", "event", "event_at", "tier",
                  "observation_ids", "confirmed", "confirmation"]  # fmt: skip
        out.alert_docs = [h["_source"] for h in es_hits(es, settings.alerts_index, fields)]
        out.alerts_es = len(out.alert_docs)
        out.no_data_events = [
            (d["patient_id"], d["episode_id"], d["event"])
            for d in out.alert_docs
            if d["condition"] == "no_data"
        ]
        hits = es_hits(es, settings.adherence_index, ADHERENCE_FIELDS)
        out.adherence_docs = [h["_source"] for h in hits]
        if es.indices.exists(index=settings.episodes_index):
            hits = es_hits(es, settings.episodes_index, EPISODE_FIELDS)
            out.episode_docs = [h["_source"] for h in hits]
    finally:
        es.close()


def collect(settings: Settings) -> RunOutputs:
    out = RunOutputs()
    out.messages_in = topic_size(settings, settings.observations_topic)
    out.dead_letters = topic_size(settings, settings.dlq_topic)
    out.alerts_kafka = topic_size(settings, settings.alerts_topic)
    elastic_outputs(settings, out)
    if settings.normal_dir.exists():
        read_normals(settings.normal_dir, out)
    return out


def read_truth(truth_path: Path) -> Truth:
    """The simulator's ground truth (JSON Lines, one line per Observation) in one pass."""
    t = Truth()
    home_seen: Counter[str] = Counter()
    planned: dict[str, int] = {}
    with truth_path.open("rb") as fh:
        for line in fh:
            rec = orjson.loads(line)
            t.fates[rec["fate"]] += 1
            if rec["fate"] == "retracted":
                t.retracted.add(rec["observation_id"])
            if rec["fate"] != "reading":
                continue
            t.live.add(rec["observation_id"])
            pid = rec["patient_id"]
            ts = _epoch(rec["effective_at"])
            last, n = t.last_reading.get(pid, (ts, 0))
            t.last_reading[pid] = (max(last, ts), n + 1)
            if rec.get("rpm"):
                rpm = t.rpm.get(pid)
                if rpm is None:
                    rpm = t.rpm[pid] = RpmPatient(rec["program"], rec["program_start"])
                rpm.dates.add(rec["local_date"])
                if rec["severe"]:
                    t.severe[rec["observation_id"]] = rec["severe"]
                continue
            if "home_series_start" not in rec:
                continue
            if rec.get("silent"):
                t.silent.add(pid)
            planned[pid] = rec["home_readings"]
            home_seen[pid] += rec["setting"] == "home"
            if rec["home_hypertension"] is None:
                t.home_no_average.add(pid)
            else:
                t.home[f"{pid}|{rec['home_series_start']}"] = rec["home_hypertension"]
    t.live -= t.retracted
    t.home_cut = {pid for pid, n in planned.items() if home_seen[pid] < n}
    t.home = {k: v for k, v in t.home.items() if k.split("|", 1)[0] not in t.home_cut}
    return t


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def reconcile(out: RunOutputs, truth_path: Path | Truth) -> tuple[list[str], dict[str, int]]:
    """Problems found (empty = reconciled) and the expected counts by fate."""
    t = truth_path if isinstance(truth_path, Truth) else read_truth(truth_path)
    fates, live, retracted = t.fates, t.live, t.retracted
    problems: list[str] = []
    if out.dead_letters != fates["dead_letter"]:
        problems.append(f"dead letters: expected {fates['dead_letter']}, found {out.dead_letters}")
    found = out.anomaly_ids | out.normal_ids
    lost = live - found
    if lost:
        problems.append(f"lost readings: {len(lost)} expected Observations are in no output")
    stale = out.anomaly_ids & retracted
    if stale:
        problems.append(f"retracted readings still in Elasticsearch: {len(stale)}")
    unexpected = out.anomaly_ids - live
    if unexpected:
        problems.append(f"unexpected anomaly documents: {len(unexpected)}")
    if out.normal_duplicate_lines:
        problems.append(f"duplicate normal lines: {out.normal_duplicate_lines}")
    if out.alerts_kafka != out.alerts_es:
        problems.append(f"alerts: {out.alerts_kafka} on Kafka but {out.alerts_es} in Elasticsearch")
    return problems, dict(fates)


def reconcile_home(out: RunOutputs, t: Truth, fig: Figures) -> list[str]:
    """The protocol home averages against the truth's (patient | series start -> verdict)."""
    fig.home_expected = len(t.home)
    fig.home_expected_hypertension = sum(t.home.values())
    fig.home_cut = len(t.home_cut)
    # the RPM cohorts send home readings too, and the protocol averages them: counted apart,
    # not compared (the truth plans the home cohort's weeks only)
    rpm = {k for k in out.home_docs if k.split("|", 1)[0] in t.rpm}
    fig.home_rpm = len(rpm)
    docs = {
        k: v
        for k, v in out.home_docs.items()
        if k.split("|", 1)[0] not in t.home_cut and k not in rpm
    }
    fig.home_found = len(docs)
    fig.home_found_hypertension = sum(docs.values())
    problems = []
    missing = t.home.keys() - docs.keys()
    if missing:
        problems.append(f"home averages: {len(missing)} expected series have no document")
    extra = docs.keys() - t.home.keys()
    if extra:
        problems.append(f"home averages: {len(extra)} documents the truth does not expect")
    wrong = [k for k in t.home.keys() & docs.keys() if t.home[k] != docs[k]]
    if wrong:
        problems.append(f"home averages: {len(wrong)} with the wrong home-hypertension verdict")
    return problems


def reconcile_no_data(
    out: RunOutputs, t: Truth, fig: Figures, *, hours: float, lookback_days: float, now: float
) -> list[str]:
    """Open no-data episodes against the patients the truth says are silent at ``now``."""
    oldest, newest = now - lookback_days * 86_400.0, now - hours * 3600.0
    expected, edge = set(), set()
    for pid, (last, n) in t.last_reading.items():
        if n < NO_DATA_MIN_READINGS:
            continue
        if min(abs(last - oldest), abs(last - newest)) < NO_DATA_EDGE_S:
            edge.add(pid)
        elif oldest <= last <= newest:
            expected.add(pid)
    events: dict[str, set[str]] = {}
    patient_of: dict[str, str] = {}
    for pid, episode, event in out.no_data_events:
        events.setdefault(episode, set()).add(event)
        patient_of[episode] = pid
    open_now = {patient_of[e] for e, ev in events.items() if "resolved" not in ev}
    fig.no_data_expected = len(expected)
    fig.no_data_open = len(open_now - edge)
    fig.no_data_transient = sum(1 for ev in events.values() if {"opened", "resolved"} <= ev)
    fig.no_data_edge = len(edge)
    fig.silent_designed = len(t.silent)
    fig.silent_in_window = len(t.silent & expected)
    problems = []
    if expected - open_now:
        problems.append(f"no-data: {len(expected - open_now)} silent patients have no open episode")
    if (open_now - edge) - expected:
        problems.append(f"no-data: {len((open_now - edge) - expected)} open episodes not expected")
    return problems


def reconcile_episodes(
    docs: list[dict[str, Any]], *, min_severity: str, share: float
) -> tuple[EpisodeFigures, list[str]]:
    """The episodes against what the demo's acknowledger did (a pure function).

    An episode needs an acknowledgement when it is open at ``min_severity`` or above, or when
    it was acknowledged or went overdue. With ``share`` above 0 (the acknowledger's
    ``BPWATCH_SIM_ACK_SHARE``), the acknowledged episodes must be those of them that
    :func:`~lib.tools.demo_acks.chosen` picks, and the overdue ones among the open episodes
    those not picked that are still open (a resolved episode may have gone overdue before:
    not compared). With ``share`` 0 only the counts are given.
    """
    open_ = {d["episode_id"] for d in docs if d.get("status") == "open"}
    acknowledged = {d["episode_id"] for d in docs if d.get("acknowledged") is True}
    overdue = {d["episode_id"] for d in docs if d.get("overdue") is True} & open_
    need = {
        d["episode_id"]
        for d in docs
        if (d["episode_id"] in open_ and severity_at_least(d.get("severity"), min_severity))
        or d.get("acknowledged") is True
        or d.get("overdue") is True
    }
    figures = EpisodeFigures(len(open_), len(need), len(acknowledged), len(overdue), share > 0)
    if share <= 0:
        return figures, []
    picked = {e for e in need if chosen(e, share)}
    late = (need - picked) & open_
    figures = replace(figures, acknowledged_expected=len(picked), overdue_expected=len(late))
    problems = []
    if picked - acknowledged:
        problems.append(f"episodes: {len(picked - acknowledged)} chosen to be acknowledged are not")
    if acknowledged - picked:
        problems.append(f"episodes: {len(acknowledged - picked)} acknowledged, not chosen")
    if late - overdue:
        problems.append(f"episodes: {len(late - overdue)} left unacknowledged are not overdue")
    if overdue - late:
        problems.append(f"episodes: {len(overdue - late)} overdue, not expected")
    return figures, problems


def expected_cycles(rpm: Mapping[str, RpmPatient]) -> dict[tuple[str, str], int]:
    """``(patient, cycle_start) -> days with readings`` of the patients' readings: cycles of
    30 days anchored at the enrolment's start, else at the first reading's local date."""
    out: dict[tuple[str, str], int] = {}
    for pid, p in rpm.items():
        if not p.dates:
            continue
        days = sorted(date.fromisoformat(d) for d in p.dates)
        anchor = date.fromisoformat(p.program_start) if p.program_start else days[0]
        for d in days:
            start = anchor + timedelta(days=(d - anchor).days // CYCLE_DAYS * CYCLE_DAYS)
            key = (pid, start.isoformat())
            out[key] = out.get(key, 0) + 1
    return out


def reconcile_adherence(
    expected: Mapping[tuple[str, str], int], docs: list[dict[str, Any]]
) -> tuple[AdherenceFigures, list[str]]:
    """The ``bp-adherence`` documents of the expected patients against their expected cycles
    (a pure function): each cycle must have one document with its count of days and band,
    and no other cycle of those patients a document. Other patients' documents are ignored."""
    patients = {pid for pid, _ in expected}
    found: dict[tuple[str, str], tuple[int, str]] = {}
    for d in docs:
        if d.get("patient_id") in patients:
            key = (d["patient_id"], str(d["cycle_start"])[:10])
            found[key] = (int(d["days_with_readings"]), str(d["band"]))
    figures = AdherenceFigures(
        len(patients),
        dict(Counter(band_of(n) for n in expected.values())),
        dict(Counter(band for _, band in found.values())),
    )
    problems = []
    missing = expected.keys() - found.keys()
    if missing:
        problems.append(f"adherence: {len(missing)} expected cycles have no document")
    extra = found.keys() - expected.keys()
    if extra:
        problems.append(f"adherence: {len(extra)} cycles the truth does not expect")
    both = expected.keys() & found.keys()
    days = [k for k in both if found[k][0] != expected[k]]
    if days:
        problems.append(f"adherence: {len(days)} cycles with the wrong count of days")
    bands = [k for k in both if found[k][1] != band_of(expected[k])]
    if bands:
        problems.append(f"adherence: {len(bands)} cycles in the wrong band")
    return figures, problems


def reconcile_severe(
    marks: Mapping[str, str], alert_docs: list[dict[str, Any]]
) -> tuple[SevereFigures, list[str]]:
    """The ``severe_range_bp`` alert events against the truth's severe-range marks (a pure
    function; ``marks``: observation id -> ``first``, ``repeat``, ``persistent``,
    ``single``). Expected: an ``opened`` event on each ``first`` and ``single`` reading and
    a confirmed ``escalated`` event on each ``repeat`` and ``persistent`` reading, with that
    ``confirmation``; events are matched by their first observation id."""
    want_opened = {oid for oid, m in marks.items() if m in ("first", "single")}
    want_confirmed = {oid: m for oid, m in marks.items() if m in ("repeat", "persistent")}
    opened: set[str] = set()
    confirmed: dict[str, str] = {}
    unconfirmed = 0
    for d in alert_docs:
        if d.get("condition") != SEVERE_CONDITION:
            continue
        ids = d.get("observation_ids") or [""]
        if d.get("event") == "opened":
            opened.add(ids[0])
        elif d.get("event") == "escalated":
            if d.get("confirmed") is True:
                confirmed[ids[0]] = str(d.get("confirmation") or "")
            else:
                unconfirmed += 1
    kinds = Counter(want_confirmed.values())
    found = Counter(confirmed.values())
    figures = SevereFigures(
        len(want_opened), len(opened), kinds["repeat"], found["repeat"],
        kinds["persistent"], found["persistent"],
    )  # fmt: skip
    problems = []
    if want_opened - opened:
        problems.append(f"severe range: {len(want_opened - opened)} expected openings missing")
    if opened - want_opened:
        problems.append(f"severe range: {len(opened - want_opened)} openings not expected")
    missing = want_confirmed.keys() - confirmed.keys()
    if missing:
        problems.append(f"severe range: {len(missing)} expected confirmations missing")
    extra = confirmed.keys() - want_confirmed.keys()
    if extra:
        problems.append(f"severe range: {len(extra)} confirmations not expected")
    wrong = [
        k for k in want_confirmed.keys() & confirmed.keys() if want_confirmed[k] != confirmed[k]
    ]
    if wrong:
        problems.append(f"severe range: {len(wrong)} confirmations of the wrong kind")
    if unconfirmed:
        problems.append(f"severe range: {unconfirmed} escalations without confirmed true")
    return figures, problems


@dataclass(frozen=True)
class ProgramChecks:
    """The remote-monitoring reconciliations of a run (:func:`reconcile_programs`)."""

    adherence: AdherenceFigures
    severe: SevereFigures
    adherence_problems: list[str]
    severe_problems: list[str]

    @property
    def problems(self) -> list[str]:
        return self.adherence_problems + self.severe_problems


def reconcile_programs(out: RunOutputs, t: Truth) -> ProgramChecks | None:
    """Adherence cycles and severe-range events of the truth's RPM patients; None when the
    truth holds none."""
    if not t.rpm:
        return None
    adherence, adherence_problems = reconcile_adherence(expected_cycles(t.rpm), out.adherence_docs)
    severe, severe_problems = reconcile_severe(t.severe, out.alert_docs)
    return ProgramChecks(adherence, severe, adherence_problems, severe_problems)


def _program_rows(settings: Settings, checks: ProgramChecks) -> list[tuple[str, str, str]]:
    a, s = checks.adherence, checks.severe

    def bands(counts: dict[str, int]) -> str:
        return " / ".join(f"{b} {counts.get(b, 0):,}" for b in BANDS)

    adherence = (
        f"{a.patients:,} RPM patients: expected {bands(a.expected)}; found {bands(a.found)}  "
        + ("ok" if not checks.adherence_problems else "MISMATCH")
    )
    severe = (
        f"opened {s.opened:,}/{s.opened_expected:,} expected  confirmed repeat "
        f"{s.repeat:,}/{s.repeat_expected:,}  persistent {s.persistent:,}/"
        f"{s.persistent_expected:,}  " + ("ok" if not checks.severe_problems else "MISMATCH")
    )
    return [
        ("adherence cycles", adherence, f"Elasticsearch {settings.adherence_index}"),
        ("severe-range episodes", severe, settings.alerts_index),
    ]


def _episodes_row(settings: Settings, fig: EpisodeFigures, ok: bool) -> tuple[str, str, str]:
    text = f"open {fig.open:,}  need ack {fig.need:,}  "
    if fig.checked:
        text += (
            f"acknowledged {fig.acknowledged:,}/{fig.acknowledged_expected:,} expected  "
            f"overdue {fig.overdue:,}/{fig.overdue_expected:,} expected  "
            + ("ok" if ok else "MISMATCH")
        )
    else:
        text += f"acknowledged {fig.acknowledged:,}  overdue {fig.overdue:,}"
    return ("episodes", text, settings.episodes_index)


def _figure_rows(settings: Settings, fig: Figures) -> list[tuple[str, str, str]]:
    home = (
        f"expected {fig.home_expected:,} ({fig.home_expected_hypertension:,} home hypertension),"
        f" found {fig.home_found:,} ({fig.home_found_hypertension:,})"
    )
    if fig.home_cut:
        home += f"; {fig.home_cut} weeks cut by BPWATCH_SIM_COUNT not checked"
    if fig.home_rpm:
        home += f"; {fig.home_rpm} more of RPM patients, not compared"
    no_data = f"expected open {fig.no_data_expected:,}, open {fig.no_data_open:,}"
    window = f"{settings.no_data_hours:g} h..{settings.no_data_lookback_days:g} d"
    notes = [f"{fig.silent_in_window} of {fig.silent_designed} simulated silent in the {window}"]
    if fig.no_data_transient:
        notes.append(f"{fig.no_data_transient} opened and resolved during the catch-up")
    if fig.no_data_edge:
        notes.append(f"{fig.no_data_edge} at an edge of the window, not compared")
    return [
        ("home averages", home, f"Elasticsearch {settings.home_averages_index}"),
        ("no-data episodes", f"{no_data} ({'; '.join(notes)})", settings.alerts_index),
    ]


def render(
    settings: Settings,
    out: RunOutputs,
    fates: dict[str, int] | None,
    problems: list[str] | None,
    figures: Figures | None = None,
    quality: str | None = None,
    episodes: tuple[EpisodeFigures, list[str]] | None = None,
    programs: ProgramChecks | None = None,
) -> str:
    """The summary's text; ``quality``: the alert-quality headline
    (:func:`lib.tools.alert_quality.headline`), printed when given; ``episodes``: the
    episodes' figures and problems (:func:`reconcile_episodes`), ``programs``: the RPM
    checks (:func:`reconcile_programs`), whose problems are listed with the others."""
    rows = [
        ("messages in", f"{out.messages_in:,}", settings.observations_topic),
        (
            "anomalies indexed",
            f"{len(out.anomaly_ids):,}",
            f"Elasticsearch {settings.anomalies_index}",
        ),
        (
            "normal readings",
            f"{out.normal_lines:,} lines in {out.normal_files} files",
            str(settings.normal_dir),
        ),
        ("dead letters", f"{out.dead_letters:,}", settings.dlq_topic),
        (
            "alerts",
            f"{out.alerts_kafka:,} on Kafka, {out.alerts_es:,} in Elasticsearch",
            f"{settings.alerts_topic} / {settings.alerts_index}",
        ),
    ]
    if figures is not None:
        rows += _figure_rows(settings, figures)
    if programs is not None:
        rows += _program_rows(settings, programs)
    if quality is not None:
        rows.append(("alert quality", quality, settings.alerts_index))
    failed = list(problems or [])
    if programs is not None:
        failed += programs.problems
    if episodes is not None:
        rows.append(_episodes_row(settings, episodes[0], not episodes[1]))
        failed += episodes[1]
    width = max(len(r[0]) for r in rows)
    lines = ["bpwatch run summary", "-" * 19]
    lines += [f"{name:<{width}}  {value:<40} {where}" for name, value, where in rows]
    if fates is not None:
        expected = ", ".join(f"{k}={v:,}" for k, v in sorted(fates.items()))
        lines.append(f"{'expected (truth)':<{width}}  {expected}")
    if failed:
        lines.append("RECONCILIATION FAILED:")
        lines += [f"  - {p}" for p in failed]
    elif fates is not None and problems is not None:
        done = "reconciled: every Observation is accounted for; 0 lost, 0 duplicated"
        if figures is not None:
            done += "; home averages and open no-data episodes as the truth expects"
        if programs is not None:
            done += "; RPM adherence cycles and severe-range episodes as the truth expects"
        if episodes is not None and episodes[0].checked:
            done += "; episodes acknowledged and overdue as the demo expects"
        lines.append(done)
    lines += [
        "",
        "where to look:",
        f"  curl -s '{settings.es_url}/{settings.anomalies_index}/_search?size=3&pretty'",
        f"  ls {settings.normal_dir}",
        f"  BPWATCH_NAMESPACE={settings.namespace} .venv/bin/python -m lib.tools.report"
        " --out report.html"
        "   (the dashboard views as HTML, without Kibana)",
        "  Kibana (Docker stack): http://127.0.0.1:5601, dashboard 'bpwatch-overview'",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.tools.summary")
    parser.add_argument("--truth", type=Path, help="simulator ground truth (JSON Lines)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = load_or_exit()
    out = collect(settings)
    fates = problems = figures = quality = programs = None
    if args.truth and args.truth.exists():
        truth = read_truth(args.truth)
        problems, fates = reconcile(out, truth)
        figures = Figures()
        problems += reconcile_home(out, truth, figures)
        problems += reconcile_no_data(
            out,
            truth,
            figures,
            hours=settings.no_data_hours,
            lookback_days=settings.no_data_lookback_days,
            now=datetime.now(UTC).timestamp(),
        )
        programs = reconcile_programs(out, truth)
        report = alert_quality.evaluate(alert_quality.read_truth(args.truth), out.alert_docs)
        quality = alert_quality.headline(report)
    episodes = None
    if out.episode_docs is not None:
        episodes = reconcile_episodes(
            out.episode_docs, min_severity=settings.ack_min_severity, share=settings.sim_ack_share
        )
    text = render(settings, out, fates, problems, figures, quality, episodes, programs)
    sys.stdout.write(text + "\n")
    failed = problems or (episodes is not None and episodes[1])
    return 1 if failed or (programs is not None and programs.problems) else 0


if __name__ == "__main__":
    raise SystemExit(main())
