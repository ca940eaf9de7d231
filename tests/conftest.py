"""Shared test configuration.

Three tiers, by folder: tests/unit (pure functions), tests/dataflow (Bytewax flows with
TestingSource/TestingSink), tests/integration (the real local Kafka and Elasticsearch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
