"""The simulator's remote-monitoring cohorts (lib.sim.cohort RPM plans, lib.sim.stream): the
postpartum cohort with its enrolments and planned severe-range events, the low-adherence
cohort. The monitor's enrolment parser and severe-range rule (another owner's module) serve as
the oracle where they exist; the adherence bands are counted here from the readings' dates."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import orjson
import pytest

from lib.settings import Settings
from lib.sim import cohort
from lib.sim import stream as sim

SEED = 11
RPM = Settings(
    sim_patients=300,
    sim_count=0,
    sim_seed=SEED,
    sim_fault_rate=0.05,
    sim_home_share=0.1,
    sim_postpartum_share=0.2,
    sim_low_adherence_share=0.3,
)
HOURS = 0.5  # the clinical patients' part of the stream; the RPM courses lie before time 0


@pytest.fixture(scope="module")
def rpm_truth() -> dict[str, list[tuple[sim.SimMessage, dict]]]:
    """Each RPM patient's messages and truth records, in stream order."""
    out: dict[str, list[tuple[sim.SimMessage, dict]]] = defaultdict(list)
    for m in sim.messages(RPM, hours=HOURS):
        for e in m.expected:
            rec = sim.truth_record(m, e)
            if rec.get("rpm"):
                out[rec["patient_id"]].append((m, rec))
    return out


def _at(rec: dict) -> datetime:
    return datetime.fromisoformat(rec["effective_at"].replace("Z", "+00:00"))


def test_cohorts_are_exact_per_block_disjoint_and_do_not_depend_on_the_cohort_size():
    assert cohort.rpm_plans(500, 42, 0.1, 0.0, 0.0) == {}
    plans = cohort.rpm_plans(1000, 42, 0.1, 0.04, 0.06)
    home = cohort.home_plans(1000, 42, 0.1)
    assert not plans.keys() & home.keys()
    for b in range(0, 1000, 100):
        block = Counter(k for i, k in plans.items() if b <= i < b + 100)
        assert block["postpartum"] == 4
        assert sum(block.values()) - block["postpartum"] == 6
        assert sum(1 for i in home if b <= i < b + 100) == 10  # the home cohort is untouched
    lows = Counter(k for k in plans.values() if k != "postpartum")
    # 60 low-adherence patients split 0.4 / 0.35 / 0.25, up to one per block each
    for kind, share in cohort.LOW_ADHERENCE_MIX.items():
        assert abs(lows[kind] - 60 * share) <= 10, lows
    assert {i: k for i, k in cohort.rpm_plans(5000, 42, 0.1, 0.04, 0.06).items() if i < 1000} == (
        plans
    )
    with pytest.raises(ValueError):
        cohort.rpm_plans(10, 1, 0.5, 0.4, 0.2)
    with pytest.raises(ValueError):
        cohort.rpm_plans(10, 1, 0.0, -0.1, 0.2)


def test_one_enrolment_per_postpartum_patient_starting_on_its_first_local_date(rpm_truth):
    programs = pytest.importorskip("lib.monitor.programs")
    plans = cohort.rpm_plans(300, SEED, 0.1, 0.2, 0.3)
    postpartum = {cohort.patient_id(SEED, i) for i, k in plans.items() if k == "postpartum"}
    enrolments = sim.enrollments(RPM)
    assert [e.patient_id for e in enrolments] == sorted(postpartum)
    assert len(postpartum) == 60
    for e in enrolments:
        assert e.key == e.patient_id.encode()
        assert orjson.loads(e.value).keys() == {"program", "start"}
        parsed = programs.parse_enrollment(e.value)
        assert parsed.program == "postpartum" and parsed.end is None
        recs = [rec for _, rec in rpm_truth[e.patient_id]]
        first_msg = rpm_truth[e.patient_id][0][0]
        # the local date as the FHIR message itself writes it (the time with its UTC offset)
        local = orjson.loads(first_msg.value)["effectiveDateTime"][:10]
        assert (
            parsed.start == date.fromisoformat(local) == date.fromisoformat(recs[0]["local_date"])
        )
        assert {r["program_start"] for r in recs} == {local}
        assert {r["program"] for r in recs} == {"postpartum"}
        # the 42-day course is covered by the enrolment (start + 42 days)
        assert all(parsed.covers(date.fromisoformat(r["local_date"])) for r in recs)
        assert len({r["local_date"] for r in recs}) == cohort.POSTPARTUM_COURSE_DAYS
    assert e.kafka_record()[2] == [("content-type", b"application/json")]
    # with workers, each sends its own patients' enrolments, and all of them together
    split = [sim.enrollments(RPM, worker_index=w, worker_count=3) for w in range(3)]
    assert sorted((e.key, e.value) for part in split for e in part) == sorted(
        (e.key, e.value) for e in enrolments
    )
    for w, part in enumerate(split):
        assert all(int(e.patient_id.rsplit("-", 1)[1]) % 3 == w for e in part)
    assert sim.enrollments(replace(RPM, sim_postpartum_share=0.0)) == []


