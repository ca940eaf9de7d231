"""The demo's acknowledger: acknowledges ``BPWATCH_SIM_ACK_SHARE`` of the open episodes that
need an acknowledgement, as staff working the worklist would.

    python -m lib.tools.demo_acks

Reads ``bp-episodes`` (refreshed first, so that what the monitor has just written is seen):
the open, unacknowledged episodes whose severity is ``BPWATCH_ACK_MIN_SEVERITY`` or above.
It acknowledges those :func:`chosen` by a hash of their id, so a run, its summary
(:mod:`lib.tools.summary`) and a rerun agree on which ones without sharing any state: by
``demo-user-<k>`` (:func:`user_of`), at the episode's ``last_event_at`` plus
``BPWATCH_SIM_ACK_DELAY_MINUTES``, keyed by patient id, with one confirmed produce to
``bp.alerts.acks``. It prints one line: how many episodes needed an acknowledgement, and how
many it acknowledged. Exit status 1 when Kafka or Elasticsearch fails.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from lib.domain import SEVERITIES
from lib.errors import ServiceError
from lib.settings import Settings
from lib.tools import episodes
from lib.tools.ack import acknowledgement

if TYPE_CHECKING:
    from lib.connectors.kafka import KafkaRecord

__all__ = ["USERS", "chosen", "needing", "plan", "user_of"]

USERS = 5  # demo-user-0 .. demo-user-4
FIELDS = ("episode_id", "patient_id", "severity", "opened_at", "last_event_at")


def _draw(episode_id: str) -> int:
    """32 bits of the episode id's SHA-256: the same on every run and machine."""
    return int(hashlib.sha256(episode_id.encode()).hexdigest()[:8], 16)


def chosen(episode_id: str, share: float) -> bool:
    """Does the demo acknowledge this episode? ``share`` of all ids, by a hash of the id
    (0: none, 1: all)."""
    return _draw(episode_id) / 2**32 < share


def user_of(episode_id: str) -> str:
    """The demo user who acknowledges the episode: ``demo-user-<k>``, k = the hash mod 5."""
    return f"demo-user-{_draw(episode_id) % USERS}"


def needing(min_severity: str) -> list[dict[str, Any]]:
    """The filters of the episodes that need an acknowledgement now: open, unacknowledged,
    at ``min_severity`` or above."""
    severities = [s for s in SEVERITIES if episodes.severity_at_least(s, min_severity)]
    return [episodes.OPEN, episodes.NOT_ACKNOWLEDGED, {"terms": {"severity": severities}}]


def plan(
    docs: Iterable[Mapping[str, Any]], share: float, delay_minutes: float
) -> list[KafkaRecord]:
    """The acknowledgements to send for ``docs`` (episodes that need one): ``(patient id,
    message, headers)`` for the chosen ones, in the order of ``docs``."""
    delay = timedelta(minutes=delay_minutes)
    out: list[KafkaRecord] = []
    for doc in docs:
        episode_id = str(doc["episode_id"])
        if not chosen(episode_id, share):
            continue
        last = datetime.fromisoformat(str(doc.get("last_event_at") or doc["opened_at"]))
        message = acknowledgement(episode_id, user_of(episode_id), last + delay)
        out.append((str(doc["patient_id"]).encode(), orjson.dumps(message), []))
    return out


def run(settings: Settings, es: Any) -> tuple[int, int]:
    """Read, choose, send: (episodes needing an acknowledgement, acknowledgements sent)."""
    from elasticsearch import NotFoundError

    from lib.connectors.kafka import produce_all

    index = settings.episodes_index
    try:
        es.indices.refresh(index=index)
    except NotFoundError:
        raise episodes.missing(index) from None
    docs = list(episodes.scan(es, index, needing(settings.ack_min_severity), FIELDS))
    records = plan(docs, settings.sim_ack_share, settings.sim_ack_delay_minutes)
    sent = produce_all(settings, settings.acks_topic, records) if records else 0
    return len(docs), sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib.tools.demo_acks", description=__doc__.split("\n")[0]
    )
    parser.parse_args(argv)

    from elasticsearch import ApiError, TransportError

    from lib.connectors.elastic import TOOL_RETRIES, make_client
    from lib.logs import configure
    from lib.settings import load_or_exit

    settings = load_or_exit()
    configure(settings.log_level)
    es = make_client(settings, max_retries=TOOL_RETRIES)
    try:
        need, sent = run(settings, es)
    except (ServiceError, ApiError, TransportError) as exc:
        return episodes.failed(settings.es_url, exc)
    finally:
        es.close()
    sys.stdout.write(
        f"demo acknowledgements: {need} open episodes at {settings.ack_min_severity} or above "
        f"need one; acknowledged {sent} (BPWATCH_SIM_ACK_SHARE={settings.sim_ack_share:g}) "
        f"on {settings.acks_topic}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
