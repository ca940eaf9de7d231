"""Simulator dataflow: a synthetic cohort's FHIR blood-pressure stream to Kafka or a file.

    python -m bytewax.run dataflows.simulate            # settings from BPWATCH_* (README)
    python -m bytewax.run "dataflows.simulate:build()" -w 2

Each worker simulates its share of the patients (``index % workers``), so a patient's readings
come from one worker, in order, keyed by patient id: they stay ordered in one Kafka partition.
Output: ``settings.observations_topic`` through :class:`ConfirmedKafkaSink` (every message
confirmed by the broker), or JSON Lines (one message value per line) when ``BPWATCH_SIM_OUTPUT``
is a path; ``BPWATCH_SIM_BUNDLE=N`` wraps N Observations per message in a FHIR Bundle.
``BPWATCH_SIM_SPEEDUP=N`` paces by event time: a message is sent once N times the wall time
since the start has passed its event time since the first message (a load test at a real
program's rate: each patient keeps its own schedule).
``BPWATCH_SIM_TRUTH=path`` also writes the ground truth, one JSON line per
Observation (fate, fault kind, profile, ``event_within_horizon``, ...).

With ``BPWATCH_SIM_POSTPARTUM_SHARE`` above 0, each worker first sends its postpartum patients'
enrolments (:func:`lib.sim.stream.enrollments`) to ``settings.enrollments_topic``, then their
observations: both go through one sink (:class:`RoutedSink`), which writes the runs of one
topic in stream order and returns only once the broker has confirmed them, so an enrolment is
on Kafka before any observation of its worker is sent. With ``BPWATCH_SIM_OUTPUT`` a path, the
enrolments go to the sibling file ``<stem>.enrollments.jsonl`` (:func:`enrollments_path`), one
JSON line ``{"key": <patient id>, "value": <the enrolment>}`` each.

With one worker, the same settings give byte-identical output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.connectors.files import FileSink
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition

from lib import logs
from lib.connectors.kafka import ConfirmedKafkaSink
from lib.settings import Settings, load_or_exit
from lib.sim import stream
from lib.sim.stream import SimEnrollment, SimMessage

log = logging.getLogger(__name__)

_MAX_BATCH = 1000
_PROGRESS_EVERY_S = 5.0


class _SimPartition(StatelessSourcePartition[SimMessage | SimEnrollment]):
    def __init__(self, settings: Settings, worker_index: int, worker_count: int) -> None:
        # the worker's enrolments, sent as the first batch, before any observation
        self._enrollments = stream.enrollments(
            settings, worker_index=worker_index, worker_count=worker_count
        )
        self._messages: Iterator[SimMessage] = stream.messages(
            settings,
            worker_index=worker_index,
            worker_count=worker_count,
            bundle_size=settings.sim_bundle,
        )
        self._rate = settings.sim_rate / worker_count  # messages/s, 0 = unlimited
        self._speedup = settings.sim_speedup  # event-time seconds per wall second, 0 = off
        self._origin: datetime | None = None  # event time of the first message (speedup)
        self._pending: SimMessage | None = None  # the next message, not yet due (speedup)
        self._worker = worker_index
        self._started = time.monotonic()
        self._last_log = self._started
        self._sent = 0
        self._faults = 0
        self._wake: datetime | None = None

    def _due(self, now: float) -> int:
        if self._rate <= 0:
            return _MAX_BATCH
        return min(_MAX_BATCH, int((now - self._started) * self._rate) + 1 - self._sent)

    def _paced(self, now: float) -> list[SimMessage] | None:
        """The messages due by event time (``BPWATCH_SIM_SPEEDUP``); None at the end."""
        batch: list[SimMessage] = []
        while len(batch) < _MAX_BATCH:
            msg = self._pending or next(self._messages, None)
            if msg is None:
                return batch or None
            if self._origin is None:
                self._origin = msg.emitted_at
            ahead = (msg.emitted_at - self._origin).total_seconds() / self._speedup
            ahead -= now - self._started  # wall seconds until it is due
            if ahead > 0:
                self._pending = msg
                self._wake = datetime.now(UTC) + timedelta(seconds=ahead)
                return batch
            self._pending = None
            batch.append(msg)
        self._wake = None
        return batch

    def next_batch(self) -> list[SimMessage | SimEnrollment]:
        if self._enrollments:
            first: list[SimMessage | SimEnrollment] = list(self._enrollments)
            self._enrollments = []
            log.info("sim_enrollments worker=%d sent=%d", self._worker, len(first))
            return first
        now = time.monotonic()
        if self._speedup > 0:
            paced = self._paced(now)
            if paced is None:
                self._progress(now, final=True)
                raise StopIteration
            batch: list[SimMessage] = paced
            due = len(batch)
        else:
            due = self._due(now)
            batch = list(islice(self._messages, max(due, 0)))
        if due > 0 and not batch:
            self._progress(now, final=True)
            raise StopIteration
        self._sent += len(batch)
        self._faults += sum(1 for m in batch if m.is_fault)
        if self._rate > 0:
            wait = (self._sent + 1) / self._rate - (time.monotonic() - self._started)
            self._wake = datetime.now(UTC) + timedelta(seconds=max(wait, 0.0))
        if now - self._last_log >= _PROGRESS_EVERY_S:
            self._progress(now)
        return list(batch)

    def next_awake(self) -> datetime | None:
        return self._wake

    def _progress(self, now: float, final: bool = False) -> None:
        self._last_log = now
        elapsed = max(now - self._started, 1e-9)
        log.info(
            "sim_progress worker=%d sent=%d faults=%d rate=%.0f/s elapsed=%.1fs%s",
            self._worker,
            self._sent,
            self._faults,
            self._sent / elapsed,
            elapsed,
            " done" if final else "",
        )


class SimSource(DynamicSource[SimMessage | SimEnrollment]):
    """The cohort's messages (:func:`lib.sim.stream.messages`), rate-limited and bounded,
    after the worker's enrolments (:func:`lib.sim.stream.enrollments`, not paced).

    Unit of parallelism: a worker's share of the patients. Not resumable: a restarted run
    regenerates from the start (the monitor deduplicates by observation id and version).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SimPartition:
        return _SimPartition(self._settings, worker_index, worker_count)


