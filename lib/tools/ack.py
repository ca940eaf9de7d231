"""Acknowledge an open alert episode, or list the open ones: the worklist without Kibana.

    python -m lib.tools.ack EPISODE_ID --by USER [--note TEXT] [--at ISO8601]
    python -m lib.tools.ack --open [--limit N]

The first form looks the episode up in ``bp-episodes`` (``BPWATCH_ES_URL``, its credentials
and ``BPWATCH_NAMESPACE``, as everywhere) and sends the acknowledgement
``{"episode_id", "by", "at", "note"?}`` to ``bp.alerts.acks``, keyed by the episode's patient
id, with a confirmed produce (``acks=all``: it returns once the broker holds the message).
The monitor reads it beside the readings and emits the ``acknowledged`` event
(docs/contract.md, "Acknowledgements and the worklist"). Nothing is sent for an unknown or a
resolved episode (exit 2), nor for one already acknowledged at its current level (exit 0,
saying by whom and when).

``--open`` lists the open, unacknowledged episodes, most severe first, then the oldest
(:mod:`lib.tools.episodes`), overdue ones marked, and their count.

Neither form prints or logs the note or the patient id. Exit status: 0 done, 1 Kafka or
Elasticsearch failed, 2 refused (an invalid argument, an unknown or resolved episode).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from lib.errors import ConfigError, ServiceError
from lib.monitor.acks import MAX_BY, MAX_EPISODE_ID, MAX_NOTE
from lib.settings import Settings

if TYPE_CHECKING:
    from lib.connectors.kafka import Delivered
from lib.tools import episodes

DEFAULT_LIMIT = 50
LOOKUP_FIELDS = ("episode_id", "patient_id", "condition", "severity", "status",
                 "resolved_at", "acknowledged", "acknowledged_by", "acknowledged_at")  # fmt: skip
WORKLIST_COLUMNS = ("episode_id", "condition", "severity", "tier", "opened_at", "overdue")
# a broker that does not answer fails the command after this long (unless
# BPWATCH_KAFKA_CONFIG sets message.timeout.ms)
MESSAGE_TIMEOUT_MS = 15_000


class Refused(ValueError):
    """An acknowledgement the tool does not send; the message says why (exit status 2)."""


# ----------------------------------------------------------------------------- pure parts
def parse_at(text: str) -> datetime:
    """``--at``: an ISO 8601 time with a UTC offset (``Z`` or ``+01:00``)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise Refused(f"--at {text!r} is not an ISO 8601 time, e.g. 2026-03-01T14:05:00Z") from None
    if at.tzinfo is None:
        raise Refused(f"--at {text!r} has no UTC offset: add Z or +HH:MM")
    return at


def acknowledgement(
    episode_id: str, by: str, at: datetime, note: str | None = None
) -> dict[str, str]:
    """The message of ``bp.alerts.acks`` (docs/contract.md), checked as the monitor checks
    it (:func:`lib.monitor.acks.parse_ack`); :class:`Refused` naming the limit otherwise.
    ``at`` is written in UTC, with its offset."""
    if not 0 < len(episode_id) <= MAX_EPISODE_ID:
        raise Refused(f"an episode id has 1..{MAX_EPISODE_ID} characters")
    if not by.strip() or len(by) > MAX_BY:
        raise Refused(f"--by must be a user id of 1..{MAX_BY} characters, not blank")
    if note is not None and len(note) > MAX_NOTE:
        raise Refused(f"--note has {len(note)} characters: at most {MAX_NOTE}")
    if at.tzinfo is None:
        raise Refused("the time of an acknowledgement needs a UTC offset")
    message = {
        "episode_id": episode_id,
        "by": by,
        "at": at.astimezone(UTC).isoformat(timespec="milliseconds"),
    }
    if note:
        message["note"] = note
    return message


def already(doc: Mapping[str, Any]) -> str | None:
    """Why an episode needs no acknowledgement (None: it does). Raises :class:`Refused` for
    a resolved one."""
    episode_id = doc.get("episode_id", "")
    if doc.get("status") == "resolved":
        raise Refused(
            f"episode {episode_id} is already resolved at {doc.get('resolved_at')}: "
            "nothing to acknowledge"
        )
    if doc.get("acknowledged") is True:
        return (
            f"episode {episode_id} is already acknowledged by {doc.get('acknowledged_by')} "
            f"at {doc.get('acknowledged_at')}: nothing sent"
        )
    return None


