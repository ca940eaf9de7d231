"""The run summary reconciles real outputs against the simulator's ground truth, and notices
when something is missing (the check `make demo` prints must be able to fail)."""

from __future__ import annotations

from dataclasses import replace

from bytewax.testing import run_main

from dataflows import monitor, simulate
from lib.connectors.elastic import make_client
from lib.tools import summary


def test_summary_reconciles_a_real_run_and_detects_a_lost_document(settings_factory, tmp_path):
    truth = tmp_path / "truth.jsonl"
    s = settings_factory(
        kafka_tail=False, sim_patients=40, sim_count=1500, sim_fault_rate=0.1, sim_seed=5
    )
    s = replace(s, sim_truth=truth)
    run_main(simulate.build(s))
    run_main(monitor.build(s))

    out = summary.collect(s)
    problems, fates = summary.reconcile(out, truth)
    assert problems == []
    assert out.messages_in == 1500
    assert out.dead_letters == fates["dead_letter"] > 0
    assert len(out.anomaly_ids) > 0 and out.normal_lines > 0
    assert out.alerts_kafka == out.alerts_es
    text = summary.render(s, out, fates, problems)
    assert "0 lost, 0 duplicated" in text

    # remove one anomaly document: the summary must report a lost reading
    es = make_client(s)
    victim = sorted(out.anomaly_ids)[0]
    es.delete(index=s.anomalies_index, id=victim, refresh=True)
    es.close()
    problems, _ = summary.reconcile(summary.collect(s), truth)
    assert any("lost readings: 1 " in p for p in problems), problems
