"""Idempotent setup of bpwatch's Kafka topics and Elasticsearch templates, indices and aliases.

``python -m lib.tools.admin setup`` (``make setup``) creates:

* Kafka topics ``bp.observations``, ``bp.observations.dlq``, ``bp.alerts``,
  ``bp.alerts.acks``, ``bp.alerts.acks.dlq``, ``bp.enrollments`` and ``bp.enrollments.dlq``
  (namespaced by ``BPWATCH_NAMESPACE``), each with ``BPWATCH_KAFKA_PARTITIONS`` partitions
  (keyed by patient) and ``retention.ms`` from ``BPWATCH_TOPIC_RETENTION_DAYS``
  (``BPWATCH_DLQ_RETENTION_DAYS`` for the three dead-letter topics); an existing topic keeps
  its own settings;
* one composable index template per ``infra/elasticsearch/templates/<name>.json`` (strict
  mappings), matching ``<name>*`` and ``*-<name>*`` so namespaced indices get it too; on an
  alias that exists already, the template's fields are added to its indices (a field added
  since an earlier version);
* for each template a concrete index ``<index>-v1`` behind the alias ``<index>``, its write
  index (it holds what versions before monthly indices wrote, and makes the alias exist
  before any write);
* for each alias of monthly indices (:data:`~lib.connectors.elastic_months.MONTH_FIELDS`) an
  ILM policy ``<index>-retention`` (``BPWATCH_<INDEX>_RETENTION_DAYS``) and the template of
  its monthly indices ``<index>-YYYY.MM``, which the monitor writes and Elasticsearch creates
  on first write (:mod:`lib.connectors.elastic_months`). An alias that is not monthly
  (``bp-episodes``: an episode is updated over months) stays the one ``-v1`` index, written
  through the alias, with neither.

Every step checks first and leaves existing resources as they are; running it twice is harmless.
``python -m lib.tools.admin teardown`` removes a namespace's topics and indices (tests).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from lib.connectors.elastic import TOOL_RETRIES, make_client
from lib.connectors.elastic_months import (
    MONTH_FIELDS,
    MonthRouter,
    monthly_template,
    policy_body,
    policy_name,
)
from lib.errors import ServiceError
from lib.logs import configure
from lib.settings import Settings, load_or_exit

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "infra" / "elasticsearch" / "templates"
TOPICS = (
    "bp.observations",
    "bp.observations.dlq",
    "bp.alerts",
    "bp.alerts.acks",
    "bp.alerts.acks.dlq",
    "bp.enrollments",
    "bp.enrollments.dlq",
)
INDEX_SUFFIX = "-v1"


def template_bodies(directory: Path = TEMPLATES_DIR) -> dict[str, dict[str, Any]]:
    """``{base index name: composable template body}`` from the JSON files in ``directory``."""
    bodies: dict[str, dict[str, Any]] = {}
    for i, path in enumerate(sorted(directory.glob("*.json"))):
        name = path.stem
        body = orjson.loads(path.read_bytes())
        body["index_patterns"] = [f"{name}*", f"*-{name}*"]
        # wildcard patterns of two templates can overlap ("x-bp-alerts-bp-anomalies"):
        # Elasticsearch then needs distinct priorities
        body.setdefault("priority", 200 + i)
        bodies[name] = body
    return bodies


# ----------------------------------------------------------------------------- Kafka
def ensure_topics(
    settings: Settings, *, partitions: int | None = None, timeout: float = 30.0
) -> list[str]:
    """Create the contract's topics if missing; returns the names created now."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.kafka_client_config())
    parts = partitions or settings.kafka_partitions
    names = [settings.topic(t) for t in TOPICS]
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise ServiceError(
            f"Kafka at {settings.kafka_brokers} did not answer ({exc.args[0]}): start it with "
            "`make services` or fix BPWATCH_KAFKA_BROKERS / BPWATCH_KAFKA_CONFIG"
        ) from None
    missing = [n for n in names if n not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    n,
                    num_partitions=parts,
                    replication_factor=-1,
                    config={"retention.ms": str(retention_ms(settings, n))},
                )
                for n in missing
            ],
            operation_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ServiceError(f"could not create topic {name}: {exc.args[0]}") from None
    # Topic metadata propagates asynchronously; wait until every topic is visible.
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=timeout).topics
        if all(n in md and not md[n].error and md[n].partitions for n in names):
            break
        if time.monotonic() > deadline:
            raise ServiceError(f"topics {names} not visible after {timeout}s")
        time.sleep(0.1)
    return created


