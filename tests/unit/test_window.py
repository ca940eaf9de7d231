"""PatientWindow and features_of: hand-computed features, order, duplicates, memory."""

from __future__ import annotations

import itertools
import math
import pickle
import random
import statistics
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.domain import Features, Reading
from lib.monitor.rules import is_abnormal
from lib.monitor.window import PatientWindow, compute_features, features_of

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def rd(i: int, sys_: float, dia: float, *, hours: float | None = None, version: str = "",
       oid: str | None = None, patient: str = "p1") -> Reading:  # fmt: skip
    at = T0 + timedelta(hours=i if hours is None else hours)
    return Reading(oid or f"obs-{i}", patient, at, float(sys_), float(dia), version=version)


def test_first_reading_has_neutral_trend_features():
    f = PatientWindow(12).add(rd(0, 150, 95))
    assert f is not None
    assert (f.n, f.mean_sys, f.mean_dia, f.sd_sys, f.arv_sys) == (1, 150.0, 95.0, 0.0, 0.0)
    assert (f.slope_sys_per_h, f.hours_since_prev, f.n_abnormal) == (0.0, 0.0, 1)
    assert (f.last_sys, f.last_dia) == (150.0, 95.0)


def test_slope_of_a_known_line_per_hour():
    # systolic = 110 + 2.5 * hours, diastolic = 80 - 1 * hours, readings every 30 minutes
    w = PatientWindow(12)
    for k in range(6):
        h = 0.5 * k
        f = w.add(rd(k, 110 + 2.5 * h, 80 - h, hours=h))
    assert f is not None
    assert f.slope_sys_per_h == pytest.approx(2.5, abs=1e-9)
    assert f.slope_dia_per_h == pytest.approx(-1.0, abs=1e-9)
    assert f.hours_since_prev == pytest.approx(0.5)
    assert f.n == 6


def test_mean_sd_arv_of_a_known_series():
    series = [(120, 80), (130, 70), (125, 90), (140, 60)]
    w = PatientWindow(12)
    for i, (s, d) in enumerate(series):
        f = w.add(rd(i, s, d))
    assert f is not None
    # ARV: (|130-120| + |125-130| + |140-125|) / 3 = 30 / 3
    assert f.arv_sys == pytest.approx(10.0)
    assert f.mean_sys == pytest.approx(128.75)
    assert f.mean_dia == pytest.approx(75.0)
    assert f.sd_sys == pytest.approx(statistics.stdev([120, 130, 125, 140]))
    assert f.sd_dia == pytest.approx(statistics.stdev([80, 70, 90, 60]))
    # abnormal (>=130 or >=80, <90 or <60): 120/80 yes (dia 80), 130/70 yes, 125/90 yes, 140/60 yes
    assert f.n_abnormal == 4


def test_n_abnormal_boundaries():
    assert not is_abnormal(129.9, 79.9)
    assert is_abnormal(130, 70) and is_abnormal(120, 80)
    assert not is_abnormal(90, 60)
    assert is_abnormal(89.9, 70) and is_abnormal(110, 59.9)


def test_n_abnormal_counts_what_the_rules_call_abnormal_under_aha2017():
    # one meaning: the feature's inline test equals rules.is_abnormal under aha2017, whatever
    # rule set scores the readings (a grid across every cut, 0.5 mm[Hg] apart)
    values = [(s / 2, d / 2) for s in range(170, 380, 3) for d in range(110, 250, 3) if s > d]
    for sys_, dia in values:
        f = compute_features([0.0, 60.0], [120.0, sys_], [70.0, dia])
        assert f.n_abnormal == int(is_abnormal(sys_, dia, "aha2017")), (sys_, dia)
        first = compute_features([60.0], [sys_], [dia])  # the one-reading path
        assert first.n_abnormal == int(is_abnormal(sys_, dia, "aha2017")), (sys_, dia)


def test_window_is_bounded_and_keeps_the_latest():
    w = PatientWindow(3)
    for i in range(10):
        f = w.add(rd(i, 100 + i, 70))
    assert len(w) == 3
    assert w.observation_ids == ("obs-7", "obs-8", "obs-9")
    assert f is not None and f.n == 3 and f.mean_sys == pytest.approx(108.0)


