"""ContextBudget and its LlamaIndex postprocessor (real tokenizers, real nodes)."""

from __future__ import annotations

import math

import pytest
from conftest import counter_value, metric_points
from hypothesis import given, settings
from hypothesis import strategies as st

from rerank_plugins import Reranker
from rerank_plugins.context_budget import APPROX_CHARS_PER_TOKEN, ContextBudget
from rerank_plugins.errors import ConfigurationError
from rerank_plugins.scoring.default_model import bundled_model_path
from rerank_plugins.telemetry import contract as c


def _doc(tokens: int, fill: str = "a") -> str:
    """A text the approximation counts as exactly ``tokens`` tokens."""
    return fill * (tokens * APPROX_CHARS_PER_TOKEN)


def test_whole_documents_are_kept_in_order_until_the_next_does_not_fit():
    budget = ContextBudget(10)
    docs = [_doc(3), _doc(5), _doc(3), _doc(1)]
    result = budget.apply(docs)

    assert result.kept == docs[:2]
    # the walk stops at the first misfit: the 1-token document after it is not
    # pulled up past a more relevant one
    assert result.cut == docs[2:]
    assert result.tokens_kept == 8 and result.token_counts == [3, 5]
    assert result.truncated_text is None and result.approximate


def test_truncate_last_cuts_the_first_misfit_to_the_tokens_left():
    budget = ContextBudget(10, truncate_last=True, min_truncated_tokens=2)
    docs = [_doc(3), _doc(5), _doc(6, "b"), _doc(1)]
    result = budget.apply(docs)

    assert result.kept == docs[:3] and result.cut == docs[3:]
    assert result.truncated_text == "b" * (2 * APPROX_CHARS_PER_TOKEN)
    assert result.tokens_kept == 10
    # below min_truncated_tokens the misfit is left out instead of kept as a stub
    stub = ContextBudget(10, truncate_last=True, min_truncated_tokens=3).apply(docs)
    assert stub.kept == docs[:2] and stub.truncated_text is None


def test_the_most_relevant_document_is_kept_cut_when_it_alone_is_over_budget():
    result = ContextBudget(4).apply([_doc(9), _doc(1)])
    assert len(result.kept) == 1 and result.cut == [_doc(1)]
    assert result.truncated_text == _doc(4) and result.tokens_kept == 4


def test_per_document_overhead_is_charged_for_every_kept_document():
    result = ContextBudget(10, per_document_overhead=2).apply([_doc(3), _doc(3), _doc(3)])
    assert len(result.kept) == 2 and result.tokens_kept == 10


def test_a_hugging_face_tokenizer_folder_counts_real_tokens():
    from transformers import AutoTokenizer

    folder = bundled_model_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    budget = ContextBudget(20, tokenizer=folder, truncate_last=True, min_truncated_tokens=1)
    docs = ["Airfoils deflect air downwards, and the reaction lifts the wing.",
            "Bernoulli's principle relates the pressure and the speed of air.",
            "Flaps increase lift at low speed during take-off and landing."]
    counts = [len(tokenizer.encode(d, add_special_tokens=False)) for d in docs]
    result = budget.apply(docs)

    assert not budget.approximate and budget.tokenizer_name == "model"
    assert [budget.count(d) for d in docs] == counts
    loaded = ContextBudget(20, tokenizer=tokenizer)  # a loaded tokenizer object
    assert [loaded.count(d) for d in docs] == counts
    assert loaded.truncate(docs[0], 3) == budget.truncate(docs[0], 3) != docs[0][:3]
    assert result.token_counts[0] == counts[0]
    assert result.tokens_kept <= 20
    assert result.truncated_text is not None
    assert docs[len(result.kept) - 1].startswith(result.truncated_text)
    assert len(result.truncated_text) < len(docs[len(result.kept) - 1])
    assert len(tokenizer.encode(result.truncated_text, add_special_tokens=False)) == \
        result.token_counts[-1]


def test_a_tiktoken_encoding_that_is_not_cached_is_refused_instead_of_downloaded(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="never downloads"):
        ContextBudget(100, tokenizer="cl100k_base")
    with pytest.raises(ConfigurationError, match="unknown encoding"):
        ContextBudget(100, tokenizer="no_such_encoding")


def test_a_ready_tiktoken_encoding_object_is_used():
    import tiktoken

    byte_level = tiktoken.Encoding(
        name="bytes-only", pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={})
    budget = ContextBudget(10, tokenizer=byte_level, truncate_last=True,
                           min_truncated_tokens=1)
    result = budget.apply(["héllo", "world!"])  # 6 bytes + 6 bytes

    assert budget.count("héllo") == 6 and budget.tokenizer_name == "bytes-only"
    assert result.truncated_text == "worl" and result.tokens_kept == 10


