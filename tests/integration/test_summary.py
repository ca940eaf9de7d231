"""The run summary reconciles real outputs against the simulator's ground truth, and notices
when something is missing (the check `make demo` prints must be able to fail)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bytewax.testing import run_main

from dataflows import monitor, simulate
from lib.connectors.elastic import make_client
from lib.tools import summary


def _delete(es, alias: str, doc_id: str) -> None:
    """Delete one document from whichever monthly index of the alias holds it."""
    (hit,) = es.search(index=alias, query={"ids": {"values": [doc_id]}})["hits"]["hits"]
    es.delete(index=hit["_index"], id=doc_id, refresh=True)


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
    _delete(es, s.anomalies_index, victim)
    es.close()
    problems, _ = summary.reconcile(summary.collect(s), truth)
    assert any("lost readings: 1 " in p for p in problems), problems


def test_summary_reconciles_home_averages_and_no_data_of_a_real_run(settings_factory, tmp_path):
    """The home cohort through real Kafka -> monitor -> Elasticsearch, time 0 a day ago: the
    truth's home averages are indexed and exactly its silent patients have an open no-data
    episode at the end (the monitor's last check runs at end of input)."""
    truth = tmp_path / "truth.jsonl"
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    s = settings_factory(
        kafka_tail=False, sim_patients=40, sim_count=1500, sim_fault_rate=0.05, sim_seed=14
    )
    s = replace(s, sim_truth=truth, sim_home_share=0.25, sim_start=start)
    run_main(simulate.build(s))
    run_main(monitor.build(s))

    out = summary.collect(s)
    t = summary.read_truth(truth)
    problems, _ = summary.reconcile(out, t)
    fig = summary.Figures()
    problems += summary.reconcile_home(out, t, fig)
    now = datetime.now(UTC).timestamp()
    problems += summary.reconcile_no_data(out, t, fig, hours=48, lookback_days=7, now=now)
    assert problems == []
    assert fig.home_expected == fig.home_found == 9 and not fig.home_cut
    assert 0 < fig.home_found_hypertension < 9
    # The home week is laid out in local days, so at some times of day a silent patient's
    # last reading falls within an hour of the 7-day lookback's edge: not compared there.
    assert fig.silent_designed == 2
    assert fig.no_data_open == fig.no_data_expected >= fig.silent_in_window
    oldest, newest = now - 7 * 86_400.0, now - 48 * 3600.0
    compared = sorted(
        pid
        for pid in t.silent
        if oldest <= t.last_reading[pid][0] <= newest
        and min(abs(t.last_reading[pid][0] - oldest),
                abs(t.last_reading[pid][0] - newest)) >= summary.NO_DATA_EDGE_S
    )  # fmt: skip
    assert len(compared) == fig.silent_in_window  # both, unless at an edge

    # a home average that goes missing, and a silent patient who sends again, are reported
    es = make_client(s)
    victim = sorted(out.home_docs)[0]
    _delete(es, s.home_averages_index, victim)
    es.close()
    out = summary.collect(s)
    if compared:  # a silent patient's episode goes missing
        out.no_data_events = [e for e in out.no_data_events if e[0] != compared[0]]
    problems = summary.reconcile_home(out, t, fig)
    problems += summary.reconcile_no_data(out, t, fig, hours=48, lookback_days=7, now=now)
    assert problems == [
        "home averages: 1 expected series have no document",
        *(["no-data: 1 silent patients have no open episode"] if compared else []),
    ]


def test_summary_reconciles_the_demos_acknowledgements_and_overdue_episodes(
    settings_factory, tmp_path
):
    """The demo's alert loop on the real services: the monitor opens the episodes (deadlines
    held at a day), ``lib.tools.demo_acks`` acknowledges half of those that need it, the
    monitor resumes (recovery store, as ``make demo``) with every deadline due;
    ``bp-episodes`` then holds exactly the acknowledged and overdue episodes the summary
    expects. Readings a day old, so that their events are recent enough to go overdue."""
    from bytewax.recovery import RecoveryConfig, init_db_dir

    from lib.tools import demo_acks

    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)
    recovery = RecoveryConfig(str(db))

    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    s = settings_factory(
        kafka_tail=False, sim_patients=60, sim_count=3000, sim_fault_rate=0.0, sim_seed=7
    )
    s = replace(s, sim_start=start, ack_min_severity="high", sim_ack_share=0.5)
    run_main(simulate.build(s))
    run_main(monitor.build(replace(s, ack_deadline_minutes=1440)), recovery_config=recovery)
    out = summary.collect(s)
    assert out.episode_docs is not None
    before, _ = summary.reconcile_episodes(out.episode_docs, min_severity="high", share=0.0)
    assert before.need > 4 and before.acknowledged == before.overdue == 0

    es = make_client(s)
    try:
        need, sent = demo_acks.run(s, es)
    finally:
        es.close()
    assert need == before.need and 0 < sent < need
    # the second pass resumes after the readings and reads the acknowledgements
    run_main(monitor.build(replace(s, ack_deadline_minutes=0.001)), recovery_config=recovery)

    out = summary.collect(s)
    fig, problems = summary.reconcile_episodes(out.episode_docs, min_severity="high", share=0.5)
    assert problems == []
    assert fig.acknowledged == fig.acknowledged_expected == sent
    assert fig.overdue == fig.overdue_expected == need - sent
    text = summary.render(s, out, None, None, episodes=(fig, problems))
    assert f"acknowledged {sent}/{sent} expected  overdue {need - sent}/{need - sent}" in text
