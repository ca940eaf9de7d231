"""Write blocks (``cluster_block_exception``): classified, waited out, logged once a minute.

The error shapes are those the real Elasticsearch 8.19 returns (copied from its answers); the
real cluster is exercised by tests/integration/test_elastic_write_block.py. A fake clock,
advanced by the fake sleep, stands in for time: no test here sleeps.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from elasticsearch import ApiError, AuthorizationException

from lib.connectors.elastic import Action, BulkWriter, RetryPolicy, WriteBlock, bulk_write
from lib.connectors.elastic.blocks import write_block
from lib.errors import IndexingError, ServiceError
from tests.unit.test_elastic_bulk import INDEX, ScriptedClient, action_lines, api_error, ok_item

CONCRETE = f"{INDEX}-v1"
FLOOD_REASON = (
    f"index [{CONCRETE}] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage "
    "watermark, index has read-only-allow-delete block; for more information, see "
    "https://www.elastic.co/guide/en/elasticsearch/reference/8.19/fix-watermark-errors.html];"
)
WRITE_REASON = f"index [{CONCRETE}] blocked by: [FORBIDDEN/8/index write (api)];"
BOTH_REASON = FLOOD_REASON[:-2] + ", FORBIDDEN/8/index write (api)];"
CLUSTER_REASON = "blocked by: [FORBIDDEN/13/cluster read-only / allow delete (api)];"


def block_error(reason: str) -> dict[str, str]:
    return {"type": "cluster_block_exception", "reason": reason}


def blocked(status: int, reason: str, only: set[str] | None = None) -> Any:
    """A bulk reply refusing the items (those of ``only``, default all) with a block."""

    def reply(operations: list[dict]) -> dict:
        items = []
        for op, _id in action_lines(operations):
            if only is None or _id in only:
                items.append({op: {"status": status, "error": block_error(reason)}})
            else:
                items.append(ok_item(op, 201))
        return {"errors": True, "items": items}

    return reply


class FakeClock:
    """``time.monotonic`` and ``time.sleep`` of a test: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def never_sleep(seconds: float) -> None:
    pytest.fail(f"retried after {seconds}s: a permanent error was taken for a transient one")


def docs(n: int) -> list[Action]:
    # a name in every document: no log line may carry it
    return [
        ("index", f"obs-{i}", {"observation_id": f"obs-{i}", "patient_name": "Jane Doe"})
        for i in range(n)
    ]


def lines(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


# -- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "settings"),
    [
        (WRITE_REASON, ("index.blocks.write",)),
        (FLOOD_REASON, ("index.blocks.read_only_allow_delete",)),
        (
            f"index [{CONCRETE}] blocked by: [FORBIDDEN/5/index read-only (api)];",
            ("index.blocks.read_only",),
        ),
        (BOTH_REASON, ("index.blocks.write", "index.blocks.read_only_allow_delete")),
    ],
)
def test_index_blocks_are_recognised_with_the_blocked_index(reason, settings):
    block = write_block(block_error(reason))
    assert block is not None
    assert block.index == CONCRETE
    assert block.settings == settings


def test_the_fix_names_the_setting_to_lift_and_for_the_flood_stage_the_disk():
    write = WriteBlock(CONCRETE, ("index.blocks.write",))
    assert write.fix() == f'PUT {CONCRETE}/_settings {{"index.blocks.write": null}}'
    flood = write_block(block_error(FLOOD_REASON))
    assert flood is not None
    assert flood.fix() == (
        "free disk space on the Elasticsearch data nodes or raise "
        "cluster.routing.allocation.disk.watermark.flood_stage, then "
        f'PUT {CONCRETE}/_settings {{"index.blocks.read_only_allow_delete": null}}'
    )
    cluster = write_block(block_error(CLUSTER_REASON))
    assert cluster == WriteBlock("", ("cluster.blocks.read_only_allow_delete",))
    assert cluster.fix() == (
        'PUT _cluster/settings {"persistent": {"cluster.blocks.read_only_allow_delete": null}}'
    )


@pytest.mark.parametrize(
    "error",
    [
        {"type": "es_rejected_execution_exception", "reason": "queue full"},
        {
            "type": "security_exception",
            "reason": "action [indices:data/write/bulk] is unauthorized",
        },
        block_error("blocked by: [SERVICE_UNAVAILABLE/2/no master];"),  # a 503: retried as such
        block_error(f"index [{CONCRETE}] blocked by: [FORBIDDEN/4/index closed];"),
        None,
        "a string",
    ],
)
def test_other_errors_are_not_write_blocks(error):
    assert write_block(error) is None


# -- waiting the block out --------------------------------------------------------------------


@pytest.mark.parametrize(("status", "reason"), [(403, WRITE_REASON), (429, FLOOD_REASON)])
def test_item_level_block_is_retried_until_lifted_without_loss(status, reason):
    clock = FakeClock()
    client = ScriptedClient(*[blocked(status, reason, only={"obs-1", "obs-3"})] * 4)
    stats = bulk_write(client, INDEX, docs(5), sleep=clock.sleep, clock=clock)
    assert stats.indexed == 5 and stats.retries == 4
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert [action_lines(c) for c in client.calls[1:]] == [
        [("index", "obs-1"), ("index", "obs-3")]
    ] * 4


