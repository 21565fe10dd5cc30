"""Property-based tests: for any input the output is a reordering of a subset of the
input, with nothing invented or duplicated, ordered by score, and the kept scores
pass the threshold (unless ``min_keep`` had to fill in).

Thousands of examples run through the full pipeline (validation, cache, inference
engine, selection) with :class:`OverlapScorer`; a smaller run uses the real model.
"""

from __future__ import annotations

import contextlib
import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerank_plugins import Candidate, Reranker, Status, block_if, boost_if
from rerank_plugins.privacy import safe_text
from rerank_plugins.scoring.base import ScoreOutput, ScoreRequest
from rerank_plugins.selection import activate, sigmoid
from rerank_plugins.settings import RerankerSettings

VOCAB = ["wing", "lift", "air", "cat", "dog", "bread", "tax", "the", "of", "plane", "rise"]


def overlap_score(query: str, text: str) -> float:
    """Shared words minus a small length penalty: deterministic, cheap, many ties."""
    shared = set(query.lower().split()) & set(text.lower().split())
    return float(len(shared)) - 0.25 * min(len(text), 40) / 40.0


class OverlapScorer:
    """A real (if simple) relevance model implementing the Scorer protocol.

    Thousands of hypothesis examples through the transformer would take hours on a
    2-core CPU; the properties under test belong to the pipeline around the model,
    so this cheap deterministic scorer stands in, and ``test_real_model_*`` below
    repeats the core properties on the embedded model with fewer examples.
    """

    model_id = "test/word-overlap"
    revision = "1"
    cache_namespace = "overlap|1"
    activation = "sigmoid"

    def describe(self) -> dict[str, str]:
        return {"model": self.model_id, "revision": self.revision, "device": "cpu",
                "dtype": "float32"}

    def score_many(self, requests):
        return [ScoreOutput([overlap_score(r.query, t) for t in r.texts]) for r in requests]


# -- strategies -------------------------------------------------------------------------
# st.characters() with no excluded categories includes lone surrogates (category Cs)
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
word_text = st.lists(st.sampled_from(VOCAB), max_size=8).map(" ".join)
texts = st.one_of(word_text, any_text, st.sampled_from(["", " ", "\n"]))
queries = st.one_of(word_text, any_text).filter(lambda q: q.strip())
retrieval_scores = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
metadata = st.fixed_dictionaries({}, optional={"block": st.booleans(), "boost": st.booleans()})


@st.composite
def candidate_lists(draw, max_size: int = 12) -> list[Candidate]:
    ids = draw(st.lists(st.text(string.ascii_letters + string.digits, min_size=1, max_size=4),
                        unique=True, max_size=max_size))
    return [Candidate(id=i, text=draw(texts), retrieval_score=draw(retrieval_scores),
                      metadata=draw(metadata)) for i in ids]


selection_settings = st.builds(
    RerankerSettings,
    top_n=st.one_of(st.none(), st.integers(1, 6)),
    threshold=st.one_of(st.none(), st.floats(0.0, 1.0)),
    min_keep=st.integers(0, 3),
    relative_cutoff=st.one_of(st.none(), st.floats(0.0, 1.0)),
    fusion=st.sampled_from(["none", "linear", "rrf"]),
    alpha=st.floats(0.0, 1.0),
    normalization=st.sampled_from(["minmax", "rank"]),
    policies=st.sampled_from([
        (),
        (block_if(lambda m: m.get("block", False)),),
        (boost_if(lambda m: m.get("boost", False), 0.3),),
        (block_if(lambda m: m.get("block", False)), boost_if(lambda m: m.get("boost"), -0.2)),
    ]),
)


