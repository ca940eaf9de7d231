"""One patient's state (``lib.monitor.patient``) and the wake-up wheel (``lib.monitor.wakeups``).

The state is keyed by patient, so what a patient's readings give must not depend on which
other patients shared a batch, on the batch sizes, or on a snapshot and restore in between.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.domain import FEATURE_NAMES, Assessment, Reading
from lib.errors import RecoveryError
from lib.monitor import wakeups
from lib.monitor.alerts import AlertPolicy, NoDataRule
from lib.monitor.engine import Monitor
from lib.monitor.patient import Patient, PatientSnapshot
from lib.monitor.risk import RiskModel
from lib.monitor.shards import parse_messages
from lib.monitor.state import one_reading_scorer
from lib.settings import Settings
from lib.sim import fhir_writer as obs
from lib.sim import stream
from tests.unit.test_shards import Msg


@pytest.fixture(scope="module")
def model() -> RiskModel:
    rng = np.random.default_rng(3)
    x = rng.normal(125, 20, (300, len(FEATURE_NAMES)))
    y = (x[:, FEATURE_NAMES.index("mean_sys")] > 128).astype(int)
    return RiskModel.from_pipeline(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y))


def sim_messages(patients: int = 25, count: int = 1500, faults: float = 0.2) -> list[Msg]:
    sim = replace(
        Settings(), sim_patients=patients, sim_count=count, sim_seed=11, sim_fault_rate=faults
    )
    return [
        Msg(m.value, m.key, offset=i, timestamp=(1, int(m.emitted_at.timestamp() * 1000)))
        for i, m in enumerate(stream.messages(sim))
    ]


def by_patient(monitor: Monitor, msgs: list[Msg], batch: int) -> dict[str, list[Any]]:
    """Every output of each patient, in order (outcomes, then events, then home averages: a
    batch's events come after its outcomes), with floats as hex (the last bit shows)."""
    out: dict[str, list[Any]] = {}
    for i in range(0, len(msgs), batch):
        for key, res in monitor.process(msgs[i : i + batch], now=1_700_000_000.0):
            seq = out.setdefault(key, [])
            for o in res.outcomes:
                if type(o) is Assessment:
                    features = tuple(float(x).hex() for x in o.features)
                    verdict = (o.category, o.anomaly_types, o.severity)
                    seq.append((o.reading.observation_id, features, verdict, o.risk_score.hex()))
                else:
                    seq.append(repr(o))
            out.setdefault(f"{key} events", []).extend(
                ("event", e.condition, e.alert_id, e.event, e.risk_score.hex()) for e in res.events
            )
            out.setdefault(f"{key} home", []).extend(
                ("home", a.doc_id, a.mean_systolic) for a in res.averages
            )
    return out


def test_outputs_do_not_depend_on_batching(model):
    msgs = sim_messages()
    policy = AlertPolicy(open_severity="high", risk_threshold=0.5)
    runs = [by_patient(Monitor(model, policy=policy), msgs, b) for b in (1, 7, 250, 5000)]
    assert all(run == runs[0] for run in runs[1:])
    outputs = [x for seq in runs[0].values() for x in seq]
    assert sum(1 for x in outputs if x[0] == "event") > 5  # episodes did open
    assert len(runs[0]) >= 3 * 25  # every patient (and the no-patient keys of dead letters)


def test_a_patient_restored_from_its_snapshot_goes_on_as_if_never_stopped(model):
    msgs = sim_messages(patients=6, count=600)
    policy = AlertPolicy(open_severity="moderate", risk_threshold=0.5)
    straight = by_patient(Monitor(model, policy=policy), msgs, 50)
    monitor = Monitor(model, policy=policy)
    first = by_patient(monitor, msgs[:300], 50)
    # every patient through pickle, as Bytewax stores a snapshot
    monitor.patients = {
        k: Patient.restore(pickle.loads(pickle.dumps(p.snapshot())))
        for k, p in monitor.patients.items()
    }
    second = by_patient(monitor, msgs[300:], 50)
    resumed = {k: first.get(k, []) + second.get(k, []) for k in first.keys() | second.keys()}
    assert resumed == straight


def test_a_snapshot_holds_only_its_patient():
    msgs = [Msg(obs.encode(obs.to_fhir(r, "N")), r.patient_id.encode()) for r in _readings()]
    patients = {key for key, _ in parse_messages(msgs)}
    assert patients == {"a", "b"}
    monitor = Monitor(lambda_model())
    monitor.process(msgs, now=1_700_000_000.0)
    stored = monitor.patients["a"].snapshot()
    assert pickle.loads(pickle.dumps(stored)) == stored
    snap = PatientSnapshot.read(stored)
    assert snap.tag == "bpw-patient" and snap.patient_id == "a"
    assert snap.seen is not None and snap.seen[1] == "a-2"  # the latest reading
    held = Patient.restore(stored).window
    assert held is not None and set(held.observation_ids) == {"a-0", "a-1", "a-2"}


def _readings() -> list[Reading]:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return [
        Reading(f"{p}-{k}", p, t0 + timedelta(hours=k), 120.0 + k, 80.0)
        for k in range(3)
        for p in ("a", "b")
    ]


class _Constant:
    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        return np.full((len(matrix), 2), 0.25)


def lambda_model() -> _Constant:
    return _Constant()


def test_a_bare_estimator_scores_one_row_at_a_time():
    score = one_reading_scorer(_Constant())
    assert score(tuple(range(12))) == 0.25  # type: ignore[arg-type]


def test_a_snapshot_of_an_earlier_layout_is_refused_with_the_fix():
    shard_state = (12, 259200.0, 0.0, 0.0, {"p1": (12, b"", b"", b"", (), (), ())}, {})
    with pytest.raises(RecoveryError) as err:
        Patient.restore(shard_state)
    text = str(err.value)
    assert "32 shards" in text and "python -m bytewax.recovery" in text
    with pytest.raises(RecoveryError, match="snapshot version 0"):
        Patient.restore(("bpw-patient", 0, "p1", None, None, None, None, None, 0.0, None))


# -- wall clock: no_data and reclaim --------------------------------------------------------
NOW = 1_800_000_000.0


def _monitor(model: Any, **kw: Any) -> Monitor:
    return Monitor(model, no_data=NoDataRule(1.0, 7.0, 3, catch_up_grace_s=60.0), **kw)


def _msgs_at(patient: str, times: list[float], start: int = 0) -> list[Msg]:
    readings = [
        Reading(f"{patient}-{start + k}", patient, datetime.fromtimestamp(t, UTC), 118.0, 76.0)
        for k, t in enumerate(times)
    ]
    return [Msg(obs.encode(obs.to_fhir(r, "N")), patient.encode()) for r in readings]


def test_wake_opens_no_data_once_for_a_silent_patient_and_a_reading_resolves_it(model):
    m = _monitor(model)
    m.process(_msgs_at("q", [NOW - 7200, NOW - 5400, NOW - 3700]), now=NOW - 3000)
    p = m.patients["q"]
    assert p.wake(m.ctx, NOW - 3000 + 30) == []  # within the catch-up grace: not yet
    (opened,) = p.wake(m.ctx, NOW)
    assert (opened.event, opened.observation_ids) == ("opened", ("q-2",))
    assert p.wake(m.ctx, NOW + 60) == []  # one episode, not one per wake-up
    ((_, res),) = m.process(_msgs_at("q", [NOW + 120], start=3), now=NOW + 120)
    assert [e.event for e in res.events] == ["resolved"]
    assert [e.episode_id for e in res.events] == [opened.episode_id]


def test_a_stale_wake_up_changes_nothing(model):
    m = _monitor(model)
    m.process(_msgs_at("q", [NOW - 7200, NOW - 5400, NOW - 3700]), now=NOW - 3700)
    m.process(_msgs_at("q", [NOW - 10], start=3), now=NOW - 10)  # sent again since
    p = m.patients["q"]
    before = pickle.dumps(p.snapshot())
    assert p.wake(m.ctx, NOW) == []
    assert pickle.dumps(p.snapshot()) == before


def test_reclaim_packs_an_idle_window_on_the_wall_clock_and_keeps_open_episodes(model):
    m = _monitor(model, idle_expiry_hours=2.0)
    m.process(_msgs_at("q", [NOW - 7200, NOW - 5400, NOW - 3700]), now=NOW - 3700)
    p = m.patients["q"]
    p.wake(m.ctx, NOW)  # 1 h 2 min of wall clock: silent (no_data opens), not yet idle
    assert p.window is not None and p.seen is not None and p.seen.open_key
    p.wake(m.ctx, NOW - 3700 + 7200)
    assert p.window is None and p.packed is not None and not p.is_empty()
    assert len(pickle.dumps(p.snapshot())) < 700
    # (the broker stamped these messages long ago: the input may be behind, so it is packed)
    # the next reading unpacks the window: it goes on, and resolves the episode
    ((_, res),) = m.process(_msgs_at("q", [NOW + 3000], start=3), now=NOW + 3600)
    (a,) = res.outcomes
    assert type(a) is Assessment and a.features.n == 4 and p.packed is None
    assert [e.event for e in res.events] == ["resolved"]


def test_an_outage_longer_than_the_expiry_changes_no_output(model):
    """Readings that waited in Kafka while the monitor was down for longer than the expiry:
    the wake-ups that fire on resume pack the windows, and the readings continue them."""
    msgs = sim_messages(patients=8, count=800, faults=0.0)
    straight = by_patient(Monitor(model, idle_expiry_hours=1.0), msgs, 100)
    m = Monitor(model, idle_expiry_hours=1.0)
    first = by_patient(m, msgs[:400], 100)
    resumed_at = m.ctx.ingest.latest + 3 * 86_400  # 3 days after the last message processed
    for p in m.patients.values():  # every wake-up is due
        p.wake(m.ctx, resumed_at)
    assert all(p.window is None for p in m.patients.values())
    assert sum(p.packed is not None for p in m.patients.values()) >= 8
    second = by_patient(m, msgs[400:], 100)
    resumed = {k: first.get(k, []) + second.get(k, []) for k in first.keys() | second.keys()}

    def without_no_data(run: dict[str, list[Any]]) -> dict[str, list[Any]]:
        # the silence check at the resume opens no_data episodes that the waiting readings
        # then resolve (the catch-up grace applies to readings processed, not to downtime)
        return {k: [x for x in v if x[:2] != ("event", "no_data")] for k, v in run.items()}

    assert without_no_data(resumed) == without_no_data(straight)
    assert sum(len(v) for k, v in straight.items() if not k.endswith((" events", " home"))) > 700


def test_reclaim_drops_an_idle_window_once_the_input_is_caught_up(model):
    m = _monitor(model, idle_expiry_hours=2.0)
    m.process(_msgs_at("q", [NOW - 7200, NOW - 5400]), now=NOW - 5400)
    live = Msg(_msgs_at("other", [NOW])[0].value, b"other", timestamp=(1, int(NOW * 1000)))
    m.process([live], now=NOW)  # a message the broker stamped just now: caught up
    p = m.patients["q"]
    p.wake(m.ctx, NOW + 1800)  # idle for 2 h of wall clock
    assert p.window is None and p.packed is None
    assert p.seen is not None  # no_data tracking stays within the lookback


def test_reclaim_drops_what_is_older_than_the_expiry_and_the_lookback(model):
    m = _monitor(model, idle_expiry_hours=2.0)
    m.process(_msgs_at("q", [NOW - 30 * 86_400]), now=NOW)  # a replay of old data
    p = m.patients["q"]
    p.wake(m.ctx, NOW + 7200)
    assert p.window is None and p.packed is None and p.is_empty()


def test_window_expiry_is_in_event_time_and_does_not_depend_on_the_wall_clock(model):
    m = _monitor(model, idle_expiry_hours=2.0)
    times = [NOW - 86400 * 30 + 3600 * k for k in (0, 1, 4)]  # old data, a 3 h gap
    out = [res for t in times for _, res in m.process(_msgs_at("q", [t], start=int(t)), now=NOW)]
    assert [res.outcomes[0].features.n for res in out] == [1, 2, 1]  # type: ignore[union-attr]
    assert m.patients["q"].wake(m.ctx, NOW) == []  # older than the lookback: not tracked
    assert m.patients["q"].seen is None


def test_readings_before_the_lookback_count_when_the_latest_is_within_it(model):
    """Tracking depends on the latest reading: older ones still count towards the minimum
    (a home series of 8 days ago whose last readings fall inside the 7-day lookback)."""
    m = _monitor(model)
    lookback = 7 * 86400.0
    times = [NOW - lookback - 7200, NOW - lookback - 3600, NOW - lookback + 3600]
    m.process(_msgs_at("q", times), now=NOW)
    (opened,) = m.patients["q"].wake(m.ctx, NOW + 60)
    assert opened.event == "opened" and opened.observation_ids == ("q-2",)


def test_registrations_wake_for_no_data_and_reclaim():
    rule = NoDataRule(48.0, 7.0, 3, catch_up_grace_s=900.0)
    now = NOW
    recent = [(o, None, 1) for o, *_ in parse_messages(_msgs_at("r", [now - 3600]))[0][1]]
    old = [(o, None, 1) for o, *_ in parse_messages(_msgs_at("o", [now - 86400 * 30]))[0][1]]
    regs = wakeups.registrations([("r", recent), ("o", old)], rule, 72 * 3600.0, now)
    reclaim, no_data = now + 72 * 3600, now - 3600 + 48 * 3600
    assert sorted(regs) == sorted([
        (wakeups.bucket_of(reclaim), [("r", reclaim), ("o", reclaim)]),  # one item per bucket
        (wakeups.bucket_of(no_data), [("r", no_data)]),  # only within the lookback
    ])  # fmt: skip


def test_a_bucket_fires_what_is_due_keeps_the_rest_and_survives_a_snapshot():
    b = wakeups.Bucket()
    b.add([("a", 100.0), ("b", 160.0), ("a", 130.0)])  # the latest due per patient
    assert b.due == {"a": 130.0, "b": 160.0}
    assert b.next_due() == 100.0  # a timer that fires early only wakes: nothing is due yet
    b = wakeups.Bucket(pickle.loads(pickle.dumps(b.snapshot())))
    assert b.next_due() == 130.0
    assert b.fire(129.0) == []
    assert b.fire(131.0) == ["a"]
    assert b.next_due() == 160.0
    assert b.fire(1e12) == ["b"] and b.next_due() is None


def test_buckets_cycle_weekly():
    step = wakeups.BUCKET_SECONDS
    keys = {wakeups.bucket_of(NOW + step * k) for k in range(2 * wakeups.WHEEL_BUCKETS)}
    assert len(keys) == wakeups.WHEEL_BUCKETS
