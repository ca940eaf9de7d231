"""lib.tools.ack and the worklist's order (lib.tools.episodes), without services: argument
checks, the message the monitor will read, the refusals, the order of ``--open``. The tool
against the real Kafka and Elasticsearch: tests/integration/test_ack_tool_services.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import orjson
import pytest

from lib.monitor.acks import Ack, parse_ack
from lib.tools import ack, episodes

AT = datetime(2026, 3, 1, 14, 5, 0, 250_000, tzinfo=UTC)


def _monitor_reads(message: dict[str, str], key: bytes = b"pt-1") -> object:
    """What the monitor's parser makes of the message (an Ack, or a dead letter)."""
    msg = SimpleNamespace(key=key, value=orjson.dumps(message), headers=[], topic="t",
                          partition=0, offset=0, timestamp=None)  # fmt: skip
    return parse_ack(msg)  # type: ignore[arg-type]


def test_the_acknowledgement_is_what_the_monitor_accepts():
    message = ack.acknowledgement("ep-1", "nurse-7", AT, "rang the patient back")
    assert message == {
        "episode_id": "ep-1",
        "by": "nurse-7",
        "at": "2026-03-01T14:05:00.250+00:00",
        "note": "rang the patient back",
    }
    got = _monitor_reads(message)
    assert isinstance(got, Ack)
    assert (got.episode_id, got.by, got.at, got.note) == ("ep-1", "nurse-7", AT, message["note"])
    # no note: no field; a time in another offset is written in UTC, with its offset
    paris = AT.astimezone(timezone(timedelta(hours=1)))
    plain = ack.acknowledgement("ep-1", "nurse-7", paris)
    assert plain == {"episode_id": "ep-1", "by": "nurse-7", "at": "2026-03-01T14:05:00.250+00:00"}
    assert isinstance(_monitor_reads(plain), Ack)


@pytest.mark.parametrize(
    ("by", "note", "names"),
    [
        ("", None, "--by must be a user id of 1..256 characters"),
        ("   ", None, "not blank"),
        ("u" * 257, None, "1..256"),
        ("nurse-7", "n" * 501, "--note has 501 characters: at most 500"),
    ],
)
def test_invalid_arguments_are_refused_before_anything_is_sent(by, note, names):
    with pytest.raises(ack.Refused, match=re.escape(names)):
        ack.acknowledgement("ep-1", by, AT, note)


def test_the_limits_are_the_monitors():
    longest = ack.acknowledgement("e" * 256, "u" * 256, AT, "n" * 500)
    assert isinstance(_monitor_reads(longest), Ack)
    with pytest.raises(ack.Refused, match=re.escape("1..256")):
        ack.acknowledgement("e" * 257, "u", AT)


def test_at_needs_an_iso_time_with_an_offset():
    assert ack.parse_at("2026-03-01T14:05:00Z") == datetime(2026, 3, 1, 14, 5, tzinfo=UTC)
    assert ack.parse_at("2026-03-01T15:05:00+01:00") == datetime(2026, 3, 1, 14, 5, tzinfo=UTC)
    with pytest.raises(ack.Refused, match="no UTC offset"):
        ack.parse_at("2026-03-01T14:05:00")
    with pytest.raises(ack.Refused, match="not an ISO 8601 time"):
        ack.parse_at("yesterday")


def test_resolved_and_acknowledged_episodes_get_nothing():
    open_ = {"episode_id": "ep-1", "status": "open", "acknowledged": False}
    assert ack.already(open_) is None
    done = {**open_, "acknowledged": True, "acknowledged_by": "nurse-2",
            "acknowledged_at": "2026-03-01T14:00:00.000Z"}  # fmt: skip
    said = ack.already(done)
    assert said is not None and "by nurse-2 at 2026-03-01T14:00:00.000Z" in said
    assert "nothing sent" in said
    resolved = {**open_, "status": "resolved", "resolved_at": "2026-03-01T16:00:00.000Z"}
    with pytest.raises(
        ack.Refused, match=re.escape("already resolved at 2026-03-01T16:00:00.000Z")
    ):
        ack.already(resolved)


def _ep(i: str, severity: str, opened: str, **kw: object) -> dict[str, object]:
    return {"episode_id": i, "severity": severity, "opened_at": f"2026-03-0{opened}T00:00:00Z",
            "condition": "hypertensive_crisis", "tier": "urgent", **kw}  # fmt: skip


