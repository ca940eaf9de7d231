"""Logging set-up of the entry points (``BPWATCH_LOG_LEVEL``); library code only logs."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str) -> None:
    """Log lines at ``level`` and above on stderr, unless the host already set up logging
    (a test runner, an embedding program): then only the level of bpwatch's loggers is set.
    ``elastic_transport`` logs one line per request at INFO: it is kept at WARNING or above."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=FORMAT)
    else:
        root.setLevel(level)
    transport = logging.getLogger("elastic_transport")
    transport.setLevel(max(logging.WARNING, logging.getLevelName(level)))
