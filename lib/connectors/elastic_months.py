"""Monthly indices behind each alias, and their retention (index lifecycle management, ILM).

Elasticsearch deletes data by whole indices (ILM's ``delete`` action), so each alias
(``bp-anomalies``, ``bp-alerts``, ``bp-home-averages``, ``bp-adherence``, namespaced) is backed
by one index per calendar month of the *document's own time*::

    bp-anomalies-2026.12      anomalies whose effective_at is in December 2026
    bp-alerts-2026.12         alert events whose event_at is in December 2026
    bp-adherence-2026.12      adherence cycles whose cycle_start is in December 2026

Why the document's time, not rollover: a document's ``_id`` is deterministic and a replay
(a resume, or a fresh recovery store) writes it again; with the month taken from the
document, it lands in the same index and overwrites itself, so the idempotence of the sinks
holds. Rollover would send a replayed document to the newest index, beside its first copy.

A monthly index is created by Elasticsearch on its first write, from a per-namespace
template (:func:`monthly_template`) that holds the mappings, joins the alias (reads, Kibana)
and names the alias's ILM policy (:func:`policy_body`). The policy deletes an index
``retention_days + 31`` days after its creation: a month's index is created at the month's
first write, so every document is kept at least ``retention_days`` after its own time (a
backfilled document of an old month, at least that long after it arrives). ``0`` keeps
every index: the policy then has no delete phase, and an operator may edit it in Kibana.

Deletes (retractions, cleared amendments) carry no document, so they go to every index of
the alias; a document re-indexed at a higher version is deleted from the other indices
first, in case its time moved to another month. The alias's concrete ``-v1`` index of
earlier versions stays in the alias and is never deleted by bpwatch.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MONTH_FIELDS",
    "MonthRouter",
    "monthly_template",
    "policy_body",
    "policy_name",
]

# base index name -> the document field whose month chooses the index
MONTH_FIELDS = {
    "bp-anomalies": "effective_at",
    "bp-alerts": "event_at",
    "bp-home-averages": "series_start",
    "bp-adherence": "cycle_start",  # a date (YYYY-MM-DD): its month is its first 7 characters
}
_MAX_MONTH_DAYS = 31


def policy_name(alias: str) -> str:
    return f"{alias}-retention"


def policy_body(retention_days: float) -> dict[str, Any]:
    """The ILM policy of one alias's monthly indices (``put_lifecycle(policy=...)``)."""
    phases: dict[str, Any] = {"hot": {"min_age": "0ms", "actions": {}}}
    if retention_days > 0:
        hours = round((retention_days + _MAX_MONTH_DAYS) * 24)
        phases["delete"] = {"min_age": f"{hours}h", "actions": {"delete": {}}}
    return {
        "_meta": {"managed_by": "bpwatch", "retention_days": retention_days},
        "phases": phases,
    }


def monthly_template(alias: str, base_body: dict[str, Any], priority: int) -> dict[str, Any]:
    """The composable template of ``<alias>-YYYY.MM`` indices: the base template's settings
    and mappings, the ILM policy, and membership of the alias (``put_index_template``)."""
    template = base_body["template"]
    settings = {**template.get("settings", {}), "index.lifecycle.name": policy_name(alias)}
    return {
        "index_patterns": [f"{alias}-2*"],
        "priority": priority,
        "_meta": {**base_body.get("_meta", {}), "monthly_of": alias},
        "template": {
            "settings": settings,
            "mappings": template["mappings"],
            "aliases": {alias: {}},
        },
    }


class MonthRouter:
    """The index of a document: ``<alias>-YYYY.MM`` of its ``field`` (an ISO 8601 string in
    UTC, as the documents hold it)."""

    __slots__ = ("alias", "field")

    def __init__(self, alias: str, field: str) -> None:
        self.alias = alias
        self.field = field

    def index_of(self, doc: dict[str, Any]) -> str:
        when = doc[self.field]
        if type(when) is not str or len(when) < 7 or when[4] != "-":
            raise ValueError(f"{self.field} must be an ISO 8601 time, got {type(when).__name__}")
        return f"{self.alias}-{when[:4]}.{when[5:7]}"

    def is_monthly(self, index: str) -> bool:
        """Is ``index`` one of this alias's monthly indices (not ``-v1``, not another's)?"""
        tail = index[len(self.alias) + 1 :]
        return (
            index.startswith(self.alias + "-")
            and len(tail) == 7
            and tail[4] == "."
            and tail.replace(".", "").isdigit()
        )