OBSERVATIONS, ENROLLMENTS = "observations", "enrollments"  # the routes of RoutedSink


class _RoutedPartition(StatelessSinkPartition[tuple[str, Any]]):
    def __init__(self, sinks: dict[str, DynamicSink[Any]], step_id: str, worker: int, workers: int):
        self._sinks = sinks
        self._where = (step_id, worker, workers)
        self._parts: dict[str, StatelessSinkPartition[Any]] = {}

    def _part(self, route: str) -> StatelessSinkPartition[Any]:
        part = self._parts.get(route)
        if part is None:  # built at the route's first record: a route never used costs nothing
            step_id, worker, workers = self._where
            part = self._sinks[route].build(f"{step_id}_{route}", worker, workers)
            self._parts[route] = part
        return part

    def write_batch(self, items: list[tuple[str, Any]]) -> None:
        run: list[Any] = []
        route = ""
        for item_route, record in items:
            if item_route != route and run:
                self._part(route).write_batch(run)
                run = []
            route = item_route
            run.append(record)
        if run:
            self._part(route).write_batch(run)

    def close(self) -> None:
        for part in self._parts.values():
            part.close()


class RoutedSink(DynamicSink[tuple[str, Any]]):
    """``(route, record)`` items, each record written by the sink of its route, in stream
    order: a run of records of one route is written (for :class:`ConfirmedKafkaSink`:
    confirmed by the broker) before the next run's first record is.

    Unit of parallelism: one partition of each routed sink per worker, built when the
    worker's first record of that route comes. Delivery guarantee: the routed sinks'.
    """

    def __init__(self, sinks: dict[str, DynamicSink[Any]]) -> None:
        self._sinks = sinks

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RoutedPartition:
        return _RoutedPartition(self._sinks, step_id, worker_index, worker_count)


