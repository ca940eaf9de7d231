"""lib.tools.demo_acks without services: which episodes the demo acknowledges, by whom and
when (the tool against the real services: tests/integration/test_ack_tool_services.py)."""

from __future__ import annotations

import hashlib

import orjson

from lib.tools.demo_acks import chosen, needing, plan, user_of

IDS = [hashlib.sha256(f"episode-{i}".encode()).hexdigest()[:32] for i in range(10_000)]


def test_share_0_chooses_none_and_share_1_all():
    assert not any(chosen(i, 0.0) for i in IDS)
    assert all(chosen(i, 1.0) for i in IDS)


def test_a_share_chooses_about_that_share_and_a_larger_share_more():
    for share in (0.1, 0.5, 0.9):
        n = sum(chosen(i, share) for i in IDS)
        # binomial: 4 standard deviations of 10,000 draws at most 200
        assert abs(n - share * len(IDS)) < 200, (share, n)
    # the same hash for every share: the ids chosen at 0.3 are among those chosen at 0.6
    assert {i for i in IDS if chosen(i, 0.3)} <= {i for i in IDS if chosen(i, 0.6)}


def test_the_choice_and_the_user_follow_the_ids_hash():
    # sha256("ep-1") begins 0x25422834 = 625,092,660; / 2**32 = 0.14554...; % 5 = 0
    assert hashlib.sha256(b"ep-1").hexdigest()[:8] == "25422834"
    assert chosen("ep-1", 0.1456) and not chosen("ep-1", 0.1455)
    assert user_of("ep-1") == "demo-user-0"
    assert {user_of(i) for i in IDS[:100]} == {f"demo-user-{k}" for k in range(5)}


def test_plan_acknowledges_the_chosen_at_the_last_event_plus_the_delay():
    docs = [
        {"episode_id": "ep-1", "patient_id": "pt-1", "last_event_at": "2026-03-01T10:00:00.000Z",
         "opened_at": "2026-03-01T09:00:00.000Z"},
        {"episode_id": "ep-2", "patient_id": "pt-2", "opened_at": "2026-03-01T09:00:00.000Z"},
    ]  # fmt: skip
    assert plan(docs, 0.0, 5) == []
    records = plan(docs, 1.0, 5)
    assert [(k, orjson.loads(v), h) for k, v, h in records] == [
        (b"pt-1", {"episode_id": "ep-1", "by": "demo-user-0",
                   "at": "2026-03-01T10:05:00.000+00:00"}, []),
        (b"pt-2", {"episode_id": "ep-2", "by": user_of("ep-2"),
                   "at": "2026-03-01T09:05:00.000+00:00"}, []),  # no last event: the opening
    ]  # fmt: skip


def test_the_episodes_needing_an_acknowledgement_are_open_unacknowledged_and_severe():
    _open, _unacknowledged, severity = needing("high")
    assert severity == {"terms": {"severity": ["high", "critical"]}}
    assert needing("low")[2] == {"terms": {"severity": ["low", "moderate", "high", "critical"]}}