def retention_ms(settings: Settings, topic: str) -> int:
    """``retention.ms`` of a topic at creation: ``BPWATCH_DLQ_RETENTION_DAYS`` for the
    dead-letter topics (longer, to fix and re-send), ``BPWATCH_TOPIC_RETENTION_DAYS`` for the
    others."""
    dead_letters = (settings.dlq_topic, settings.acks_dlq_topic, settings.enrollments_dlq_topic)
    days = settings.dlq_retention_days if topic in dead_letters else settings.topic_retention_days
    return int(days * 86_400_000)


def delete_topics(settings: Settings, timeout: float = 30.0) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_client_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    names = [settings.topic(t) for t in TOPICS if settings.topic(t) in existing]
    if names:
        for fut in admin.delete_topics(names, operation_timeout=timeout).values():
            fut.result(timeout=timeout)


# ----------------------------------------------------------------------------- Elasticsearch
def ensure_elasticsearch(settings: Settings, es: Any = None) -> list[str]:
    """Install templates, then ``<index>-v1`` behind write alias ``<index>``, and for a monthly
    alias its ILM policy and monthly template; returns the indices created now."""
    from elasticsearch import ApiError, AuthenticationException, TransportError

    es = es or make_client(settings, max_retries=TOOL_RETRIES)
    created: list[str] = []
    try:
        for base, body in template_bodies().items():
            es.indices.put_index_template(name=f"bpwatch-{base}", **body)
            alias = settings.index(base)
            _ensure_retention(es, settings, base, alias, body)
            if es.indices.exists_alias(name=alias):
                _add_new_fields(es, alias, body)
                continue
            if es.indices.exists(index=alias):
                log.warning(
                    "index=%s exists as a concrete index, not an alias; left as it is", alias
                )
                continue
            concrete = alias + INDEX_SUFFIX
            try:
                es.indices.create(index=concrete, aliases={alias: {"is_write_index": True}})
                created.append(concrete)
            except ApiError as exc:
                if exc.meta.status != 400 or "resource_already_exists" not in str(exc):
                    raise
    except AuthenticationException:
        raise ServiceError(
            f"Elasticsearch at {settings.es_url} refused the credentials: set BPWATCH_ES_API_KEY "
            "or BPWATCH_ES_USERNAME/BPWATCH_ES_PASSWORD"
        ) from None
    except TransportError as exc:
        raise ServiceError(
            f"Elasticsearch at {settings.es_url} did not answer ({type(exc).__name__}): start it "
            "with `make services` or fix BPWATCH_ES_URL"
        ) from None
    return created


def is_monthly(base: str) -> bool:
    """Is the alias of a base index name backed by monthly indices (with an ILM policy)?
    ``bp-episodes`` is not: an episode's document is updated for as long as it lasts."""
    return base in MONTH_FIELDS


def retention_days(settings: Settings, base: str) -> float:
    """``BPWATCH_<INDEX>_RETENTION_DAYS`` of a base index name (0: kept)."""
    return {
        "bp-anomalies": settings.anomalies_retention_days,
        "bp-alerts": settings.alerts_retention_days,
        "bp-home-averages": settings.home_averages_retention_days,
        "bp-adherence": settings.adherence_retention_days,
    }.get(base, 0.0)