def _routed_record(
    msg: SimMessage | SimEnrollment,
) -> tuple[str, tuple[bytes | None, bytes, list[tuple[str, str | bytes | None]]]]:
    return (ENROLLMENTS if type(msg) is SimEnrollment else OBSERVATIONS, msg.kafka_record())


def _is_observation(msg: SimMessage | SimEnrollment) -> bool:
    return type(msg) is SimMessage


def _json_line(msg: SimMessage) -> tuple[str, str]:
    return ("sim", msg.value.decode("utf-8", errors="replace"))


def _enrollment_line(msg: SimEnrollment) -> tuple[str, str]:
    value = orjson.loads(msg.value)
    return ("enrollments", orjson.dumps({"key": msg.patient_id, "value": value}).decode())


def _truth_lines(msg: SimMessage | SimEnrollment) -> list[tuple[str, str]]:
    if type(msg) is SimEnrollment:
        return []
    return [("truth", orjson.dumps(stream.truth_record(msg, exp)).decode()) for exp in msg.expected]


def enrollments_path(output: Path) -> Path:
    """Where ``BPWATCH_SIM_OUTPUT=PATH`` puts the enrolments: ``<stem>.enrollments.jsonl``
    beside ``PATH``."""
    return output.with_name(f"{output.stem}.enrollments.jsonl")


def truth_path(settings: Settings) -> Path | None:
    """``BPWATCH_SIM_TRUTH`` (a JSON Lines path) if set."""
    return settings.sim_truth


def build(
    settings: Settings | None = None,
    *,
    source: Any = None,
    sink: DynamicSink[Any] | None = None,
    truth_sink: Sink[Any] | None = None,
    enrollment_sink: DynamicSink[Any] | None = None,
) -> Dataflow:
    """The simulator flow. ``sink`` receives the observations' and ``enrollment_sink`` the
    enrolments' ``(key, value, headers)`` Kafka records, through one :class:`RoutedSink`
    (enrolments first); ``truth_sink`` ``("truth", json_line)`` pairs. By default each
    follows the settings: Kafka (``settings.observations_topic``,
    ``settings.enrollments_topic``) or files (``BPWATCH_SIM_OUTPUT``, its sibling
    :func:`enrollments_path`, ``BPWATCH_SIM_TRUTH``)."""
    settings = settings or load_or_exit()
    flow = Dataflow("bpwatch_simulate")
    msgs = op.input("sim_messages", flow, source or SimSource(settings))
    # SimEnrollment (the worker's, first) | SimMessage (key = patient id, value = FHIR JSON
    # bytes, expected fates)

    if sink is None and settings.sim_output != "kafka":
        out = Path(settings.sim_output)
        out.parent.mkdir(parents=True, exist_ok=True)  # FileSink truncates it at start
        split = op.branch("split_enrollments", msgs, _is_observation)
        op.output("file_out", op.map("to_line", split.trues, _json_line), FileSink(out))
        enrolled = op.map("to_enrollment_line", split.falses, _enrollment_line)
        op.output("enrollments_file_out", enrolled, FileSink(enrollments_path(out)))
    else:
        if sink is None:
            sink = ConfirmedKafkaSink(settings, settings.observations_topic)
        if enrollment_sink is None:
            enrollment_sink = ConfirmedKafkaSink(settings, settings.enrollments_topic)
        records = op.map("to_record", msgs, _routed_record)
        # (route, (key, value, headers))
        routed = RoutedSink({OBSERVATIONS: sink, ENROLLMENTS: enrollment_sink})
        op.output("kafka_out", records, routed)

    path = truth_path(settings)
    if truth_sink is None and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        truth_sink = FileSink(path)
    if truth_sink is not None:
        op.output("truth_out", op.flat_map("to_truth", msgs, _truth_lines), truth_sink)
    return flow


def _main() -> Dataflow:
    """The flow of ``python -m bytewax.run dataflows.simulate``: settings, logging, build."""
    settings = load_or_exit()
    logs.configure(settings.log_level)
    return build(settings)


flow = _main()
