"""The rerankers under test, each behind the same two calls.

``rank(request)`` and ``arank(request)`` run one rerank through the system's own
public API (what an application calls) and return the candidate ids best first.
Input objects are built by ``prepare`` outside the timed region, because the peers
mutate the nodes they are given.

Peers:

* LlamaIndex ``SentenceTransformerRerank`` (``llama_index.core.postprocessor``).
* LangChain ``CrossEncoderReranker`` with ``HuggingFaceCrossEncoder`` from
  ``langchain_community``; when that sunset package is not installed, a stand-in
  that does exactly what its ``score`` does (``CrossEncoder.predict`` on the pairs).

Ours: the LlamaIndex and LangChain drop-ins over one shared :class:`Reranker`, the
bare ``Reranker.rerank`` and the bare scorer (no cache, telemetry or event log).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workload import BenchRequest


@dataclass
class System:
    """A named reranker with a sync and an async call on prepared inputs."""

    name: str
    kind: str  # "peer" or "ours"
    prepare: Callable[[BenchRequest], Any]
    rank: Callable[[BenchRequest, Any], list[str]]
    arank: Callable[[BenchRequest, Any], Any] | None = None
    before_call: Callable[[], None] = lambda: None
    notes: dict = field(default_factory=dict)


# -- LlamaIndex -------------------------------------------------------------------
def _nodes(request: BenchRequest):
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=text, id_=doc_id), score=score)
            for doc_id, text, score in zip(request.doc_ids, request.texts,
                                           request.retrieval_scores, strict=True)]


def _llama_system(name: str, kind: str, postprocessor, **extra) -> System:
    def rank(request: BenchRequest, nodes) -> list[str]:
        out = postprocessor.postprocess_nodes(nodes, query_str=request.query)
        return [n.node.node_id for n in out]

    async def arank(request: BenchRequest, nodes) -> list[str]:
        from llama_index.core.schema import QueryBundle

        out = await postprocessor.apostprocess_nodes(nodes, QueryBundle(request.query))
        return [n.node.node_id for n in out]

    return System(name, kind, _nodes, rank, arank, **extra)


def llama_index_peer(folder: str, top_n: int) -> System:
    """LlamaIndex's own ``SentenceTransformerRerank`` on the model folder."""
    from llama_index.core.postprocessor import SentenceTransformerRerank

    peer = SentenceTransformerRerank(model=folder, top_n=top_n, device="cpu")
    return _llama_system("llama_index.SentenceTransformerRerank", "peer", peer)


# -- LangChain --------------------------------------------------------------------
def _documents(request: BenchRequest):
    from langchain_core.documents import Document

    return [Document(page_content=text, metadata={"id": doc_id, "score": score})
            for doc_id, text, score in zip(request.doc_ids, request.texts,
                                           request.retrieval_scores, strict=True)]


def _langchain_system(name: str, kind: str, compressor, **extra) -> System:
    def rank(request: BenchRequest, documents) -> list[str]:
        out = compressor.compress_documents(documents, request.query)
        return [d.metadata["id"] for d in out]

    async def arank(request: BenchRequest, documents) -> list[str]:
        out = await compressor.acompress_documents(documents, request.query)
        return [d.metadata["id"] for d in out]

    return System(name, kind, _documents, rank, arank, **extra)


def huggingface_cross_encoder(folder: str):
    """``HuggingFaceCrossEncoder`` from langchain_community, or an exact stand-in.

    Returns ``(cross_encoder, source)`` where ``source`` says which one it is.
    """
    try:
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder
    except ImportError:
        HuggingFaceCrossEncoder = None  # noqa: N806
    if HuggingFaceCrossEncoder is not None:
        return (HuggingFaceCrossEncoder(model_name=folder, model_kwargs={"device": "cpu"}),
                "langchain_community.cross_encoders.HuggingFaceCrossEncoder")
    from langchain_classic.retrievers.document_compressors.cross_encoder import (
        BaseCrossEncoder,
    )
    from sentence_transformers import CrossEncoder

    class PredictCrossEncoder(BaseCrossEncoder):
        """What HuggingFaceCrossEncoder.score does: CrossEncoder.predict on the pairs."""

        def __init__(self) -> None:
            self.client = CrossEncoder(folder, device="cpu")

        def score(self, text_pairs):
            scores = self.client.predict(text_pairs)
            if len(scores.shape) > 1:
                scores = (row[1] for row in scores)
            return scores

    return PredictCrossEncoder(), "stand-in (CrossEncoder.predict, as HuggingFaceCrossEncoder)"


def langchain_peer(folder: str, top_n: int) -> System:
    """LangChain's ``CrossEncoderReranker`` with ``HuggingFaceCrossEncoder``."""
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker

    model, source = huggingface_cross_encoder(folder)
    compressor = CrossEncoderReranker(model=model, top_n=top_n)
    return _langchain_system("langchain.CrossEncoderReranker", "peer", compressor,
                             notes={"cross_encoder": source})


# -- ours -------------------------------------------------------------------------
def ours(reranker, top_n: int) -> list[System]:
    """Our drop-ins and the bare pipeline, all sharing ``reranker``.

    Every call starts from an empty cache (``before_call``), so each one pays the
    whole cache-miss path: lookup, model, store, telemetry and event log.
    """
    from rerank_plugins.langchain import CrossEncoderRerank as LangChainRerank
    from rerank_plugins.llama_index import CrossEncoderRerank as LlamaRerank

    def clear() -> None:
        if reranker.cache is not None:
            reranker.cache.clear()

    llama = _llama_system("ours.llama_index.CrossEncoderRerank", "ours",
                          LlamaRerank(reranker=reranker, top_n=top_n), before_call=clear)
    chain = _langchain_system("ours.langchain.CrossEncoderRerank", "ours",
                              LangChainRerank(reranker=reranker, top_n=top_n),
                              before_call=clear)

    def prepare(request: BenchRequest):
        return [{"id": d, "text": t, "retrieval_score": s} for d, t, s in
                zip(request.doc_ids, request.texts, request.retrieval_scores, strict=True)]

    def rank(request: BenchRequest, candidates) -> list[str]:
        return [item.id for item in reranker.rerank(request.query, candidates, top_n=top_n)]

    async def arank(request: BenchRequest, candidates) -> list[str]:
        result = await reranker.arerank(request.query, candidates, top_n=top_n)
        return [item.id for item in result]

    pipeline = System("ours.Reranker.rerank", "ours", prepare, rank, arank, before_call=clear)
    return [llama, chain, pipeline]


def bare_scorer(scorer) -> System:
    """The scorer alone: tokenize, forward, scores (no cache, telemetry or log)."""
    from rerank_plugins.scoring.base import ScoreRequest

    def rank(request: BenchRequest, _prepared) -> list[str]:
        [out] = scorer.score_many([ScoreRequest(request.query, request.texts)])
        order = sorted(range(len(out.scores)), key=lambda i: -out.scores[i])
        return [request.doc_ids[i] for i in order]

    async def arank(request: BenchRequest, prepared) -> list[str]:
        return await asyncio.to_thread(rank, request, prepared)

    return System("ours.scorer.score_many (bare)", "ours", lambda r: None, rank, arank)
