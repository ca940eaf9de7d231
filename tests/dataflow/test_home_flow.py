"""The home-BP protocol through the monitor dataflow (TestingSource -> bp-home-averages items,
home_hypertension alert episodes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from bytewax.testing import TestingSource, run_main

from dataflows.monitor import build, recording_io
from lib.domain import Reading
from lib.settings import Settings
from lib.sim import fhir_writer as obs
from tests.dataflow.test_monitor_flow import kafka, model

__all__ = ["model"]  # the fixture, shared with test_monitor_flow

DAY1 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # the first morning session


def session_readings(
    patient: str, day: int, evening: bool, values: list[tuple[float, float]]
) -> list[Reading]:
    """Readings of one session (day 1..7, morning 07:00 or evening 19:00), 2 minutes apart."""
    start = DAY1 + timedelta(days=day - 1, hours=12 if evening else 0)
    return [
        Reading(f"{patient}-d{day}{'e' if evening else 'm'}{k}", patient,
                start + timedelta(minutes=2 * k), float(s), float(d))
        for k, (s, d) in enumerate(values)
    ]  # fmt: skip


def protocol(patient: str, day1: tuple[float, float], rest: list[tuple[float, float]],
             days: range = range(2, 8)) -> list[Reading]:  # fmt: skip
    """Day 1 at ``day1`` (two sessions of two readings), then ``rest`` in every session."""
    out = [r for ev in (False, True) for r in session_readings(patient, 1, ev, [day1, day1])]
    for day in days:
        for ev in (False, True):
            out += session_readings(patient, day, ev, rest)
    return out


def values(readings: list[Reading], setting: str | None = "home") -> list[Any]:
    return [
        (r.patient_id.encode(), obs.encode(obs.to_fhir(r, "Jane Testpatient", setting=setting)))
        for r in readings
    ]


def msgs(readings: list[Reading], setting: str | None = "home") -> list[Any]:
    return kafka(values(readings, setting))


class HomeRun:
    def __init__(self, items: list[Any], model: Any, settings: Settings | None = None) -> None:
        io, out = recording_io(TestingSource(items, batch_size=5))
        run_main(build(settings or Settings(), io=io, model=model))
        self.home = out.home
        self.alerts_es = out.alerts_es
        self.counts = out.stats[-1]

    def final(self) -> dict[str, dict[str, Any]]:
        """What bp-home-averages holds at the end (the last write of each _id)."""
        return {_id: doc for _, _id, doc in self.home}

    def home_alerts(self) -> list[dict[str, Any]]:
        return [d for _, _, d in self.alerts_es if d["condition"] == "home_hypertension"]


def test_first_day_is_discarded_and_sessions_are_averaged(model):
    # days 2-7: sessions of 126/76 and 130/80 -> 128/78; day 1 at 150/95 would pull it up
    readings = protocol("p1", (150, 95), [(126, 76), (130, 80)])
    run = HomeRun(msgs(readings), model)
    ((_id, doc),) = run.final().items()
    assert _id == "p1|2026-03-02T07:00:00.000Z"
    assert (doc["mean_systolic"], doc["mean_diastolic"]) == (128.0, 78.0)
    assert (doc["readings_used"], doc["days_used"]) == (24, 6)
    assert doc["home_hypertension"] is False
    assert (doc["threshold_systolic"], doc["threshold_diastolic"], doc["ruleset"]) == (
        130.0, 80.0, "aha2025",
    )  # fmt: skip
    assert doc["series_start"] == "2026-03-02T07:00:00.000Z" and doc["origin"] == "protocol"
    assert doc["series_end"] == "2026-03-08T19:02:00.000Z"
    # with day 1 kept the mean would have been home hypertension under AHA (>= 130)
    all_sys = [r.systolic for r in readings]
    assert sum(all_sys) / len(all_sys) > 130
    assert run.home_alerts() == []
    reconciles_all(run, len(readings))


def reconciles_all(run: HomeRun, n: int) -> None:
    c = run.counts
    assert c["in"] == n == c["normal"] + c["anomaly"]


def reconciles(run: HomeRun, n: int) -> None:
    c = run.counts
    outcomes = ("normal", "anomaly", "dead_letter", "ignored", "retracted", "duplicate")
    assert c["in"] == n == sum(c[k] for k in (*outcomes, "skipped", "gap"))


@pytest.mark.parametrize("ruleset", ["aha2025", "esh2023", "aha2017"])
def test_138_88_at_home_is_home_hypertension(model, ruleset):
    readings = protocol("p2", (138, 88), [(138, 88), (138, 88)])
    run = HomeRun(msgs(readings), model, Settings(ruleset=ruleset))
    (doc,) = run.final().values()
    assert (doc["mean_systolic"], doc["mean_diastolic"]) == (138.0, 88.0)
    assert doc["home_hypertension"] is True and doc["ruleset"] == ruleset
    (alert,) = run.home_alerts()  # one episode, opened once, however often the doc is rewritten
    assert (alert["event"], alert["severity"], alert["patient_id"]) == ("opened", "moderate", "p2")
    assert len(run.home) > 1  # rewritten as the series grew


@pytest.mark.parametrize(
    ("values", "aha", "esh"),
    [((132, 78), True, False), ((129.9, 79.9), False, False), ((130, 70), True, False),
     ((120, 80), True, False), ((135, 70), True, True), ((120, 85), True, True),
     ((134.9, 84.9), True, False)],
)  # fmt: skip
def test_both_sides_of_the_home_thresholds(model, values, aha, esh):
    readings = protocol("p3", values, [values, values], days=range(2, 5))  # 12 readings over 3 days
    for ruleset, expected in (("aha2025", aha), ("esh2023", esh)):
        (doc,) = HomeRun(msgs(readings), model, Settings(ruleset=ruleset)).final().values()
        assert doc["home_hypertension"] is expected, (ruleset, values)


def test_clinic_readings_give_no_home_average(model):
    readings = protocol("p4", (138, 88), [(138, 88), (138, 88)])
    assert HomeRun(msgs(readings, setting="clinic"), model).home == []
    unmarked = msgs(readings, setting=None)
    assert HomeRun(unmarked, model).home == []
    # BPWATCH_READING_SETTING=home counts every reading
    everything = HomeRun(unmarked, model, Settings(reading_setting="home"))
    assert [d["mean_systolic"] for d in everything.final().values()] == [138.0]


def test_minimum_of_12_readings_over_3_days(model):
    three_days = protocol("p5", (120, 70), [(120, 70)] * 2, days=range(2, 5))  # 12 readings, 3 days
    assert len(HomeRun(msgs(three_days[:-1]), model).home) == 0  # 11 readings
    assert len(HomeRun(msgs(three_days), model).home) == 1
    two_days = protocol("p5", (120, 70), [(120, 70)] * 3, days=range(2, 4))  # 12 over 2 days
    assert HomeRun(msgs(two_days), model).home == []


def test_a_reading_after_day_7_starts_a_new_series(model):
    first = protocol("p6", (150, 95), [(150, 95)] * 2, days=range(2, 5))
    later = [
        Reading(r.observation_id + "-w2", "p6", r.effective_at + timedelta(days=14), 120.0, 70.0)
        for r in protocol("p6", (120, 70), [(120, 70)] * 2, days=range(2, 5))
    ]
    run = HomeRun(msgs(first + later), model)
    docs = run.final()
    assert sorted(d["home_hypertension"] for d in docs.values()) == [False, True]
    events = [a["event"] for a in run.home_alerts()]
    assert events == ["opened", "resolved"]  # a later series below the threshold resolves it


def average_bp(oid: str, patient: str, sys_: float, dia: float) -> bytes:
    def component(code: str, value: float) -> dict[str, Any]:
        quantity = {"value": value, "unit": "mmHg", "system": obs.UCUM, "code": "mm[Hg]"}
        return {"code": {"coding": [{"system": obs.LOINC, "code": code}]},
                "valueQuantity": quantity}  # fmt: skip

    return orjson.dumps({
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": obs.LOINC, "code": "96607-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectivePeriod": {"start": "2026-03-02T00:00:00Z", "end": "2026-03-08T23:59:00Z"},
        "component": [component("96608-5", sys_), component("96609-3", dia)],
    })  # fmt: skip


@pytest.mark.parametrize(
    ("values", "aha", "esh"), [((132, 82), True, False), ((136, 86), True, True),
                               ((125, 75), False, False)],
)  # fmt: skip
def test_average_observations_are_judged_against_the_same_thresholds(model, values, aha, esh):
    items = kafka([(b"p7", average_bp("avg-1", "p7", *values))])
    for ruleset, expected in (("aha2025", aha), ("esh2023", esh)):
        run = HomeRun(items, model, Settings(ruleset=ruleset))
        ((_id, doc),) = run.final().items()
        assert _id == "p7|2026-03-02T00:00:00.000Z"
        assert (doc["origin"], doc["observation_id"], doc["days_used"]) == ("reported", "avg-1", 7)
        assert doc["home_hypertension"] is expected
        assert len(run.home_alerts()) == int(expected)
        assert run.counts["in"] == 1 == run.counts["ignored"]  # counted once, as before


def test_retracted_home_reading_leaves_the_series(model):
    readings = protocol("p8", (120, 70), [(120, 70)] * 2, days=range(2, 5))
    gone = readings[-1]
    retraction = obs.encode(
        obs.to_fhir(gone, "Jane Testpatient", status="entered-in-error", setting="home")
    )
    run = HomeRun(kafka([*values(readings), (b"p8", retraction)]), model)
    # the 12th reading made the average; once it is retracted, 11 readings are too few
    assert len(run.home) == 1
    more = session_readings("p8", 5, False, [(140, 90)])
    run = HomeRun(kafka([*values(readings), (b"p8", retraction), *values(more)]), model)
    last = list(run.final().values())[-1]
    # 12 readings in 7 sessions: six of 120 (one now with a single reading) and one of 140
    assert last["readings_used"] == 12
    assert last["mean_systolic"] == round((6 * 120 + 140) / 7, 1)
    reconciles(run, len(readings) + 2)  # type: ignore[arg-type]


# -- no_data episodes: silence on the wall clock ---------------------------------------------
def _readings_until(patient: str, last: datetime, n: int = 6) -> list[Reading]:
    return [
        Reading(f"{patient}-nd{k}", patient, last - timedelta(hours=8 * (n - 1 - k)), 118.0, 76.0)
        for k in range(n)
    ]


def test_silent_patient_gets_exactly_one_no_data_episode(model):
    now = datetime.now(UTC).replace(microsecond=0)
    silent = _readings_until("quiet", now - timedelta(days=3))
    steady = _readings_until("steady", now - timedelta(hours=2))
    replayed = _readings_until("replayed", now - timedelta(days=30))  # old data: not tracked
    items = msgs(sorted(silent + steady + replayed, key=lambda r: r.effective_at), setting=None)
    runs = [HomeRun(items, model) for _ in range(2)]
    for run in runs:
        no_data = [d for _, _, d in run.alerts_es if d["condition"] == "no_data"]
        assert [(d["patient_id"], d["event"]) for d in no_data] == [("quiet", "opened")]
        assert no_data[0]["observation_ids"] == ["quiet-nd5"]
    # a replay (another run, another wall-clock time) gives the same alert id
    assert {i for _, i, d in runs[0].alerts_es if d["condition"] == "no_data"} == {
        i for _, i, d in runs[1].alerts_es if d["condition"] == "no_data"
    }
    # a reading after the silence: whether the check ran before it arrived or not, no episode
    # is left open at the end
    back = Reading("quiet-back", "quiet", now - timedelta(minutes=5), 120.0, 78.0)
    ordered = sorted([*silent, *steady, back], key=lambda r: r.effective_at)
    run = HomeRun(msgs(ordered, setting=None), model)
    events = [d["event"] for _, _, d in run.alerts_es if d["condition"] == "no_data"]
    assert events.count("opened") == events.count("resolved") <= 1
