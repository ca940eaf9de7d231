"""The start gate between the monitor's inputs (lib.connectors.kafka.StartGate): readings
wait at start until the enrolments found on the broker are read, never for ever."""

from __future__ import annotations

import time

from lib.connectors.kafka import StartGate


def test_a_follower_waits_while_a_lead_partition_holds_the_gate():
    gate = StartGate()
    gate.hold("bp.enrollments", 0)
    gate.hold("bp.enrollments", 1)
    assert gate.closed()
    gate.release("bp.enrollments", 0)
    assert gate.closed()  # partition 1 has not reached its offset at start
    gate.release("bp.enrollments", 1)
    assert not gate.closed()
    gate.release("bp.enrollments", 1)  # twice: harmless
    assert not gate.closed()


def test_a_lead_with_nothing_to_read_does_not_hold_anyone():
    gate = StartGate()
    gate.release("bp.enrollments", 0)  # empty at start: registered, not held
    assert not gate.closed()


def test_without_lead_partitions_a_follower_waits_only_the_registration_time():
    gate = StartGate()
    gate.REGISTER_S = 0.05  # type: ignore[misc]
    assert gate.closed()
    time.sleep(0.06)
    assert not gate.closed()


def test_a_lead_that_never_catches_up_holds_for_at_most_the_maximum_wait(caplog):
    gate = StartGate()
    gate.MAX_WAIT_S = 0.05  # type: ignore[misc]
    gate.hold("bp.enrollments", 0)
    assert gate.closed()
    time.sleep(0.06)
    with caplog.at_level("WARNING", logger="lib.connectors.kafka"):
        assert not gate.closed()
    assert "start_gate timeout" in caplog.text
