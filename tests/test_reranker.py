"""The core promises of ``Reranker`` on the real embedded model (all-MiniLM-L6-v2).

Ordering, top_n, threshold, min_keep, relative cutoff, policies, shadow mode,
calibration files, the memory and Redis pair caches, async parity and concurrent use.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence

import pytest

from rerank_plugins import (
    Calibration,
    Candidate,
    ConfigurationError,
    MemoryCache,
    RedisCache,
    Reranker,
    Status,
    block_if,
    boost_if,
)
from rerank_plugins.scoring.base import ScoreOutput, ScoreRequest
from rerank_plugins.selection import activate, sigmoid

QUERY = "how do aircraft wings produce lift"
DOCS = {
    "wing": "An aircraft wing is an airfoil: air flows faster over its curved upper "
            "surface, lowering pressure there, which lifts the plane.",
    "flaps": "Pilots extend the flaps on a wing during landing to produce more lift at "
             "low airspeed.",
    "engine": "A jet engine compresses air, burns fuel and pushes exhaust backwards to "
              "produce thrust.",
    "bread": "Knead the dough for ten minutes, then let it rise until doubled in size.",
    "cat": "Cats sleep for most of the day and are most active at dawn and dusk.",
    "tax": "The tax return is due on the last day of April; late filing incurs a fine.",
}


def candidates(ids: Sequence[str] = tuple(DOCS), **metadata_by_id) -> list[Candidate]:
    return [Candidate(id=i, text=DOCS[i], retrieval_score=float(len(ids) - n),
                      metadata=metadata_by_id.get(i, {})) for n, i in enumerate(ids)]


class CountingScorer:
    """The real scorer, plus a record of every text it was asked to score.

    Wraps rather than replaces the model, so the scores stay real; the record is
    how a test sees which pairs a cache let through to the model.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.calls = 0
        self._lock = threading.Lock()

    model_id = property(lambda self: self.inner.model_id)
    revision = property(lambda self: self.inner.revision)
    cache_namespace = property(lambda self: self.inner.cache_namespace)
    activation = property(lambda self: self.inner.activation)

    def describe(self) -> dict[str, str]:
        return self.inner.describe()

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        with self._lock:
            self.calls += 1
            self.texts.extend(t for r in requests for t in r.texts)
        return self.inner.score_many(requests)


@pytest.fixture
def make_reranker(bi_scorer):
    """Builds rerankers on the session model and closes them after the test."""
    built: list[Reranker] = []

    def make(scorer=None, **options) -> Reranker:
        options.setdefault("timeout_s", 60)  # correctness tests: no timeouts on a busy box
        # these pin the model's own order (default "auto" fuses); fusion has its own tests
        options.setdefault("fusion", "none")
        reranker = Reranker(scorer or bi_scorer, **options)
        built.append(reranker)
        return reranker

    yield make
    for reranker in built:
        reranker.close()


def direct_scores(scorer, query: str, ids: Sequence[str]) -> dict[str, float]:
    [out] = scorer.score_many([ScoreRequest(query, [DOCS[i] for i in ids])])
    return dict(zip(ids, out.scores, strict=True))


# -- ordering -------------------------------------------------------------------
def test_results_are_ordered_by_model_score_and_put_the_relevant_text_first(make_reranker,
                                                                            bi_scorer):
    reranker = make_reranker(cache=None)
    shuffled = ["tax", "cat", "engine", "bread", "flaps", "wing"]
    result = reranker.rerank(QUERY, candidates(shuffled))
    assert result.status is Status.OK
    assert result.ids[0] in ("wing", "flaps")
    assert set(result.ids[:2]) == {"wing", "flaps"}
    assert set(result.ids[-3:]) == {"bread", "cat", "tax"}
    scores = [item.relevance_score for item in result]
    assert scores == sorted(scores, reverse=True)
    raw = direct_scores(bi_scorer, QUERY, shuffled)
    for item in result:
        assert item.raw_score == pytest.approx(raw[item.id], abs=1e-5)
        assert item.model_score == pytest.approx(activate(item.raw_score, "cosine"))
        assert item.relevance_score == item.model_score  # no fusion: the order follows it
        assert item.retrieval_rank == shuffled.index(item.id)
        assert item.retrieval_score == 6.0 - item.retrieval_rank
    assert result.dropped == ()


def test_plain_strings_and_dicts_are_accepted_as_candidates(make_reranker):
    reranker = make_reranker(cache=None)
    by_str = reranker.rerank(QUERY, [DOCS["cat"], DOCS["wing"]])
    assert by_str.ids == ["1", "0"]  # position is the id of a plain string
    by_dict = reranker.rerank(QUERY, [{"id": "c", "text": DOCS["cat"], "score": 3},
                                      {"id": "w", "text": DOCS["wing"], "score": 1}])
    assert by_dict.ids == ["w", "c"]
    assert by_dict[1].retrieval_score == 3.0


