"""lib.tools.summary: the home-average and no-data reconciliation on a simulated truth file,
with hand-made outputs (the real-service run is tests/integration/test_summary.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from lib.settings import Settings
from lib.sim import stream as sim
from lib.tools import summary

START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NOW = (START + timedelta(days=1)).timestamp()
S = Settings(sim_patients=40, sim_count=3000, sim_seed=14, sim_home_share=0.25, sim_start=START)


def _write(path: Path, settings: Settings) -> Path:
    with path.open("wb") as fh:
        for m in sim.messages(settings):
            for e in m.expected:
                fh.write(orjson.dumps(sim.truth_record(m, e)) + b"\n")
    return path


@pytest.fixture(scope="module")
def truth(tmp_path_factory) -> summary.Truth:
    return summary.read_truth(_write(tmp_path_factory.mktemp("t") / "truth.jsonl", S))


def test_truth_names_the_home_averages_and_the_silent_patients(truth):
    # 10 home patients: 2 stop sending (one after day 4, one after day 2 with no average)
    assert len(truth.silent) == 2 and len(truth.home_no_average) == 1
    assert len(truth.home) == 9 and not truth.home_cut
    assert 0 < sum(truth.home.values()) < 9
    assert all(k.startswith("pat-14-") and k.endswith("Z") for k in truth.home)


def test_home_reconciles_and_each_kind_of_mismatch_is_reported(truth):
    out = summary.RunOutputs(home_docs=dict(truth.home))
    fig = summary.Figures()
    assert summary.reconcile_home(out, truth, fig) == []
    assert (fig.home_expected, fig.home_found) == (9, 9)
    assert fig.home_expected_hypertension == fig.home_found_hypertension > 0
    first = sorted(truth.home)[0]
    wrong = {**truth.home, first: not truth.home[first]}
    (p,) = summary.reconcile_home(summary.RunOutputs(home_docs=wrong), truth, fig)
    assert "1 with the wrong home-hypertension verdict" in p
    missing = {k: v for k, v in truth.home.items() if k != first}
    (p,) = summary.reconcile_home(summary.RunOutputs(home_docs=missing), truth, fig)
    assert "1 expected series have no document" in p
    extra = {**truth.home, "pat-14-00001|2026-11-23T07:00:00.000Z": False}
    (p,) = summary.reconcile_home(summary.RunOutputs(home_docs=extra), truth, fig)
    assert "1 documents the truth does not expect" in p


def test_a_week_cut_by_the_count_is_not_checked(tmp_path):
    t = summary.read_truth(_write(tmp_path / "cut.jsonl", replace(S, sim_count=150)))
    assert t.home_cut and not t.home
    fig = summary.Figures()
    assert summary.reconcile_home(summary.RunOutputs(), t, fig) == []
    assert fig.home_cut == len(t.home_cut)


def _no_data(t: summary.Truth, events: list, now: float = NOW) -> tuple[list[str], summary.Figures]:
    fig = summary.Figures()
    out = summary.RunOutputs(no_data_events=events)
    return summary.reconcile_no_data(out, t, fig, hours=48, lookback_days=7, now=now), fig


def test_no_data_expects_exactly_the_silent_patients_when_time_0_is_a_day_ago(truth):
    silent = sorted(truth.silent)
    opened = [(p, f"ep-{p}", "opened") for p in silent]
    transient = [("pat-14-00000", "ep-x", "opened"), ("pat-14-00000", "ep-x", "resolved")]
    problems, fig = _no_data(truth, opened + transient)
    assert problems == []
    assert fig.no_data_expected == fig.no_data_open == 2 == fig.silent_in_window
    assert fig.no_data_transient == 1 and fig.no_data_edge == 0
    # one missing, one resolved, one unexpected open episode: each is reported
    problems, _ = _no_data(truth, opened[:1])
    assert problems == ["no-data: 1 silent patients have no open episode"]
    problems, _ = _no_data(truth, [*opened, (silent[0], f"ep-{silent[0]}", "resolved")])
    assert problems == ["no-data: 1 silent patients have no open episode"]
    problems, _ = _no_data(truth, [*opened, ("pat-14-00000", "ep-y", "opened")])
    assert problems == ["no-data: 1 open episodes not expected"]


def test_no_data_with_old_dates_expects_nothing_and_says_so(truth):
    problems, fig = _no_data(truth, [], now=NOW + 30 * 86_400)
    assert problems == [] and fig.no_data_expected == 0
    assert fig.silent_designed == 2 and fig.silent_in_window == 0
    text = summary.render(S, summary.RunOutputs(), {}, [], fig)
    assert "0 of 2 simulated silent in the 48 h..7 d" in text
    assert "home averages and open no-data episodes as the truth expects" in text


def test_home_averages_of_rpm_patients_are_counted_apart_not_as_extra(truth):
    t = replace(truth, rpm={"pat-14-00099": summary.RpmPatient("", None)})
    rpm_doc = {"pat-14-00099|2026-11-20T07:00:00.000Z": False}
    fig = summary.Figures()
    out = summary.RunOutputs(home_docs={**truth.home, **rpm_doc})
    assert summary.reconcile_home(out, t, fig) == []
    assert (fig.home_found, fig.home_rpm) == (9, 1)
    # a patient outside both cohorts is still an extra document
    stray = summary.RunOutputs(home_docs={**truth.home, "pat-14-00098|2026-11-20T07:00:00Z": 0})
    assert len(summary.reconcile_home(stray, t, summary.Figures())) == 1
