"""Bounded in-process LRU cache with TTL, entry cap and byte cap."""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from ..errors import ConfigurationError

# Approximate bytes one entry holds: key string + float + tuple + dict slot.
_ENTRY_OVERHEAD = 120


class MemoryCache:
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
        if max_entries < 1 or max_bytes < 1:
            raise ConfigurationError("max_entries and max_bytes must be >= 1")
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigurationError("ttl_s must be > 0 or None")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _entry_bytes(key: str) -> int:
        return sys.getsizeof(key) + _ENTRY_OVERHEAD

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: Iterable[str]) -> dict[str, float]:
        found: dict[str, float] = {}
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

    def set_many(self, items: Mapping[str, float]) -> None:
        expires = (self._clock() + self.ttl_s) if self.ttl_s else 0.0
        with self._lock:
            for key, value in items.items():
                if key in self._data:
                    self._data.move_to_end(key)
                else:
                    self._bytes += self._entry_bytes(key)
                self._data[key] = (float(value), expires)
            while self._data and (
                len(self._data) > self.max_entries or self._bytes > self.max_bytes
            ):
                old_key, _ = self._data.popitem(last=False)
                self._bytes -= self._entry_bytes(old_key)

    def _remove(self, key: str) -> None:
        if self._data.pop(key, None) is not None:
            self._bytes -= self._entry_bytes(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0
