"""Every path to a score gives the same answer: cold, warm memory cache, warm
Redis cache, and model batches of 1 and 64 pairs, with the real cross-encoder on
real Cranfield queries and their BM25 top-64 documents, and on the project's demo
corpus.
"""

from __future__ import annotations

import pytest
from conftest import require_collection

from rerank_plugins import MemoryCache, Reranker, Status
from rerank_plugins.cache.redis import RedisCache
from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

TOLERANCE = 1e-6
QUERIES = 2
DEPTH = 64
SECRET = "differential-test"


@pytest.fixture(scope="module", params=["demo", "cranfield"])
def requests(request):
    """Real Cranfield queries with their BM25 top-64, and the shipped demo corpus
    (each question against up to 64 of its BM25 candidates: all it has), so a fresh
    clone runs the check too."""
    from rerank_ops.collections import load_collection

    if request.param == "demo":
        collection = load_collection(request.getfixturevalue("demo_collection"))
        chosen = sorted(collection.run)[:QUERIES]
    else:
        collection = load_collection(require_collection("cranfield"))
        chosen = sorted(collection.run, key=int)[:QUERIES]
    out = []
    for qid in chosen:
        docs = [{"id": doc_id, "text": collection.doc_text(doc_id), "score": score}
                for doc_id, score in collection.run[qid][:DEPTH]]
        out.append((collection.queries[qid], docs))
    assert len(out) == QUERIES
    if request.param == "cranfield":
        assert all(len(d) == DEPTH for _, d in out)
    else:
        assert all(len(d) >= 5 for _, d in out)  # BM25 keeps only matching documents
    return out


def run(reranker: Reranker, requests, expect: Status) -> list[list[tuple[str, float, float]]]:
    answers = []
    for query, docs in requests:
        result = reranker.rerank(query, docs)
        assert result.status is expect, (result.status, result.fallback_reason)
        answers.append([(item.id, item.raw_score, item.relevance_score) for item in result])
    return answers


def assert_same(reference, other, label: str) -> float:
    worst = 0.0
    for ref, got in zip(reference, other, strict=True):
        assert [i for i, _, _ in got] == [i for i, _, _ in ref], f"{label}: order differs"
        for (_, raw_a, rel_a), (_, raw_b, rel_b) in zip(ref, got, strict=True):
            worst = max(worst, abs(raw_a - raw_b), abs(rel_a - rel_b))
    assert worst <= TOLERANCE, f"{label}: scores differ by {worst:.2e}"
    return worst


def test_cold_warm_memory_warm_redis_and_batch_sizes_agree(
        ce_folder, requests, redis_db, record_property):
    batch64 = CrossEncoderScorer(ce_folder, dtype="float32", max_batch_size=64)
    batch1 = CrossEncoderScorer(ce_folder, dtype="float32", max_batch_size=1)
    assert batch64.cache_namespace == batch1.cache_namespace

    cold = Reranker(batch64, cache=None, timeout_s=None)
    reference = run(cold, requests, Status.OK)

    memory = Reranker(batch64, cache=MemoryCache(), timeout_s=None, secret=SECRET)
    run(memory, requests, Status.OK)  # fills the cache
    warm_memory = run(memory, requests, Status.CACHE)

    redis_cache = RedisCache(url=redis_db.url, secret=SECRET)
    writer = Reranker(batch64, cache=redis_cache, timeout_s=None, secret=SECRET)
    run(writer, requests, Status.OK)
    redis_cache.flush(10)
    # a second process sharing the cache: fresh client, fresh Reranker
    reader_cache = RedisCache(url=redis_db.url, secret=SECRET)
    reader = Reranker(batch1, cache=reader_cache, timeout_s=None, secret=SECRET)
    warm_redis = run(reader, requests, Status.CACHE)

    one_by_one = Reranker(batch1, cache=None, timeout_s=None)
    batch_of_1 = run(one_by_one, requests, Status.OK)

    diffs = {
        "warm_memory": assert_same(reference, warm_memory, "warm memory cache"),
        "warm_redis": assert_same(reference, warm_redis, "warm Redis cache"),
        "batch_1_vs_64": assert_same(reference, batch_of_1, "batch size 1"),
    }
    for name, diff in diffs.items():
        record_property(f"max_abs_diff_{name}", f"{diff:.2e}")
    # the caches hand back exactly what was stored (JSON round-trips a float exactly)
    assert diffs["warm_memory"] == 0.0 and diffs["warm_redis"] == 0.0
    for reranker in (cold, memory, writer, reader, one_by_one):
        reranker.close()
    redis_cache.close()
    reader_cache.close()