def render_worklist(rows: Sequence[Mapping[str, Any]], total: int) -> str:
    """The ``--open`` table: one row per episode, then the count (how many are shown)."""
    if not total:
        return "no open, unacknowledged episodes"
    table = [list(WORKLIST_COLUMNS)]
    for row in rows:
        table.append([_text(c, row.get(c)) for c in WORKLIST_COLUMNS])
    widths = [max(len(r[i]) for r in table) for i in range(len(WORKLIST_COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table]
    overdue = sum(1 for r in rows if r.get("overdue") is True)
    if len(rows) < total:
        count = f"the first {len(rows)} shown (--limit), {overdue} of them overdue"
    else:
        count = f"{overdue} overdue"
    lines.append(f"{total} open, unacknowledged episodes: {count}")
    return "\n".join(lines)


def _text(column: str, value: Any) -> str:
    if column == "overdue":
        return "OVERDUE" if value is True else ""
    return "" if value is None else str(value)


# ----------------------------------------------------------------------------- I/O
def find(es: Any, index: str, episode_id: str) -> dict[str, Any] | None:
    """The episode's document (a search by id: the alias holds one index), or None."""
    from elasticsearch import NotFoundError

    try:
        hits = es.search(
            index=index,
            query={"ids": {"values": [episode_id]}},
            size=1,
            source_includes=list(LOOKUP_FIELDS),
        )["hits"]["hits"]
    except NotFoundError:
        raise episodes.missing(index) from None
    return dict(hits[0]["_source"]) if hits else None


def worklist(es: Any, index: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The open, unacknowledged episodes in the worklist's order (at most ``limit``), and how
    many there are."""
    rows, totals = episodes.ordered(
        es,
        index,
        [episodes.OPEN, episodes.NOT_ACKNOWLEDGED],
        episodes.by_severity(),
        limit,
        WORKLIST_COLUMNS,
    )
    return rows, sum(totals)


def send(settings: Settings, key: str, message: Mapping[str, str]) -> Delivered:
    """Produce one acknowledgement and wait for the broker (``acks=all``); where it went, or
    :class:`~lib.errors.KafkaDeliveryError`."""
    from lib.connectors.kafka import send_one

    return send_one(settings, settings.acks_topic, key.encode(), orjson.dumps(message),
                     message_timeout_ms=MESSAGE_TIMEOUT_MS)  # fmt: skip


def acknowledge(
    settings: Settings,
    es: Any,
    episode_id: str,
    by: str,
    note: str | None,
    at: datetime,
    out: TextIO,
) -> int:
    """The first form of the command: look up, check, send, say what was done."""
    message = acknowledgement(episode_id, by, at, note)  # checked before any I/O
    doc = find(es, settings.episodes_index, episode_id)
    if doc is None:
        raise Refused(
            f"no episode {episode_id} in {settings.episodes_index}: "
            "`python -m lib.tools.ack --open` lists the open episodes"
        )
    reason = already(doc)
    if reason is not None:
        out.write(reason + "\n")
        return 0
    done = send(settings, str(doc["patient_id"]), message)
    out.write(
        f"acknowledged episode {episode_id} ({doc.get('condition')}, {doc.get('severity')}) "
        f"by {by} at {message['at']}: sent to {done.topic} partition {done.partition} "
        f"offset {done.offset}\n"
    )
    return 0


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib.tools.ack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("episode_id", nargs="?", help="the episode to acknowledge")
    parser.add_argument("--by", help=f"who acknowledges: a user id (1..{MAX_BY} characters)")
    parser.add_argument(
        "--note", help=f"a note, at most {MAX_NOTE} characters (Elasticsearch only)"
    )
    parser.add_argument("--at", help="when (ISO 8601 with an offset; default: now)")
    parser.add_argument(
        "--open", action="store_true", help="list the open, unacknowledged episodes"
    )
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="rows of --open")
    args = parser.parse_args(argv)
    if args.open and (args.episode_id or args.by or args.note or args.at):
        parser.error("--open takes no episode id, --by, --note or --at")
    if not args.open and not args.episode_id:
        parser.error("give an EPISODE_ID (with --by), or --open for the worklist")
    if not args.open and args.by is None:
        parser.error("--by USER is required to acknowledge an episode")
    if args.limit < 1:
        parser.error("--limit must be 1 or more")

    from elasticsearch import ApiError, TransportError

    from lib.connectors.elastic import TOOL_RETRIES, make_client
    from lib.logs import configure
    from lib.settings import load_or_exit

    settings = load_or_exit()
    configure(settings.log_level)
    es = make_client(settings, max_retries=TOOL_RETRIES)
    try:
        if args.open:
            rows, total = worklist(es, settings.episodes_index, args.limit)
            out.write(render_worklist(rows, total) + "\n")
            return 0
        at = parse_at(args.at) if args.at else datetime.now(UTC)
        return acknowledge(settings, es, args.episode_id, args.by, args.note, at, out)
    except Refused as exc:
        sys.stderr.write(f"bpwatch: {exc}\n")
        return 2
    except ConfigError as exc:
        sys.stderr.write(f"bpwatch: configuration error: {exc}\n")
        return 2
    except (ServiceError, ApiError, TransportError) as exc:
        return episodes.failed(settings.es_url, exc)
    finally:
        es.close()


if __name__ == "__main__":
    raise SystemExit(main())
