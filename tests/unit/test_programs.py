"""Postpartum program rules and adherence cycles (lib.monitor.programs, lib.monitor.adherence):
boundaries on both sides of every threshold and interval."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import orjson
import pytest

from lib.monitor.adherence import CycleDays, band_of, cycle_start, local_day
from lib.monitor.programs import (
    Enrollment,
    SevereRangeEpisode,
    parse_enrollment,
    postpartum_band,
    severe_range_step,
)

T = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sys_", "dia", "band"),
    [
        (159.9, 109.9, "hypertensive_range"),
        (160.0, 80.0, "severe_range"),
        (120.0, 110.0, "severe_range"),
        (120.0, 109.9, "hypertensive_range"),
        (139.9, 89.9, None),
        (140.0, 70.0, "hypertensive_range"),
        (118.0, 90.0, "hypertensive_range"),
    ],
)
def test_postpartum_bands_at_their_thresholds(sys_, dia, band):
    assert postpartum_band(sys_, dia) == band


def _two(gap: timedelta):
    ep, first = severe_range_step(None, "o1", T, 162.0, 95.0)
    assert first is not None and (first.event, first.severity) == ("opened", "high")
    return severe_range_step(ep, "o2", T + gap, 158.0, 111.0)


@pytest.mark.parametrize(
    ("gap", "confirmation"),
    [
        (timedelta(minutes=14, seconds=59), "repeat"),
        (timedelta(minutes=15), "persistent"),
        (timedelta(hours=4), "persistent"),
        (timedelta(hours=4, seconds=1), None),
        (-timedelta(minutes=5), "repeat"),  # a late reading of the same quarter hour
    ],
)
def test_the_second_severe_reading_confirms_within_four_hours(gap, confirmation):
    ep, t = _two(gap)
    if confirmation is None:
        assert t is None and ep is not None and not ep.confirmed
    else:
        assert t is not None and (t.event, t.severity, t.confirmed) == (
            "escalated",
            "critical",
            True,
        )
        assert t.confirmation == confirmation


def test_a_late_pair_confirms_after_a_missed_window_and_three_clear_readings_resolve():
    ep, _ = _two(timedelta(hours=5))  # no confirmation: a new wait from the second
    ep, t = severe_range_step(ep, "o3", T + timedelta(hours=5, minutes=20), 165.0, 100.0)
    assert t is not None and t.confirmation == "persistent"
    steps = [severe_range_step(ep, f"c{i}", T + timedelta(hours=6 + i), 150.0, 95.0)
             for i in range(3)]  # fmt: skip
    assert [s[1] for s in steps[:2]] == [None, None]
    assert steps[2][0] is None and steps[2][1] is not None and steps[2][1].event == "resolved"


def test_a_severe_reading_resets_the_clear_count():
    ep = SevereRangeEpisode("o1", T, T, confirmed=True, clear=("o2", "o3"))
    ep, t = severe_range_step(ep, "o2", T, 170.0, 90.0)
    assert t is None and ep is not None and ep.clear == ()


def test_enrolments():
    pp = parse_enrollment(b'{"program": "postpartum", "start": "2026-05-01"}')
    assert pp == Enrollment("postpartum", date(2026, 5, 1))
    assert pp.covers(date(2026, 6, 12)) and not pp.covers(date(2026, 6, 13))  # 42 days
    assert not pp.covers(date(2026, 4, 30))
    general = Enrollment("general", date(2026, 5, 1))
    assert general.covers(date(2030, 1, 1))
    assert parse_enrollment(orjson.dumps({"program": "x", "start": "2026-05-01"}))[0] == (
        "invalid_enrollment"
    )
    assert parse_enrollment(b"{")[0] == "invalid_json"
    bad_end = {"program": "general", "start": "2026-05-02", "end": "2026-05-01"}
    assert parse_enrollment(orjson.dumps(bad_end)) == ("invalid_enrollment", "end before start")


def test_bands_at_their_cuts():
    assert [band_of(d) for d in (0, 1, 2, 15, 16, 30)] == [
        "under_2", "under_2", "2_to_15", "2_to_15", "16_plus", "16_plus",
    ]  # fmt: skip


def test_local_days_follow_the_offset():
    late_evening_utc = datetime(2026, 5, 1, 23, 30, tzinfo=UTC)
    assert local_day(late_evening_utc, None) == date(2026, 5, 1)
    assert local_day(late_evening_utc, 60) == date(2026, 5, 2)  # 00:30 at +01:00
    assert local_day(datetime(2026, 5, 2, 0, 30, tzinfo=UTC), -300) == date(2026, 5, 1)


def test_cycles_roll_over_after_thirty_days():
    anchor = date(2026, 5, 1)
    assert cycle_start(anchor, date(2026, 5, 30)) == anchor  # day 30 of the first cycle
    assert cycle_start(anchor, date(2026, 5, 31)) == date(2026, 5, 31)  # day 1 of the next
    assert cycle_start(anchor, date(2026, 4, 30)) == date(2026, 4, 1)


def test_a_cycle_counts_days_and_forgets_a_retracted_only_reading():
    c = CycleDays(date(2026, 5, 1))
    assert c.add(date(2026, 5, 1)) and not c.add(date(2026, 5, 1))  # two readings, one day
    assert c.add(date(2026, 5, 10))
    doc = c.doc("p1")
    assert (doc["days_with_readings"], doc["last_reading_date"], doc["days_left"]) == (
        2, "2026-05-10", 20,
    )  # fmt: skip
    assert (doc["band"], doc["on_track"], doc["cycle_end"]) == ("2_to_15", True, "2026-05-30")
    assert not c.remove(date(2026, 5, 1))  # one of its two readings retracted: still a day
    assert c.remove(date(2026, 5, 10))  # its only reading retracted: no longer counts
    doc = c.doc("p1")
    assert (doc["days_with_readings"], doc["band"], doc["days_left"]) == (1, "under_2", 29)
    with pytest.raises(ValueError):
        c.add(date(2026, 5, 31))


def test_on_track_is_days_plus_days_left_at_least_sixteen():
    c = CycleDays(date(2026, 5, 1))
    for d in range(1, 16):  # 1..15 May: 15 days, last on the 15th, 15 days left
        c.add(date(2026, 5, d))
    assert c.doc("p")["on_track"] is True  # 15 + 15 >= 16
    late = CycleDays(date(2026, 5, 1))
    late.add(date(2026, 5, 16))  # 1 day, 14 left: 15 < 16
    assert late.doc("p")["on_track"] is False


# -- the patient's cycles (Adherence) and its snapshot --------------------------------------
def test_day_numbers_are_local_dates():
    from lib.monitor.adherence import day_number, day_of_number

    for at, offset in ((T, -300), (T.replace(hour=2), -300), (T.replace(hour=23), 120), (T, None)):
        assert day_of_number(day_number(at.timestamp(), offset)) == local_day(at, offset)


def test_adherence_keeps_the_current_and_previous_cycle_and_refuses_older_days():
    from lib.monitor.adherence import Adherence, number_of_day

    d0 = number_of_day(date(2026, 1, 1))
    a = Adherence.new(d0)
    assert a.add(d0) == d0 and a.add(d0) is None  # a second reading of the day
    assert a.add(d0 + 30) == d0 + 30  # the next cycle
    assert a.add(d0 + 5) == d0  # a late reading of the previous cycle still counts
    assert a.cycle(d0).days_with_readings == 2
    assert a.add(d0 + 60) == d0 + 60  # the third cycle: the first is forgotten
    assert a.add(d0 + 6) is None and a.remove(d0 + 6) is None
    assert a.remove(d0 + 60) == d0 + 60 and a.cycle(d0 + 60).days_with_readings == 0
    # the fast path only counts again a day that has a reading already
    assert not a.count_again(d0 + 61) and a.add(d0 + 61) == d0 + 60
    assert a.count_again(d0 + 61) and a.remove(d0 + 61) is None  # 2 -> 1: still counted
    assert a.cycle(d0 + 60).days_with_readings == 1
    assert not a.left_out and a.offset is None
    a.leave_out()
    a.offset = -300
    back = Adherence.restore(a.snapshot())
    assert (back.left_out, back.offset, back.starts()) == (True, -300, [d0 + 30, d0 + 60])
    assert len(a.snapshot()) == 75
    fresh = Adherence.new(d0)
    fresh.add(d0 + 1)
    assert len(fresh.snapshot()) == 45 and Adherence.restore(fresh.snapshot()) == fresh


def test_adherence_expires_after_a_cycle_without_readings_and_reanchors_on_enrolment():
    from lib.monitor.adherence import Adherence, number_of_day

    d0 = date(2026, 1, 1)
    n0 = number_of_day(d0)
    a = Adherence.new(n0)
    a.add(n0 + 3)
    assert not a.expired(d0 + timedelta(days=32))
    assert a.expired(d0 + timedelta(days=33))  # 30 days after the last reading
    a.reanchor(d0 + timedelta(days=10))
    assert a.add(n0 + 12) == n0 + 10
    a.reanchor(d0 - timedelta(days=10))  # an earlier start does not move a running cycle
    assert a.anchor == n0 + 10


def test_patient_snapshots_keep_programs_and_cycles_and_read_version_2():
    import pickle

    from lib.errors import RecoveryError
    from lib.monitor.adherence import Adherence, number_of_day
    from lib.monitor.patient import SNAPSHOT_TAG, Patient

    p = Patient("p1")
    p.enrollment = Enrollment("postpartum", date(2026, 1, 1))
    p.severe = SevereRangeEpisode("o1", T, T, confirmed=True, clear=("o2",))
    p.adherence = Adherence.new(number_of_day(date(2026, 1, 1)))
    p.adherence.add(number_of_day(date(2026, 1, 3)))
    p.adherence.offset = -300
    stored = p.snapshot()
    assert len(pickle.dumps(stored)) < 600
    back = Patient.restore(pickle.loads(pickle.dumps(stored)))
    assert back.enrollment == p.enrollment and back.severe == p.severe
    assert back.adherence is not None and back.adherence.snapshot() == p.adherence.snapshot()
    v2 = (SNAPSHOT_TAG, 2, "p1", None, None, None, None, None, 5.0, None, None)
    old = Patient.restore(v2)
    assert (old.touched_at, old.enrollment, old.adherence) == (5.0, None, None)
    with pytest.raises(RecoveryError):
        Patient.restore((SNAPSHOT_TAG, 2, "p1", None))


def test_the_cycle_document_from_bytes_is_the_cycle_days_document():
    """Adherence.doc (from the packed bytes) against CycleDays.doc (from dates), for many
    day patterns: empty, first day, last day, a day before the cap, both cycles held."""
    import random

    from lib.monitor.adherence import Adherence, number_of_day

    rng = random.Random(7)
    d0 = number_of_day(date(2026, 2, 27))
    for trial in range(300):
        a = Adherence.new(d0)
        for _ in range(rng.randrange(0, 40)):
            a.add(d0 + rng.randrange(0, 60))
        if trial % 5 == 0:
            a.remove(d0 + rng.randrange(0, 60))
        for start in a.starts():
            assert a.doc(start, "p") == a.cycle(start).doc("p")