# -- the properties -------------------------------------------------------------------------
def check_result(result, query: str, cands: list[Candidate], config: RerankerSettings,
                 top_n: int | None, shadow: bool, scores_of=None) -> None:
    items, dropped = list(result.items), list(result.dropped)
    returned = [item.id for item in items + dropped]
    # a partition of the input: nothing invented, nothing duplicated, nothing lost
    assert sorted(returned) == sorted(c.id for c in cands)
    assert len(set(returned)) == len(returned)
    for item in items + dropped:
        assert cands[item.retrieval_rank] is item.candidate  # the caller's own object
    assert result.status in ((Status.SHADOW,) if shadow and cands else (Status.OK, Status.CACHE))
    if result.status is Status.CACHE:
        assert result.cache_misses == 0
    # scores are the model's, normalized into [0, 1]
    for item in items + dropped:
        expected_raw = (scores_of or overlap_score)(safe_text(query), safe_text(item.text))
        assert item.raw_score == pytest.approx(expected_raw, abs=1e-4)
        assert item.model_score == pytest.approx(activate(item.raw_score, "sigmoid")
                                                 if scores_of is None else
                                                 activate(item.raw_score, "cosine"))
        assert 0.0 <= item.model_score <= 1.0
    blocked = {c.id for c in cands
               if config.policies and c.metadata.get("block") and _blocks(config)}
    assert not blocked & {item.id for item in items}
    assert all(item.relevance_score is None for item in dropped if item.id in blocked)
    limit = top_n if top_n is not None else config.top_n
    if limit is not None:
        assert len(items) <= limit
    eligible = len(cands) - len(blocked)
    if config.min_keep and eligible:
        assert len(items) >= min(config.min_keep, eligible, limit or eligible)
    if shadow:
        ranks = [item.retrieval_rank for item in items]
        assert ranks == sorted(ranks)
        return
    for item in items:
        assert item.relevance_score is not None and math.isfinite(item.relevance_score)
    order = [(-i.relevance_score, -i.model_score, i.retrieval_rank) for i in items]
    assert order == sorted(order)  # by score; ties by model score, then retrieval rank
    if len(items) > config.min_keep:
        # nothing was kept only to satisfy min_keep: every kept item passed every cut
        if config.threshold is not None:
            assert all(i.model_score >= config.threshold for i in items)
        if config.relative_cutoff is not None:
            best = items[0].relevance_score
            assert all(best - i.relevance_score <= config.relative_cutoff + 1e-12
                       for i in items)


def _blocks(config: RerankerSettings) -> bool:
    probe = Candidate("probe", "", metadata={"block": True})
    score = 0.5
    for policy in config.policies:
        score = policy(probe, score)
        if score is None:
            return True
    return False


OVERLAP = OverlapScorer()


@contextlib.contextmanager
def overlap_reranker(config: RerankerSettings, shadow: bool = False):
    """A Reranker with the example's settings (they are immutable, as in an app)."""
    reranker = Reranker(OVERLAP, settings=config.replace(shadow=shadow, timeout_s=60.0))
    try:
        yield reranker
    finally:
        reranker.close()


@settings(max_examples=1500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=queries, cands=candidate_lists(), config=selection_settings,
       top_n=st.one_of(st.none(), st.integers(1, 15)), shadow=st.booleans())
def test_any_input_gives_an_ordered_partition_of_the_candidates(query, cands, config, top_n,
                                                                 shadow):
    with overlap_reranker(config, shadow) as reranker:
        result = reranker.rerank(query, cands, top_n=top_n)
        again = reranker.rerank(query, cands, top_n=top_n)  # from the cache now
    check_result(result, query, cands, config, top_n, shadow)
    assert again.ids == result.ids
    assert [d.id for d in again.dropped] == [d.id for d in result.dropped]
    if cands:
        assert again.cache_hits == len(cands)


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=queries, cands=candidate_lists(max_size=20), config=selection_settings)
async def test_async_path_has_the_same_properties(query, cands, config):
    with overlap_reranker(config) as reranker:
        result = await reranker.arerank(query, cands)
        assert result.ids == reranker.rerank(query, cands).ids
    check_result(result, query, cands, config, None, False)


# -- the same properties on the real embedded model -----------------------------------------
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=queries, cands=candidate_lists(max_size=6),
       config=selection_settings.filter(lambda s: s.fusion == "none"))
def test_real_model_output_is_an_ordered_partition(bi_scorer, query, cands, config):
    reranker = Reranker(bi_scorer, settings=config.replace(timeout_s=120.0, cache=None))
    try:
        result = reranker.rerank(query, cands)
    finally:
        reranker.close()
    expected: dict[str, float] = {}
    if cands:
        [out] = bi_scorer.score_many([ScoreRequest(safe_text(query),
                                                   [safe_text(c.text) for c in cands])])
        expected = {safe_text(c.text): s for c, s in zip(cands, out.scores, strict=True)}
    check_result(result, query, cands, config, None, False,
                 scores_of=lambda _q, text: expected[text])


def test_cheap_scorer_really_ranks_by_overlap():
    """Guards the stand-in: if it stopped discriminating, the properties would be vacuous."""
    with overlap_reranker(RerankerSettings(fusion="none")) as reranker:
        result = reranker.rerank("wing lift", ["cat dog", "wing lift air", "lift"])
    assert result.ids == ["1", "2", "0"]
    assert result[0].model_score == pytest.approx(sigmoid(2 - 0.25 * 13 / 40))
