"""The LlamaIndex drop-in inside real LlamaIndex query engines (sync and async), with
the bundled MiniLM as embedding model, MockLLM, and LlamaIndex's own callback and
instrumentation machinery."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import Document, MetadataMode, NodeWithScore, QueryBundle, TextNode
from test_adapter_contract import FailingScorer

from rerank_plugins import Reranker
from rerank_plugins.llama_index import CrossEncoderRerank

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from llama_index_app import DOCUMENTS  # noqa: E402

QUESTION = "How does a wing produce lift?"


@pytest.fixture(scope="module")
def index():
    # LlamaIndex's own Hugging Face embeddings on the bundled folder, as the example
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from rerank_plugins.scoring import bundled_model_path

    embed = HuggingFaceEmbedding(model_name=bundled_model_path(), device="cpu")
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS],
                                           embed_model=embed)


class Recorder(BaseEventHandler):
    """Collects LlamaIndex instrumentation events."""

    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


@pytest.fixture
def instrumentation():
    recorder = Recorder(events=[])
    root = get_dispatcher()
    root.add_event_handler(recorder)
    yield recorder
    root.event_handlers.remove(recorder)


def rerank_events(recorder: Recorder) -> list[str]:
    return [e.class_name() for e in recorder.events if e.class_name().startswith("ReRank")]


def expected_texts(scorer, index, top_n: int) -> list[str]:
    """What the core Reranker makes of the nodes the retriever returns."""
    retrieved = index.as_retriever(similarity_top_k=6).retrieve(QUESTION)
    reranker = Reranker(scorer, cache=None, timeout_s=None, top_n=top_n)
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in retrieved]
    result = reranker.rerank(QUESTION, texts)
    reranker.close()
    assert [item.retrieval_rank for item in result] != list(range(top_n)), \
        "pick a question where reranking changes the retrieval order"
    return [item.text for item in result]


def assert_reranked(response, want: list[str]) -> None:
    nodes = response.source_nodes
    assert [n.node.get_content() for n in nodes] == want
    for node in nodes:
        assert node.score == node.node.metadata["relevance_score"]
        assert node.node.metadata["rerank_status"] in ("ok", "cache")
    assert str(response), "the mock LLM answered"


async def test_vector_index_query_engine_sync_and_async(index, ce_scorer, instrumentation):
    want = expected_texts(ce_scorer, index, top_n=3)
    rerank = CrossEncoderRerank(scorer=ce_scorer, top_n=3)
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=6,
                                   node_postprocessors=[rerank])
    assert_reranked(engine.query(QUESTION), want)
    assert_reranked(await engine.aquery(QUESTION), want)
    assert rerank_events(instrumentation) == ["ReRankStartEvent", "ReRankEndEvent"] * 2


async def test_retriever_query_engine_emits_the_reranking_callback(index, ce_scorer):
    debug = LlamaDebugHandler()
    rerank = CrossEncoderRerank(scorer=ce_scorer, top_n=2, cache=None)
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=6), llm=MockLLM(),
        node_postprocessors=[rerank], callback_manager=CallbackManager([debug]))
    want = expected_texts(ce_scorer, index, top_n=2)
    sync_response = engine.query(QUESTION)
    async_response = await engine.aquery(QUESTION)
    for response in (sync_response, async_response):
        assert_reranked(response, want)
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 2
    for (start, end), response in zip(pairs, (sync_response, async_response), strict=True):
        assert start.payload[EventPayload.QUERY_STR] == QUESTION
        assert start.payload[EventPayload.TOP_K] == 2
        assert start.payload[EventPayload.MODEL_NAME] == ce_scorer.model_id
        assert len(start.payload[EventPayload.NODES]) == 6
        assert [n.node.node_id for n in end.payload[EventPayload.NODES]] == \
            [n.node.node_id for n in response.source_nodes]


def nodes_for(texts):
    return [NodeWithScore(node=TextNode(text=t, metadata={"source": f"s{i}"}),
                          score=1.0 - i / 10) for i, t in enumerate(texts)]


def test_invalid_input_raises_before_any_event(bi_scorer, instrumentation):
    debug = LlamaDebugHandler()
    rerank = CrossEncoderRerank(scorer=bi_scorer, callback_manager=CallbackManager([debug]))
    with pytest.raises(ValueError, match="Missing query bundle"):
        rerank.postprocess_nodes(nodes_for(DOCUMENTS))
    with pytest.raises(TypeError, match="node 1 is a TextNode"):
        rerank.postprocess_nodes([nodes_for(DOCUMENTS)[0], TextNode(text="bare")],
                                 query_bundle=QueryBundle(QUESTION))
    assert rerank.postprocess_nodes([], query_str=QUESTION) == []
    assert rerank_events(instrumentation) == []
    assert debug.get_event_pairs(CBEventType.RERANKING) == []


async def test_async_missing_query_bundle_is_the_same_error(bi_scorer):
    with pytest.raises(ValueError, match="Missing query bundle"):
        await CrossEncoderRerank(scorer=bi_scorer).apostprocess_nodes(nodes_for(DOCUMENTS))


def test_rerank_metadata_stays_out_of_llm_and_embedding_text(bi_scorer):
    out = CrossEncoderRerank(scorer=bi_scorer, top_n=2).postprocess_nodes(
        nodes_for(DOCUMENTS), query_str=QUESTION)
    for node in out:
        assert "rerank_status" in node.node.metadata
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            text = node.node.get_content(metadata_mode=mode)
            assert "source: s" in text, "the caller's metadata is still shown"
            assert "rerank_status" not in text and "relevance_score" not in text


def test_keep_retrieval_score_false_omits_only_that_key(bi_scorer):
    out = CrossEncoderRerank(scorer=bi_scorer, keep_retrieval_score=False).postprocess_nodes(
        nodes_for(DOCUMENTS), query_str=QUESTION)
    assert out and all("retrieval_score" not in n.node.metadata for n in out)
    assert all("retrieval_rank" in n.node.metadata for n in out)


def test_fallback_keeps_the_retrieval_score_as_node_score(bi_scorer):
    nodes = nodes_for(DOCUMENTS)
    out = CrossEncoderRerank(scorer=FailingScorer(bi_scorer), top_n=3).postprocess_nodes(
        nodes, query_str=QUESTION)
    assert [n.score for n in out] == [n.score for n in nodes[:3]]
    assert [n.node.node_id for n in out] == [n.node.node_id for n in nodes[:3]]
    assert {n.node.metadata["rerank_fallback_reason"] for n in out} == {"error"}


def test_settings_serialize_without_runtime_objects(bi_scorer):
    rerank = CrossEncoderRerank(scorer=bi_scorer, top_n=4, threshold=0.2, timeout_s=0.3,
                                secret="operator-secret")
    data = rerank.to_dict()
    assert data["class_name"] == CrossEncoderRerank.class_name()
    assert data["top_n"] == 4 and data["threshold"] == 0.2 and data["timeout_s"] == 0.3
    for runtime_only in ("scorer", "cache", "policies", "event_log", "callback_manager",
                         "secret", "breaker", "secondary_scorer"):
        assert runtime_only not in data
    assert "operator-secret" not in str(data)
    assert CrossEncoderRerank.model_fields["timeout_s"].description