def test_rpm_readings_are_home_readings_with_a_device_before_time_0_without_faults(rpm_truth):
    fhir = pytest.importorskip("lib.monitor.fhir")
    assert len(rpm_truth) == 150
    for items in list(rpm_truth.values())[:40]:
        for m, rec in items:
            assert not m.is_fault and rec["fate"] == "reading" and rec["setting"] == "home"
            obs = orjson.loads(m.value)
            assert obs["device"]["display"]
            assert obs["effectiveDateTime"][:10] == rec["local_date"]
            (parsed,) = fhir.parse(m.value, m.key, source="t:0:0")
            assert parsed.setting == "home" and parsed.device
            assert _at(rec) < cohort.DEFAULT_START
        times = [_at(rec) for _, rec in items]
        assert times == sorted(times)


def _events(items: list[tuple[sim.SimMessage, dict]]) -> list[list[dict]]:
    """The planned severe-range events of a patient: runs of marked readings."""
    events: list[list[dict]] = []
    for _, rec in items:
        if rec["severe"] in ("first", "single"):
            events.append([rec])
        elif rec["severe"]:
            events[-1].append(rec)
    return events


def _severe(rec: dict) -> bool:
    return rec["systolic"] >= 160 or rec["diastolic"] >= 110


def test_planned_severe_events_have_their_gaps_and_nothing_else_reaches_the_severe_range(
    rpm_truth,
):
    kinds: Counter[str] = Counter()
    for _pid, items in rpm_truth.items():
        recs = [rec for _, rec in items]
        marked = [r for r in recs if r["severe"]]
        assert all(_severe(r) for r in marked)
        assert all(r["systolic"] < 180 and r["diastolic"] < 120 for r in marked)  # no crisis
        assert not any(_severe(r) for r in recs if not r["severe"])
        if recs[0]["program"] != "postpartum":
            assert not marked
            continue
        events = _events(items)
        for ev in events:
            kind = ev[-1]["severe"]
            kinds[kind] += 1
            if kind == "single":
                assert len(ev) == 1
                continue
            first, second = ev
            assert first["severe"] == "first"
            gap = _at(second) - _at(first)
            lo, hi = (5, 10) if kind == "repeat" else (20, 90)
            assert timedelta(minutes=lo) <= gap <= timedelta(minutes=hi), (kind, gap)
        # an event is separated from the others and from any later severe reading by at
        # least 3 ordinary readings and more than 4 hours
        index = {r["observation_id"]: i for i, r in enumerate(recs)}
        for a, b in pairwise(events):
            between = recs[index[a[-1]["observation_id"]] + 1 : index[b[0]["observation_id"]]]
            assert len(between) >= 3 and not any(r["severe"] for r in between)
            assert _at(b[0]) - _at(a[-1]) > timedelta(hours=4)
        for ev in events:
            if ev[-1]["severe"] == "single":
                after = [r for r in recs if _at(ev[0]) < _at(r) <= _at(ev[0]) + timedelta(hours=4)]
                assert not after
    assert min(kinds[k] for k in cohort.SEVERE_KINDS) >= 10, kinds


def test_the_monitors_severe_range_rule_finds_the_planned_episodes(rpm_truth):
    programs = pytest.importorskip("lib.monitor.programs")
    expected: Counter[tuple[str, str]] = Counter()
    found: Counter[tuple[str, str]] = Counter()
    for items in rpm_truth.values():
        episode = None
        for _, rec in items:
            if rec["program"] != "postpartum":
                break
            mark = rec["severe"]
            if mark in ("first", "single"):
                expected["opened", rec["observation_id"]] += 1
            elif mark:
                expected[mark, rec["observation_id"]] += 1
            episode, tr = programs.severe_range_step(
                episode, rec["observation_id"], _at(rec), rec["systolic"], rec["diastolic"]
            )
            if tr is not None and tr.event == "opened":
                found["opened", rec["observation_id"]] += 1
            elif tr is not None and tr.event == "escalated":
                found[tr.confirmation, rec["observation_id"]] += 1
    assert expected and found == expected