def test_request_level_block_is_retried_not_taken_for_wrong_credentials():
    refusal = api_error(
        403, {"error": block_error(CLUSTER_REASON), "status": 403}, cls=AuthorizationException
    )
    clock = FakeClock()
    client = ScriptedClient(refusal, refusal)
    stats = bulk_write(client, INDEX, docs(3), sleep=clock.sleep, clock=clock)
    assert stats.indexed == 3 and stats.retries == 2


def test_a_security_refusal_is_still_a_credentials_error():
    refusal = {"type": "security_exception", "reason": "action is unauthorized for user [x]"}

    def forbidden(operations: list[dict]) -> dict:
        items = [{op: {"status": 403, "error": refusal}} for op, _ in action_lines(operations)]
        return {"errors": True, "items": items}

    with pytest.raises(ServiceError, match="BPWATCH_ES_PASSWORD"):
        bulk_write(ScriptedClient(forbidden), INDEX, docs(2), sleep=never_sleep)


def test_an_unknown_forbidden_block_is_a_permanent_refusal_naming_it():
    closed = f"index [{CONCRETE}] blocked by: [FORBIDDEN/4/index closed];"
    client = ScriptedClient(api_error(403, {"error": block_error(closed)}, cls=ApiError))
    with pytest.raises(
        IndexingError, match=r"HTTP 403\): cluster_block_exception: .*/4/index closed"
    ):
        bulk_write(client, INDEX, docs(2), sleep=never_sleep)


def test_with_a_budget_the_error_names_the_block_and_the_fix():
    clock = FakeClock()
    client = ScriptedClient(*[blocked(403, WRITE_REASON)] * 10)
    with pytest.raises(IndexingError) as err:
        bulk_write(
            client,
            INDEX,
            docs(2),
            retry=RetryPolicy(initial_s=1.0, budget_s=3.0),
            sleep=clock.sleep,
            clock=clock,
        )
    text = str(err.value)
    assert "did not accept 2 of 2" in text
    assert f"write block index.blocks.write on index {CONCRETE}: PUT {CONCRETE}/_settings" in text


# -- one line a minute ------------------------------------------------------------------------


def test_a_long_block_logs_one_line_a_minute_naming_cause_and_fix_then_its_end(caplog):
    caplog.set_level(logging.INFO, logger="lib.connectors.elastic")
    clock = FakeClock()
    # refused 10 times: retries at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 61.5, 91.5 and 121.5 s
    client = ScriptedClient(*[blocked(429, FLOOD_REASON)] * 10)
    stats = bulk_write(client, INDEX, docs(4), sleep=clock.sleep, clock=clock)
    assert stats.retries == 10 and stats.indexed == 4 and sum(clock.sleeps) == 151.5
    warned = lines(caplog, "es_write_blocked")
    assert len(warned) == 3  # at 0, 61.5 and 121.5 s: not one per retry
    assert [w.split("blocked_for=")[1].split("s:")[0] for w in warned] == ["0", "62", "122"]
    assert warned[0] == (
        f"es_write_blocked index={INDEX} blocked_index={CONCRETE} "
        "block=index.blocks.read_only_allow_delete pending=4 blocked_for=0s: "
        "Elasticsearch refuses writes; the documents wait and are retried, none is dropped. "
        "Fix: free disk space on the Elasticsearch data nodes or raise "
        "cluster.routing.allocation.disk.watermark.flood_stage, then "
        f'PUT {CONCRETE}/_settings {{"index.blocks.read_only_allow_delete": null}}'
    )
    assert lines(caplog, "es_retry") == []
    assert lines(caplog, "es_write_unblocked") == [
        f"es_write_unblocked index={INDEX} blocked_for=152s"
    ]
    assert not any("Jane" in r.getMessage() or "obs-" in r.getMessage() for r in caplog.records)


def test_a_block_among_rejected_items_is_what_is_reported(caplog):
    caplog.set_level(logging.WARNING, logger="lib.connectors.elastic")

    def mixed(operations: list[dict]) -> dict:
        busy = {"type": "es_rejected_execution_exception", "reason": "queue full"}
        items = [
            {op: {"status": 403, "error": block_error(WRITE_REASON)}}
            if _id == "obs-0"
            else {op: {"status": 429, "error": busy}}
            for op, _id in action_lines(operations)
        ]
        return {"errors": True, "items": items}

    clock = FakeClock()
    bulk_write(ScriptedClient(mixed), INDEX, docs(3), sleep=clock.sleep, clock=clock)
    assert len(lines(caplog, "es_write_blocked")) == 1
    assert lines(caplog, "es_retry") == []


def test_the_background_writer_waits_out_a_block_and_logs_it_once(caplog):
    caplog.set_level(logging.WARNING, logger="lib.connectors.elastic")
    clock = FakeClock()
    client = ScriptedClient(*[blocked(403, WRITE_REASON)] * 6)
    writer = BulkWriter(client, INDEX, 2, RetryPolicy(), sleep=clock.sleep, clock=clock)
    ticket = writer.submit(docs(5))
    writer.wait(ticket)  # returns once every action is acknowledged: none dropped
    writer.close()
    acknowledged = [a for c in client.calls[6:] for a in action_lines(c)]
    assert sorted(acknowledged) == [("index", f"obs-{i}") for i in range(5)]
    assert len(lines(caplog, "es_write_blocked")) == 1
    assert len(lines(caplog, "es_write_unblocked")) == 1
