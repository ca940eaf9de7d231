"""lib.monitor.home (the home-BP protocol), a patient's home series and its ``home_hypertension``
and ``no_data`` episodes (lib.monitor.patient.Patient, lib.monitor.alerts), without Bytewax."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from lib.domain import Average, Features, Reading, Retraction
from lib.monitor import home
from lib.monitor.alerts import AlertEvent, EpisodeTracker, NoDataRule, home_step
from lib.monitor.engine import Monitor
from lib.monitor.patient import Patient, PatientContext
from lib.monitor.rules import RULESETS
from lib.monitor.state import Results
from lib.sim import fhir_writer as obs

AHA = RULESETS["aha2025"]
ESH = RULESETS["esh2023"]
T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
NOW = (T0 + timedelta(days=365)).timestamp()  # wall clock: the readings are beyond no_data's reach


class ConstantRisk:
    """A risk model scoring every reading 0.1: the home protocol does not depend on it."""

    def predict_proba_one(self, features: Features) -> float:
        return 0.1

    def predict_proba(self, matrix):  # pragma: no cover - predict_proba_one is used
        raise AssertionError("scored one reading at a time")


def context(rules=AHA, every_home: bool = False) -> PatientContext:
    return PatientContext(
        rules, ConstantRisk().predict_proba_one, EpisodeTracker(), NoDataRule(),
        every_home=every_home,
    )  # fmt: skip


def feed(patient: Patient, items: list, ctx: PatientContext, now: float = NOW) -> Results:
    """One batch of the patient's outcomes through ``Patient.process``."""
    return patient.process(ctx, [(o, None, 1) for o in items], now)


def reading(i: int, at: datetime, sys_: float, dia: float, setting: str = "home") -> Reading:
    return Reading(f"o{i}", "p1", at, sys_, dia, setting=setting)


def twice_daily(days: range, sys_: float, dia: float, per_session: int = 2) -> list[Reading]:
    out: list[Reading] = []
    for day in days:
        for half in (0, 12):
            for k in range(per_session):
                at = T0 + timedelta(days=day - 1, hours=half, minutes=2 * k)
                out.append(reading(len(out), at, sys_, dia))
    return out


def home_events(res: Results) -> list[AlertEvent]:
    return [e for e in res.events if e.condition == "home_hypertension"]


def test_days_and_sessions_count_from_the_series_start():
    s = home.HomeSeries(T0.timestamp())
    assert s.day_of(T0.timestamp()) == 0
    # day 1 runs from 6 h before the first reading to 18 h after it
    assert s.day_of((T0 + timedelta(hours=17, minutes=59)).timestamp()) == 0
    assert s.day_of((T0 + timedelta(hours=18)).timestamp()) == 1
    assert s.day_of((T0 - timedelta(hours=6, seconds=1)).timestamp()) == -1
    assert s.day_of((T0 + timedelta(days=6, hours=17)).timestamp()) == 6
    assert s.day_of((T0 + timedelta(days=6, hours=18)).timestamp()) == home.SERIES_DAYS
    assert not s.add("late", (T0 - timedelta(hours=7)).timestamp(), 120, 80)
    assert not s.add("after", (T0 + timedelta(days=7)).timestamp(), 120, 80)


def test_mean_of_session_means_rounded_then_judged():
    # day 2 morning holds a third reading of 150: its session mean is 136.6, the others 129.9
    items = twice_daily(range(1, 5), 129.9, 79.0)
    odd = reading(99, T0 + timedelta(days=1, minutes=5), 150.0, 79.0)
    last = feed(Patient(), [*items, odd], context()).averages[-1]
    assert last.readings_used == 13 and last.days_used == 3
    # the mean of the 6 session means (131.0), not of the 13 readings (131.4)
    assert last.mean_systolic == round((5 * 129.9 + (2 * 129.9 + 150) / 3) / 6, 1) == 131.0
    assert last.home_hypertension is True
    calm = feed(Patient(), items, context()).averages[-1]
    assert calm.mean_systolic == 129.9 and calm.home_hypertension is False  # 129.9 < 130
    assert home.judge(130.0, 79.0, AHA) and not home.judge(134.9, 84.9, ESH)


def test_only_home_readings_unless_every_reading_counts():
    clinic = [reading(i, r.effective_at, 140, 90, "clinic")
              for i, r in enumerate(twice_daily(range(1, 5), 0, 0))]  # fmt: skip
    plain = Patient()
    assert feed(plain, clinic, context()).averages == [] and plain.home is None
    every = feed(Patient(), clinic, context(every_home=True)).averages
    assert every[-1].mean_systolic == 140.0


def test_state_survives_a_snapshot():
    """The series and its open episode go through a snapshot: the restored patient gives the
    same averages and does not open the episode again."""
    items = twice_daily(range(1, 6), 132, 78)  # 20 readings; the average counts from the 16th
    ctx = context()
    straight = Patient()
    first = feed(straight, items[:16], ctx)
    assert len(first.averages) == 1 and [e.event for e in home_events(first)] == ["opened"]
    restored = Patient.restore(pickle.loads(pickle.dumps(straight.snapshot())))
    expected = feed(straight, items[16:], ctx)
    got = feed(restored, items[16:], ctx)
    assert len(got.averages) == 4 and got.averages == expected.averages
    assert got.averages[-1].readings_used == 16
    assert home_events(got) == home_events(expected) == []  # already open: not opened again


