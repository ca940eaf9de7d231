"""``python -m lib.tools.demo_acks`` against the REAL Kafka and Elasticsearch, in a namespace
of its own: ``bp-episodes`` documents indexed directly, acknowledgements read back from
``bp.alerts.acks``."""

from __future__ import annotations

import pytest

from lib.tools.demo_acks import chosen, user_of
from tests.integration.test_ack_tool_services import (
    WORKLIST,
    acks_sent,
    episode,
    index_episodes,
    run,
)

pytestmark = pytest.mark.integration


def test_demo_acks_acknowledges_the_chosen_share_of_the_episodes_needing_one(settings, es):
    """40 open critical episodes need an acknowledgement (BPWATCH_ACK_MIN_SEVERITY=critical),
    besides a high one, an acknowledged one and a resolved one that do not; the tool sends
    one for each id ``chosen`` at the share, by ``user_of`` it, at last_event_at + 5 min."""
    needing = [
        episode(f"ep-{i:03d}", f"pt-{i:03d}", "critical", "2026-03-01T01:00:00.000Z",
                last_event_at=f"2026-03-01T{i % 24:02d}:30:00.000Z")
        for i in range(40)
    ]  # fmt: skip
    index_episodes(es, settings, needing + WORKLIST[2:3] + WORKLIST[4:])
    done = run(settings, "lib.tools.demo_acks", BPWATCH_SIM_ACK_SHARE="0.5",
               BPWATCH_ACK_MIN_SEVERITY="critical", BPWATCH_SIM_ACK_DELAY_MINUTES="5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = {d["episode_id"]: d for d in needing if chosen(d["episode_id"], 0.5)}
    assert 10 < len(expected) < 30  # about half
    assert done.stdout.strip().startswith(
        f"demo acknowledgements: 40 open episodes at critical or above need one; "
        f"acknowledged {len(expected)} "
    )
    sent = {m["episode_id"]: (key, m) for key, m, _p, _o in acks_sent(settings)}
    assert set(sent) == set(expected)
    for episode_id, (key, message) in sent.items():
        i = int(episode_id[3:])
        assert key == f"pt-{i:03d}"
        assert message == {"episode_id": episode_id, "by": user_of(episode_id),
                           "at": f"2026-03-01T{i % 24:02d}:35:00.000+00:00"}  # fmt: skip
