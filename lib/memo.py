"""The one way bpwatch bounds its hot-path caches.

A cache here is a plain ``dict`` read with ``cache.get(key)`` on the hot path (no call) and
filled with :func:`remember` on a miss: when it holds ``limit`` entries it is emptied first.
Every such cache keeps the results of a pure function, so its contents never change a result,
only how fast it comes: emptying it costs a few recomputations, and memory stays bounded
however many distinct keys (patients, days, devices) pass. Where the key is the function's
arguments and a call per lookup is affordable, ``functools.lru_cache`` is used instead.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store ``value`` under ``key``, emptying ``cache`` first when it holds ``limit`` entries;
    returns ``value``."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value
