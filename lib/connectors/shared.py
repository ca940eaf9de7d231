"""One resource per sink and process, shared by the workers' partitions of the sink.

Bytewax's workers are threads of one process and each builds its own partitions (or step
logics); a client, a background writer or a scanning consumer is made once per process and
closed when the last partition that uses it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Shared"]

T = TypeVar("T")


class Shared(Generic[T]):
    """A ``T`` made by the first :meth:`acquire` (``make()``), closed (``close(value)``) by the
    :meth:`release` that ends the last use; the next :meth:`acquire` makes a new one."""

    __slots__ = ("_close", "_lock", "_make", "_users", "_value")

    def __init__(self, make: Callable[[], T], close: Callable[[T], None]) -> None:
        self._make = make
        self._close = close
        self._lock = threading.Lock()
        self._value: T | None = None
        self._users = 0

    def acquire(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            self._users += 1
            return self._value

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            value = self._value
            if self._users or value is None:
                return
            self._value = None
        self._close(value)  # outside the lock: closing may wait (a writer's last round)
