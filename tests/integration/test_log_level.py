"""``BPWATCH_LOG_LEVEL`` in both dataflows, run as production runs them
(``python -m bytewax.run dataflows.simulate`` and ``... dataflows.monitor -r``), against the
REAL Kafka and Elasticsearch: WARNING silences the INFO lines (batches, counters) that the
default level prints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lib.settings import Settings
from tests.reliability.harness import ROOT, init_recovery, monitor, namespace, simulator

pytestmark = pytest.mark.integration


def _levels(log: Path) -> set[str]:
    text = log.read_text(errors="replace")
    return {w for w in ("DEBUG", "INFO", "WARNING", "ERROR") if f" {w} " in text}


def test_warning_silences_info_in_both_dataflows(services: Settings, tmp_path: Path) -> None:
    base = replace(services, model_path=(ROOT / services.model_path).resolve())
    with namespace(base, tmp_path) as s:
        s = replace(s, sim_patients=10, sim_count=60)
        # the default level first: the INFO lines are there (so the test can fail)
        sim_info = tmp_path / "sim-info.log"
        assert simulator(s, sim_info).start().wait(300) == 0
        mon_info = tmp_path / "monitor-info.log"
        assert monitor(s, init_recovery(tmp_path / "a"), mon_info).start().wait(300) == 0
        assert "INFO" in _levels(sim_info)
        assert "INFO" in _levels(mon_info) and " counters in=60 " in mon_info.read_text()

        sim_quiet = tmp_path / "sim-warning.log"
        assert simulator(s, sim_quiet, BPWATCH_LOG_LEVEL="WARNING").start().wait(300) == 0
        mon_quiet = tmp_path / "monitor-warning.log"
        proc = monitor(
            replace(s, normal_dir=tmp_path / "normal-b"),
            init_recovery(tmp_path / "b"),
            mon_quiet,
            BPWATCH_LOG_LEVEL="WARNING",
        )
        assert proc.start().wait(300) == 0
        assert "INFO" not in _levels(sim_quiet) | _levels(mon_quiet)
        # the same work was done: 120 messages read by the second monitor
        assert (tmp_path / "normal-b").exists()
