"""The one selection step decides order and count: a property test over every
combination of constructor/per-call ``top_n``, ``rerank_depth``, threshold,
``min_keep``, policies and shadow mode.

Regression: ``Reranker(top_n=3, rerank_depth=10)`` called with ``top_n=5`` used to
return ids 0, 1, 2, 10, 11 -- two never-scored tail candidates above the scored
candidates 3 and 4, because ``top_n`` was cut in three places.

The scorer is a cheap deterministic one on purpose: the property belongs to the
selection around the model, and thousands of examples through a transformer would
take hours on 2 cores (tests/test_properties.py repeats core properties on the real
model).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerank_plugins import Candidate, Reranker, Status, block_if
from rerank_plugins.scoring.base import ScoreOutput


class IdScorer:
    """Raw score = the number written in the text: candidate i gets ``100 - i``, so
    the model order equals the input order and every score is distinct."""

    model_id = "test/id-score"
    revision = "1"
    cache_namespace = "id-score|1"
    activation = "identity"

    def describe(self) -> dict[str, str]:
        return {"model": self.model_id, "revision": self.revision}

    def score_many(self, requests):
        return [ScoreOutput([float(t.split()[1]) / 100.0 for t in r.texts]) for r in requests]


def _candidates(n: int, blocked: frozenset[int]) -> list[Candidate]:
    return [Candidate(str(i), f"doc {100 - i}", retrieval_score=float(n - i),
                      metadata={"blocked": i in blocked}) for i in range(n)]


def test_per_call_top_n_with_rerank_depth_never_lifts_the_tail():
    reranker = Reranker(IdScorer(), top_n=3, rerank_depth=10, cache=None, fusion="none")
    result = reranker.rerank("q", _candidates(20, frozenset()), top_n=5)
    assert result.ids == ["0", "1", "2", "3", "4"]
    reranker.close()


top_ns = st.one_of(st.none(), st.integers(1, 12))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 16),
    ctor_top_n=top_ns,
    call_top_n=top_ns,
    depth=st.one_of(st.none(), st.integers(1, 16)),
    threshold=st.one_of(st.none(), st.sampled_from([0.0, 0.9, 0.95, 0.99, 1.0])),
    min_keep=st.integers(0, 4),
    blocked=st.frozensets(st.integers(0, 15), max_size=4),
    shadow=st.booleans(),
)
def test_order_and_count_for_every_combination(n, ctor_top_n, call_top_n, depth, threshold,
                                               min_keep, blocked, shadow):
    policies = (block_if(lambda m: m.get("blocked")),) if blocked else ()
    reranker = Reranker(IdScorer(), top_n=ctor_top_n, rerank_depth=depth, threshold=threshold,
                        min_keep=min_keep, policies=policies, shadow=shadow, cache=None,
                        fusion="none")
    try:
        result = reranker.rerank("q", _candidates(n, blocked), top_n=call_top_n)
    finally:
        reranker.close()
    limit = call_top_n if call_top_n is not None else ctor_top_n
    scored_upto = n if depth is None else min(depth, n)
    kept = [int(i) for i in result.ids]
    returned = {item.id for item in (*result.items, *result.dropped)}

    # nothing lost, nothing invented, nothing blocked kept
    assert returned == {str(i) for i in range(n)}
    assert len(result.items) + len(result.dropped) == n
    assert not set(kept) & blocked

    if shadow:
        assert result.status is Status.SHADOW
        # the retrieval order of everything not blocked, cut at the effective top_n
        allowed = [i for i in range(n) if i not in blocked]
        assert kept == (allowed if limit is None else allowed[:limit])
        return

    eligible = [i for i in range(scored_upto) if i not in blocked]
    passing = [i for i in eligible if threshold is None or (100 - i) / 100.0 >= threshold]
    if len(passing) < min_keep:
        passing = eligible[:min_keep]
    tail = [i for i in range(scored_upto, n) if i not in blocked]
    # unscored tail candidates follow the scored ones (dropped when a threshold is set)
    expected = passing + (tail if threshold is None else [])
    if limit is not None:
        expected = expected[:limit]
    assert kept == expected
    # no unscored candidate is kept while a scored candidate that passed was cut
    scored_kept = [i for i in kept if i < scored_upto]
    if any(i >= scored_upto for i in kept):
        assert scored_kept == passing
    # the count is the effective top_n whenever enough candidates qualify
    available = len(passing) + (len(tail) if threshold is None else 0)
    assert len(kept) == (available if limit is None else min(limit, available))