def _cycles(recs: list[dict]) -> dict[date, int]:
    """Days with readings per 30-day cycle, anchored at the enrolment or the first date."""
    dates = {date.fromisoformat(r["local_date"]) for r in recs}
    anchor = date.fromisoformat(recs[0]["program_start"] or recs[0]["local_date"])
    per: Counter[date] = Counter()
    for d in dates:
        per[anchor + timedelta(days=(d - anchor).days // 30 * 30)] += 1
    return dict(per)


def _band(days: int) -> str:
    return "under_2" if days < 2 else "2_to_15" if days <= 15 else "16_plus"


def test_low_adherence_patterns_fill_every_band(rpm_truth):
    bands: Counter[tuple[str, str]] = Counter()
    for items in rpm_truth.values():
        recs = [rec for _, rec in items]
        kind = recs[0]["profile"]
        per_day = Counter(r["local_date"] for r in recs)
        assert set(per_day.values()) <= {1, 2, 3}  # a morning, an evening, a pair's second
        first = date.fromisoformat(recs[0]["local_date"])
        last = date.fromisoformat(recs[-1]["local_date"])
        if kind == "low_adherence_dropout":
            course0 = cohort.DEFAULT_START.date() - timedelta(days=35)
            assert (last - course0).days <= 13  # stops after day 9-13 of the course
        if kind == "postpartum":
            assert (last - first).days == cohort.POSTPARTUM_COURSE_DAYS - 1
        for days in _cycles(recs).values():
            bands[kind, _band(days)] += 1
    low = {b for (k, b) in bands if k.startswith("low_adherence")}
    assert low == {"under_2", "2_to_15", "16_plus"}, bands
    assert bands["postpartum", "16_plus"] == bands["postpartum", "2_to_15"] == 60
    sparse = bands["low_adherence_sparse", "2_to_15"] + bands["low_adherence_sparse", "under_2"]
    assert sparse > 3 * bands["low_adherence_sparse", "16_plus"]


def test_a_patients_messages_do_not_depend_on_the_cohort_size_with_the_shares_on():
    base = replace(RPM, sim_fault_rate=0.1, sim_postpartum_share=0.04, sim_low_adherence_share=0.06)

    def first_hundred(patients: int) -> dict[str, list[tuple[bytes, tuple]]]:
        out: dict[str, list[tuple[bytes, tuple]]] = {}
        for m in sim.messages(replace(base, sim_patients=patients), hours=1.1):
            if int(m.patient_id.rsplit("-", 1)[1]) < 100:
                out.setdefault(m.patient_id, []).append((m.value, m.expected))
        return out

    small, large = first_hundred(200), first_hundred(2_000)
    assert len(small) == 100 and small == large
    rpm = cohort.rpm_plans(100, SEED, 0.1, 0.04, 0.06)
    assert len(rpm) == 10
    patients = cohort.cohort(100, SEED)
    for i, kind in rpm.items():
        p = patients[i]
        alone = sim.patient_messages(p, SEED, fault_rate=0.1, rpm=kind, start=cohort.DEFAULT_START)
        assert [(m.value, m.expected) for m in alone] == small[p.patient_id]
    enrolled = sim.enrollments(replace(base, sim_patients=200))
    assert [e for e in sim.enrollments(replace(base, sim_patients=2_000)) if e in enrolled] == (
        enrolled
    )


def test_shares_at_zero_change_nothing_and_rpm_patients_leave_the_others_alone():
    plain = replace(RPM, sim_postpartum_share=0.0, sim_low_adherence_share=0.0)
    assert not cohort.rpm_plan_codes(SEED, range(300), 0.1, 0.0, 0.0).any()
    with_rpm = list(sim.messages(RPM, hours=HOURS))
    without = list(sim.messages(plain, hours=HOURS))
    rpm_ids = {cohort.patient_id(SEED, i) for i in cohort.rpm_plans(300, SEED, 0.1, 0.2, 0.3)}
    assert {m.patient_id for m in without} & rpm_ids  # they were clinical or home patients
    others = {m.patient_id for m in with_rpm} - rpm_ids
    for pid in sorted(others)[:30]:
        assert [m.value for m in with_rpm if m.patient_id == pid] == [
            m.value for m in without if m.patient_id == pid
        ]
    # the whole stream is in event time except the first clinical readings, which come first
    rest = [m.emitted_at for m in with_rpm if m.emitted_at < cohort.DEFAULT_START]
    assert rest == sorted(rest) and rest[0].tzinfo == UTC


def test_the_sim_start_moves_the_courses_and_the_enrolments():
    later = replace(RPM, sim_patients=100, sim_start=cohort.DEFAULT_START + timedelta(days=3))
    a = sim.enrollments(replace(RPM, sim_patients=100))
    b = sim.enrollments(later)
    assert [e.key for e in a] == [e.key for e in b]
    for x, y in zip(a, b, strict=True):
        start_x = date.fromisoformat(orjson.loads(x.value)["start"])
        assert date.fromisoformat(orjson.loads(y.value)["start"]) == start_x + timedelta(days=3)
