"""Properties of every rerank result, over thousands of generated requests.

The scorer is a cheap deterministic stand-in on purpose: each candidate's text
carries the raw score it gets (``"<id>|<score>"``), so hypothesis controls ties
exactly and an example costs well under a millisecond. The code under test is
the whole real pipeline (validation, inference engine, selection).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerank_plugins import Reranker, Status
from rerank_plugins.scoring.base import ScoreOutput

THRESHOLDS = (None, 0.0, 0.25, 0.5, 0.75, 1.0)
# few distinct values, so ties are common
SCORES = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5000001, 0.75, 0.9, 1.0])


class TextScoreScorer:
    """Reads the raw score from the candidate text (``"<id>|<score>"``)."""

    model_id = "text-score"
    revision = "1"
    cache_namespace = "text-score"
    activation = "identity"

    def describe(self) -> dict[str, str]:
        return {"model": self.model_id, "revision": self.revision}

    def score_many(self, requests):
        return [ScoreOutput([float(t.rsplit("|", 1)[1]) for t in r.texts]) for r in requests]


_RERANKERS: dict[tuple[float | None, int], Reranker] = {}


def reranker(threshold: float | None, min_keep: int) -> Reranker:
    """One Reranker per setting combination, shared by all examples."""
    key = (threshold, min_keep)
    if key not in _RERANKERS:
        _RERANKERS[key] = Reranker(TextScoreScorer(), cache=None, timeout_s=None,
                                   threshold=threshold, min_keep=min_keep)
    return _RERANKERS[key]


@pytest.fixture(scope="module", autouse=True)
def close_rerankers():
    yield
    for engine in _RERANKERS.values():
        engine.close()
    _RERANKERS.clear()


requests = st.lists(SCORES, min_size=0, max_size=40).map(
    lambda scores: [{"id": f"c{i}", "text": f"c{i}|{s!r}"} for i, s in enumerate(scores)])


def check(result, candidates, threshold, min_keep, top_n):
    ids_in = [c["id"] for c in candidates]
    kept = [item.id for item in result]
    dropped = [item.id for item in result.dropped]
    assert result.status is Status.OK or not candidates
    # a subset of the input, no duplicates, nothing silently lost
    assert len(kept) == len(set(kept))
    assert set(kept) <= set(ids_in)
    assert sorted(kept + dropped) == sorted(ids_in)
    scores = [item.model_score for item in result]
    # threshold: every kept score passes, unless min_keep had to fill the list
    if threshold is not None and any(s < threshold for s in scores):
        assert len(kept) <= min_keep
        everything = sorted((i.model_score for i in (*result.items, *result.dropped)),
                            reverse=True)
        assert scores == everything[: len(scores)]  # min_keep keeps the best ones
    if top_n is not None:
        assert len(kept) <= top_n
    # best first; ties keep their input order (stable)
    for a, b in zip(result.items, result.items[1:], strict=False):
        assert a.relevance_score >= b.relevance_score
        if a.relevance_score == b.relevance_score:
            assert a.retrieval_rank < b.retrieval_rank
    return kept


def groups(result) -> list[tuple[float, frozenset[str]]]:
    """The kept ids grouped by equal score, best group first."""
    out = []
    for score, items in itertools.groupby(result, key=lambda item: item.relevance_score):
        out.append((score, frozenset(item.id for item in items)))
    return out


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candidates=requests, threshold=st.sampled_from(THRESHOLDS),
       min_keep=st.integers(0, 3), top_n=st.one_of(st.none(), st.integers(1, 12)),
       data=st.data())
def test_rerank_invariants_hold_and_input_order_only_breaks_ties(
        candidates, threshold, min_keep, top_n, data):
    engine = reranker(threshold, min_keep)
    result = engine.rerank("query", candidates, top_n=top_n)
    check(result, candidates, threshold, min_keep, top_n)

    shuffled = data.draw(st.permutations(candidates), label="shuffled input")
    again = engine.rerank("query", shuffled, top_n=top_n)
    check(again, shuffled, threshold, min_keep, top_n)
    # the same scores in the same order, whatever the input order ...
    assert [i.relevance_score for i in again] == [i.relevance_score for i in result]
    # ... and the same candidates, except inside a tie group cut by top_n/min_keep
    first, second = groups(result), groups(again)
    for (score_a, ids_a), (score_b, ids_b) in zip(first[:-1], second[:-1], strict=True):
        assert score_a == score_b and ids_a == ids_b
    if first:
        all_ids = {c["id"] for c in candidates}
        last_score = first[-1][0]
        whole_group = {i.id for i in (*result.items, *result.dropped)
                       if i.relevance_score == last_score} & all_ids
        if len(first[-1][1]) == len(whole_group):  # the last group was not cut
            assert first[-1][1] == second[-1][1]


@settings(max_examples=500, deadline=None)
@given(candidates=requests, threshold=st.sampled_from(THRESHOLDS), min_keep=st.integers(0, 3))
def test_rerank_is_deterministic(candidates, threshold, min_keep):
    engine = reranker(threshold, min_keep)
    first = engine.rerank("query", candidates)
    second = engine.rerank("query", candidates)
    assert [(i.id, i.relevance_score) for i in first] == \
        [(i.id, i.relevance_score) for i in second]
