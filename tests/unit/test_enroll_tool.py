"""lib.tools.enroll without services: the message is what the monitor accepts, and what the
monitor would dead-letter is refused before anything is sent, naming the fix. The tool against
the real Kafka: tests/integration/test_enroll_tool_services.py."""

from __future__ import annotations

import re
from datetime import date
from types import SimpleNamespace

import orjson
import pytest

from lib.monitor.programs import Enrolled, Enrollment, parse_enrollment_message
from lib.tools import enroll


def _monitor_reads(key: bytes, value: bytes) -> object:
    """What the monitor's parser makes of the message (an Enrolled, or a dead letter)."""
    msg = SimpleNamespace(key=key, value=value, headers=[], topic="bp.enrollments",
                          partition=0, offset=0, timestamp=None)  # fmt: skip
    return parse_enrollment_message(msg)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("program", "start", "end", "message"),
    [
        ("postpartum", "2026-03-01", None, {"program": "postpartum", "start": "2026-03-01"}),
        ("hypertension", "2026-03-01", "2026-06-30",
         {"program": "hypertension", "start": "2026-03-01", "end": "2026-06-30"}),
        ("general", "2026-03-01", "2026-03-01",  # one day: end == start is covered
         {"program": "general", "start": "2026-03-01", "end": "2026-03-01"}),
    ],
)  # fmt: skip
def test_the_enrolment_is_what_the_monitor_accepts(program, start, end, message):
    value, enrolled = enroll.enrollment(program, start, end)
    assert orjson.loads(value) == message
    got = _monitor_reads(enroll.patient_key("pt-1"), value)
    assert isinstance(got, Enrolled)
    assert got == Enrolled("pt-1", enrolled)
    assert enrolled.start == date.fromisoformat(start)


@pytest.mark.parametrize(
    ("program", "start", "end", "says"),
    [
        ("pregnancy", "2026-03-01", None,
         "--program 'pregnancy' is not a program: use one of postpartum, hypertension, general"),
        ("Postpartum", "2026-03-01", None, "use one of postpartum"),
        ("postpartum", "01/03/2026", None,
         "--start '01/03/2026' is not a date: give YYYY-MM-DD, e.g. 2026-03-01"),
        ("postpartum", "2026-02-30", None, "--start '2026-02-30' is not a date"),
        ("general", "2026-03-01", "soon", "--end 'soon' is not a date: give YYYY-MM-DD"),
        ("general", "2026-03-01", "2026-02-28",
         "--end 2026-02-28 is before --start 2026-03-01: give an end on or after the start"),
    ],
)  # fmt: skip
def test_what_the_monitor_would_dead_letter_is_refused_naming_the_fix(program, start, end, says):
    with pytest.raises(enroll.Refused, match=re.escape(says)):
        enroll.enrollment(program, start, end)
    # the oracle: the monitor's parser refuses the same message
    message = {"program": program, "start": start, **({"end": end} if end else {})}
    refused = _monitor_reads(b"pt-1", orjson.dumps(message))
    assert not isinstance(refused, Enrolled)
    assert refused.reason == "invalid_enrollment"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("patient", "says"),
    [
        ("", "PATIENT is blank"),
        ("   ", "PATIENT is blank"),
        (" pt-1", "PATIENT has spaces around it"),
        ("Patient/pt-1", "give the id after 'Patient/'"),
    ],
)
def test_a_patient_key_the_monitor_would_not_match_is_refused(patient, says):
    with pytest.raises(enroll.Refused, match=re.escape(says)):
        enroll.patient_key(patient)


def test_an_identifier_key_is_kept_as_it_is():
    assert enroll.patient_key("urn:oid:1.2.3|12345") == b"urn:oid:1.2.3|12345"


def test_coverage_says_which_days_and_the_postpartum_default():
    start = date(2026, 3, 1)
    assert enroll.coverage(Enrollment("postpartum", start)) == (
        "from 2026-03-01 to 2026-04-12 (no --end: the postpartum default of 42 days)"
    )
    assert enroll.coverage(Enrollment("general", start)) == (
        "from 2026-03-01, open-ended (send an --end to close it)"
    )
    end = date(2026, 3, 31)
    assert enroll.coverage(Enrollment("postpartum", start, end)) == "from 2026-03-01 to 2026-03-31"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "the following arguments are required: PATIENT, --program, --start"),
        (["pt-1", "--program", "general"], "the following arguments are required: --start"),
    ],
)
def test_wrong_command_lines_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        enroll.main(argv)
    assert stop.value.code == 2
    assert says in capsys.readouterr().err


def test_a_refused_enrolment_exits_2_before_any_connection(capsys, monkeypatch):
    monkeypatch.setenv("BPWATCH_KAFKA_BROKERS", "127.0.0.1:9")  # nothing answers there

    def no_send(*args: object) -> None:
        raise AssertionError("nothing may be sent")

    monkeypatch.setattr(enroll, "send", no_send)
    code = enroll.main(["pt-secret", "--program", "postpartum", "--start", "2026-03-01",
                        "--end", "2026-01-01"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "is before --start" in err and "nothing sent" in err
    assert "pt-secret" not in err
    assert enroll.main(["Patient/pt-secret", "--program", "general", "--start", "x"]) == 2
    assert "Patient/" in capsys.readouterr().err


def test_an_unreachable_kafka_exits_1_naming_what_to_check(capsys, monkeypatch):
    monkeypatch.setenv("BPWATCH_KAFKA_BROKERS", "127.0.0.1:9")  # nothing answers there
    monkeypatch.setenv("BPWATCH_KAFKA_CONFIG", '{"message.timeout.ms": 1000}')
    monkeypatch.setattr(enroll, "PREFLIGHT_SECONDS", 0.3)
    out = SimpleNamespace(text="", write=lambda s: setattr(out, "text", out.text + s))
    code = enroll.main(["pt-secret", "--program", "general", "--start", "2026-03-01"], out=out)
    err = capsys.readouterr().err
    assert code == 1 and out.text == ""
    assert "did not confirm" in err and "BPWATCH_KAFKA_BROKERS" in err and "make setup" in err
    assert "pt-secret" not in err
