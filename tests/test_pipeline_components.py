"""The semantic query layer (step 2) and the context budget (end of step 6) inside
the Reranker's request path, as settings of the one settings type."""

from __future__ import annotations

import json

import pytest
from cheap_scorers import CrcScorer
from conftest import counter_value, metric_points

from rerank_plugins import Reranker, Status
from rerank_plugins.cache.semantic import SemanticQueryCache
from rerank_plugins.context_budget import ContextBudget
from rerank_plugins.errors import ConfigurationError
from rerank_plugins.telemetry import contract as c
from rerank_plugins.telemetry.sinks import EventLog, JsonlSink

QUERY = "How do airplane wings produce lift?"
VARIANT = "how do airplane wings produce lift"
DOCS = [f"Document {n} about wings, air and lift. " * (1 + n % 3) for n in range(8)]


class CountingScorer(CrcScorer):
    """CrcScorer that counts the texts it was asked to score."""

    def __init__(self) -> None:
        super().__init__("counting-v1")
        self.scored = 0

    def score_many(self, requests):
        self.scored += sum(len(r.texts) for r in requests)
        return super().score_many(requests)


@pytest.fixture(scope="module")
def layer_model():
    return SemanticQueryCache()


def _layer(layer_model, **options) -> SemanticQueryCache:
    return SemanticQueryCache(embedder=layer_model._embed, **options)


def test_a_near_identical_query_is_served_from_the_earlier_querys_scores(layer_model):
    scorer = CountingScorer()
    reranker = Reranker(scorer, semantic_cache=_layer(layer_model), timeout_s=None)
    try:
        first = reranker.rerank(QUERY, DOCS)
        scored_after_first = scorer.scored
        near = reranker.rerank(VARIANT, DOCS)
        again = reranker.rerank(VARIANT, DOCS)
        other = reranker.rerank("what is the boiling point of water", DOCS)
    finally:
        reranker.close()

    assert first.status is Status.OK and scored_after_first == len(DOCS)
    assert near.status is Status.SEMANTIC_CACHE
    assert near.semantic_hits == len(DOCS) == near.cache_hits
    assert 0.95 <= near.semantic_similarity < 1.0
    assert near.ids == first.ids
    # the reused scores were stored under the variant's own keys: now an exact hit
    assert again.status is Status.CACHE and again.semantic_hits == 0
    assert other.status is Status.OK and other.semantic_similarity is None
    assert scorer.scored == 2 * len(DOCS)  # only the first and the other question


def test_only_the_candidates_both_requests_share_are_reused(layer_model):
    scorer = CountingScorer()
    reranker = Reranker(scorer, semantic_cache=_layer(layer_model), timeout_s=None)
    try:
        reranker.rerank(QUERY, DOCS[:5])
        before = scorer.scored
        mixed = reranker.rerank(VARIANT, DOCS[2:8])
    finally:
        reranker.close()

    assert mixed.status is Status.OK
    assert mixed.semantic_hits == 3  # DOCS[2:5] were scored for the earlier query
    assert scorer.scored - before == 3  # DOCS[5:8] went to the model
    assert mixed.cache_hits == 3 and mixed.cache_misses == 3


def test_semantic_lookups_and_the_event_log_record_the_hit(layer_model, tmp_path):
    log = EventLog(JsonlSink(tmp_path / "events"))
    reranker = Reranker(CountingScorer(), semantic_cache=_layer(layer_model),
                        timeout_s=None, event_log=log)
    near_before = counter_value(c.SEMANTIC_LOOKUPS.name, kind="near")
    points_before = sum(p.count for p in metric_points(c.SEMANTIC_SIMILARITY.name))
    try:
        reranker.rerank(QUERY, DOCS)
        near = reranker.rerank(VARIANT, DOCS)
        assert log.flush()
    finally:
        reranker.close()
        log.close()
    events = [json.loads(line) for path in sorted((tmp_path / "events").glob("*.jsonl"))
              for line in path.read_text().splitlines()]

    assert counter_value(c.SEMANTIC_LOOKUPS.name, kind="near") - near_before == 1
    assert sum(p.count for p in metric_points(c.SEMANTIC_SIMILARITY.name)) - \
        points_before == 1
    assert [e["status"] for e in events] == ["ok", "semantic_cache"]
    assert events[1]["semantic_hits"] == len(DOCS)
    assert events[1]["semantic_similarity"] == pytest.approx(near.semantic_similarity)
    assert events[0]["semantic_similarity"] is None
    assert VARIANT not in json.dumps(events)  # no raw text by default


def test_semantic_cache_true_builds_the_layer_from_the_settings():
    reranker = Reranker(CountingScorer(), semantic_cache=True, semantic_threshold=0.97,
                        timeout_s=None)
    try:
        assert isinstance(reranker.semantic, SemanticQueryCache)
        assert reranker.semantic.threshold == 0.97
        reranker.rerank(QUERY, DOCS)
        assert reranker.rerank(VARIANT, DOCS).status is Status.SEMANTIC_CACHE
    finally:
        reranker.close()


