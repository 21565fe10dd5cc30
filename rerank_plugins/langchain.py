"""The LangChain drop-ins: a document compressor over the guarded :class:`Reranker`,
and a ``BaseCrossEncoder`` for users of ``CrossEncoderReranker`` who swap only the
model. Only ``langchain-core`` is imported.

One-line swap in a ``ContextualCompressionRetriever``::

    from rerank_plugins.langchain import CrossEncoderRerank

    compressor = CrossEncoderRerank(model="cross-encoder/ms-marco-MiniLM-L-6-v2", top_n=3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
    from langchain_core.cross_encoders import BaseCrossEncoder
    from langchain_core.documents import BaseDocumentCompressor, Document
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "rerank_plugins.langchain needs LangChain: pip install 'rerank-plugins[langchain]'"
    ) from exc

from pydantic import Field

from ._adapter_common import (
    RerankSettings,
    kept_positions,
    load_scorer,
    make_candidates,
    result_metadata,
)
from .errors import ConfigurationError
from .reranker import Reranker
from .types import Candidate, RerankResult

__all__ = ["CrossEncoderRerank", "RerankCrossEncoder"]


class CrossEncoderRerank(BaseDocumentCompressor, RerankSettings):
    """Reranks documents with a cross-encoder, guarded by a cache, a deadline, a
    circuit breaker and a fallback to the retrieval order.

    Returns new ``Document`` objects (the inputs are untouched) whose metadata gains
    ``relevance_score``, ``retrieval_score``, ``retrieval_rank`` (0-based),
    ``rerank_status`` and ``rerank_fallback_reason``. The rerank shows in LangChain
    tracing as a child retriever run named after the class.

    Args:
        model: Cross-encoder hub name or folder; ``None`` uses the embedded
            all-MiniLM-L6-v2 bi-encoder. Defaults to ``None``.
        top_n: Documents returned (``None`` = all). Defaults to 3, as LangChain's
            ``CrossEncoderReranker``.
        score_key: Metadata key holding the first-stage score. Defaults to ``"score"``;
            a missing or non-numeric value counts as no retrieval score.
        reranker: A ready :class:`Reranker` to share; then only ``top_n`` and
            ``score_key`` may be set here.
        **settings: ``device``, ``timeout_ms``, ``threshold``, ``min_keep``, ``cache``,
            ``fusion``, ``alpha``, ``shadow``, ``calibration``, ``event_log``, ...

    Example::

        compressor = CrossEncoderRerank(model="/models/ms-marco-MiniLM-L-6-v2", top_n=3)
        retriever = ContextualCompressionRetriever(
            base_compressor=compressor, base_retriever=store.as_retriever(k=20))
    """

    top_n: int | None = Field(default=3, description="Number of documents to return "
                              "sorted by relevance (None = all).")
    score_key: str = Field(default="score", description="Metadata key of the "
                           "first-stage (retrieval) score.")

    def __init__(self, *, reranker: Reranker | None = None, **settings: Any) -> None:
        super().__init__(**settings)
        self._attach_reranker(reranker)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; never raises for model failures."""
        candidates = self._prepare(documents, query)
        manager = CallbackManager.configure(callbacks, None, local_metadata=self._run_info())
        run = manager.on_retriever_start(None, query, name=type(self).__name__)
        try:
            result = self._reranker.rerank(query, candidates,
                                           top_n=self._call_top_n(self.top_n))
            reranked = self._to_documents(documents, result)
        except BaseException as exc:
            run.on_retriever_error(exc)
            raise
        run.on_retriever_end(reranked)
        return reranked

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents` on the shared inference engine (no thread
        hop per call)."""
        candidates = self._prepare(documents, query)
        manager = AsyncCallbackManager.configure(callbacks, None,
                                                 local_metadata=self._run_info())
        run = await manager.on_retriever_start(None, query, name=type(self).__name__)
        try:
            result = await self._reranker.arerank(query, candidates,
                                                  top_n=self._call_top_n(self.top_n))
            reranked = self._to_documents(documents, result)
        except BaseException as exc:
            await run.on_retriever_error(exc)
            raise
        await run.on_retriever_end(reranked)
        return reranked

    # -- translation ----------------------------------------------------------------
    def _run_info(self) -> dict[str, Any]:
        return {"rerank_model": self._reranker.model_id}

    def _prepare(self, documents, query) -> list[Candidate]:
        # Validate before any callback fires; the Reranker checks the query itself.
        if documents is None or isinstance(documents, (str, bytes, Document)):
            raise TypeError(f"documents must be a sequence of Document, got "
                            f"{type(documents).__name__}")
        for position, document in enumerate(documents):
            if not isinstance(document, Document):
                raise TypeError(f"document {position} is a {type(document).__name__}, "
                                "not a Document")
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return make_candidates(
            [d.page_content for d in documents],
            [d.metadata.get(self.score_key) for d in documents],
            [d.metadata for d in documents])

    @staticmethod
    def _to_documents(documents: Sequence[Document], result: RerankResult) -> list[Document]:
        return [
            documents[position].model_copy(update={
                "metadata": {**documents[position].metadata, **result_metadata(item, result)}
            })
            for position, item in kept_positions(result)
        ]


class RerankCrossEncoder(BaseCrossEncoder):
    """A ``BaseCrossEncoder`` backed by the guarded Reranker, for
    ``CrossEncoderReranker(model=...)``: swap only the model.

    ``score`` returns the model score in [0, 1] per pair (sigmoid of the logit, or
    the calibrated probability), so ``CrossEncoderReranker`` sorts as before. When the
    model cannot serve (timeout, error, open circuit) it returns ``-1, -2, ...`` in
    input order per query, so the retrieval order is kept instead of an exception.

    Args:
        model: Cross-encoder hub name or folder; ``None`` uses the embedded
            all-MiniLM-L6-v2 bi-encoder. ``model_name=`` is accepted as an alias, as
            ``HuggingFaceCrossEncoder`` names it.
        model_kwargs: ``{"device": ...}`` as ``HuggingFaceCrossEncoder`` takes it.
        reranker: A ready :class:`Reranker` to share (its cache, deadline and breaker).
        **reranker_options: Passed to :class:`Reranker` (``timeout_ms``, ``cache``,
            ``calibration``, ...).

    Example::

        model = RerankCrossEncoder("/models/ms-marco-MiniLM-L-6-v2")
        compressor = CrossEncoderReranker(model=model, top_n=3)
    """

    def __init__(self, model: str | None = None, *, model_name: str | None = None,
                 model_kwargs: dict[str, Any] | None = None,
                 reranker: Reranker | None = None, **reranker_options: Any) -> None:
        if model is not None and model_name is not None:
            raise ConfigurationError("pass either model or model_name, not both")
        model = model if model is not None else model_name
        if reranker is not None:
            if model is not None or model_kwargs or reranker_options:
                raise ConfigurationError(
                    "reranker= carries its own model and settings; pass nothing else")
            self.reranker = reranker
            return
        options = dict(model_kwargs or {})
        unknown = sorted(set(options) - {"device", "trust_remote_code"})
        if unknown:
            raise ConfigurationError(f"unsupported model_kwargs {unknown}; only 'device' "
                                     "and 'trust_remote_code' are understood")
        self.reranker = Reranker(load_scorer(model, **options), **reranker_options)

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """Score (query, document) pairs; scores are in [0, 1], fallbacks negative."""
        by_query: dict[str, list[int]] = {}
        for position, pair in enumerate(text_pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"pair {position} must be a (query, text) tuple")
            by_query.setdefault(pair[0], []).append(position)
        scores: list[float] = [0.0] * len(text_pairs)
        for query, positions in by_query.items():
            texts = [text_pairs[p][1] for p in positions]
            result = self.reranker.rerank(query, make_candidates(
                texts, [None] * len(texts), [{}] * len(texts)))
            for item in (*result.items, *result.dropped):
                if item.model_score is None:
                    value = -1.0 - item.retrieval_rank
                else:
                    value = item.model_score
                scores[positions[item.retrieval_rank]] = value
        return scores
