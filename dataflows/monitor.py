"""The monitor: Kafka ``bp.observations`` -> FHIR parse -> per-patient window -> rules + risk
-> Elasticsearch ``bp-anomalies`` (anomalies, retractions), JSON Lines (normal readings),
``bp.observations.dlq`` (dead letters), alert episodes -> Kafka ``bp.alerts`` and
Elasticsearch ``bp-alerts``.

Delivery: Elasticsearch writes are idempotent by ``_id``; the normal-case files are truncated
back to their snapshot on resume; the dead-letter and alert topics are written by
:class:`lib.connectors.kafka.IdempotentKafkaSink`, idempotent by record id, which skips what a
resumed run had already sent. With recovery on, a crash and restart therefore loses and
duplicates nothing.

Run it (with recovery, so that a crash and restart loses and duplicates nothing)::

    python -m bytewax.recovery data/recovery 1        # once: create the recovery store
    python -m bytewax.run dataflows.monitor -r data/recovery -s 10 -b 0
    python -m bytewax.run "dataflows.monitor:build()"  # the same flow, built by the factory

Without a snapshot the input starts at the beginning of every partition (earliest); with one,
at the offsets the snapshot holds (Bytewax does not commit offsets to Kafka). Bytewax serves
its metrics (Prometheus) when ``BYTEWAX_DATAFLOW_API_ENABLED=true``, on port 3030 at
``/metrics``. The counters line (``counters in=... normal=... anomaly=...``) is logged every
10 s and at the end of a bounded run; it never holds patient data.

Every step is pure logic from ``lib/``; only the inputs and outputs at the edges do I/O.

State: one stateful step, ``patient_windows``, keyed by patient id, holds each patient's whole
state (window, alert episodes, home series, no_data tracking, acknowledgements, program
enrolment and adherence cycles: ``lib.monitor.patient``). Bytewax
snapshots the keys awoken in an epoch, each in full, so an epoch's snapshot holds the patients
whose input arrived in it, not the cohort. Parsing groups a batch's outcomes by patient (one
item per patient and batch). Silence and the reclaim of idle patients need a wake-up when no
input comes; a timer per patient key would be scanned on every activation, so the timers live
in the ``wakeups`` step, keyed by 10 s bucket of due time (``lib.monitor.wakeups``), whose
wake-ups merge into the patient step's input. Which clock each step uses: ``docs/clocks.md``.
The outputs are split by one batch-level call each (``flat_map_batch``), which keeps the
broker timestamp beside each outcome for ``ingested_at``.
``flow`` is built on first access (no connections or model loading at import).
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from lib import logs
from lib.connectors import elastic
from lib.connectors.elastic import Action, ElasticSink
from lib.monitor import acks, documents, programs, shards, wakeups
from lib.monitor.alerts import (
    NO_DATA_CONDITION,
    AlertEvent,
    AlertPolicy,
    EpisodeTracker,
    NoDataRule,
)
from lib.monitor.deadlines import DeadlineRule, Deadlines
from lib.monitor.home import HomeAverage
from lib.monitor.patient import Patient, PatientContext, PatientSnapshot
from lib.monitor.rules import get_ruleset
from lib.monitor.shards import Entry
from lib.monitor.state import COUNTER_NAMES, Results, RiskScorer, one_reading_scorer
from lib.monitor.wakeups import Bucket, Registration
from lib.settings import Settings, load_or_exit

__all__ = ["MonitorIO", "RecordedOutputs", "build", "monitor_flow", "production_io", "recording_io"]

logger = logging.getLogger("bpwatch.monitor")

LOG_EVERY = timedelta(seconds=10)


class _PatientLogic(StatefulBatchLogic[list[Entry] | str, Results, tuple]):
    """One patient (the step is keyed by patient id): a batch of the patient's outcomes, or
    a wake-up (the patient's id) from the ``wakeups`` step. Clocks: see
    :mod:`lib.monitor.patient`."""

    __slots__ = ("_patient", "_stored", "ctx")

    def __init__(
        self, ctx: PatientContext, patient: Patient | None, stored: tuple | None = None
    ) -> None:
        self.ctx = ctx
        self._patient = patient
        self._stored = stored  # a resumed patient's snapshot, restored on first use

    @property
    def patient(self) -> Patient:
        """The patient, restored from its snapshot when first needed: resuming a store
        builds the objects of the patients whose input arrives, not of every patient (a
        restore costs ~20 us per patient, more than Bytewax's own unpickling)."""
        p = self._patient
        if p is None:
            p = self._patient = Patient.restore(self._stored)
            self._stored = None
        return p

    def on_batch(self, values: list[list[Entry] | str]) -> tuple[list[Results], bool]:
        now = time.time()
        patient, ctx = self.patient, self.ctx
        out: list[Results] = []
        for value in values:
            if type(value) is list:
                out.append(patient.process(ctx, value, now))
            else:  # a wake-up
                events = patient.wake(ctx, now)
                if events:
                    out.append(Results(events=events))
        return out, (self.DISCARD if patient.is_empty() else self.RETAIN)

    def on_eof(self) -> tuple[list[Results], bool]:
        events = self.patient.wake(self.ctx, time.time(), caught_up=True)
        keep = self.DISCARD if self.patient.is_empty() else self.RETAIN
        return ([Results(events=events)] if events else []), keep

    def snapshot(self) -> tuple:
        if self._patient is None:
            return self._stored  # type: ignore[return-value]  # unchanged since resumed
        return self._patient.snapshot()


class _WakeupLogic(StatefulBatchLogic[list[Registration], str, tuple]):
    """One bucket of the wake-up wheel (:mod:`lib.monitor.wakeups`): one timer per bucket."""

    __slots__ = ("bucket",)

    def __init__(self, resume: tuple | None) -> None:
        self.bucket = Bucket(resume)

    def on_batch(self, values: list[list[Registration]]) -> tuple[list[str], bool]:
        for regs in values:
            self.bucket.add(regs)
        return [], self.RETAIN

    def on_notify(self) -> tuple[list[str], bool]:
        ready = self.bucket.fire(time.time())
        return ready, (self.RETAIN if self.bucket.due else self.DISCARD)

    def notify_at(self) -> datetime | None:
        due = self.bucket.next_due()
        return None if due is None else datetime.fromtimestamp(due, UTC)

    def snapshot(self) -> tuple:
        return self.bucket.snapshot()


class _DeadlineLogic(StatefulBatchLogic[AlertEvent, AlertEvent, tuple]):
    """One shard's acknowledgement deadlines (:mod:`lib.monitor.deadlines`): its patients'
    alert events pass through in order, with the ``overdue`` events where they fall due."""

    __slots__ = ("deadlines", "rule")

    def __init__(self, rule: DeadlineRule, resume: tuple | None) -> None:
        self.rule = rule
        self.deadlines = Deadlines(resume)

    def _keep(self) -> bool:
        return self.RETAIN if self.deadlines.pending else self.DISCARD

    def on_batch(self, values: list[AlertEvent]) -> tuple[list[AlertEvent], bool]:
        now = time.time()
        out = self.deadlines.fire(self.rule, now)  # fell due before these events arrived
        self.deadlines.follow(self.rule, values, now)
        out.extend(values)
        return out, self._keep()

    def on_notify(self) -> tuple[list[AlertEvent], bool]:
        return self.deadlines.fire(self.rule, time.time()), self._keep()

    def on_eof(self) -> tuple[list[AlertEvent], bool]:
        return self.deadlines.fire(self.rule, time.time(), caught_up=True), self._keep()

    def notify_at(self) -> datetime | None:
        due = self.deadlines.next_due(self.rule)
        return None if due is None else datetime.fromtimestamp(due, UTC)

    def snapshot(self) -> tuple:
        return self.deadlines.snapshot()


class _CountersLogic(StatefulBatchLogic[dict[str, int], dict[str, int], dict[str, int]]):
    """Running outcome counters: one key=value log line every LOG_EVERY and at the end.

    The wall clock only paces the log line; it never touches the data.
    """

    def __init__(self, resume: dict[str, int] | None) -> None:
        self.totals = dict.fromkeys(COUNTER_NAMES, 0) | (resume or {})
        self._next_log = datetime.now(UTC) + LOG_EVERY

    def on_batch(self, values: list[dict[str, int]]) -> tuple[list[dict[str, int]], bool]:
        for counts in values:
            for name, n in counts.items():
                self.totals[name] = self.totals.get(name, 0) + n
        return [], self.RETAIN

    def _report(self) -> list[dict[str, int]]:
        logger.info("counters %s", " ".join(f"{k}={v}" for k, v in self.totals.items()))
        return [dict(self.totals)]

    def on_notify(self) -> tuple[list[dict[str, int]], bool]:
        self._next_log = datetime.now(UTC) + LOG_EVERY
        return self._report(), self.RETAIN

    def on_eof(self) -> tuple[list[dict[str, int]], bool]:
        return self._report(), self.RETAIN

    def notify_at(self) -> datetime:
        return self._next_log

    def snapshot(self) -> dict[str, int]:
        return dict(self.totals)


@dataclass(frozen=True, slots=True)
class MonitorIO:
    """The monitor's edges: one source and the sinks of its outputs. Production
    (:func:`production_io`) and tests (:func:`recording_io`) plug theirs into the same graph.

    :arg source: items are Kafka-like messages (``KafkaSourceMessage``).
    :arg anomaly_sink: written with ``("index", _id, doc)`` / ``("delete", _id, None)``
        actions in a step keyed by patient shard, on the worker that made them
        (:func:`lib.connectors.elastic.write`); here and below, tests use a
        :class:`~lib.connectors.elastic.testing.TestingElasticSink`.
    :arg normal_sink: ``(patient_id, record)`` items.
    :arg dlq_sink: ``(routing key, (id, key, value, headers))`` items: each dead letter with
        its deterministic id (the ``dead_letter_ids`` step), as the idempotent Kafka sink
        takes them.
    :arg alert_sinks: ``(kafka_sink, elastic_sink)``: the first receives
        ``(patient_id, (alert_id, key, value, headers))`` items, the second
        ``("index", alert_id, doc)`` actions.
    :arg stats_sink: receives the running outcome counters (dicts) at each log line and at
        the end of a bounded run (tests reconcile with it).
    :arg home_sink: ``("index", _id, doc)`` actions for ``bp-home-averages``; None drops them.
    :arg ack_source: the acknowledgements (``bp.alerts.acks``, Kafka-like messages); None:
        the monitor reads none.
    :arg ack_dlq_sink: the refused acknowledgements, items as ``dlq_sink``'s.
    :arg episodes_sink: ``("update", episode_id, partial doc)`` actions for ``bp-episodes``;
        None drops them.
    :arg enroll_source: the program enrolments (``bp.enrollments``, Kafka-like messages);
        None: the monitor reads none.
    :arg enroll_dlq_sink: the refused enrolments, items as ``dlq_sink``'s.
    :arg adherence_sink: ``("index", _id, doc)`` actions for ``bp-adherence``; None drops them.
    """

    source: Source
    anomaly_sink: ElasticSink
    normal_sink: Sink
    dlq_sink: Sink
    alert_sinks: tuple[Sink, ElasticSink]
    stats_sink: Sink | None = None
    home_sink: ElasticSink | None = None
    ack_source: Source | None = None
    ack_dlq_sink: Sink | None = None
    episodes_sink: ElasticSink | None = None
    enroll_source: Source | None = None
    enroll_dlq_sink: Sink | None = None
    adherence_sink: ElasticSink | None = None


def production_io(settings: Settings, stats_sink: Sink | None = None) -> MonitorIO:
    """Kafka in; Elasticsearch, files, Kafka DLQ and alerts out (imported here: tests need none)."""
    from confluent_kafka import OFFSET_BEGINNING

    from lib.connectors.kafka import (
        SOURCE_BATCH_SIZE,
        SOURCE_FETCH_CONFIG,
        IdempotentKafkaSink,
        ObservationSource,
        StartGate,
        preflight,
    )
    from lib.connectors.normal_files import NormalFileSink

    # Wrong credentials: one clear error now, not KafkaSource's endless retries.
    preflight(settings)
    client_config = settings.kafka_client_config()
    brokers = str(client_config.pop("bootstrap.servers")).split(",")

    # the enrolments found at start are read before the readings (lib.connectors.kafka)
    gate = StartGate()

    def source(topic: str, lead: bool | None = None) -> ObservationSource:
        return ObservationSource(
            brokers,
            [topic],
            gate=None if lead is None else gate,
            lead=bool(lead),
            tail=settings.kafka_tail,
            starting_offset=OFFSET_BEGINNING,  # only without a recovery snapshot
            add_config={**SOURCE_FETCH_CONFIG, **client_config},
            batch_size=SOURCE_BATCH_SIZE,
        )

    return MonitorIO(
        source=source(settings.observations_topic, lead=False),
        anomaly_sink=_monthly_sink(settings, "bp-anomalies"),
        normal_sink=NormalFileSink(
            settings.normal_dir,
            on_fresh_start=settings.normal_on_fresh_start,  # type: ignore[arg-type]
            retention_days=settings.normal_retention_days,
        ),
        dlq_sink=IdempotentKafkaSink(settings, settings.dlq_topic),
        alert_sinks=(
            IdempotentKafkaSink(settings, settings.alerts_topic),
            _monthly_sink(settings, "bp-alerts"),
        ),
        stats_sink=stats_sink,
        home_sink=_monthly_sink(settings, "bp-home-averages"),
        ack_source=source(settings.acks_topic),
        ack_dlq_sink=IdempotentKafkaSink(settings, settings.acks_dlq_topic),
        episodes_sink=ElasticSink(settings, settings.episodes_index),
        enroll_source=source(settings.enrollments_topic, lead=True),
        enroll_dlq_sink=IdempotentKafkaSink(settings, settings.enrollments_dlq_topic),
        adherence_sink=_monthly_sink(settings, "bp-adherence"),
    )


@dataclass(slots=True)
class RecordedOutputs:
    """What the monitor wrote through :func:`recording_io`'s sinks, per output, in order (the
    Elasticsearch actions in the order the write steps submitted them)."""

    anomalies: list[Action] = field(default_factory=list)
    normals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[tuple[str, tuple[str, bytes | None, bytes, list]]] = field(
        default_factory=list
    )
    alerts_kafka: list[tuple[str, tuple[str, bytes | None, bytes, list]]] = field(
        default_factory=list
    )
    alerts_es: list[Action] = field(default_factory=list)
    home: list[Action] = field(default_factory=list)
    stats: list[dict[str, int]] = field(default_factory=list)
    ack_dead_letters: list[tuple[str, tuple[str, bytes | None, bytes, list]]] = field(
        default_factory=list
    )
    episodes: list[Action] = field(default_factory=list)
    enroll_dead_letters: list[tuple[str, tuple[str, bytes | None, bytes, list]]] = field(
        default_factory=list
    )
    adherence: list[Action] = field(default_factory=list)


def recording_io(
    source: Source,
    *,
    outputs: RecordedOutputs | None = None,
    normal_sink: Sink | None = None,
    ack_source: Source | None = None,
    enroll_source: Source | None = None,
) -> tuple[MonitorIO, RecordedOutputs]:
    """The monitor's edges for tests and in-process benchmarks: ``source`` in (a
    ``TestingSource`` of ``KafkaSourceMessage`` items), every output recorded into lists
    (``outputs``, new by default; pass the same one to resume a run). Every sink takes the
    items its production counterpart takes, through the same steps: the Elasticsearch sinks
    are :class:`~lib.connectors.elastic.testing.TestingElasticSink`, the others
    ``TestingSink``. ``normal_sink`` replaces the normal readings' list (e.g. a
    ``NormalFileSink``); ``ack_source`` gives the acknowledgements and ``enroll_source``
    the enrolments (empty sources by default)."""
    from bytewax.testing import TestingSink, TestingSource

    from lib.connectors.elastic.testing import TestingElasticSink

    out = outputs if outputs is not None else RecordedOutputs()
    io = MonitorIO(
        source=source,
        anomaly_sink=TestingElasticSink(out.anomalies, "bp-anomalies"),
        normal_sink=normal_sink if normal_sink is not None else TestingSink(out.normals),
        dlq_sink=TestingSink(out.dead_letters),
        alert_sinks=(TestingSink(out.alerts_kafka), TestingElasticSink(out.alerts_es, "bp-alerts")),
        stats_sink=TestingSink(out.stats),
        home_sink=TestingElasticSink(out.home, "bp-home-averages"),
        ack_source=ack_source if ack_source is not None else TestingSource([]),
        ack_dlq_sink=TestingSink(out.ack_dead_letters),
        episodes_sink=TestingElasticSink(out.episodes, "bp-episodes"),
        enroll_source=enroll_source if enroll_source is not None else TestingSource([]),
        enroll_dlq_sink=TestingSink(out.enroll_dead_letters),
        adherence_sink=TestingElasticSink(out.adherence, "bp-adherence"),
    )
    return io, out


def _monthly_sink(settings: Settings, base: str) -> ElasticSink:
    """The sink of one alias, written as monthly indices (``lib.connectors.elastic_months``)."""
    from lib.connectors.elastic_months import MONTH_FIELDS, MonthRouter

    alias = settings.index(base)
    return ElasticSink(settings, alias, router=MonthRouter(alias, MONTH_FIELDS[base]))


def default_alert_policy(settings: Settings, model: Any) -> AlertPolicy:
    """The alert policy the monitor runs with: the settings, the rule set's critical values
    and the model's own alert threshold (``benchmarks/alert_quality.py`` replays it)."""
    threshold = getattr(model, "threshold", None)
    reminder = settings.alert_reminder_hours
    return AlertPolicy(
        open_severity=settings.alert_min_severity,
        reminder_every=timedelta(hours=reminder) if reminder > 0 else None,
        critical=get_ruleset(settings.ruleset).critical,
        urgent=frozenset(settings.alert_urgent),
        confirm_readings=settings.alert_confirm_readings,
        critical_risk=settings.alert_critical_risk,
        **({"risk_threshold": threshold} if threshold else {}),
    )


def build(
    settings: Settings | None = None,
    *,
    io: MonitorIO | None = None,
    model: RiskScorer | None = None,
    alert_policy: AlertPolicy | None = None,
) -> Dataflow:
    """The monitor dataflow.

    :arg io: the source and sinks; default :func:`production_io` of ``settings``.
    :arg model: anything with ``predict_proba(matrix)``; default ``settings.model_path``.
    :arg alert_policy: episode policy; default ``AlertPolicy`` opening at
        ``BPWATCH_ALERT_MIN_SEVERITY`` (high: stage 2, hypotension, crisis), with the rule set's
        combined-critical thresholds and the model's alert threshold as the high-risk threshold
        when the model has one.
    """
    settings = settings if settings is not None else load_or_exit()
    if model is None:
        from lib.monitor.risk import RiskModel

        model = RiskModel.load_parameters(settings.model_path)  # scikit-learn not imported
    if io is None:
        io = production_io(settings)
    ruleset = get_ruleset(settings.ruleset)  # resolved once, passed down
    if alert_policy is None:
        alert_policy = default_alert_policy(settings, model)
    ctx = PatientContext(
        ruleset=ruleset,
        score=one_reading_scorer(model),
        tracker=EpisodeTracker(alert_policy),
        no_data=NoDataRule(
            settings.no_data_hours,
            settings.no_data_lookback_days,
            tier=alert_policy.tier_of(NO_DATA_CONDITION),
        ),
        window_size=settings.window_size,
        expiry_s=settings.idle_expiry_hours * 3600.0,
        every_home=settings.reading_setting == "home",
        device_only=settings.adherence_device_only,
        severe_urgent="severe_range_bp" in alert_policy.urgent,
    )
    return monitor_flow(io, ctx, deadline_rule(settings))


def deadline_rule(settings: Settings, started_at: float | None = None) -> DeadlineRule:
    """The acknowledgement deadlines of the settings, for a monitor started at ``started_at``
    (default now)."""
    return DeadlineRule(
        min_severity=settings.ack_min_severity,
        deadline_s=settings.ack_deadline_minutes * 60.0,
        settle_s=settings.ack_settle_seconds,
        lookback_s=settings.no_data_lookback_days * 86400.0,
        started_at=time.time() if started_at is None else started_at,
    )


def monitor_flow(
    io: MonitorIO, ctx: PatientContext, deadlines: DeadlineRule | None = None
) -> Dataflow:
    """The chain of steps, from the observations topic to every output.

    :arg deadlines: the acknowledgement deadlines; default :class:`DeadlineRule`'s, started now.
    """
    rule = deadlines if deadlines is not None else DeadlineRule(started_at=time.time())

    def patient_logic(resume: tuple | None) -> _PatientLogic:
        if resume is None:
            return _PatientLogic(ctx, Patient())
        PatientSnapshot.read(resume)  # a layout this version cannot read: refused at start
        return _PatientLogic(ctx, None, resume)

    def schedule(batch: list[tuple[str, list[Entry]]]) -> list[tuple[str, list[Registration]]]:
        return wakeups.registrations(batch, ctx.no_data, ctx.reclaim_s, time.time())

    flow = Dataflow("bpwatch_monitor")
    messages = op.input("observations", flow, io.source)
    # KafkaSourceMessage: key = patient id, value = FHIR Observation or Bundle (JSON)

    parsed = op.flat_map_batch("parse_fhir", messages, shards.parse_messages)
    # (patient id, [(Reading | Retraction | Ignored | Average | Skipped | DeadLetter,
    #               ingested_at, first), ...]): at most one DeadLetter per message; an
    # outcome without a patient under a no-patient key (shards.no_patient_key)

    registrations = op.flat_map_batch("schedule_wakeups", parsed, schedule)
    # (due bucket, [(patient id, due), ...]): when to wake each patient of the batch
    # (no_data check, reclaim), one item per bucket and batch
    wakes = op.stateful_batch("wakeups", registrations, _WakeupLogic)
    # (due bucket, patient id), once the wall clock has reached the due time
    wake_ups = op.map("wake_patients", wakes, _to_patient)
    streams = [parsed, wake_ups]
    if io.ack_source is not None:
        ack_messages = op.input("acks", flow, io.ack_source)
        # KafkaSourceMessage: key = patient id, value = an acknowledgement (JSON)
        streams.append(op.flat_map_batch("parse_acks", ack_messages, acks.parse_acks))
        # (patient id, [(Ack, ingested_at, 0), ...]) | (no-patient key, [(AckRefused, ...)])
    if io.enroll_source is not None:
        enroll_messages = op.input("enrollments", flow, io.enroll_source)
        # KafkaSourceMessage: key = patient id, value = an enrolment (JSON)
        streams.append(
            op.flat_map_batch("parse_enrollments", enroll_messages, programs.parse_enrollments)
        )
        # (patient id, [(Enrolled, ingested_at, 0), ...]) | (no-patient key, [(EnrollRefused,
        # ...)])
    inputs = op.merge("patient_inputs", *streams)

    results = op.stateful_batch("patient_windows", inputs, patient_logic)
    # (patient id, Results): window features -> rules -> risk, in input order; retractions
    # leave the windows; duplicates are recognised; alert episodes, home series and
    # no_data tracking follow each reading (Results.events, Results.averages); an enrolled
    # patient's program rules; the patient's adherence cycles (Results.adherence)

    if io.adherence_sink is not None:
        cycles = op.flat_map_batch("adherence_docs", results, documents.adherence_docs)
        # (patient id, ("index", patient|cycle_start, doc)) per cycle whose days changed
        _to_elastic("write_adherence", cycles, io.adherence_sink)

    if io.home_sink is not None:
        averages = op.flat_map_batch("home_averages", results, _averages)
        home_docs = op.map_value("home_docs", averages, documents.home_item)
        _to_elastic("write_home_averages", home_docs, io.home_sink)

    episode_events = op.flat_map_batch("alert_events", results, _events)
    # (shard, AlertEvent): one per episode opening / escalation / reminder / resolution /
    # acknowledgement, keyed by the patient's shard
    timed = op.stateful_batch(
        "ack_deadlines", episode_events, lambda resume: _DeadlineLogic(rule, resume)
    )
    # (shard, AlertEvent): the same events in order, with the overdue events where they fall due
    events = op.map("events_by_patient", timed, _by_patient)
    # (patient id, AlertEvent)
    kafka_alerts, elastic_alerts = io.alert_sinks
    unkeyed = op.key_rm("unkey_alert_events", events)
    op.output(
        "publish_alerts", op.map("alert_messages", unkeyed, documents.once_item), kafka_alerts
    )
    alert_docs = op.map_value("alert_docs", events, documents.elastic_item)
    _to_elastic("index_alerts", alert_docs, elastic_alerts)
    if io.episodes_sink is not None:
        updates = op.map("episode_updates", events, _episode_update)
        # (patient id, ("update", episode_id, the fields the event changes))
        _to_elastic("write_episodes", updates, io.episodes_sink)

    to_elastic = op.flat_map_batch("anomaly_docs", results, documents.keyed_elastic_actions)
    # (patient id, ("index", id, doc)) per anomaly | (patient id, ("delete", id, None)) per
    # retraction or cleared amendment
    _to_elastic("write_anomalies", to_elastic, io.anomaly_sink)

    normals = op.flat_map_batch("normal_records", results, documents.normal_records)
    # (patient_id, record) per normal reading
    op.output("write_normals", normals, io.normal_sink)

    dead = op.flat_map_batch("dead_letters", results, documents.dlq_messages)
    # (original key, original value, headers + error / error.detail / source)
    with_ids = op.map("dead_letter_ids", dead, documents.dead_letter_item)
    # (original key as routing key, (source#digest, key, value, headers))
    op.output("write_dead_letters", with_ids, io.dlq_sink)
    if io.ack_dlq_sink is not None:
        ack_dead = op.flat_map_batch("ack_dead_letters", results, documents.ack_dlq_messages)
        ack_ids = op.map("ack_dead_letter_ids", ack_dead, documents.dead_letter_item)
        op.output("write_ack_dead_letters", ack_ids, io.ack_dlq_sink)
    if io.enroll_dlq_sink is not None:
        enroll_dead = op.flat_map_batch(
            "enroll_dead_letters", results, documents.enroll_dlq_messages
        )
        enroll_ids = op.map("enroll_dead_letter_ids", enroll_dead, documents.dead_letter_item)
        op.output("write_enroll_dead_letters", enroll_ids, io.enroll_dlq_sink)

    outcome_counts = op.flat_map_batch("count_outcomes", results, documents.outcome_counts)
    overdue_counts = op.flat_map_batch("count_overdue", timed, _overdue_counts)
    counts = op.merge("all_counts", outcome_counts, overdue_counts)
    totals = op.stateful_batch("counters", counts, _CountersLogic)
    # ("all", {in, normal, anomaly, dead_letter, ignored, retracted, duplicate, skipped})
    if io.stats_sink is not None:
        op.output("write_stats", op.key_rm("stats", totals), io.stats_sink)
    return flow


GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """The garbage collector as the monitor process runs it (the benchmarks apply it too).

    The per-reading work allocates many short-lived containers (a parsed message is ~30):
    what exists after start-up (modules, model) is moved out of the collector's sight and
    young objects are collected every 50,000 allocations instead of 700. Results unchanged;
    memory is not affected measurably (the young generation holds tens of MB at most).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _to_elastic(step_id: str, actions: op.Stream, sink: ElasticSink) -> None:
    """Write ``(patient id, action)`` items in a step keyed by patient shard: a writer per
    sink and process, fed on the worker that made the actions."""
    by_shard = op.map(f"{step_id}_by_shard", actions, _by_shard)
    elastic.write(step_id, by_shard, sink)


def _by_shard(item: tuple[str, Any]) -> tuple[str, Any]:
    return shards.shard_of(item[0]), item[1]


def _to_patient(item: tuple[str, str]) -> tuple[str, str]:
    """``(bucket, patient id)`` -> ``(patient id, patient id)``: a wake-up for the patient."""
    return item[1], item[1]


def _events(batch: list[tuple[str, Results]]) -> list[tuple[str, AlertEvent]]:
    shard_of = shards.shard_of
    return [(shard_of(e.patient_id), e) for _, res in batch if res.events for e in res.events]


def _by_patient(item: tuple[str, AlertEvent]) -> tuple[str, AlertEvent]:
    return item[1].patient_id, item[1]


def _episode_update(item: tuple[str, AlertEvent]) -> tuple[str, tuple[str, str, dict[str, Any]]]:
    return documents.episode_update(item[1])


def _overdue_counts(batch: list[tuple[str, AlertEvent]]) -> list[tuple[str, dict[str, int]]]:
    n = sum(1 for _, e in batch if e.event == "overdue")
    return [("all", {"overdue": n})] if n else []


def _averages(batch: list[tuple[str, Results]]) -> list[tuple[str, HomeAverage]]:
    return [(key, a) for key, res in batch if res.averages for a in res.averages]


def __getattr__(name: str) -> Dataflow:
    """``flow``, built on first access, for ``python -m bytewax.run dataflows.monitor``."""
    if name != "flow":
        raise AttributeError(name)
    settings = load_or_exit()
    logs.configure(settings.log_level)
    flow = build(settings)
    tune_gc()
    globals()["flow"] = flow
    return flow
