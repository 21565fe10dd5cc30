"""Values planted in the shared Redis are never executed or trusted.

Against the real redis-server and the real keys the reranker uses, we plant a
pickle whose ``__reduce__`` would create a marker file, a value whose score was
edited (valid JSON, stale HMAC), a valid value replayed under another pair's key
and a value signed with the wrong secret. Each must count as a miss, be re-scored
by the model, and be overwritten with a good value. Nothing here ever unpickles:
the pickle is only built and inspected with ``pickletools`` (a disassembler).
"""

from __future__ import annotations

import json
import pickle
import pickletools
import zlib

import pytest
from conftest import counter_value

from rerank_plugins import Reranker, Status
from rerank_plugins.cache.base import pair_key
from rerank_plugins.cache.redis import RedisCache
from rerank_plugins.privacy import Fingerprinter
from rerank_plugins.scoring.base import ScoreOutput
from rerank_plugins.telemetry import contract as c

SECRET = "hostile-cache-operator-secret"
QUERY = "how does a wing produce lift"
DOCS = [f"passage {i}: airfoil pressure and lift, variant {i}" for i in range(8)]


class CountingScorer:
    """Cheap deterministic scorer (crc32) that records every text it scores."""

    model_id = "crc"
    revision = "1"
    cache_namespace = "crc-hostile-v1"
    activation = "sigmoid"

    def __init__(self) -> None:
        self.scored: list[str] = []

    def describe(self) -> dict[str, str]:
        return {"model": self.model_id, "revision": self.revision}

    def score_many(self, requests):
        outputs = []
        for request in requests:
            self.scored.extend(request.texts)
            outputs.append(ScoreOutput(
                [(zlib.crc32(t.encode()) % 1000) / 100 - 5 for t in request.texts]))
        return outputs


class MarkerGadget:
    """Unpickling this would open (create) the marker file: the classic RCE gadget."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def setup(redis_db):
    scorer = CountingScorer()
    cache = RedisCache(url=redis_db.url, secret=SECRET)
    reranker = Reranker(scorer, cache=cache, secret=SECRET, timeout_s=5)
    yield scorer, cache, reranker, redis_db.client(), redis_db.url
    reranker.close()
    cache.close()


def redis_key(cache: RedisCache, scorer, doc: str) -> str:
    fp = Fingerprinter(SECRET)
    return cache.prefix + pair_key(scorer.cache_namespace, fp.fingerprint(QUERY),
                                   fp.fingerprint(doc))


def test_planted_pickle_and_tampered_values_are_misses_and_rescored(setup, tmp_path):
    scorer, cache, reranker, admin, url = setup
    first = reranker.rerank(QUERY, DOCS)
    cache.flush(5)
    assert first.status is Status.OK
    truth = {item.id: item.raw_score for item in first}
    keys = [redis_key(cache, scorer, doc) for doc in DOCS]
    stored = [admin.get(k) for k in keys]
    assert all(stored), "the reranker's real keys hold the values it wrote"
    body = json.loads(stored[0])
    assert set(body) == {"v", "s", "h"} and body["v"] == 1

    marker = tmp_path / "pwned"
    payload = pickle.dumps(MarkerGadget(str(marker)))
    opcodes = {op.name for op, _, _ in pickletools.genops(payload)}
    assert "REDUCE" in opcodes and str(marker).encode() in payload  # a real gadget
    admin.set(keys[0], payload)

    tampered = json.loads(stored[1])
    tampered["s"] = 99.0  # valid JSON, valid schema, signature no longer matches
    admin.set(keys[1], json.dumps(tampered))

    admin.set(keys[3], stored[2])  # a genuine value replayed under another pair's key

    forged = RedisCache(url=url, secret="attacker-guess")
    admin.set(keys[4], forged._encode(keys[4][len(cache.prefix):], 42.0))
    forged.close()

    bad_before = counter_value(c.CACHE_ERRORS.name, backend="redis", operation="get",
                               cause="bad_value")
    scorer.scored.clear()
    second = reranker.rerank(QUERY, DOCS)
    bad_after = counter_value(c.CACHE_ERRORS.name, backend="redis", operation="get",
                              cause="bad_value")

    assert not marker.exists(), "the pickle was executed"
    assert second.status is Status.OK  # the model had to run again
    assert second.cache_hits == len(DOCS) - 4 and second.cache_misses == 4
    assert sorted(scorer.scored) == sorted([DOCS[0], DOCS[1], DOCS[3], DOCS[4]])
    assert {item.id: item.raw_score for item in second} == truth  # no planted score used
    assert bad_after - bad_before == 4

    cache.flush(5)  # the re-scored pairs were written back, signed
    for index in (0, 1, 3, 4):
        assert json.loads(admin.get(keys[index]))["s"] == truth[str(index)]
    scorer.scored.clear()
    third = reranker.rerank(QUERY, DOCS)
    assert third.status is Status.CACHE and scorer.scored == []
    assert not marker.exists()


@pytest.mark.parametrize("raw", [
    b"\x80\x04\x95", b"", b"null", b"[]", b'{"v":1}', b'{"v":true,"s":1.0,"h":"00"}',
    b'{"v":1,"s":"1.0","h":"00"}', b'{"v":1,"s":1e999,"h":"00"}', b'{"v":1,"s":NaN,"h":"0"}',
    b'{"v":1,"s":' + b"9" * 400 + b',"h":"00"}', b"[" * 100_000, b'{"v":2,"s":1.0,"h":"00"}',
    b'{"v":1,"s":1.0,"h":"00","x":1}', "é".encode("latin-1"),
])
def test_decode_rejects_malformed_values_without_raising(redis_db, raw):
    cache = RedisCache(url=redis_db.url, secret=SECRET)
    assert cache._decode("some-key", raw) is None
    good = cache._encode("some-key", 0.25)
    assert cache._decode("some-key", good) == 0.25
    assert cache._decode("other-key", good) is None  # values are bound to their key
    cache.close()
