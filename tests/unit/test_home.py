"""lib.monitor.home (the home-BP protocol) and lib.monitor.alerts.HomeAlerts, without Bytewax."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest

from lib.domain import FEATURE_NAMES, Assessment, Features, Reading, Retraction
from lib.monitor import home
from lib.monitor.alerts import HomeAlerts
from lib.monitor.rules import RULESETS

AHA = RULESETS["aha2025"]
ESH = RULESETS["esh2023"]
T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
FEATURES = Features(*range(len(FEATURE_NAMES)))


def assessed(i: int, at: datetime, sys_: float, dia: float, setting: str = "home") -> Assessment:
    r = Reading(f"o{i}", "p1", at, sys_, dia, setting=setting)
    return Assessment(r, FEATURES, "normal", (), "low", 0.1, "aha2025")


def twice_daily(days: range, sys_: float, dia: float, per_session: int = 2) -> list[Assessment]:
    out = []
    for day in days:
        for half in (0, 12):
            for k in range(per_session):
                at = T0 + timedelta(days=day - 1, hours=half, minutes=2 * k)
                out.append(assessed(len(out), at, sys_, dia))
    return out


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
    shard = home.ShardHome(AHA)
    # day 2 morning holds a third reading of 150: its session mean is 136.6, the others 129.9
    items = twice_daily(range(1, 5), 129.9, 79.0)
    odd = assessed(99, T0 + timedelta(days=1, minutes=5), 150.0, 79.0)
    last = shard.process([*items, odd])[-1]
    assert last.readings_used == 13 and last.days_used == 3
    # the mean of the 6 session means (131.0), not of the 13 readings (131.4)
    assert last.mean_systolic == round((5 * 129.9 + (2 * 129.9 + 150) / 3) / 6, 1) == 131.0
    assert last.home_hypertension is True
    calm = home.ShardHome(AHA).process(items)[-1]
    assert calm.mean_systolic == 129.9 and calm.home_hypertension is False  # 129.9 < 130
    assert home.judge(130.0, 79.0, AHA) and not home.judge(134.9, 84.9, ESH)


def test_only_home_readings_unless_every_reading_counts():
    clinic = [assessed(i, a.reading.effective_at, 140, 90, "clinic")
              for i, a in enumerate(twice_daily(range(1, 5), 0, 0))]  # fmt: skip
    assert home.ShardHome(AHA).process(clinic) == []
    assert home.ShardHome(AHA, every_reading=True).process(clinic)[-1].mean_systolic == 140.0


def test_state_survives_a_snapshot():
    items = twice_daily(range(1, 5), 128, 78)
    shard = home.ShardHome(AHA)
    shard.process(items[:10])
    restored = home.ShardHome(AHA, state=pickle.loads(pickle.dumps(shard.snapshot())))
    assert restored.process(items[10:]) == home.ShardHome(AHA).process(items)[-len(items[10:]) :]


def test_retraction_and_amendment():
    items = twice_daily(range(1, 5), 120, 70)
    shard = home.ShardHome(AHA)
    assert len(shard.process(items)) == 1
    amended = assessed(len(items) - 1, items[-1].reading.effective_at, 150, 90)
    (avg,) = shard.process([amended])  # same id: replaces, still 12 readings
    assert avg.readings_used == 12 and avg.mean_systolic == pytest.approx(round(
        (5 * 120 + 135) / 6, 1))  # fmt: skip
    gone = items[-1].reading.observation_id
    assert shard.process([Retraction(gone, "p1")]) == []  # 11 readings: no average


def test_old_series_expire_on_event_time():
    shard = home.ShardHome(AHA)
    shard.process(twice_daily(range(1, 3), 120, 70))
    other = Reading("x", "p2", T0 + timedelta(days=20), 120, 70, setting="home")
    shard.process([Assessment(other, FEATURES, "normal", (), "low", 0.1, "aha2025")])
    assert set(shard.series) == {"p2"}


def test_home_alerts_open_once_and_resolve_on_a_later_series():
    def avg(start_day: int, sys_: float) -> home.HomeAverage:
        start = T0 + timedelta(days=start_day)
        return home.HomeAverage("p1", start, start + timedelta(days=6), 24, 6, sys_, 78.0,
                                home.judge(sys_, 78.0, AHA), 130.0, 80.0, "aha2025")  # fmt: skip

    alerts = HomeAlerts()
    (opened,) = alerts.process([avg(0, 138.0), avg(0, 139.0)])
    assert (opened.condition, opened.event) == ("home_hypertension", "opened")
    assert alerts.process([avg(0, 125.0)]) == []  # the same series dropping: not resolved
    (resolved,) = alerts.process([avg(14, 125.0)])
    assert resolved.event == "resolved" and resolved.episode_id == opened.episode_id
    again = HomeAlerts().process([avg(0, 138.0), avg(14, 125.0)])
    assert [e.alert_id for e in again] == [opened.alert_id, resolved.alert_id]  # replay: same ids


# -- no_data episodes (lib.monitor.alerts.NoDataTracker) -----------------------------------
def _every_6h(patient: str, last: datetime, n: int = 4) -> list[Assessment]:
    out = []
    for k in range(n):
        at = last - timedelta(hours=6 * (n - 1 - k))
        r = Reading(f"{patient}-{k}", patient, at, 120.0, 75.0)
        out.append(Assessment(r, FEATURES, "normal", (), "low", 0.1, "aha2025"))
    return out


def test_no_data_opens_once_after_the_silence_and_resolves_on_a_reading():
    from lib.monitor.alerts import NoDataTracker

    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    silent = _every_6h("silent", now - timedelta(days=3))
    steady = _every_6h("steady", now - timedelta(hours=1))
    few = _every_6h("few", now - timedelta(days=3), n=2)  # not yet "regular"
    old = _every_6h("old", now - timedelta(days=8))  # beyond the 7-day lookback
    tracker = NoDataTracker(48, 7)
    assert tracker.observe([*silent, *steady, *few, *old]) == []
    (opened,) = tracker.check(now.timestamp())
    assert (opened.patient_id, opened.condition, opened.event) == ("silent", "no_data", "opened")
    assert opened.opened_at == silent[-1].reading.effective_at + timedelta(hours=48)
    assert opened.observation_ids == ("silent-3",)
    assert tracker.check(now.timestamp() + 3600) == []  # one opening, however often checked
    assert "old" not in tracker.patients
    # 47 h of silence is not enough; 48 h is
    edge = NoDataTracker(48, 7)
    edge.observe(_every_6h("edge", now - timedelta(hours=47, minutes=59)))
    assert edge.check(now.timestamp()) == []
    assert len(edge.check(now.timestamp() + 60)) == 1
    # the state survives a snapshot; a later check or a replay gives the same ids
    restored = NoDataTracker(48, 7, patients=pickle.loads(pickle.dumps(dict(tracker.patients))))
    back = _every_6h("silent", now, n=1)
    back = [Assessment(replace_reading(back[0].reading, "silent-back"), FEATURES, "normal", (),
                       "low", 0.1, "aha2025")]  # fmt: skip
    (resolved,) = restored.observe(back)
    assert resolved.event == "resolved" and resolved.episode_id == opened.episode_id
    replay = NoDataTracker(48, 7)
    replay.observe(silent)
    assert [e.alert_id for e in replay.check(now.timestamp() + 86_400)] == [opened.alert_id]


def test_no_data_waits_while_the_monitor_catches_up():
    """Replaying the last week at start: a patient's newer readings may still be queued, so a
    reading processed just now opens nothing until the catch-up grace has passed, or until the
    bounded run's end says the input is exhausted."""
    from lib.monitor.alerts import NoDataTracker

    now = datetime(2026, 6, 10, 12, tzinfo=UTC).timestamp()
    silent = _every_6h("lagging", datetime(2026, 6, 7, 12, tzinfo=UTC))  # 3 days ago
    tracker = NoDataTracker(48, 7, catch_up_grace_s=900)
    tracker.observe(silent, now)  # processed now, during catch-up
    assert tracker.check(now + 60) == []  # newer readings may be on the way
    newer = _every_6h("lagging", datetime(2026, 6, 10, 11, tzinfo=UTC), n=1)
    newer = [Assessment(replace_reading(newer[0].reading, "lagging-new"), FEATURES, "normal",
                        (), "low", 0.1, "aha2025")]  # fmt: skip
    assert tracker.observe(newer, now + 120) == []  # it came: no false episode to resolve
    assert tracker.check(now + 3600) == []  # and it is not silent any more
    other = NoDataTracker(48, 7, catch_up_grace_s=900)
    other.observe(silent, now)
    assert len(other.check(now + 901)) == 1  # the grace passed with nothing newer: silent
    eof = NoDataTracker(48, 7, catch_up_grace_s=900)
    eof.observe(silent, now)
    assert len(eof.check(now + 1, caught_up=True)) == 1  # input exhausted: nothing on the way


def replace_reading(r: Reading, oid: str) -> Reading:
    from dataclasses import replace

    return replace(r, observation_id=oid)