def test_retraction_and_amendment():
    items = twice_daily(range(1, 5), 120, 70)
    ctx = context()
    p = Patient()
    assert len(feed(p, items, ctx).averages) == 1
    amended = reading(len(items) - 1, items[-1].effective_at, 150, 90)
    (avg,) = feed(p, [amended], ctx).averages  # same id: replaces, still 12 readings
    assert avg.readings_used == 12 and avg.mean_systolic == pytest.approx(round(
        (5 * 120 + 135) / 6, 1))  # fmt: skip
    gone = items[-1].observation_id
    assert feed(p, [Retraction(gone, "p1")], ctx).averages == []  # 11 readings: no average
    assert p.home is not None and gone not in p.home.readings


def test_a_reading_after_the_seven_days_starts_a_new_series():
    """Day 1 starts 6 h before the first reading, so the 7 days end 6 d 18 h after it: a later
    home reading starts a new series in place of the old one."""
    ctx = context()
    p = Patient()
    feed(p, twice_daily(range(1, 3), 120, 70), ctx)
    assert p.home is not None and p.home.start == T0.timestamp() and len(p.home.readings) == 8
    feed(p, [reading(50, T0 + timedelta(days=6, hours=17, minutes=59), 120, 70)], ctx)
    assert p.home.start == T0.timestamp() and len(p.home.readings) == 9  # day 7: same series
    later = T0 + timedelta(days=6, hours=18)
    feed(p, [reading(51, later, 120, 70)], ctx)
    assert p.home.start == later.timestamp() and set(p.home.readings) == {"o51"}


def test_a_reclaimed_patient_drops_its_home_series_and_keeps_its_episode():
    """Reclaim (wall clock, ``Patient.wake``) drops the series with the window; the open
    ``home_hypertension`` episode stays, and a later series below the threshold resolves it."""
    ctx = context()
    p = Patient()
    (opened,) = home_events(feed(p, twice_daily(range(1, 5), 140, 85), ctx, now=NOW))
    assert opened.event == "opened"
    p.wake(ctx, NOW + ctx.reclaim_s - 1)
    assert p.home is not None and p.window is not None  # not idle for long enough yet
    p.wake(ctx, NOW + ctx.reclaim_s)
    assert p.home is None and p.window is None
    assert p.home_episode is not None and not p.is_empty()
    later = [replace(r, observation_id=f"later-{r.observation_id}",
                     effective_at=r.effective_at + timedelta(days=14))
             for r in twice_daily(range(1, 5), 120, 70)]  # fmt: skip
    (resolved,) = home_events(feed(p, later, ctx, now=NOW + ctx.reclaim_s + 60))
    assert resolved.event == "resolved" and resolved.episode_id == opened.episode_id
    assert p.home_episode is None


def _average(start_day: int, sys_: float) -> home.HomeAverage:
    start = T0 + timedelta(days=start_day)
    return home.HomeAverage("p1", start, start + timedelta(days=6), 24, 6, sys_, 78.0,
                            home.judge(sys_, 78.0, AHA), 130.0, 80.0, "aha2025")  # fmt: skip


def _steps(episode, averages):
    """``home_step`` over several averages: the episode after them, and their events."""
    events = []
    for avg in averages:
        episode, event = home_step(episode, avg)
        if event is not None:
            events.append(event)
    return episode, events


def test_home_episodes_open_once_and_resolve_on_a_later_series():
    episode, (opened,) = _steps(None, [_average(0, 138.0), _average(0, 139.0)])
    assert (opened.condition, opened.event) == ("home_hypertension", "opened")
    assert opened.severity == "moderate" and opened.risk_score == 0.0
    episode, none = _steps(episode, [_average(0, 125.0)])
    assert none == [] and episode is not None  # the same series dropping: not resolved
    episode, (resolved,) = _steps(episode, [_average(14, 125.0)])
    assert resolved.event == "resolved" and resolved.episode_id == opened.episode_id
    assert episode is None
    _, again = _steps(None, [_average(0, 138.0), _average(14, 125.0)])
    assert [e.alert_id for e in again] == [opened.alert_id, resolved.alert_id]  # replay: same ids


def test_reported_averages_open_and_resolve_a_patients_home_episode():
    """Average BP Observations (LOINC 96607-7) go through the same episode in the patient."""
    ctx = context()
    p = Patient()

    def average(oid: str, start_day: int, sys_: float) -> Average:
        start = T0 + timedelta(days=start_day)
        return Average(oid, "p1", start, start + timedelta(days=6), sys_, 78.0)

    res = feed(p, [average("avg-1", 0, 138.0)], ctx)
    (opened,) = home_events(res)
    assert opened.event == "opened" and opened.observation_ids == ("avg-1",)
    assert [a.origin for a in res.averages] == ["reported"]
    assert home_events(feed(p, [average("avg-1b", 0, 125.0)], ctx)) == []  # same period
    (resolved,) = home_events(feed(p, [average("avg-2", 14, 125.0)], ctx))
    assert resolved.event == "resolved" and resolved.episode_id == opened.episode_id