def test_it_applies_to_a_rerank_result_and_is_counted(bi_scorer):
    reranker = Reranker(bi_scorer, timeout_s=None, cache=None)
    try:
        ranked = reranker.rerank("how do wings make lift", [
            "Airfoils deflect air downwards and lift the wing. " * 4,
            "Cats sleep all day. " * 10, "Flaps add lift. " * 10, "Tax is due in April."])
    finally:
        reranker.close()
    budget = ContextBudget(80)
    cut_before = counter_value(c.BUDGET_DOCUMENTS_CUT.name)
    kept_points = sum(p.count for p in metric_points(c.BUDGET_TOKENS_KEPT.name))
    result = budget.apply(ranked.items)

    assert result.kept == list(ranked.items[:len(result.kept)])
    assert result.kept + result.cut == list(ranked.items)
    assert result.tokens_kept == sum(budget.count(i.text) for i in result.kept) <= 80
    assert counter_value(c.BUDGET_DOCUMENTS_CUT.name) - cut_before == len(result.cut) > 0
    assert sum(p.count for p in metric_points(c.BUDGET_TOKENS_KEPT.name)) - kept_points == 1


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 400), max_size=12), context=st.integers(1, 600),
       truncate=st.booleans(), overhead=st.integers(0, 5))
def test_kept_is_a_prefix_within_budget_for_any_lengths(lengths, context, truncate, overhead):
    docs = [f"{n}:" + "x" * length for n, length in enumerate(lengths)]
    budget = ContextBudget(context, truncate_last=truncate, per_document_overhead=overhead,
                           min_truncated_tokens=1)
    result = budget.apply(docs, record=False)

    assert result.kept == docs[:len(result.kept)]
    assert result.kept + result.cut == docs
    assert result.tokens_kept == sum(result.token_counts)
    if docs:
        assert result.kept, "the most relevant document is always kept"
    if result.tokens_kept > context:
        # only a lone first document whose overhead alone exceeds the budget
        assert len(result.kept) == 1 and overhead > context - 1
    if result.truncated_text is None:
        assert result.token_counts == [budget.count(d) + overhead for d in result.kept]


@pytest.mark.parametrize(("options", "message"), [
    ({"context_tokens": 0}, "context_tokens"), ({"context_tokens": 1.5}, "context_tokens"),
    ({"per_document_overhead": -1}, "per_document_overhead"),
    ({"min_truncated_tokens": 0}, "min_truncated_tokens"),
    ({"tokenizer": 42}, "encode"), ({"tokenizer": " "}, "tokenizer"),
])
def test_invalid_settings_are_refused_with_their_name(options, message):
    options = {"context_tokens": 10, **options}
    with pytest.raises(ConfigurationError, match=message):
        ContextBudget(**options)


def test_an_item_without_text_is_a_type_error():
    with pytest.raises(TypeError, match="item 1"):
        ContextBudget(10).apply(["fine", None], text=lambda item: item)


# -- LlamaIndex ----------------------------------------------------------------------
def test_llama_index_postprocessor_keeps_nodes_within_budget_and_copies_the_cut_one():
    from llama_index.core.schema import NodeWithScore, TextNode

    from rerank_plugins._llama_index_budget import TRUNCATED_KEY, ContextBudgetPostprocessor

    nodes = [NodeWithScore(node=TextNode(text=_doc(6, ch), metadata={"source": "s"},
                                         excluded_llm_metadata_keys=["source"]), score=s)
             for ch, s in (("a", 0.9), ("b", 0.8), ("c", 0.7))]
    whole = ContextBudgetPostprocessor(context_tokens=15)
    cut = ContextBudgetPostprocessor(context_tokens=15, truncate_last=True)
    kept = whole.postprocess_nodes(nodes, query_str="q")
    cut_kept = cut.postprocess_nodes(nodes, query_str="q")

    assert [n.node.text for n in kept] == [_doc(6, "a"), _doc(6, "b")]
    assert len(cut_kept) == 2  # 3 tokens left < min_truncated_tokens (16)
    tight = ContextBudgetPostprocessor(context_tokens=6 + 6 + 4, truncate_last=True,
                                       tokenizer=None)
    tight.budget.min_truncated_tokens = 1
    third = tight.postprocess_nodes(nodes, query_str="q")
    assert third[-1].node.text == _doc(4, "c")
    assert third[-1].node.metadata[TRUNCATED_KEY] is True
    assert TRUNCATED_KEY in third[-1].node.excluded_llm_metadata_keys
    assert nodes[2].node.text == _doc(6, "c") and TRUNCATED_KEY not in nodes[2].node.metadata
    assert third[-1].score == 0.7
    assert whole.class_name() == "RerankPluginsContextBudget"


def test_llama_index_postprocessor_counts_the_metadata_the_llm_reads():
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from rerank_plugins._llama_index_budget import ContextBudgetPostprocessor

    node = TextNode(text=_doc(4), metadata={"title": "x" * 40})
    shown = node.get_content(metadata_mode=MetadataMode.LLM)
    budget = ContextBudgetPostprocessor(context_tokens=math.ceil(len(shown) / 4))
    tighter = ContextBudgetPostprocessor(context_tokens=math.ceil(len(shown) / 4) - 1)
    pair = [NodeWithScore(node=node, score=1.0), NodeWithScore(node=node.model_copy(),
                                                               score=0.5)]
    assert len(budget.postprocess_nodes(pair, query_str="q")) == 1
    # the first node is always kept, cut; the budget counts its metadata header
    assert len(tighter.postprocess_nodes(pair, query_str="q")) == 1
    assert budget.postprocess_nodes([], query_str="q") == []
    with pytest.raises(TypeError):
        budget.postprocess_nodes(["not a node"], query_str="q")