# -- top_n, threshold, min_keep, relative cutoff -----------------------------------
def test_top_n_keeps_the_best_and_lists_the_rest_as_dropped(make_reranker):
    reranker = make_reranker(top_n=2)
    full = make_reranker().rerank(QUERY, candidates())
    result = reranker.rerank(QUERY, candidates())
    assert result.ids == full.ids[:2]
    assert [d.id for d in result.dropped] == full.ids[2:]
    assert reranker.rerank(QUERY, candidates(), top_n=4).ids == full.ids[:4]  # per call
    assert reranker.rerank(QUERY, candidates(), top_n=100).ids == full.ids


def test_threshold_drops_low_scores_but_min_keep_keeps_the_best(make_reranker):
    full = make_reranker().rerank(QUERY, candidates())
    scores = [item.model_score for item in full]
    # a threshold between the 2nd and 3rd score keeps exactly two
    cut = (scores[1] + scores[2]) / 2
    result = make_reranker(threshold=cut).rerank(QUERY, candidates())
    assert result.ids == full.ids[:2]
    assert all(item.model_score >= cut for item in result)
    assert all(item.model_score < cut for item in result.dropped)
    # nothing passes 0.999: min_keep=1 (the default) still answers with the best one
    strict = make_reranker(threshold=0.999).rerank(QUERY, candidates())
    assert strict.ids == full.ids[:1]
    assert len(strict.dropped) == len(DOCS) - 1
    assert make_reranker(threshold=0.999, min_keep=3).rerank(QUERY, candidates()).ids == \
        full.ids[:3]
    # only min_keep=0 allows an empty answer
    empty = make_reranker(threshold=0.999, min_keep=0).rerank(QUERY, candidates())
    assert empty.ids == []
    assert [d.id for d in empty.dropped] == full.ids


def test_relative_cutoff_keeps_only_results_close_to_the_best(make_reranker):
    full = make_reranker().rerank(QUERY, candidates())
    best = full[0].relevance_score
    gap = best - full[2].relevance_score
    result = make_reranker(relative_cutoff=gap - 1e-6).rerank(QUERY, candidates())
    assert result.ids == full.ids[:2]
    assert all(best - item.relevance_score <= gap for item in result)
    assert make_reranker(relative_cutoff=1.0).rerank(QUERY, candidates()).ids == full.ids


# -- policies -------------------------------------------------------------------
def test_block_policy_removes_matching_candidates_into_dropped(make_reranker):
    reranker = make_reranker(policies=[block_if(lambda meta: meta.get("embargoed", False))])
    result = reranker.rerank(QUERY, candidates(wing={"embargoed": True}))
    assert "wing" not in result.ids
    assert result.ids[0] == "flaps"
    blocked = [d for d in result.dropped if d.id == "wing"]
    assert len(blocked) == 1
    assert blocked[0].relevance_score is None  # blocked: no score to order by
    assert blocked[0].model_score is not None  # but the model did score it


def test_boost_policy_lifts_a_matching_candidate_to_the_top(make_reranker):
    reranker = make_reranker(policies=[boost_if(lambda meta: meta.get("promoted"), 0.5)])
    result = reranker.rerank(QUERY, candidates(tax={"promoted": True}))
    assert result.ids[0] == "tax"
    assert result[0].relevance_score == pytest.approx(min(1.0, result[0].model_score + 0.5))
    assert result[0].model_score < result[1].model_score  # the model still disagrees


# -- shadow mode ------------------------------------------------------------------
def test_shadow_mode_scores_but_returns_the_retrieval_order(make_reranker):
    order = ["tax", "cat", "wing", "bread", "flaps", "engine"]
    shadow = make_reranker(shadow=True, top_n=4).rerank(QUERY, candidates(order))
    assert shadow.status is Status.SHADOW
    assert shadow.ids == order[:4]
    assert [d.id for d in shadow.dropped] == order[4:]
    assert all(item.model_score is not None for item in shadow)
    live = make_reranker(cache=None).rerank(QUERY, candidates(order))
    live_scores = {item.id: item.model_score for item in live}
    for item in shadow:
        assert item.model_score == pytest.approx(live_scores[item.id], abs=1e-6)


# -- calibration ----------------------------------------------------------------------
def test_calibration_file_is_loaded_and_applied_to_raw_scores(make_reranker, tmp_path):
    path = tmp_path / "calibration.json"
    Calibration("platt", a=8.0, b=-4.0, model_id="all-MiniLM-L6-v2").dump(path)
    reranker = make_reranker(calibration=str(path), cache=None)
    assert reranker.calibration == Calibration.load(path)
    result = reranker.rerank(QUERY, candidates())
    for item in result:
        assert item.model_score == pytest.approx(sigmoid(8.0 * item.raw_score - 4.0))
    plain = make_reranker(cache=None).rerank(QUERY, candidates())
    assert result.ids == plain.ids  # a monotone calibration never reorders
    Calibration("temperature", temperature=0.1).dump(path)
    hot = make_reranker(calibration=path, cache=None).rerank(QUERY, candidates())
    assert hot[0].model_score == pytest.approx(sigmoid(hot[0].raw_score / 0.1))


