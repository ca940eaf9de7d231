"""The monitor's hot-path helpers give exactly what the plain forms give."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from lib.domain import FEATURE_NAMES, Features, utc_iso
from lib.monitor import documents


def test_iso_ms_equals_utc_iso_on_random_instants() -> None:
    rng = random.Random(7)
    zones = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    base = datetime(1, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        dt = base + timedelta(microseconds=rng.randrange(0, 9998 * 365 * 86400 * 10**6))
        if rng.random() < 0.2:
            dt = dt.replace(microsecond=rng.choice([0, 999, 1000, 999_999]))
        if rng.random() < 0.2 and dt.year > 1 and dt.year < 9999:
            dt = dt.astimezone(rng.choice(zones))
        assert documents.iso_ms(dt) == utc_iso(dt), dt


def test_iso_ms_prefix_cache_is_bounded_and_does_not_change_results() -> None:
    start = datetime(2025, 3, 3, tzinfo=UTC)
    n = documents._ISO_PREFIXES_MAX + 10
    for i in range(n):
        dt = start + timedelta(minutes=i, seconds=i % 60, milliseconds=i % 1000)
        assert documents.iso_ms(dt) == utc_iso(dt)
        assert len(documents._ISO_PREFIXES) <= documents._ISO_PREFIXES_MAX


def test_features_doc_has_the_feature_names_in_order() -> None:
    values = [1.5 * (i + 1) for i in range(len(FEATURE_NAMES))]
    f = Features(*values)
    doc = f.as_dict()
    assert list(doc) == list(FEATURE_NAMES)
    assert list(doc.values()) == values
