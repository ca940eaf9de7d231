"""The two operator actions on the normal-case files, against the REAL Kafka and Elasticsearch,
with the monitor run as production runs it (``python -m bytewax.run dataflows.monitor -r``):
a new recovery store over existing files refuses and changes nothing; a retention job that
deletes an old day folder does not stop the next resume."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lib.connectors.normal_files import part_files
from lib.settings import Settings
from lib.sim import stream
from tests.reliability.harness import ROOT, init_recovery, monitor, namespace, send

pytestmark = pytest.mark.integration


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in part_files(root)}


def test_fresh_store_refuses_and_a_deleted_old_day_does_not_stop_a_resume(
    services: Settings, tmp_path: Path
) -> None:
    base = replace(services, model_path=(ROOT / services.model_path).resolve())
    # two hours before a UTC midnight: the readings (about 4.5 h) always span two days
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight - timedelta(days=2, hours=2)
    with namespace(base, tmp_path) as s:
        # readings over more than one day
        s = replace(s, sim_patients=20, sim_count=240, sim_seed=3, sim_start=start)
        send(s, [m.kafka_record() for m in stream.messages(s)])
        store = init_recovery(tmp_path / "store-a")
        log = tmp_path / "monitor.log"
        assert monitor(s, store, log).start().wait(300) == 0
        days = sorted({p.parent.name for p in part_files(s.normal_dir)})
        assert len(days) >= 2, days  # the oldest can go; the newest stays
        before = _tree(s.normal_dir)

        # a new recovery store over the same folder: refused, nothing touched
        fresh = init_recovery(tmp_path / "store-b")
        refused = tmp_path / "refused.log"
        assert monitor(s, fresh, refused).start().wait(300) != 0
        text = refused.read_text(errors="replace")
        assert "BPWATCH_NORMAL_ON_FRESH_START=replace" in text and "Move the files away" in text
        assert _tree(s.normal_dir) == before

        # a retention job deletes the oldest day; the next resume of store A goes on
        shutil.rmtree(s.normal_dir / days[0])
        resumed = tmp_path / "resumed.log"
        assert monitor(s, store, resumed).start().wait(300) == 0
        assert "normal_sink_forgot" in resumed.read_text(errors="replace")
        after = _tree(s.normal_dir)
        assert after == {k: v for k, v in before.items() if not k.startswith(days[0])}
