"""lib.tools.summary: the episodes' reconciliation against the demo's acknowledger, with
hand-made bp-episodes documents (the real-service runs: tests/integration/test_summary.py)."""

from __future__ import annotations

import hashlib

from lib.settings import Settings
from lib.tools import summary

# At share 0.5 an id is chosen when the first hex digit of its SHA-256 is below 8:
# ep-1 2542..., ep-2 7e98..., ep-7 78c7... are chosen; ep-3 a499..., ep-4 f68d..., ep-6 fecd...
# are not.
PREFIXES = {"ep-1": "2", "ep-2": "7", "ep-3": "a", "ep-4": "f", "ep-6": "f", "ep-7": "7"}


def ep(i: int, severity: str, status: str = "open", **flags: bool) -> dict[str, object]:
    return {"episode_id": f"ep-{i}", "status": status, "severity": severity,
            "acknowledged": flags.get("acknowledged", False),
            "overdue": flags.get("overdue", False)}  # fmt: skip


DOCS = [
    ep(1, "critical", acknowledged=True),  # chosen, acknowledged
    ep(2, "critical", acknowledged=True),  # chosen, acknowledged
    ep(3, "critical", overdue=True),  # left, overdue
    ep(4, "critical", overdue=True),  # left, overdue
    ep(5, "high"),  # below BPWATCH_ACK_MIN_SEVERITY: needs none
    ep(6, "critical", "resolved", overdue=True),  # needed one, overdue, then resolved
    ep(7, "moderate", acknowledged=True),  # acknowledged anyway (the CLI): needed, chosen
    ep(8, "critical", "resolved"),  # resolved in time: needs none now
    ep(9, "low"),
]


def test_the_ids_hashes_are_as_the_comments_say():
    for episode_id, digit in PREFIXES.items():
        assert hashlib.sha256(episode_id.encode()).hexdigest()[0] == digit


def test_episodes_as_the_demo_expects_reconcile():
    fig, problems = summary.reconcile_episodes(DOCS, min_severity="critical", share=0.5)
    assert problems == []
    # open: 1 2 3 4 5 7 9; need: 1 2 3 4 6 7; acknowledged 1 2 7 of the chosen 1 2 7;
    # overdue among the open 3 4, the open ones left of 3 4 6
    assert fig == summary.EpisodeFigures(
        open=7, need=6, acknowledged=3, overdue=2, checked=True,
        acknowledged_expected=3, overdue_expected=2,
    )  # fmt: skip


def test_each_kind_of_mismatch_is_reported():
    docs = list(DOCS)
    docs[1] = ep(2, "critical", overdue=True)  # chosen, but its acknowledgement was lost
    docs[3] = ep(4, "critical", acknowledged=True)  # acknowledged although not chosen
    fig, problems = summary.reconcile_episodes(docs, min_severity="critical", share=0.5)
    assert problems == [
        "episodes: 1 chosen to be acknowledged are not",
        "episodes: 1 acknowledged, not chosen",
        "episodes: 1 left unacknowledged are not overdue",
        "episodes: 1 overdue, not expected",
    ]
    assert (fig.acknowledged, fig.acknowledged_expected, fig.overdue, fig.overdue_expected) == (
        3, 3, 2, 2
    )  # fmt: skip


def test_without_a_share_only_the_counts():
    fig, problems = summary.reconcile_episodes(DOCS, min_severity="high", share=0.0)
    assert problems == [] and not fig.checked
    assert (fig.open, fig.need, fig.acknowledged, fig.overdue) == (7, 7, 3, 2)  # ep-5 needs one


def test_the_summary_prints_the_episodes_line_and_fails_on_a_mismatch():
    s = Settings(namespace="demo")
    good = summary.reconcile_episodes(DOCS, min_severity="critical", share=0.5)
    text = summary.render(s, summary.RunOutputs(), None, None, episodes=good)
    (line,) = [x for x in text.splitlines() if x.startswith("episodes")]
    assert " open 7  need ack 6  acknowledged 3/3 expected  overdue 2/2 expected  ok " in line
    assert line.rstrip().endswith("demo-bp-episodes")
    assert "RECONCILIATION FAILED" not in text
    bad = summary.reconcile_episodes([ep(3, "critical")], min_severity="critical", share=0.5)
    text = summary.render(s, summary.RunOutputs(), None, None, episodes=bad)
    assert "overdue 0/1 expected  MISMATCH" in text
    assert "RECONCILIATION FAILED:\n  - episodes: 1 left unacknowledged are not overdue" in text
    plain = summary.reconcile_episodes(DOCS, min_severity="critical", share=0.0)
    text = summary.render(s, summary.RunOutputs(), None, None, episodes=plain)
    assert "open 7  need ack 6  acknowledged 3  overdue 2" in text and "expected" not in text
