"""Smoke test of the benchmark harness (quick mode, no services): structure only, never a time."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import run


def test_quick_run_writes_a_table_and_results(tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    result = run.main(["--quick", "--only", "inprocess,memory", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["failed"] == {}
    assert saved["machine"]["nproc"] >= 1
    benches = [r["bench"] for r in saved["rows"]]
    assert set(benches) == {"in-process", "memory"}
    for row in saved["rows"]:
        assert isinstance(row["value"], int | float) and row["value"] > 0
    printed = capsys.readouterr().out
    assert printed.count("| in-process |") == 3
    assert "| memory | RSS per active patient |" in printed


def test_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(SystemExit) as exc:
        run.main(["--quick", "--only", "nonsense", "--out", str(tmp_path / "r.json")])
    assert exc.value.code == 2
    assert not (tmp_path / "r.json").exists()


def test_headline_gives_the_three_figures_of_one_run():
    from benchmarks.common import Row

    rows = [
        Row("stages", "total (CPU)", 46.1, "µs/reading"),
        Row("ceiling", "monitor e2e / ceiling", 0.33, "x"),
        Row("naive", "monitor e2e / naive", 15.7, "x"),
    ]
    assert run.headline(rows) == (
        "monitor / I/O ceiling 0.33x, monitor / naive 15.7x, CPU per reading 46.1µs"
    )
    assert run.headline(rows[:1]) == "CPU per reading 46.1µs"  # --only stages
