"""Write blocks on the REAL local Elasticsearch (no mocks): the writer waits, logs, resumes.

A block is put on the test's own index (``index.blocks.write``, or the flood-stage disk
watermark's ``index.blocks.read_only_allow_delete``, set by hand here: the shared cluster's
disk is not filled), a dataflow writes through :class:`ElasticSink` meanwhile, and the block
is lifted once the writer has said so. Every document must then be there exactly once. The
production monitor under the same fault is the ``es-write-block`` reliability scenario, run
here at its CI size.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from lib.connectors.elastic import ElasticSink, RetryPolicy, bulk_write, make_client, write
from lib.settings import Settings
from tests.reliability import scenarios
from tests.reliability.harness import ROOT

pytestmark = pytest.mark.integration

BLOCKED_S = 2.0  # how long the block stays once the writer has reported it


def doc(i: int) -> dict[str, Any]:
    return {
        "observation_id": f"obs-{i:06d}",
        "patient_id": f"patient-{i % 37}",
        "effective_at": "2026-11-28T06:00:00Z",
        "systolic": 160.0 + i % 20,
        "diastolic": 95.0,
        "category": "hypertension_stage_2",
        "severity": "high",
        "ruleset": "aha2017",
    }


def ids_in(es: Any, index: str) -> list[str]:
    """Every document id of ``index`` (one entry per document found)."""
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=10_000, source=False, query={"match_all": {}})
    return [hit["_id"] for hit in hits["hits"]["hits"]]


def run_sink(settings: Settings, items: list, retry: RetryPolicy) -> None:
    flow = Dataflow("es_write_block_test")
    stream = op.input("inp", flow, TestingSource(items, batch_size=200))
    keyed = op.key_on("by_shard", stream, lambda a: str(zlib.crc32(a[1].encode()) % 8))
    write("es_out", keyed, ElasticSink(settings, settings.anomalies_index, retry=retry))
    run_main(flow)


@pytest.fixture
def held_blocks(es):
    """Elasticsearch's disk monitor would lift a hand-set flood-stage block at its next check."""
    with scenarios.no_flood_auto_release(es):
        yield


@pytest.mark.parametrize(
    "setting", ["index.blocks.write", "index.blocks.read_only_allow_delete"], ids=["write", "flood"]
)
@pytest.mark.usefixtures("held_blocks")
def test_sink_waits_out_a_write_block_then_writes_each_document_once(settings, es, caplog, setting):
    caplog.set_level(logging.INFO, logger="lib.connectors.elastic")
    index = settings.anomalies_index
    concrete = next(iter(es.indices.get_alias(name=index)))
    client = make_client(settings)
    bulk_write(client, index, [("index", f"obs-{i:06d}", doc(i)) for i in range(200)])
    client.close()
    # while blocked: 1,000 new documents, 50 amended and 50 deleted (deletes are refused too)
    items = [("index", f"obs-{i:06d}", doc(i)) for i in range(200, 1200)]
    items += [("index", f"obs-{i:06d}", {**doc(i), "systolic": 199.0}) for i in range(50, 100)]
    items += [("delete", f"obs-{i:06d}", None) for i in range(50)]
    expected = {f"obs-{i:06d}" for i in range(50, 1200)}

    es.indices.put_settings(index=index, settings={setting: True})
    watched: dict[str, Any] = {}

    def lift_once_reported() -> None:
        """Lift the block once the writer reported it and kept waiting (or after 60 s)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not blocked_lines():
            time.sleep(0.05)
        time.sleep(BLOCKED_S)
        watched["ids_while_blocked"] = len(ids_in(es, index))
        watched["lines_while_blocked"] = blocked_lines()
        es.indices.put_settings(index=index, settings={setting: None})

    def blocked_lines() -> list[str]:
        return [m for m in messages() if m.startswith("es_write_blocked")]

    def messages() -> list[str]:
        return [r.getMessage() for r in list(caplog.records)]

    lifter = threading.Thread(target=lift_once_reported, daemon=True)
    lifter.start()
    try:
        started = time.monotonic()
        run_sink(settings, items, RetryPolicy(initial_s=0.05, max_s=0.2))
        took = time.monotonic() - started
    finally:
        lifter.join(90)
        es.indices.put_settings(index=index, settings={setting: None})

    # it waited: nothing was written while blocked, and the run lasted the block
    assert watched["ids_while_blocked"] == 200
    assert took >= BLOCKED_S
    # one line naming the index, the block and the fix, however many retries (every 0.2 s)
    (line,) = watched["lines_while_blocked"]
    assert f"index={index} blocked_index={concrete} block={setting} " in line
    assert f'PUT {concrete}/_settings {{"{setting}": null}}' in line
    assert len(blocked_lines()) == 1
    assert not [m for m in messages() if m.startswith("es_retry")]
    assert [m for m in messages() if m.startswith(f"es_write_unblocked index={index} ")]
    assert not any("patient-" in m or "obs-" in m for m in messages())  # no PHI, no ids
    # resumed: every document exactly once, the amended ones amended, the deleted ones gone
    found = ids_in(es, index)
    assert len(found) == len(set(found)) == len(expected)
    assert set(found) == expected
    assert es.get(index=index, id="obs-000077")["_source"]["systolic"] == 199.0


def test_monitor_waits_out_write_blocks_and_reconciles(services: Settings, tmp_path: Path):
    """The production monitor (a subprocess with recovery) under blocks on all its indices."""
    base = replace(services, model_path=(ROOT / services.model_path).resolve())
    size = scenarios.CI["es-write-block"]
    tally = scenarios.es_write_block(base, tmp_path, size)
    print(tally.line())
    assert tally.notes["blocked_not_crashed"] is True
    assert tally.notes["es_write_blocked_lines"] >= 1
    assert tally.notes["monitor_restarts"] == 0
    assert tally.problems == []
    assert (tally.lost, tally.duplicated) == (0, 0)
    assert tally.messages >= size.readings
