"""Elasticsearch with security on: TLS (generated CA) and a file-realm user, the REAL secured
instance of ``infra/local/services.sh start es-secure`` (https://127.0.0.1:9201).

The monitor gets its credentials only from ``BPWATCH_ES_URL`` / ``BPWATCH_ES_USERNAME`` /
``BPWATCH_ES_PASSWORD`` / ``BPWATCH_ES_CA_CERTS``; wrong ones give one clear error naming the
variable to fix, at once (no retry storm), without the password.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lib.connectors.elastic import bulk_write, make_client
from lib.errors import ServiceError
from lib.settings import Settings
from lib.sim import stream
from lib.tools import admin
from tests.reliability.harness import ROOT, expect, init_recovery, monitor, send

pytestmark = pytest.mark.integration


@pytest.fixture
def secure(settings: Settings, es_secure_env: dict[str, str]) -> Iterator[Settings]:
    """The test's namespace on the plain broker, with the secured Elasticsearch."""
    s = replace(
        settings,
        es_url=es_secure_env["BPWATCH_ES_URL"],
        es_username=es_secure_env["BPWATCH_ES_USERNAME"],
        es_password=es_secure_env["BPWATCH_ES_PASSWORD"],
        es_ca_certs=es_secure_env["BPWATCH_ES_CA_CERTS"],
        kafka_tail=False,
        model_path=(ROOT / settings.model_path).resolve(),
    )
    admin.ensure_elasticsearch(s)
    yield s
    # by name: a secured cluster keeps action.destructive_requires_name (no wildcard deletes)
    es = make_client(s)
    try:
        names = [s.index(base) + admin.INDEX_SUFFIX for base in admin.template_bodies()]
        es.indices.delete(index=names, ignore_unavailable=True)
    finally:
        es.close()


def test_settings_from_the_environment_reach_the_secured_cluster(
    es_secure_env: dict[str, str],
) -> None:
    s = Settings.from_env({**es_secure_env, "BPWATCH_NAMESPACE": "envcheck"})
    assert "***" in repr(s) and es_secure_env["BPWATCH_ES_PASSWORD"] not in repr(s)
    es = make_client(s)
    try:
        assert es.security.authenticate()["username"] == es_secure_env["BPWATCH_ES_USERNAME"]
    finally:
        es.close()


def test_monitor_writes_to_the_secured_cluster(secure: Settings, monitor_run: Any) -> None:
    s = replace(secure, sim_count=600, sim_patients=15, sim_fault_rate=0.1)
    records = [m.kafka_record() for m in stream.messages(s)]
    send(s, records)
    exp = expect(s, records)
    tally, log = monitor_run(s, exp, "es-secure")
    assert tally.ok, tally.problems
    assert tally.notes["anomalies"] == len(exp.anomaly_ids) > 0
    assert s.es_password and s.es_password not in log


def test_unauthenticated_cluster_access_is_refused(secure: Settings) -> None:
    """Security is really on: no credentials, no data."""
    anonymous = replace(secure, es_username=None, es_password=None)
    with pytest.raises(ServiceError, match="BPWATCH_ES_USERNAME"):
        bulk_write(make_client(anonymous), secure.anomalies_index, [("delete", "x", None)])


def test_wrong_password_is_one_clear_error_at_once(secure: Settings) -> None:
    wrong = replace(secure, es_password="wrong-" + (secure.es_password or ""))
    calls = []
    started = time.monotonic()
    with pytest.raises(ServiceError) as info:
        bulk_write(
            make_client(wrong),
            secure.anomalies_index,
            [("delete", "x", None)],
            sleep=calls.append,
        )
    assert time.monotonic() - started < 5 and calls == []  # no backoff, no retry
    message = str(info.value)
    assert "BPWATCH_ES_USERNAME" in message and "BPWATCH_ES_PASSWORD" in message
    assert wrong.es_password not in message
    with pytest.raises(ServiceError, match="refused the credentials"):
        admin.ensure_elasticsearch(wrong)


def test_monitor_with_wrong_password_stops_quickly(secure: Settings, tmp_path: Path) -> None:
    s = replace(secure, sim_count=200, sim_patients=5, sim_fault_rate=0.0)
    send(s, [m.kafka_record() for m in stream.messages(s)])
    wrong = replace(s, es_password="nope-" + (s.es_password or ""))
    logs = tmp_path / "monitor.log"
    started = time.monotonic()
    rc = monitor(wrong, init_recovery(tmp_path / "rec"), logs).start().wait(120)
    text = logs.read_text()
    assert rc != 0
    assert time.monotonic() - started < 60
    assert "BPWATCH_ES_PASSWORD" in text
    assert "es_retry" not in text  # refused at once: no retry storm
    assert wrong.es_password not in text


def test_untrusted_server_certificate_names_the_ca_setting(
    secure: Settings, tmp_path: Path
) -> None:
    # a valid CA file, but not the one that signed the server certificate
    other_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if not other_ca.is_file():
        pytest.skip("no system CA bundle")
    untrusted = replace(secure, es_ca_certs=str(other_ca))
    with pytest.raises(ServiceError, match="BPWATCH_ES_CA_CERTS"):
        bulk_write(make_client(untrusted), secure.anomalies_index, [("delete", "x", None)])
