"""lib.tools.summary: the remote-monitoring reconciliations (bp-adherence cycles and the
severe_range_bp events) with hand-made truths and documents whose expected figures are worked
out by hand in the comments."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from lib.settings import Settings
from lib.sim import stream as sim
from lib.tools import summary
from lib.tools.summary import RpmPatient, RunOutputs


def _days(first: str, n: int, step: int = 1) -> set[str]:
    d = date.fromisoformat(first)
    return {(d + timedelta(days=i * step)).isoformat() for i in range(n)}


# pp: enrolled 2025-01-01, a reading every day from Jan 1 to Feb 11 (42 days): cycle 1 is
#     Jan 1 - Jan 30 (30 days: 16_plus), cycle 2 starts Jan 31 (Jan 31 - Feb 11: 12 days).
# lo: not enrolled, first reading Mar 10, every 3rd day 12 times (Mar 10 .. Apr 12): cycle 1
#     Mar 10 - Apr 8 holds Mar 10, 13, ..., Apr 6 (10 days: 2_to_15), cycle 2 starts Apr 9
#     and holds Apr 9 and Apr 12 (2 days: 2_to_15).
# one: not enrolled, Jun 1 and Jul 1 (30 days later): two cycles of 1 day (under_2).
# early: enrolled May 1, first reading May 3, and one on Apr 30 (before the start): the
#     cycles are anchored at May 1, Apr 30 belongs to the cycle of Apr 1 - Apr 30.
RPM = {
    "pp": RpmPatient("postpartum", "2025-01-01", _days("2025-01-01", 42)),
    "lo": RpmPatient("", None, _days("2025-03-10", 12, 3)),
    "one": RpmPatient("", None, {"2025-06-01", "2025-07-01"}),
    "early": RpmPatient("postpartum", "2025-05-01", {"2025-04-30", "2025-05-03", "2025-05-04"}),
}
EXPECTED = {
    ("pp", "2025-01-01"): 30,
    ("pp", "2025-01-31"): 12,
    ("lo", "2025-03-10"): 10,
    ("lo", "2025-04-09"): 2,
    ("one", "2025-06-01"): 1,
    ("one", "2025-07-01"): 1,
    ("early", "2025-04-01"): 1,
    ("early", "2025-05-01"): 2,
}


def doc(pid: str, start: str, days: int, band: str | None = None) -> dict[str, object]:
    return {"patient_id": pid, "cycle_start": start, "days_with_readings": days,
            "band": band or summary.band_of(days)}  # fmt: skip


def test_expected_cycles_anchor_at_the_enrolment_or_the_first_date():
    assert summary.expected_cycles(RPM) == EXPECTED
    assert summary.expected_cycles({"x": RpmPatient()}) == {}


def test_bands_follow_the_contract_thresholds():
    assert [summary.band_of(n) for n in (0, 1, 2, 15, 16, 30)] == [
        "under_2", "under_2", "2_to_15", "2_to_15", "16_plus", "16_plus",
    ]  # fmt: skip


def test_adherence_documents_as_expected_reconcile():
    docs = [doc(p, s, n) for (p, s), n in EXPECTED.items()]
    docs.append(doc("clinical-patient", "2025-03-03", 1))  # not an RPM patient: ignored
    docs[0]["cycle_start"] = "2025-01-01T00:00:00.000Z"  # a date field may come back as time
    figures, problems = summary.reconcile_adherence(EXPECTED, docs)
    assert problems == []
    assert figures.patients == 4
    # 16_plus: pp's first; 2_to_15: pp's second, lo's two, early's May cycle; under_2: the rest
    assert figures.expected == {"16_plus": 1, "2_to_15": 4, "under_2": 3}
    assert figures.found == figures.expected


def test_adherence_mismatches_are_named():
    docs = [doc(p, s, n) for (p, s), n in EXPECTED.items() if p != "one"]
    docs.append(doc("one", "2025-06-01", 1))  # Jul 1's cycle has no document
    docs.append(doc("one", "2025-05-02", 1))  # a cycle the truth does not know
    docs[0] = doc("pp", "2025-01-01", 29)  # one day short (still 16_plus)
    docs[2] = doc("lo", "2025-03-10", 10, band="16_plus")  # the right days, the wrong band
    figures, problems = summary.reconcile_adherence(EXPECTED, docs)
    assert problems == [
        "adherence: 1 expected cycles have no document",
        "adherence: 1 cycles the truth does not expect",
        "adherence: 1 cycles with the wrong count of days",
        "adherence: 1 cycles in the wrong band",
    ]
    assert figures.found == {"16_plus": 2, "2_to_15": 3, "under_2": 3}
    _, none_found = summary.reconcile_adherence(EXPECTED, [])
    assert none_found == ["adherence: 8 expected cycles have no document"]


# a: a repeat pair (a1, a2) and a single (a5); b: a persistent pair (b1, b2)
MARKS = {"a1": "first", "a2": "repeat", "a5": "single", "b1": "first", "b2": "persistent"}


def alert(event: str, oid: str, confirmation: str = "", **kw: object) -> dict[str, object]:
    return {"condition": "severe_range_bp", "event": event, "observation_ids": [oid],
            "confirmed": event == "escalated", "confirmation": confirmation,
            "program": "postpartum", **kw}  # fmt: skip


ALERTS = [
    alert("opened", "a1"),
    alert("escalated", "a2", "repeat"),
    alert("resolved", "a4"),
    alert("opened", "a5"),
    alert("resolved", "a8"),
    alert("opened", "b1"),
    alert("escalated", "b2", "persistent"),
    {"condition": "systolic_hypertension", "event": "opened", "observation_ids": ["a1"]},
]


def test_severe_events_as_planned_reconcile():
    figures, problems = summary.reconcile_severe(MARKS, ALERTS)
    assert problems == []
    assert figures == summary.SevereFigures(3, 3, 1, 1, 1, 1)


def test_severe_mismatches_are_named():
    alerts = [
        alert("opened", "a1"),
        alert("escalated", "a2", "persistent"),  # the wrong kind
        # a5's single opening is missing
        alert("opened", "b1"),
        alert("escalated", "b2", "persistent", confirmed=False),  # not confirmed
        alert("opened", "c1"),  # not planned
    ]
    figures, problems = summary.reconcile_severe(MARKS, alerts)
    assert problems == [
        "severe range: 1 expected openings missing",
        "severe range: 1 openings not expected",
        "severe range: 1 expected confirmations missing",
        "severe range: 1 confirmations of the wrong kind",
        "severe range: 1 escalations without confirmed true",
    ]
    assert figures == summary.SevereFigures(3, 3, 1, 0, 1, 1)


def _truth_file(path: Path, settings: Settings) -> Path:
    with path.open("wb") as fh:
        for m in sim.messages(settings, hours=0.5):
            for e in m.expected:
                fh.write(orjson.dumps(sim.truth_record(m, e)) + b"\n")
    return path


START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
S = Settings(sim_patients=100, sim_count=0, sim_seed=3, sim_home_share=0.1, sim_start=START)


def test_without_rpm_patients_the_lines_are_skipped(tmp_path: Path):
    truth = summary.read_truth(_truth_file(tmp_path / "t.jsonl", S))
    assert truth.rpm == {} and truth.severe == {}
    assert summary.reconcile_programs(RunOutputs(), truth) is None
    text = summary.render(S, RunOutputs(), {"reading": 1}, [], None, None, None, None)
    assert "adherence" not in text and "severe" not in text


def test_a_simulated_truth_read_and_reconciled_against_matching_outputs(tmp_path: Path):
    s = replace(S, sim_postpartum_share=0.05, sim_low_adherence_share=0.05)
    truth = summary.read_truth(_truth_file(tmp_path / "t.jsonl", s))
    assert len(truth.rpm) == 10
    enrolled = {p for p, r in truth.rpm.items() if r.program == "postpartum"}
    assert len(enrolled) == 5
    assert all(truth.rpm[p].program_start == min(truth.rpm[p].dates) for p in enrolled)
    assert set(truth.severe.values()) <= {"first", "repeat", "persistent", "single"}
    # outputs that are exactly what the truth expects: every line "ok"
    cycles = summary.expected_cycles(truth.rpm)
    out = RunOutputs(adherence_docs=[doc(p, st, n) for (p, st), n in cycles.items()])
    out.alert_docs = [
        alert("opened" if m in ("first", "single") else "escalated", oid,
              "" if m in ("first", "single") else m)
        for oid, m in truth.severe.items()
    ]  # fmt: skip
    checks = summary.reconcile_programs(out, truth)
    assert checks is not None and checks.problems == []
    text = summary.render(s, out, {"reading": 1}, [], None, None, None, checks)
    assert "adherence cycles" in text and "severe-range episodes" in text
    assert "MISMATCH" not in text and "RPM adherence cycles and severe-range" in text
    # the same outputs less one adherence document: a mismatch, and the run fails
    out.adherence_docs.pop()
    checks = summary.reconcile_programs(out, truth)
    assert checks is not None and checks.adherence_problems and not checks.severe_problems
    text = summary.render(s, out, {"reading": 1}, [], None, None, None, checks)
    assert "MISMATCH" in text and "RECONCILIATION FAILED" in text
