"""The ``bp-episodes`` worklist as the command-line tools read it: its order and its queries.

One document per alert episode (docs/contract.md, ``bp-episodes``), one index behind the
alias. The worklist's order, used by :mod:`lib.tools.ack` (``--open``) and
:mod:`lib.tools.report`:

* most severe first (``critical`` > ``high`` > ``moderate`` > ``low``; a severity outside the
  contract's last), then the oldest ``opened_at``, then the episode id (a stable order);
* the report puts before that the episodes' state (:func:`attention`): overdue and
  unacknowledged, then unacknowledged, then acknowledged.

Elasticsearch cannot sort by the severity's rank without a script (and the local build has no
scripting module), so :func:`ordered` asks for one bucket per rank, each sorted by
``opened_at``, in one ``msearch``: the order holds however many episodes are open, and no
more than ``limit`` documents per bucket come back.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from lib.domain import SEVERITIES
from lib.errors import ServiceError

__all__ = [
    "ATTENTION",
    "SEVERITY_RANK",
    "attention",
    "by_attention",
    "by_severity",
    "failed",
    "missing",
    "ordered",
    "scan",
    "severity_at_least",
    "worklist_key",
]

SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
OPEN = {"term": {"status": "open"}}
NOT_ACKNOWLEDGED = {"bool": {"must_not": [{"term": {"acknowledged": True}}]}}
_OVERDUE = {"term": {"overdue": True}}
_ACKNOWLEDGED = {"term": {"acknowledged": True}}
# the states of the report's worklist, in its order: (name, filter)
ATTENTION: tuple[tuple[str, dict[str, Any]], ...] = (
    ("overdue", {"bool": {"filter": [_OVERDUE], "must_not": [_ACKNOWLEDGED]}}),
    ("unacknowledged", {"bool": {"must_not": [_OVERDUE, _ACKNOWLEDGED]}}),
    ("acknowledged", {"bool": {"filter": [_ACKNOWLEDGED]}}),
)
_SORT = [{"opened_at": {"order": "asc"}}, {"episode_id": {"order": "asc"}}]
PAGE = 1000


def severity_at_least(severity: Any, minimum: str) -> bool:
    """Is ``severity`` at ``minimum`` or above (``low`` < ``moderate`` < ``high`` <
    ``critical``)? An unknown severity is not."""
    return SEVERITY_RANK.get(severity, -1) >= SEVERITY_RANK[minimum]


def worklist_key(doc: Mapping[str, Any]) -> tuple[int, str, str]:
    """Sort key of the worklist: most severe, then oldest ``opened_at``, then episode id."""
    return (
        -SEVERITY_RANK.get(str(doc.get("severity")), -1),
        str(doc.get("opened_at") or ""),
        str(doc.get("episode_id") or ""),
    )


def attention(doc: Mapping[str, Any]) -> int:
    """0 overdue and unacknowledged, 1 unacknowledged, 2 acknowledged (:data:`ATTENTION`)."""
    if doc.get("acknowledged") is True:
        return 2
    return 0 if doc.get("overdue") is True else 1


def by_severity() -> list[dict[str, Any]]:
    """One filter per severity, most severe first, and one for any other value."""
    buckets: list[dict[str, Any]] = [{"term": {"severity": s}} for s in reversed(SEVERITIES)]
    buckets.append({"bool": {"must_not": [{"terms": {"severity": list(SEVERITIES)}}]}})
    return buckets


def by_attention() -> list[dict[str, Any]]:
    """The report's buckets: each state of :data:`ATTENTION`, then each severity."""
    return [
        {"bool": {"filter": [state, severity]}}
        for _, state in ATTENTION
        for severity in by_severity()
    ]


def ordered(
    es: Any,
    index: str,
    filters: Iterable[dict[str, Any]],
    buckets: list[dict[str, Any]],
    limit: int,
    fields: Iterable[str],
) -> tuple[list[dict[str, Any]], list[int]]:
    """The documents matching ``filters``, bucket after bucket (each oldest ``opened_at``
    first), at most ``limit`` in all; and the number matching in each bucket. One request;
    :class:`~lib.errors.ServiceError` when a search is refused (naming the fix for a missing
    index)."""
    common = list(filters)
    searches: list[dict[str, Any]] = []
    for bucket in buckets:
        searches.append({"index": index})
        searches.append(
            {
                "query": {"bool": {"filter": [*common, bucket]}},
                "sort": _SORT,
                "size": limit,
                "track_total_hits": True,
                "_source": list(fields),
            }
        )
    rows: list[dict[str, Any]] = []
    totals: list[int] = []
    for response in es.msearch(searches=searches)["responses"]:
        if "error" in response:
            raise _search_error(index, response)
        hits = response["hits"]
        totals.append(int(hits["total"]["value"]))
        rows += [h["_source"] for h in hits["hits"]]
    return rows[:limit], totals


def scan(
    es: Any, index: str, filters: Iterable[dict[str, Any]], fields: Iterable[str]
) -> Iterator[dict[str, Any]]:
    """Every document matching ``filters``, oldest ``opened_at`` first, page by page
    (``search_after`` on ``opened_at`` and ``episode_id``: no result window to outgrow)."""
    query = {"bool": {"filter": list(filters)}}
    after: list[Any] | None = None
    while True:
        extra = {} if after is None else {"search_after": after}
        hits = es.search(
            index=index,
            query=query,
            sort=_SORT,
            size=PAGE,
            source_includes=list(fields),
            **extra,
        )["hits"]["hits"]
        for hit in hits:
            yield hit["_source"]
        if len(hits) < PAGE:
            return
        after = hits[-1]["sort"]


def missing(index: str) -> ServiceError:
    """The error of an index that does not exist, naming the fix."""
    return ServiceError(
        f"Elasticsearch has no index {index}: create it with `make setup` "
        "(python -m lib.tools.admin setup), or check BPWATCH_NAMESPACE"
    )


def _search_error(index: str, response: Mapping[str, Any]) -> ServiceError:
    """The error of one search of an ``msearch``."""
    error = response.get("error")
    status = int(response.get("status", 500))
    if status == 404:
        return missing(index)
    kind = error.get("type", "error") if isinstance(error, Mapping) else str(error)
    return ServiceError(f"Elasticsearch refused the search of {index} (HTTP {status}, {kind})")


def failed(es_url: str, exc: BaseException) -> int:
    """One line on stderr for a failure of the services a worklist tool uses, and its exit
    status 1: a :class:`ServiceError` as it is (it names its fix), an Elasticsearch error with
    what to check."""
    if isinstance(exc, ServiceError):
        sys.stderr.write(f"bpwatch: {exc}\n")
    else:
        sys.stderr.write(
            f"bpwatch: Elasticsearch at {es_url} failed ({type(exc).__name__}): "
            "check BPWATCH_ES_URL and its credentials, and that `make setup` ran\n"
        )
    return 1