def test_the_semantic_layer_needs_a_pair_cache():
    with pytest.raises(ConfigurationError, match="pair-cache"):
        Reranker(CountingScorer(), cache=None, semantic_cache=True)
    with pytest.raises(ConfigurationError, match="semantic_threshold"):
        Reranker(CountingScorer(), semantic_threshold=1.5)


def test_a_failing_semantic_layer_never_fails_the_request(layer_model):
    class Broken(SemanticQueryCache):
        def nearest(self, *args, **kwargs):
            raise RuntimeError("index corrupted")

    reranker = Reranker(CountingScorer(), semantic_cache=Broken(embedder=layer_model._embed),
                        timeout_s=None)
    try:
        result = reranker.rerank(QUERY, DOCS)
    finally:
        reranker.close()
    assert result.status is Status.OK and len(result) == len(DOCS)


# -- context budget ----------------------------------------------------------------------
def test_the_context_budget_is_applied_last_after_threshold_and_top_n():
    budget = ContextBudget(60)
    scorer = CountingScorer()
    plain = Reranker(scorer, cache=None, timeout_s=None, top_n=6)
    budgeted = Reranker(scorer, cache=None, timeout_s=None, top_n=6, context_tokens=60)
    cut_before = counter_value(c.BUDGET_DOCUMENTS_CUT.name)
    try:
        full = plain.rerank(QUERY, DOCS)
        fitted = budgeted.rerank(QUERY, DOCS)
        roomy = Reranker(scorer, cache=None, timeout_s=None, top_n=3,
                         context_tokens=10_000).rerank(QUERY, DOCS)
    finally:
        plain.close()
        budgeted.close()

    expected = budget.apply(list(full.items), record=False)
    assert fitted.ids == [i.id for i in expected.kept]
    assert 0 < len(fitted) < len(full)
    assert fitted.context_tokens == expected.tokens_kept <= 60
    assert fitted.context_cut == len(full) - len(fitted)
    # the budget's cuts come first in dropped, then top_n's
    assert [i.id for i in fitted.dropped[:fitted.context_cut]] == full.ids[len(fitted):]
    assert counter_value(c.BUDGET_DOCUMENTS_CUT.name) - cut_before == fitted.context_cut
    assert len(roomy) == 3 and roomy.context_cut == 0  # top_n first, then the budget


def test_truncate_last_cuts_the_first_misfit_in_the_result():
    plain = Reranker(CountingScorer(), cache=None, timeout_s=None)
    try:
        full = plain.rerank(QUERY, DOCS)
    finally:
        plain.close()
    # a budget whose first misfit leaves room for a cut (>= 16 tokens)
    tokens = next(n for n in range(30, 200)
                  if ContextBudget(n, truncate_last=True).apply(
                      list(full.items), record=False).truncated_text)
    expected = ContextBudget(tokens, truncate_last=True).apply(list(full.items), record=False)
    reranker = Reranker(CountingScorer(), cache=None, timeout_s=None, context_tokens=tokens,
                        context_truncate_last=True)
    try:
        result = reranker.rerank(QUERY, DOCS)
    finally:
        reranker.close()
    by_id = {str(n): text for n, text in enumerate(DOCS)}
    last = result.items[-1]

    assert result.ids == [i.id for i in expected.kept]
    assert result.context_tokens == expected.tokens_kept <= tokens
    assert last.text == expected.truncated_text
    assert by_id[last.id].startswith(last.text) and len(last.text) < len(by_id[last.id])
    assert all(item.text == by_id[item.id] for item in result.items[:-1])


def test_the_budget_also_applies_on_fallback():
    class Failing(CrcScorer):
        def score_many(self, requests):
            raise RuntimeError("model down")

    reranker = Reranker(Failing(), cache=None, timeout_s=None, context_tokens=40)
    try:
        result = reranker.rerank(QUERY, DOCS)
    finally:
        reranker.close()
    assert result.status is Status.FALLBACK
    assert result.context_tokens <= 40 and result.context_cut > 0
    assert result.ids == [str(n) for n in range(len(result))]  # retrieval order kept


def test_llama_index_drop_in_carries_the_budget_setting():
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.llama_index import CrossEncoderRerank

    rerank = CrossEncoderRerank(reranker=Reranker(CountingScorer(), cache=None,
                                                  timeout_s=None, context_tokens=60),
                                top_n=None)
    nodes = [NodeWithScore(node=TextNode(text=text, id_=str(n)), score=1.0 - n / 10)
             for n, text in enumerate(DOCS)]
    try:
        kept = rerank.postprocess_nodes(nodes, QueryBundle(QUERY))
    finally:
        rerank.close()
    assert 0 < len(kept) < len(DOCS)
    assert CrossEncoderRerank.model_fields["context_tokens"].default is None
