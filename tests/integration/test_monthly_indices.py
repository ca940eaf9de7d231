"""Monthly indices behind each alias, on the REAL Kafka and Elasticsearch, with the production
monitor graph: documents land in the month of their own time, a replay overwrites them in
place (no copy in another index), and retractions and amendments reach a document in
whichever month it lives."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bytewax.testing import TestingSink, run_main

from dataflows.monitor import build, production_io
from lib.connectors.kafka import produce_all
from lib.domain import Reading
from lib.sim import fhir_writer as obs
from tests.integration.test_monitor_e2e import _model

pytestmark = pytest.mark.integration

EDGE = datetime(2026, 2, 1, tzinfo=UTC)  # readings on both sides of a month's end


def _msg(r: Reading, status: str | None = None) -> tuple[bytes, bytes, list]:
    value = obs.encode(obs.to_fhir(r, "Month Testpatient", status=status))
    return r.patient_id.encode(), value, [("content-type", b"application/fhir+json")]


def _reading(
    i: int, sys_: float, dia: float = 95.0, *, version: str = "", hours: float | None = None
) -> Reading:
    at = EDGE + timedelta(hours=(i - 6) * 2 if hours is None else hours)
    return Reading(f"m-obs-{i}", "m-pt", at, float(sys_), dia, "final", version)


def _run(settings: Any, model: Any) -> dict[str, int]:
    stats: list[dict[str, int]] = []
    run_main(build(settings, io=production_io(settings, TestingSink(stats)), model=model))
    return stats[-1]


def _where(es: Any, alias: str) -> dict[str, list[str]]:
    """``{_id: [indices holding it]}`` over the alias."""
    es.indices.refresh(index=alias)
    hits = es.search(index=alias, size=10_000, query={"match_all": {}})["hits"]["hits"]
    out: dict[str, list[str]] = {}
    for h in hits:
        out.setdefault(h["_id"], []).append(h["_index"])
    return out


def test_documents_live_in_their_month_and_replays_retractions_amendments_find_them(
    settings_factory, es
):
    settings = settings_factory(kafka_tail=False, kafka_partitions=1)
    alias = settings.anomalies_index
    # 12 stage-2 readings every 2 h: 6 in January, 6 in February
    first = [_msg(_reading(i, 165)) for i in range(12)]
    assert produce_all(settings, settings.observations_topic, first) == 12
    model = _model()
    counts = _run(settings, model)
    assert counts["anomaly"] == 12
    where = _where(es, alias)
    assert len(where) == 12 and all(len(v) == 1 for v in where.values())
    months = Counter(v[0] for v in where.values())
    assert months == {f"{alias}-2026.01": 6, f"{alias}-2026.02": 6}
    alerts = _where(es, settings.alerts_index)
    assert alerts and all(
        i[0].startswith(settings.alerts_index + "-2026.") for i in alerts.values()
    )

    # a retraction of a January reading, a January reading amended to a normal value, and a
    # January reading amended (still high) with its time moved into February
    later = [
        _msg(_reading(0, 165), status="entered-in-error"),
        _msg(_reading(1, 112, 70.0, version="2")),
        _msg(_reading(2, 170, version="2", hours=30)),
    ]
    assert produce_all(settings, settings.observations_topic, later) == 3
    replay = dataclasses.replace(settings, normal_on_fresh_start="replace")
    again = _run(replay, model)  # the whole topic again, without recovery: a replay
    assert again["in"] == 15
    where = _where(es, alias)
    assert "m-obs-0" not in where and "m-obs-1" not in where
    assert where["m-obs-2"] == [f"{alias}-2026.02"]  # moved: no copy left in January
    assert len(where) == 10 and all(len(v) == 1 for v in where.values())
    # the alerts were written again in place: the same ids, one copy each
    assert set(_where(es, settings.alerts_index)) >= set(alerts)
    assert all(len(v) == 1 for v in _where(es, settings.alerts_index).values())
