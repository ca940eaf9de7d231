"""Enrol a patient in a remote-monitoring program: one message on ``bp.enrollments``.

    python -m lib.tools.enroll PATIENT --program postpartum|hypertension|general
                               --start YYYY-MM-DD [--end YYYY-MM-DD]

Sends the enrolment ``{"program", "start", "end"?}`` (docs/contract.md, ``bp.enrollments``)
keyed by the patient id, with a confirmed produce (``acks=all``: it returns once the broker
holds the message). The message is checked first by the monitor's own parser
(:func:`lib.monitor.programs.parse_enrollment`), so the tool refuses, naming the fix, what the
monitor would send to ``bp.enrollments.dlq``; nothing is sent then.

The patient's latest enrolment replaces the one before: send the same program with an
``--end`` to close one. A ``postpartum`` enrolment without ``--end`` covers 42 days after its
start; the others, until an enrolment with an end. Send it before the patient's readings:
``PATIENT`` is the patient key of the readings (the id of their ``Patient/<id>`` reference,
or ``system|value`` for an identifier), so that the monitor finds the patient.

Neither the output nor the logs hold the patient id. Exit status: 0 sent, 1 Kafka failed,
2 refused (an invalid argument; nothing sent).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

import orjson

from lib.errors import ConfigError, ServiceError
from lib.monitor.programs import MAX_ENROLLMENT_BYTES, PROGRAMS, Enrollment, parse_enrollment
from lib.settings import Settings

if TYPE_CHECKING:
    from lib.connectors.kafka import Delivered
from lib.tools import episodes

# a broker that does not answer fails the command after this long (unless
# BPWATCH_KAFKA_CONFIG sets message.timeout.ms), as lib.tools.ack
MESSAGE_TIMEOUT_MS = 15_000
PREFLIGHT_SECONDS = 5.0  # lib.connectors.kafka.preflight: how long to wait for the brokers
_EXAMPLE = "2026-03-01"


class Refused(ValueError):
    """An enrolment the tool does not send; the message says why and how to fix it
    (exit status 2)."""


# ----------------------------------------------------------------------------- pure parts
def patient_key(patient: str) -> bytes:
    """The message key: the patient id as the readings carry it, refused when the monitor
    would not find the patient by it (blank, padded, or a ``Patient/`` reference)."""
    if not patient.strip():
        raise Refused("PATIENT is blank: give the patient id the readings carry")
    if patient != patient.strip():
        raise Refused(
            "PATIENT has spaces around it: give the patient id alone (the monitor strips "
            "them, and the readings' key has none)"
        )
    if patient.startswith("Patient/"):
        raise Refused(
            "PATIENT is a reference (Patient/...): give the id after 'Patient/', the key of "
            "the patient's readings"
        )
    return patient.encode()


def enrollment(program: str, start: str, end: str | None = None) -> tuple[bytes, Enrollment]:
    """The message of ``bp.enrollments`` and the enrolment the monitor reads from it;
    :class:`Refused` naming the option to fix when the monitor's parser refuses it."""
    message: dict[str, str] = {"program": program, "start": start}
    if end is not None:
        message["end"] = end
    value = orjson.dumps(message)
    parsed = parse_enrollment(value)
    if isinstance(parsed, tuple):
        raise Refused(_fix(parsed[1], program, start, end))
    if len(value) > MAX_ENROLLMENT_BYTES:  # cannot happen with valid fields; the monitor's limit
        raise Refused(f"the enrolment is larger than {MAX_ENROLLMENT_BYTES} bytes")
    return value, parsed


def _fix(detail: str, program: str, start: str, end: str | None) -> str:
    """What to change, from the monitor's refusal (:func:`parse_enrollment`'s detail)."""
    if detail.startswith("program"):
        return f"--program {program!r} is not a program: use one of {', '.join(PROGRAMS)}"
    if detail.startswith("start"):
        return f"--start {start!r} is not a date: give YYYY-MM-DD, e.g. {_EXAMPLE}"
    if detail.startswith("end not"):
        return f"--end {end!r} is not a date: give YYYY-MM-DD, e.g. {_EXAMPLE}"
    if detail == "end before start":
        return (
            f"--end {end} is before --start {start}: give an end on or after the start "
            "(an enrolment covers both days)"
        )
    return f"the monitor would refuse this enrolment ({detail})"


def coverage(enrolled: Enrollment) -> str:
    """The days the enrolment covers, in words."""
    last = enrolled.last_day
    if last is None:
        return f"from {enrolled.start}, open-ended (send an --end to close it)"
    if enrolled.end is None:
        return f"from {enrolled.start} to {last} (no --end: the postpartum default of 42 days)"
    return f"from {enrolled.start} to {last}"


# ----------------------------------------------------------------------------- I/O
def send(settings: Settings, key: bytes, value: bytes) -> Delivered:
    """Produce the enrolment and wait for the broker (``acks=all``); where it went, or
    :class:`~lib.errors.KafkaDeliveryError`."""
    from lib.connectors.kafka import send_one

    return send_one(settings, settings.enrollments_topic, key, value,
                     preflight_timeout=PREFLIGHT_SECONDS,
                     message_timeout_ms=MESSAGE_TIMEOUT_MS)  # fmt: skip


def enroll(
    settings: Settings, patient: str, program: str, start: str, end: str | None, out: TextIO
) -> int:
    """Check, send, say what was done (never the patient id)."""
    key = patient_key(patient)
    value, enrolled = enrollment(program, start, end)  # checked before any I/O
    done = send(settings, key, value)
    out.write(
        f"enrolled the patient in {enrolled.program} {coverage(enrolled)}: sent to "
        f"{done.topic} partition {done.partition} offset {done.offset}; it replaces the "
        "patient's earlier enrolment\n"
    )
    return 0


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib.tools.enroll", description=__doc__.split("\n")[0]
    )
    parser.add_argument("patient", metavar="PATIENT", help="the patient id (the readings' key)")
    parser.add_argument("--program", required=True, help=" | ".join(PROGRAMS))
    parser.add_argument("--start", required=True, help="first day covered (YYYY-MM-DD)")
    parser.add_argument(
        "--end", help="last day covered (YYYY-MM-DD); postpartum default: start + 42 days"
    )
    args = parser.parse_args(argv)

    from lib.logs import configure
    from lib.settings import load_or_exit

    settings = load_or_exit()
    configure(settings.log_level)
    try:
        return enroll(settings, args.patient, args.program, args.start, args.end, out)
    except Refused as exc:
        sys.stderr.write(f"bpwatch: {exc}; nothing sent\n")
        return 2
    except ConfigError as exc:
        sys.stderr.write(f"bpwatch: configuration error: {exc}\n")
        return 2
    except ServiceError as exc:
        return episodes.failed(settings.es_url, exc)


if __name__ == "__main__":
    raise SystemExit(main())