def test_late_reading_is_inserted_in_order_and_judged_as_of_its_time():
    w = PatientWindow(12)
    w.add(rd(0, 120, 80))
    w.add(rd(2, 140, 90))
    late = w.add(rd(1, 100, 70))
    assert w.observation_ids == ("obs-0", "obs-1", "obs-2")
    assert late is not None
    assert late.n == 2 and late.mean_sys == pytest.approx(110.0)  # obs-0 and itself
    assert late.hours_since_prev == pytest.approx(1.0)
    nxt = w.add(rd(3, 130, 85))
    assert nxt is not None and nxt.n == 4 and nxt.hours_since_prev == pytest.approx(1.0)


def test_reading_older_than_a_full_window_is_judged_alone_and_not_kept():
    w = PatientWindow(2)
    w.add(rd(5, 120, 80))
    w.add(rd(6, 121, 80))
    f = w.add(rd(1, 150, 95))
    assert f is not None and f.n == 1 and f.last_sys == 150.0
    assert w.observation_ids == ("obs-5", "obs-6")


def test_duplicate_same_id_and_version_is_none():
    w = PatientWindow(12)
    assert w.add(rd(0, 120, 80, version="1")) is not None
    assert w.add(rd(0, 120, 80, version="1")) is None
    assert len(w) == 1


def test_new_version_replaces_and_stale_version_is_duplicate():
    w = PatientWindow(12)
    w.add(rd(0, 120, 80, version="1"))
    w.add(rd(1, 122, 81))
    amended = w.add(rd(0, 180, 100, version="2"))
    assert amended is not None and len(w) == 2
    assert amended.n == 1 and amended.last_sys == 180.0  # as of its time: before obs-1
    later = w.add(rd(2, 124, 82))
    assert later is not None
    assert later.mean_sys == pytest.approx((180 + 122 + 124) / 3)
    assert w.add(rd(0, 120, 80, version="1")) is None  # stale replay of version 1
    assert w.add(rd(0, 180, 100, version="10")) is not None  # numeric, not string, order


def test_same_version_with_new_content_replaces():
    w = PatientWindow(12)
    w.add(rd(0, 120, 80))
    f = w.add(rd(0, 160, 100))  # amended without meta.versionId
    assert f is not None and len(w) == 1 and f.last_sys == 160.0


def test_retract():
    w = PatientWindow(12)
    w.add(rd(0, 120, 80))
    w.add(rd(1, 200, 120))
    assert w.retract("obs-1") is True
    assert w.retract("obs-1") is False
    f = w.add(rd(2, 124, 80))
    assert f is not None and f.n == 2 and f.mean_sys == pytest.approx(122.0)
    assert w.last_ts == (T0 + timedelta(hours=2)).timestamp()


def test_a_retracted_reading_never_comes_back():
    w = PatientWindow(3)
    w.add(rd(0, 200, 120))
    assert w.retract("obs-0") is True
    assert w.add(rd(0, 200, 120)) is None  # the original sent again
    assert w.retract("obs-5") is False  # retraction before its reading ...
    assert w.add(rd(5, 150, 95)) is None  # ... which is then never scored
    assert len(w) == 0
    for i in range(6, 12):  # tombstones are bounded by the window size
        w.retract(f"obs-{i}")
    assert w.add(rd(0, 200, 120)) is not None


def test_state_round_trip_and_pickle():
    w = PatientWindow(5)
    for i in range(7):
        w.add(rd(i, 110 + i, 70 + i, version=str(i)))
    w.retract("obs-20")
    copies = [PatientWindow.from_state(w.state()), pickle.loads(pickle.dumps(w))]
    expected = w.add(rd(9, 150, 90))
    for restored in copies:
        assert restored.observation_ids == ("obs-2", "obs-3", "obs-4", "obs-5", "obs-6")
        assert restored.add(rd(9, 150, 90)) == expected
        assert restored.add(rd(6, 116, 76, version="6")) is None
        assert restored.observation_ids == w.observation_ids
        assert restored.add(rd(20, 150, 90)) is None  # the tombstone survived