def _ensure_retention(
    es: Any, settings: Settings, base: str, alias: str, body: dict[str, Any]
) -> None:
    """The alias's ILM policy (rewritten: a changed retention applies to every monthly index)
    and the template of its monthly indices (:mod:`lib.connectors.elastic_months`); nothing
    for an alias that is not monthly (:func:`is_monthly`)."""
    from elasticsearch import BadRequestError

    if not is_monthly(base):
        return
    days = retention_days(settings, base)
    # priority above the shared templates (200 + i), whose wildcard patterns overlap these
    template = monthly_template(alias, body, 300 + sorted(MONTH_FIELDS).index(base))
    try:
        es.ilm.put_lifecycle(name=policy_name(alias), policy=policy_body(days))
    except BadRequestError as exc:
        if "no handler found" not in str(exc):
            raise
        # a build without the ILM module (the integ-test zip of make services)
        if days > 0:
            variable = "BPWATCH_" + base[3:].upper().replace("-", "_") + "_RETENTION_DAYS"
            raise ServiceError(
                f"Elasticsearch at {settings.es_url} has no index lifecycle management (ILM), "
                f"so the retention of {alias} ({days:g} days) cannot be applied: use the "
                f"default distribution (infra/docker-compose.yml), or unset {variable}"
            ) from None
        log.info(  # no retention was asked for (days == 0), so nothing is lost: not a warning
            "es_no_ilm alias=%s: this Elasticsearch has no index lifecycle management; the "
            "monthly indices are kept (no retention is set)",
            alias,
        )
        del template["template"]["settings"]["index.lifecycle.name"]
    es.indices.put_index_template(name=f"bpwatch-{alias}-monthly", **template)


def _add_new_fields(es: Any, alias: str, body: dict[str, Any]) -> None:
    """Put the template's fields on an index made by an earlier version: the mappings are
    strict, so a document with a field added since (a new optional field) would be refused.
    Adding fields is all Elasticsearch allows here; a changed type is refused, with its error."""
    properties = body["template"]["mappings"]["properties"]
    es.indices.put_mapping(index=alias, properties=properties)


def delete_indices(settings: Settings, es: Any = None) -> None:
    """Delete a namespace's indices by name (clusters may refuse wildcard deletes)."""
    es = es or make_client(settings, max_retries=TOOL_RETRIES)
    for base in template_bodies():
        alias = settings.index(base)
        names = list(
            es.indices.get(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)
        )
        # only this alias's own indices: "<alias>", "<alias>-vN" and "<alias>-YYYY.MM", not
        # another namespace's
        months = MonthRouter(alias, "")
        names = [
            n for n in names if n == alias or n.startswith(alias + "-v") or months.is_monthly(n)
        ]
        if names:
            es.indices.delete(index=",".join(names), ignore_unavailable=True)
        if is_monthly(base) and settings.namespace:  # a test's namespace: its own objects
            es.options(ignore_status=404).indices.delete_index_template(
                name=f"bpwatch-{alias}-monthly"
            )
            no_ilm = es.options(ignore_status=(400, 404))  # no ILM: 400
            no_ilm.ilm.delete_lifecycle(name=policy_name(alias))


def setup(settings: Settings) -> dict[str, list[str]]:
    return {"topics": ensure_topics(settings), "indices": ensure_elasticsearch(settings)}


def teardown(settings: Settings) -> None:
    delete_topics(settings)
    delete_indices(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib.tools.admin", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["setup", "teardown"])
    args = parser.parse_args(argv)
    settings = load_or_exit()
    configure(settings.log_level)
    try:
        if args.command == "setup":
            done = setup(settings)
            log.info(
                "setup ok brokers=%s es=%s topics_created=%s indices_created=%s",
                settings.kafka_brokers,
                settings.es_url,
                ",".join(done["topics"]) or "none",
                ",".join(done["indices"]) or "none",
            )
        else:
            teardown(settings)
            log.info("teardown ok namespace=%s", settings.namespace or "(none)")
    except ServiceError as exc:
        sys.stderr.write(f"bpwatch: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