# -- no_data episodes (lib.monitor.alerts.NoDataRule, in each Patient of engine.Monitor) ---
@dataclass
class Msg:
    value: bytes
    key: bytes | None
    headers: tuple = ()
    topic: str | None = "bp.observations"
    partition: int | None = 0
    offset: int | None = 0
    timestamp: tuple[int, int] | None = None


def _every_6h(patient: str, last: datetime, n: int = 4) -> list[Reading]:
    return [
        Reading(f"{patient}-{k}", patient, last - timedelta(hours=6 * (n - 1 - k)), 120.0, 75.0)
        for k in range(n)
    ]


def _msgs(readings: list[Reading]) -> list[Msg]:
    return [Msg(obs.encode(obs.to_fhir(r, "N")), r.patient_id.encode()) for r in readings]


def _monitor(catch_up_grace_s: float = 900.0) -> Monitor:
    return Monitor(ConstantRisk(), no_data=NoDataRule(48, 7, catch_up_grace_s=catch_up_grace_s))


def _send(m: Monitor, readings: list[Reading], now: float) -> list[AlertEvent]:
    return [e for _, res in m.process(_msgs(readings), now=now) for e in res.events]


def _wake(m: Monitor, now: float) -> list[AlertEvent]:
    """Every patient woken at wall-clock ``now`` (the wake-up wheel, all at once)."""
    return [e for p in m.patients.values() for e in p.wake(m.ctx, now)]


def test_no_data_opens_once_after_the_silence_and_resolves_on_a_reading():
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    silent = _every_6h("silent", now - timedelta(days=3))
    steady = _every_6h("steady", now - timedelta(hours=1))
    few = _every_6h("few", now - timedelta(days=3), n=2)  # not yet "regular"
    old = _every_6h("old", now - timedelta(days=8))  # beyond the 7-day lookback by now
    m = _monitor()
    for readings in (silent, steady, few, old):  # each processed as it was measured
        assert _send(m, readings, readings[-1].ts) == []
    (opened,) = _wake(m, now.timestamp())
    assert (opened.patient_id, opened.condition, opened.event) == ("silent", "no_data", "opened")
    assert opened.opened_at == silent[-1].effective_at + timedelta(hours=48)
    assert opened.observation_ids == ("silent-3",)
    assert _wake(m, now.timestamp() + 3600) == []  # one opening, however often woken
    assert m.patients["old"].seen is None  # forgotten by no_data
    # 47 h 59 min of silence is not enough; 48 h is
    edge = _monitor()
    edge_readings = _every_6h("edge", now - timedelta(hours=47, minutes=59))
    _send(edge, edge_readings, edge_readings[-1].ts)
    assert _wake(edge, now.timestamp()) == []
    assert len(_wake(edge, now.timestamp() + 60)) == 1
    # the state survives a snapshot; a later check or a replay gives the same ids
    restored = _monitor()
    restored.patients = {
        k: Patient.restore(pickle.loads(pickle.dumps(p.snapshot()))) for k, p in m.patients.items()
    }
    back = replace(_every_6h("silent", now, n=1)[0], observation_id="silent-back")
    (resolved,) = _send(restored, [back], now.timestamp())
    assert resolved.event == "resolved" and resolved.episode_id == opened.episode_id
    replay = _monitor()
    _send(replay, silent, silent[-1].ts)
    assert [e.alert_id for e in _wake(replay, now.timestamp() + 86_400)] == [opened.alert_id]


def test_no_data_waits_while_the_monitor_catches_up():
    """Replaying the last week at start: a patient's newer readings may still be queued, so a
    reading processed just now opens nothing until the catch-up grace has passed, or until the
    bounded run's end (``Monitor.finish``) says the input is exhausted."""
    now = datetime(2026, 6, 10, 12, tzinfo=UTC).timestamp()
    silent = _every_6h("lagging", datetime(2026, 6, 7, 12, tzinfo=UTC))  # 3 days ago
    m = _monitor(catch_up_grace_s=900)
    _send(m, silent, now)  # processed now, during catch-up
    assert _wake(m, now + 60) == []  # newer readings may be on the way
    newer = replace(_every_6h("lagging", datetime(2026, 6, 10, 11, tzinfo=UTC), n=1)[0],
                    observation_id="lagging-new")  # fmt: skip
    assert _send(m, [newer], now + 120) == []  # it came: no false episode to resolve
    assert _wake(m, now + 3600) == []  # and it is not silent any more
    other = _monitor(catch_up_grace_s=900)
    _send(other, silent, now)
    assert len(_wake(other, now + 901)) == 1  # the grace passed with nothing newer: silent
    eof = _monitor(catch_up_grace_s=900)
    _send(eof, silent, now)
    ((key, res),) = eof.finish(now + 1)  # input exhausted: nothing on the way
    assert key == "lagging" and [e.event for e in res.events] == ["opened"]