def test_the_worklist_is_most_severe_then_oldest_first():
    rows = [
        _ep("a", "high", "3"),
        _ep("b", "critical", "5"),
        _ep("c", "low", "1"),
        _ep("d", "critical", "2"),
        _ep("e", "moderate", "1"),
        _ep("f", "high", "3"),  # same time as a: by id
        _ep("g", "unheard-of", "1"),  # outside the contract: last
    ]
    assert [r["episode_id"] for r in sorted(rows, key=episodes.worklist_key)] == [
        "d", "b", "a", "f", "e", "c", "g"
    ]  # fmt: skip


def test_the_report_puts_overdue_then_unacknowledged_then_acknowledged_first():
    rows = [
        _ep("a", "critical", "1", acknowledged=True, overdue=True),
        _ep("b", "moderate", "1", acknowledged=False, overdue=False),
        _ep("c", "high", "4", acknowledged=False, overdue=True),
        _ep("d", "critical", "3", acknowledged=False, overdue=False),
        _ep("e", "critical", "2", acknowledged=False, overdue=True),
    ]
    order = sorted(rows, key=lambda r: (episodes.attention(r), episodes.worklist_key(r)))
    assert [r["episode_id"] for r in order] == ["e", "c", "d", "b", "a"]
    # the buckets the report asks Elasticsearch for follow the same order
    assert len(episodes.by_attention()) == len(episodes.ATTENTION) * len(episodes.by_severity())
    assert [name for name, _ in episodes.ATTENTION] == ["overdue", "unacknowledged",
                                                        "acknowledged"]  # fmt: skip


def test_severity_at_least():
    assert episodes.severity_at_least("critical", "critical")
    assert episodes.severity_at_least("critical", "high")
    assert not episodes.severity_at_least("high", "critical")
    assert episodes.severity_at_least("low", "low")
    assert not episodes.severity_at_least(None, "low")


def test_the_worklist_table_marks_overdue_and_counts():
    rows = [
        {**_ep("d" * 32, "critical", "2"), "overdue": True, "patient_id": "pt-secret"},
        {**_ep("a" * 32, "high", "3"), "overdue": False, "patient_id": "pt-secret"},
    ]
    text = ack.render_worklist(rows, total=5)
    lines = text.splitlines()
    assert lines[0].split() == list(ack.WORKLIST_COLUMNS)
    assert lines[1].split() == ["d" * 32, "hypertensive_crisis", "critical", "urgent",
                                "2026-03-02T00:00:00Z", "OVERDUE"]  # fmt: skip
    assert lines[2].split()[-1] == "2026-03-03T00:00:00Z"
    assert lines[3] == (
        "5 open, unacknowledged episodes: the first 2 shown (--limit), 1 of them overdue"
    )
    assert ack.render_worklist(rows, total=2).splitlines()[-1] == (
        "2 open, unacknowledged episodes: 1 overdue"
    )
    assert "pt-secret" not in text
    assert ack.render_worklist([], 0) == "no open, unacknowledged episodes"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "give an EPISODE_ID"),
        (["ep-1"], "--by USER is required"),
        (["--open", "ep-1"], "--open takes no episode id"),
        (["--open", "--limit", "0"], "--limit must be 1 or more"),
    ],
)
def test_wrong_command_lines_exit_2_with_the_fix(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        ack.main(argv)
    assert stop.value.code == 2
    assert says in capsys.readouterr().err


def test_a_note_too_long_exits_2_before_any_lookup(capsys, monkeypatch):
    monkeypatch.setenv("BPWATCH_ES_URL", "http://127.0.0.1:9")  # nothing answers there
    code = ack.main(["ep-1", "--by", "nurse-1", "--note", "x" * 501])
    err = capsys.readouterr().err
    assert code == 2 and "at most 500" in err and "x" * 20 not in err
    assert ack.main(["ep-1", "--by", "nurse-1", "--at", "noon"]) == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["ack", "demo_acks"])
def test_an_unreachable_elasticsearch_exits_1_naming_what_to_check(tool, capsys, monkeypatch):
    from lib.tools import demo_acks

    monkeypatch.setenv("BPWATCH_ES_URL", "http://127.0.0.1:9")  # nothing answers there
    main = ack.main if tool == "ack" else demo_acks.main
    args = ["ep-1", "--by", "nurse-1"] if tool == "ack" else []
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Elasticsearch at http://127.0.0.1:9 failed" in err and "BPWATCH_ES_URL" in err
