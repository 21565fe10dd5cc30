"""Bounded in-process LRU with TTL, entry cap and byte cap, and the pair cache on it."""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..errors import ConfigurationError

# Approximate bytes one pair-cache entry holds: key string + float + tuple + dict slot.
_ENTRY_OVERHEAD = 120


class BoundedLRU:
    """Thread-safe LRU of opaque values under an entry cap, a byte cap and a TTL.

    The store under both in-process caches (pair scores and document embeddings).
    An entry's size is ``sys.getsizeof(key) + value_bytes(value) + overhead``; the
    least recently used entries go first when either cap is passed, and an expired
    entry is removed when it is next read.

    Args:
        max_entries: Entries kept (>= 1).
        max_bytes: Approximate memory cap (>= 1).
        ttl_s: Seconds an entry lives; ``None`` for no expiry.
        value_bytes: Size of one value in bytes beyond ``overhead``.
        overhead: Bytes per entry for the key's slot, tuple and bookkeeping.
        clock: Monotonic clock (injectable for tests).
    """

    def __init__(self, *, max_entries: int, max_bytes: int, ttl_s: float | None,
                 value_bytes: Callable[[Any], int] = lambda value: 0,
                 overhead: int = _ENTRY_OVERHEAD, clock=time.monotonic) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ConfigurationError("max_entries and max_bytes must be >= 1")
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigurationError("ttl_s must be > 0 or None")
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._value_bytes, self._overhead, self._clock = value_bytes, overhead, clock
        self._data: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Iterator[str]:
        """A snapshot of the keys held, least recently used first."""
        with self._lock:
            return iter(list(self._data))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        now = self._clock()
        with self._lock:
            for key in keys:
                entry = self._data.get(key)
                if entry is None:
                    continue
                value, expires = entry
                if expires and now >= expires:
                    self._remove(key)
                    continue
                self._data.move_to_end(key)
                found[key] = value
        return found

    def set_many(self, items: Mapping[str, Any]) -> None:
        expires = (self._clock() + self.ttl_s) if self.ttl_s else 0.0
        with self._lock:
            for key, value in items.items():
                if key in self._data:
                    self._remove(key)
                self._data[key] = (value, expires)
                self._bytes += self._entry_bytes(key, value)
            while self._data and (len(self._data) > self.max_entries
                                  or self._bytes > self.max_bytes):
                self._remove(next(iter(self._data)))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def _entry_bytes(self, key: str, value: Any) -> int:
        return sys.getsizeof(key) + self._value_bytes(value) + self._overhead

    def _remove(self, key: str) -> None:
        value, _ = self._data.pop(key)
        self._bytes -= self._entry_bytes(key, value)


class MemoryCache(BoundedLRU):
    """Thread-safe LRU of pair scores.

    Args:
        max_entries: Entries kept. Defaults to 100,000.
        max_bytes: Approximate memory cap. Defaults to 64 MiB.
        ttl_s: Seconds an entry lives; ``None`` for no expiry. Defaults to 1 day.
        clock: Monotonic clock (injectable for tests).
    """

    backend = "memory"

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        ttl_s: float | None = 86_400.0,
        clock=time.monotonic,
    ) -> None:
        super().__init__(max_entries=max_entries, max_bytes=max_bytes, ttl_s=ttl_s,
                         clock=clock)

    def set_many(self, items: Mapping[str, float]) -> None:
        super().set_many({key: float(value) for key, value in items.items()})
