"""``python -m lib.tools.enroll`` against the REAL Kafka, in a namespace of its own
(``settings`` fixture: ``lib.tools.admin`` setup and teardown). The enrolments are read back
from ``bp.enrollments`` and parsed by the monitor's own parser."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from types import SimpleNamespace

import orjson
import pytest

from lib.monitor.programs import Enrolled, Enrollment, parse_enrollment_message
from lib.settings import Settings
from tests.reliability.harness import ROOT, child_env, read_topic

pytestmark = pytest.mark.integration

PATIENT = "pt-enrol-7"


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lib.tools.enroll", *args],
        cwd=ROOT,
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_enrolment_lands_on_the_topic_keyed_by_patient(settings):
    done = run(settings, PATIENT, "--program", "postpartum", "--start", "2026-11-20")
    assert done.returncode == 0, done.stderr
    closed = run(settings, PATIENT, "--program", "postpartum", "--start", "2026-11-20",
                 "--end", "2026-12-15")  # fmt: skip
    assert closed.returncode == 0, closed.stderr
    refused = run(settings, PATIENT, "--program", "general", "--start", "2026-11-20",
                  "--end", "2026-11-19")  # fmt: skip
    assert refused.returncode == 2 and "is before --start" in refused.stderr

    sent = read_topic(settings, settings.enrollments_topic)
    assert [(m.key(), orjson.loads(m.value())) for m in sent] == [
        (PATIENT.encode(), {"program": "postpartum", "start": "2026-11-20"}),
        (PATIENT.encode(), {"program": "postpartum", "start": "2026-11-20", "end": "2026-12-15"}),
    ]  # the refused one sent nothing
    assert len({m.partition() for m in sent}) == 1  # one key, one partition: in order
    first, second = sent
    assert f"{settings.enrollments_topic} partition {first.partition()} offset " in done.stdout
    assert f"offset {second.offset()}" in closed.stdout
    assert "from 2026-11-20 to 2027-01-01" in done.stdout  # the postpartum default, 42 days
    for said in (done, closed, refused):
        assert PATIENT not in said.stdout + said.stderr

    # what the monitor makes of them: the patient's enrolment, the latest replacing the first
    read = [
        parse_enrollment_message(
            SimpleNamespace(key=m.key(), value=m.value(), headers=m.headers(), topic=m.topic(),
                            partition=m.partition(), offset=m.offset(), timestamp=None)  # type: ignore[arg-type]
        )
        for m in sent
    ]  # fmt: skip
    assert read == [
        Enrolled(PATIENT, Enrollment("postpartum", date(2026, 11, 20))),
        Enrolled(PATIENT, Enrollment("postpartum", date(2026, 11, 20), date(2026, 12, 15))),
    ]


def test_a_missing_topic_exits_1_naming_make_setup(settings):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_client_config())
    admin.delete_topics([settings.enrollments_topic])[settings.enrollments_topic].result(30)
    gone = run(settings, PATIENT, "--program", "general", "--start", "2026-11-20")
    assert gone.returncode == 1
    assert "make setup" in gone.stderr and PATIENT not in gone.stderr