def test_features_of_equals_the_window_path():
    readings = [rd(i, 120 + 7 * math.sin(i), 80 + 3 * math.cos(i)) for i in range(30)]
    w = PatientWindow(12)
    assert features_of(readings) == [w.add(r) for r in readings]
    with pytest.raises(ValueError):
        features_of([readings[0], readings[0]])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 48, allow_nan=False), st.floats(60, 250), st.floats(30, 140)),
        min_size=1,
        max_size=30,
    ),
    st.integers(2, 12),
)
def test_features_match_a_from_scratch_computation(points, size):
    """Any arrival order: features equal those of the as-of window recomputed from scratch."""
    w = PatientWindow(size)
    held: list[tuple[float, float, float, str]] = []
    for i, (h, s, d) in enumerate(points):
        r = rd(i, s, d, hours=h)
        f = w.add(r)
        assert f is not None
        held.append((r.ts, s, d, r.observation_id))
        held.sort(key=lambda x: x[0])  # stable: equal times keep arrival order
        pos = [x[3] for x in held].index(r.observation_id)
        if pos == 0 and len(held) > size:
            part = [held.pop(0)]  # older than a full window: judged alone, not kept
        else:
            if len(held) > size:
                held.pop(0)
                pos -= 1
            part = held[: pos + 1]
        expect = compute_features([x[0] for x in part], [x[1] for x in part], [x[2] for x in part])
        assert f == expect
        assert len(w) == len(held) <= size
        assert f.n == len(part)
        assert min(x[1] for x in part) - 1e-6 <= f.mean_sys <= max(x[1] for x in part) + 1e-6


def test_memory_per_patient_is_bounded():
    n_patients = 2000
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    windows = {}
    for p in range(n_patients):
        pid = f"patient-{p:08d}"
        w = windows[pid] = PatientWindow(12)
        for i in range(14):
            w.add(rd(i, 120 + i, 80, oid=f"{p:08d}-0000-4000-8000-{i:012d}", patient=pid))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_patient = used / n_patients
    assert all(len(w) == 12 for w in windows.values())
    assert per_patient <= 3 * 1024, per_patient
    print(f"bytes per patient (12 readings, dict entry included): {per_patient:.0f}")


def textbook_features(ts: list[float], sys_: list[float], dia: list[float]) -> Features:
    """The features as the docstring of compute_features defines them, written plainly: the
    oracle of its one-loop form (every sum left to right, the means by math.fsum)."""
    n = len(ts)
    mean_s, mean_d = math.fsum(sys_) / n, math.fsum(dia) / n
    hours = [(t - ts[0]) / 3600.0 for t in ts]
    mean_h = sum(hours) / n
    dev_s = [s - mean_s for s in sys_]
    dev_d = [d - mean_d for d in dia]
    dev_h = [h - mean_h for h in hours]
    stt = sum(h * h for h in dev_h)
    if n == 1:
        sd_s = sd_d = arv = 0.0
    else:
        sd_s = math.sqrt(sum(x * x for x in dev_s) / (n - 1))
        sd_d = math.sqrt(sum(x * x for x in dev_d) / (n - 1))
        arv = sum(abs(b - a) for a, b in itertools.pairwise(sys_)) / (n - 1)
    slope_s = sum(h * x for h, x in zip(dev_h, dev_s, strict=True)) / stt if stt > 0 else 0.0
    slope_d = sum(h * x for h, x in zip(dev_h, dev_d, strict=True)) / stt if stt > 0 else 0.0
    n_abnormal = sum(is_abnormal(s, d, "aha2017") for s, d in zip(sys_, dia, strict=True))
    since = (ts[-1] - ts[-2]) / 3600.0 if n > 1 else 0.0
    return Features(n, mean_s, mean_d, sd_s, sd_d, arv, slope_s, slope_d, n_abnormal, since,
                    float(sys_[-1]), float(dia[-1]))  # fmt: skip


def test_compute_features_is_bit_identical_to_the_textbook_form():
    rng = random.Random(17)
    for _ in range(3000):
        n = rng.randint(1, 12)
        t = rng.uniform(1.7e9, 1.8e9)
        ts = sorted(t + rng.choice([0.0, rng.uniform(0, 36) * 3600]) for _ in range(n))
        sys_ = [rng.choice([float(rng.randint(60, 250)), rng.uniform(60, 250)]) for _ in ts]
        dia = [rng.choice([float(rng.randint(30, 140)), rng.uniform(30, 140)]) for _ in ts]
        got = compute_features(ts, sys_, dia)
        expect = textbook_features(ts, sys_, dia)
        assert type(got) is Features
        # repr: the same floats to the last bit (and 0.0 is not -0.0)
        assert repr(tuple(got)) == repr(tuple(expect)), (ts, sys_, dia)
