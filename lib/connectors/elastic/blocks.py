"""Write blocks: Elasticsearch refuses writes until an operator lifts a block.

A ``cluster_block_exception`` names the blocks in force (``index.blocks.write``,
``index.blocks.read_only``, or the flood-stage disk watermark's
``index.blocks.read_only_allow_delete``), with HTTP 403 or 429, for a whole request or for
single items. :func:`write_block` recognises them; the bulk core retries such actions like an
outage, whatever the status, and :class:`BlockNotice` logs one ``es_write_blocked`` line at
most every :data:`BLOCK_LOG_EVERY_S` seconds (naming the blocked index, the block and the
fix) instead of one line per retry, then one ``es_write_unblocked`` line once writes go
through.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BLOCK_LOG_EVERY_S", "BlockNotice", "WriteBlock", "is_cluster_block", "write_block"]

logger = logging.getLogger("lib.connectors.elastic")  # one logger for the whole package

# A write block is reported once when first met, then at most once per this many seconds.
BLOCK_LOG_EVERY_S = 60.0

# Elasticsearch's blocks that stop writes, by the id in a cluster_block_exception's reason
# ("index [bp-anomalies-v1] blocked by: [FORBIDDEN/8/index write (api)];"), and the setting
# that sets (and lifts) each. Other blocks (no master, index closed...) keep their status's
# meaning: 503 is retried, 403 is a permanent refusal.
_WRITE_BLOCKS = {
    5: "index.blocks.read_only",
    6: "cluster.blocks.read_only",
    8: "index.blocks.write",
    12: "index.blocks.read_only_allow_delete",  # set by the flood-stage disk watermark
    13: "cluster.blocks.read_only_allow_delete",
}
_BLOCK_IDS = re.compile(r"\b[A-Z_]+/(\d+)/")
_BLOCKED_INDEX = re.compile(r"^index \[([^\]\s]+)\] blocked by")
_FLOOD_STAGE = "index.blocks.read_only_allow_delete"


@dataclass(frozen=True, slots=True)
class WriteBlock:
    """Elasticsearch refuses writes until an operator lifts a block: what to log and retry."""

    index: str  # the blocked (concrete) index, "" for a cluster-wide block
    settings: tuple[str, ...]  # the block settings in force, e.g. ("index.blocks.write",)

    def fix(self) -> str:
        """What an operator does so that writes go through again."""
        body = ", ".join(f'"{name}": null' for name in self.settings)
        if self.index:
            put = f"PUT {self.index}/_settings {{{body}}}"
        else:
            put = f'PUT _cluster/settings {{"persistent": {{{body}}}}}'
        if _FLOOD_STAGE in self.settings:
            return (
                "free disk space on the Elasticsearch data nodes or raise "
                f"cluster.routing.allocation.disk.watermark.flood_stage, then {put}"
            )
        return put

    def __str__(self) -> str:
        where = f"index {self.index}" if self.index else "the cluster"
        return f"write block {'+'.join(self.settings)} on {where}: {self.fix()}"


def is_cluster_block(error: Any) -> bool:
    """Whether an Elasticsearch error is a ``cluster_block_exception`` (of any block)."""
    return isinstance(error, Mapping) and error.get("type") == "cluster_block_exception"


def write_block(error: Any) -> WriteBlock | None:
    """The write block an Elasticsearch error reports, or None if it reports none."""
    if not is_cluster_block(error):
        return None
    reason = str(error.get("reason", ""))
    ids = {int(found) for found in _BLOCK_IDS.findall(reason)}
    settings = tuple(name for block, name in sorted(_WRITE_BLOCKS.items()) if block in ids)
    if not settings:
        return None
    named = _BLOCKED_INDEX.match(reason)
    return WriteBlock(named.group(1) if named else "", settings)


class BlockNotice:
    """Logs a write block when first met and then at most once per ``every_s`` of ``clock``
    (not once per retry), and its end; one per writer, so the line is one per index."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, every_s: float = BLOCK_LOG_EVERY_S
    ) -> None:
        self._clock = clock
        self._every_s = every_s
        self._since: float | None = None  # when the current block was first met
        self._logged_at = 0.0

    def blocked(self, index: str, block: WriteBlock, pending: int) -> None:
        now = self._clock()
        if self._since is not None and now - self._logged_at < self._every_s:
            return
        if self._since is None:
            self._since = now
        self._logged_at = now
        logger.warning(
            "es_write_blocked index=%s blocked_index=%s block=%s pending=%d blocked_for=%.0fs: "
            "Elasticsearch refuses writes; the documents wait and are retried, none is "
            "dropped. Fix: %s",
            index,
            block.index or "_cluster",
            "+".join(block.settings),
            pending,
            now - self._since,
            block.fix(),
        )

    def clear(self, index: str) -> None:
        """Every action of a request was acknowledged: log the end of a block if one lasted."""
        if self._since is None:
            return
        logger.warning(
            "es_write_unblocked index=%s blocked_for=%.0fs", index, self._clock() - self._since
        )
        self._since = None
