"""Pair-score cache units: key derivation, MemoryCache limits under concurrent use, and
bad cache settings. (Cache behaviour inside the pipeline — hits, partial hits, TTL,
Redis sharing — is in tests/test_reranker.py.)"""

from __future__ import annotations

import threading

import pytest

from rerank_plugins import ConfigurationError, MemoryCache
from rerank_plugins.cache.base import pair_key
from rerank_plugins.privacy import Fingerprinter


def test_pair_keys_depend_on_every_part_and_hide_the_text():
    fp = Fingerprinter("secret")
    query, doc = fp.fingerprint("salary of alice"), fp.fingerprint("alice earns 90k")
    key = pair_key("bi|model|rev1|len=256|dtype=float32", query, doc)
    assert len(key) == 64 and "alice" not in key
    assert key == pair_key("bi|model|rev1|len=256|dtype=float32", query, doc)
    assert key != pair_key("bi|model|rev2|len=256|dtype=float32", query, doc)  # revision
    assert key != pair_key("bi|model|rev1|len=128|dtype=float32", query, doc)  # settings
    assert key != pair_key("bi|model|rev1|len=256|dtype=float32", doc, query)  # order
    other = Fingerprinter("another secret")
    assert other.fingerprint("salary of alice") != query  # keyed: guesses need the secret


def test_memory_cache_stays_within_its_caps_under_concurrent_writers():
    cache = MemoryCache(max_entries=500, ttl_s=None)
    errors: list[BaseException] = []

    def writer(thread_index: int) -> None:
        try:
            for batch in range(50):
                keys = [f"{thread_index}-{batch}-{i}" for i in range(20)]
                cache.set_many({k: float(i) for i, k in enumerate(keys)})
                found = cache.get_many(keys)
                assert all(found[k] == float(keys.index(k)) for k in found)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(cache) == 500
    probe = MemoryCache()
    probe.set_many({"7-49-19": 0.0})
    assert cache.bytes_used == pytest.approx(500 * probe.bytes_used, rel=0.05)


def test_memory_cache_without_ttl_never_expires():
    now = [0.0]
    cache = MemoryCache(ttl_s=None, clock=lambda: now[0])
    cache.set_many({"k": 0.25})
    now[0] = 10.0 ** 9
    assert cache.get_many(["k"]) == {"k": 0.25}


def test_expired_entries_free_their_bytes():
    now = [0.0]
    cache = MemoryCache(ttl_s=5.0, clock=lambda: now[0])
    cache.set_many({"a": 1.0, "b": 2.0})
    used = cache.bytes_used
    now[0] = 5.0
    assert cache.get_many(["a"]) == {}
    assert len(cache) == 1 and cache.bytes_used == used // 2


def test_overwriting_a_key_does_not_grow_the_cache():
    cache = MemoryCache()
    cache.set_many({"k": 1.0})
    used = cache.bytes_used
    cache.set_many({"k": 2.0})
    assert (len(cache), cache.bytes_used, cache.get_many(["k"])) == (1, used, {"k": 2.0})


@pytest.mark.parametrize(("options", "message"), [
    ({"max_entries": 0}, "max_entries and max_bytes must be >= 1"),
    ({"max_bytes": 0}, "max_entries and max_bytes must be >= 1"),
    ({"ttl_s": 0}, "ttl_s must be > 0 or None"),
    ({"ttl_s": -1.0}, "ttl_s must be > 0 or None"),
])
def test_bad_memory_cache_settings_are_configuration_errors(options, message):
    with pytest.raises(ConfigurationError, match=message):
        MemoryCache(**options)