def test_unreadable_calibration_file_is_a_configuration_error(make_reranker, tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read calibration file"):
        make_reranker(calibration=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"params": {}}', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="no 'method'"):
        make_reranker(calibration=bad)


# -- memory cache -----------------------------------------------------------------------
def test_repeat_request_is_served_from_the_memory_cache(make_reranker, bi_scorer):
    counting = CountingScorer(bi_scorer)
    reranker = make_reranker(counting)
    first = reranker.rerank(QUERY, candidates())
    second = reranker.rerank(QUERY, candidates())
    assert (first.status, first.cache_hits, first.cache_misses) == (Status.OK, 0, 6)
    assert (second.status, second.cache_hits, second.cache_misses) == (Status.CACHE, 6, 0)
    assert counting.calls == 1
    assert second.ids == first.ids
    assert [i.raw_score for i in second] == [i.raw_score for i in first]


def test_partial_hit_scores_only_the_missing_pairs(make_reranker, bi_scorer):
    counting = CountingScorer(bi_scorer)
    reranker = make_reranker(counting)
    reranker.rerank(QUERY, candidates(["wing", "cat", "tax"]))
    counting.texts.clear()
    result = reranker.rerank(QUERY, candidates(["tax", "engine", "wing", "bread", "cat"]))
    assert sorted(counting.texts) == sorted([DOCS["engine"], DOCS["bread"]])
    assert (result.status, result.cache_hits, result.cache_misses) == (Status.OK, 3, 2)
    fresh = make_reranker(cache=None).rerank(QUERY, candidates(
        ["tax", "engine", "wing", "bread", "cat"]))
    assert result.ids == fresh.ids
    for mixed, clean in zip(result, fresh, strict=True):
        assert mixed.raw_score == pytest.approx(clean.raw_score, abs=1e-5)
    # the same text under another query is a different pair: scored again
    counting.texts.clear()
    reranker.rerank("feline sleeping habits", candidates(["cat"]))
    assert counting.texts == [DOCS["cat"]]


def test_memory_cache_entries_expire_after_the_ttl(make_reranker, bi_scorer):
    now = [1000.0]
    cache = MemoryCache(ttl_s=60.0, clock=lambda: now[0])
    counting = CountingScorer(bi_scorer)
    reranker = make_reranker(counting, cache=cache)
    reranker.rerank(QUERY, candidates(["wing", "cat"]))
    now[0] += 59.0
    assert reranker.rerank(QUERY, candidates(["wing", "cat"])).status is Status.CACHE
    now[0] += 1.0  # exactly ttl after the write: expired
    expired = reranker.rerank(QUERY, candidates(["wing", "cat"]))
    assert (expired.status, expired.cache_misses) == (Status.OK, 2)
    assert counting.calls == 2


def test_memory_cache_entry_cap_evicts_least_recently_used():
    cache = MemoryCache(max_entries=3, ttl_s=None)
    cache.set_many({"a": 1.0, "b": 2.0, "c": 3.0})
    assert cache.get_many(["a"]) == {"a": 1.0}  # a is now the most recently used
    cache.set_many({"d": 4.0})
    assert len(cache) == 3
    assert cache.get_many(["a", "b", "c", "d"]) == {"a": 1.0, "c": 3.0, "d": 4.0}


def test_memory_cache_byte_cap_bounds_memory():
    probe = MemoryCache()
    probe.set_many({"k" * 64: 0.0})
    per_entry = probe.bytes_used
    cache = MemoryCache(max_bytes=per_entry * 10, max_entries=1_000_000)
    cache.set_many({f"{i:064d}": float(i) for i in range(50)})
    assert len(cache) == 10
    assert cache.bytes_used <= per_entry * 10
    assert cache.get_many([f"{i:064d}" for i in range(50)]) == {
        f"{i:064d}": float(i) for i in range(40, 50)}
    cache.clear()
    assert (len(cache), cache.bytes_used) == (0, 0)


def test_reranker_with_a_tiny_cache_still_answers_correctly(make_reranker):
    reranker = make_reranker(cache=MemoryCache(max_entries=2))
    first = reranker.rerank(QUERY, candidates())
    second = reranker.rerank(QUERY, candidates())
    assert second.ids == first.ids
    assert (second.cache_hits, second.cache_misses) == (2, 4)


# -- redis cache --------------------------------------------------------------------------
def test_redis_cache_is_shared_between_rerankers_with_the_same_secret(make_reranker,
                                                                     bi_scorer, redis_db):
    secret = "test-operator-secret"
    writer_cache = RedisCache(redis_db.url, secret=secret, socket_timeout_s=1.0)
    writer = make_reranker(cache=writer_cache, secret=secret)
    first = writer.rerank(QUERY, candidates())
    writer_cache.flush()
    counting = CountingScorer(bi_scorer)
    reader = make_reranker(counting, cache=RedisCache(redis_db.url, secret=secret,
                                                      socket_timeout_s=1.0), secret=secret)
    second = reader.rerank(QUERY, candidates())
    assert first.status is Status.OK
    assert (second.status, second.cache_hits) == (Status.CACHE, 6)
    assert counting.calls == 0
    assert second.ids == first.ids
    assert [i.raw_score for i in second] == pytest.approx([i.raw_score for i in first])
    # a process with another secret derives other keys: no sharing, no error
    stranger = make_reranker(cache=RedisCache(redis_db.url, secret="other",
                                              socket_timeout_s=1.0), secret="other")
    assert stranger.rerank(QUERY, candidates()).status is Status.OK


def test_redis_keys_and_values_hold_no_text(make_reranker, redis_db):
    secret = "test-operator-secret"
    cache = RedisCache(redis_db.url, secret=secret, socket_timeout_s=1.0)
    make_reranker(cache=cache, secret=secret).rerank(QUERY, candidates())
    cache.flush()
    client = redis_db.client()
    keys = client.keys("*")
    assert len(keys) == len(DOCS)
    words = {w.lower() for text in [QUERY, *DOCS.values()] for w in text.split() if len(w) > 3}
    for key in keys:
        blob = (key + client.get(key)).decode().lower()
        assert key.startswith(b"rrp:")
        assert not [w for w in words if w in blob], blob
        assert 0 < client.ttl(key) <= 86_400
    client.close()


# -- async and concurrency ------------------------------------------------------------------
async def test_arerank_gives_the_same_result_as_rerank(make_reranker):
    sync = make_reranker(cache=None, top_n=4, threshold=0.55).rerank(QUERY, candidates())
    reranker = make_reranker(cache=None, top_n=4, threshold=0.55)
    result = await reranker.arerank(QUERY, candidates())
    assert result.status is sync.status
    assert result.ids == sync.ids
    assert [d.id for d in result.dropped] == [d.id for d in sync.dropped]
    for a, b in zip(result, sync, strict=True):
        assert a.raw_score == pytest.approx(b.raw_score, abs=1e-5)
    again = await reranker.arerank(QUERY, candidates(), top_n=1)
    assert again.ids == sync.ids[:1]


WORKLOAD = [
    ("how do aircraft wings produce lift", ["wing", "cat", "tax", "flaps"]),
    ("what makes a jet engine push a plane", ["bread", "engine", "cat"]),
    ("when is the tax filing deadline", ["wing", "tax", "bread", "engine"]),
    ("how long should dough rise", ["cat", "tax", "bread"]),
    ("when are cats most active", ["engine", "cat", "flaps", "bread", "tax"]),
    ("landing at low speed", ["flaps", "wing", "engine", "cat"]),
]


def expected_orders(make_reranker) -> list[list[str]]:
    reranker = make_reranker(cache=None)
    return [reranker.rerank(q, candidates(ids)).ids for q, ids in WORKLOAD]


def test_sixteen_threads_get_correct_independent_results(make_reranker):
    expected = expected_orders(make_reranker)
    assert expected[2][0] == "tax" and expected[4][0] == "cat"  # the model really decides
    reranker = make_reranker(cache=None)
    jobs = [i % len(WORKLOAD) for i in range(16 * 4)]
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def worker(thread_index: int) -> None:
        try:
            barrier.wait()
            for job_index in range(thread_index, len(jobs), 16):
                query, ids = WORKLOAD[jobs[job_index]]
                result = reranker.rerank(query, candidates(ids))
                assert result.status is Status.OK
                results[job_index] = result.ids
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(results) == len(jobs)
    for job_index, ids in results.items():
        assert ids == expected[jobs[job_index]], job_index


async def test_sixty_four_asyncio_tasks_get_correct_independent_results(make_reranker):
    expected = expected_orders(make_reranker)
    reranker = make_reranker(cache=None)
    jobs = [i % len(WORKLOAD) for i in range(64)]
    results = await asyncio.gather(*(
        reranker.arerank(WORKLOAD[j][0], candidates(WORKLOAD[j][1])) for j in jobs))
    for job, result in zip(jobs, results, strict=True):
        assert result.status is Status.OK
        assert result.ids == expected[job]
        assert all(math.isfinite(item.relevance_score) for item in result)
    # the engine merged concurrent callers into fewer model calls than requests
    assert reranker.engine.batches_run < len(jobs)
