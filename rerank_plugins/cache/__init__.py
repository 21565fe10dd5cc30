"""Pair-score caches: in-memory LRU and shared Redis."""

from .base import PairCache, pair_key
from .memory import MemoryCache

__all__ = ["MemoryCache", "PairCache", "RedisCache", "pair_key"]


def __getattr__(name: str):
    if name == "RedisCache":  # redis-py is an optional extra
        from .redis import RedisCache

        return RedisCache
    raise AttributeError(name)
