"""The LangChain drop-ins inside real LangChain retrievers (sync and async) over an
in-memory vector store with the bundled MiniLM embeddings, traced by a real
callback handler."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_classic.retrievers.document_compressors import (
    CrossEncoderReranker,
    DocumentCompressorPipeline,
)
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_text_splitters import RecursiveCharacterTextSplitter
from test_adapter_contract import FailingScorer

from rerank_plugins import Reranker
from rerank_plugins.errors import ConfigurationError
from rerank_plugins.langchain import CrossEncoderRerank, RerankCrossEncoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from langchain_app import DOCUMENTS, MiniLMEmbeddings  # noqa: E402

QUESTION = "How does a wing produce lift?"
K = 6


@pytest.fixture(scope="module")
def embeddings():
    return MiniLMEmbeddings()


@pytest.fixture(scope="module")
def store(embeddings):
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document(page_content=t, metadata={"n": i})
                         for i, t in enumerate(DOCUMENTS)])
    return store


class RunRecorder(BaseCallbackHandler):
    """Records retriever runs the way a tracer sees them."""

    def __init__(self) -> None:
        self.starts: dict = {}
        self.ends: dict = {}

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kw):
        self.starts[run_id] = {"name": kw.get("name"), "parent": parent_run_id,
                               "query": query, "metadata": kw.get("metadata") or {}}

    def on_retriever_end(self, documents, *, run_id, **kw):
        self.ends[run_id] = list(documents)

    def runs_named(self, name: str) -> list:
        return [run_id for run_id, run in self.starts.items() if run["name"] == name]


def expected_texts(scorer, store, top_n: int) -> list[str]:
    retrieved = store.similarity_search(QUESTION, k=K)
    reranker = Reranker(scorer, cache=None, timeout_s=None, top_n=top_n)
    result = reranker.rerank(QUESTION, [d.page_content for d in retrieved])
    reranker.close()
    assert [item.retrieval_rank for item in result] != list(range(top_n)), \
        "pick a question where reranking changes the retrieval order"
    return [item.text for item in result]


async def test_contextual_compression_retriever_sync_async_and_traced(store, ce_scorer):
    want = expected_texts(ce_scorer, store, top_n=3)
    retriever = ContextualCompressionRetriever(
        base_compressor=CrossEncoderRerank(scorer=ce_scorer, top_n=3),
        base_retriever=store.as_retriever(search_kwargs={"k": K}))
    recorder = RunRecorder()
    sync_docs = retriever.invoke(QUESTION, config={"callbacks": [recorder]})
    async_docs = await retriever.ainvoke(QUESTION, config={"callbacks": [recorder]})
    for docs in (sync_docs, async_docs):
        assert [d.page_content for d in docs] == want
        assert all(d.metadata["rerank_status"] in ("ok", "cache") for d in docs)
    rerank_runs = recorder.runs_named("CrossEncoderRerank")
    assert len(rerank_runs) == 2
    outer_runs = set(recorder.runs_named("ContextualCompressionRetriever"))
    for run_id, docs in zip(rerank_runs, (sync_docs, async_docs), strict=True):
        run = recorder.starts[run_id]
        assert run["parent"] in outer_runs, "the rerank is a child of the retriever run"
        assert run["query"] == QUESTION
        assert run["metadata"]["rerank_model"] == ce_scorer.model_id
        assert recorder.ends[run_id] == docs


async def test_document_compressor_pipeline_sync_and_async(store, bi_scorer):
    # split the retrieved documents into clauses, then rerank the clauses
    pipeline = DocumentCompressorPipeline(transformers=[
        RecursiveCharacterTextSplitter(separators=["; ", ": ", " "], chunk_size=50,
                                       chunk_overlap=0),
        CrossEncoderRerank(scorer=bi_scorer, top_n=2),
    ])
    retriever = ContextualCompressionRetriever(
        base_compressor=pipeline, base_retriever=store.as_retriever(search_kwargs={"k": K}))
    recorder = RunRecorder()
    sync_docs = retriever.invoke(QUESTION, config={"callbacks": [recorder]})
    async_docs = await retriever.ainvoke(QUESTION, config={"callbacks": [recorder]})
    assert [d.page_content for d in sync_docs] == [d.page_content for d in async_docs]
    assert len(sync_docs) == 2
    assert all(len(d.page_content) <= 50 for d in sync_docs), "clauses, not documents"
    assert "wing" in sync_docs[0].page_content
    scores = [d.metadata["relevance_score"] for d in sync_docs]
    assert scores == sorted(scores, reverse=True)
    assert len(recorder.runs_named("CrossEncoderRerank")) == 2, "callbacks pass through"


def test_rerank_cross_encoder_swaps_only_the_model(store, bi_scorer):
    shared = Reranker(bi_scorer)
    docs = store.similarity_search(QUESTION, k=K)
    ours = CrossEncoderRerank(reranker=shared, top_n=3).compress_documents(docs, QUESTION)
    theirs = CrossEncoderReranker(model=RerankCrossEncoder(reranker=shared), top_n=3)
    assert [d.page_content for d in theirs.compress_documents(docs, QUESTION)] == \
        [d.page_content for d in ours]
    scores = RerankCrossEncoder(reranker=shared).score(
        [(QUESTION, d.page_content) for d in docs] + [("espresso", DOCUMENTS[5])])
    assert all(0.0 <= s <= 1.0 for s in scores) and len(scores) == K + 1


def test_rerank_cross_encoder_falls_back_to_input_order(bi_scorer):
    model = RerankCrossEncoder(reranker=Reranker(FailingScorer(bi_scorer)))
    assert model.score([(QUESTION, t) for t in DOCUMENTS[:3]]) == [-1.0, -2.0, -3.0]
    docs = [Document(page_content=t) for t in DOCUMENTS[:4]]
    kept = CrossEncoderReranker(model=model, top_n=2).compress_documents(docs, QUESTION)
    assert [d.page_content for d in kept] == DOCUMENTS[:2]


def test_rerank_cross_encoder_takes_huggingface_style_arguments(ce_folder):
    model = RerankCrossEncoder(model_name=ce_folder, model_kwargs={"device": "cpu"})
    assert model.reranker.scorer.describe()["kind"] == "cross-encoder"
    assert len(model.score([(QUESTION, DOCUMENTS[0])])) == 1
    model.reranker.close()
    with pytest.raises(ConfigurationError, match="unsupported model_kwargs"):
        RerankCrossEncoder(model_name=ce_folder, model_kwargs={"batch_size": 4})


def test_score_key_and_non_numeric_scores(bi_scorer):
    docs = [Document(page_content=DOCUMENTS[0], metadata={"similarity": 0.7}),
            Document(page_content=DOCUMENTS[1], metadata={"similarity": "A+"}),
            Document(page_content=DOCUMENTS[2], metadata={"similarity": float("nan")})]
    out = CrossEncoderRerank(scorer=bi_scorer, top_n=None, score_key="similarity") \
        .compress_documents(docs, QUESTION)
    by_text = {d.page_content: d.metadata for d in out}
    assert by_text[DOCUMENTS[0]]["retrieval_score"] == 0.7
    assert by_text[DOCUMENTS[1]]["retrieval_score"] is None
    assert by_text[DOCUMENTS[1]]["similarity"] == "A+", "caller metadata is kept as is"
    assert by_text[DOCUMENTS[2]]["retrieval_score"] is None


async def test_invalid_input_raises_before_any_callback(bi_scorer):
    recorder = RunRecorder()
    compressor = CrossEncoderRerank(scorer=bi_scorer)
    with pytest.raises(TypeError, match="sequence of Document"):
        compressor.compress_documents("not documents", QUESTION, callbacks=[recorder])
    with pytest.raises(TypeError, match="document 1 is a str"):
        await compressor.acompress_documents([Document(page_content="a"), "b"], QUESTION,
                                             callbacks=[recorder])
    with pytest.raises(TypeError, match="query must be a str"):
        compressor.compress_documents([Document(page_content="a")], None,
                                      callbacks=[recorder])
    assert recorder.starts == {}
