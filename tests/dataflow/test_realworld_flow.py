"""The monitor dataflow (TestingSource / TestingSink) on real senders' shapes.

Every message is accounted for: in = messages, and each reading, skipped resource, ignored
Observation and the one dead letter of the bad message is counted once.
"""

from __future__ import annotations

from lib.monitor import fhir
from tests.dataflow.test_monitor_flow import kafka, model, reconciles, run_flow
from tests.fixtures.realworld import realistic_stream

__all__ = ["model"]  # the fixture, shared with test_monitor_flow


def test_realistic_senders_reconcile_exactly(model):
    messages, counts = realistic_stream()
    run = run_flow(kafka(messages), model)
    assert run.counts == counts
    reconciles(run, len(messages))
    # one dead letter for the bad message: its original bytes once, the first problem's
    # reason, and a per-entry summary
    ((key, value, headers),) = run.dlq
    h = dict(headers)
    assert value == messages[6][1] and key == b"pt-5"
    assert h["error"] == b"bad_unit"
    assert h["error.detail"].decode().startswith("entry[1] bad_unit: ")
    assert (
        b"entry[2] missing_component: systolic Observation without a diastolic"
        in (h["error.detail"])
    )
    docs = {d["observation_id"]: d for d in run.docs()}
    assert set(docs) == {"ehr-2", "syn-1", fhir.pair_id("s-1", "d-1")}
    normals = {r["observation_id"]: r for _, r in run.normals}
    assert set(normals) == {"eX" + "7q.Z-" * 12 + "Ab3z", "ath-1", "ok-9"}
    assert normals["ath-1"]["effective_precision"] == "day"
    assert "effective_precision" not in normals["ok-9"]
