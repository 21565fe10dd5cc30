"""The LangChain drop-ins: a document compressor over the guarded :class:`Reranker`,
and a ``BaseCrossEncoder`` for users of ``CrossEncoderReranker`` who swap only the
model. Only ``langchain-core`` is imported.

One-line swap in a ``ContextualCompressionRetriever``::

    from rerank_plugins.langchain import CrossEncoderRerank

    compressor = CrossEncoderRerank(model="cross-encoder/ms-marco-MiniLM-L-6-v2", top_n=3)
"""

from __future__ import annotations

import time
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

from pydantic import Field, SkipValidation

from ._adapter_common import (
    RerankSettings,
    kept_positions,
    make_candidates,
    result_metadata,
)
from .errors import ConfigurationError
from .reranker import Reranker
from .scoring.base import ScoreOutput
from .settings import upgrade_names
from .types import Candidate, RerankResult

__all__ = ["CrossEncoderRerank", "LangChainCrossEncoderScorer", "RerankCrossEncoder"]


class CrossEncoderRerank(BaseDocumentCompressor, RerankSettings):
    """Reranks documents, guarded by a cache, a deadline, a circuit breaker and a
    fallback to the retrieval order.

    **Which model**: ``model`` may be a LangChain ``BaseCrossEncoder`` instance (as
    ``CrossEncoderReranker(model=HuggingFaceCrossEncoder(...))`` takes it: its
    ``score(pairs)`` then runs behind our guards), a cross-encoder hub name or
    folder, or ``None`` (the default): the embedded all-MiniLM-L6-v2 weights as a
    *bi-encoder* (offline; fused with the retrieval score). The choice is logged
    once at construction and shown by :meth:`describe`.

    Takes every :class:`~rerank_plugins.RerankerSettings` field (``timeout_s``,
    ``threshold``, ``min_keep``, ``cache``, ``fusion``, ``shadow``, ``event_log``, ...;
    see the field descriptions), ``scorer=``, ``config=`` and ``reranker=``.
    Returns new ``Document`` objects (the inputs are untouched) whose metadata gains
    ``relevance_score``, ``retrieval_score``, ``retrieval_rank`` (0-based),
    ``rerank_status`` and ``rerank_fallback_reason``. The rerank shows in LangChain
    tracing as a child retriever run named after the class.

    Example::

        compressor = CrossEncoderRerank(model="/models/ms-marco-MiniLM-L-6-v2", top_n=3)
        retriever = ContextualCompressionRetriever(
            base_compressor=compressor, base_retriever=store.as_retriever(k=20))
    """

    model: SkipValidation[str | BaseCrossEncoder | None] = Field(
        default=None, exclude=True,
        description="A LangChain BaseCrossEncoder, a cross-encoder hub name or folder, or "
        "None for the embedded all-MiniLM-L6-v2 bi-encoder (offline).")
    top_n: int | None = Field(default=3, description="Number of documents to return "
                              "sorted by relevance (None = all), as CrossEncoderReranker.")
    score_key: str = Field(default="score", description="Metadata key of the "
                           "first-stage (retrieval) score.")

    def __init__(self, *, reranker: Reranker | None = None, **data: Any) -> None:
        super().__init__(**upgrade_names(data))
        self._attach_reranker(reranker)

    def _scorer_and_model(self, scorer, values):
        model = values.get("model")
        if isinstance(model, BaseCrossEncoder):
            if scorer is not None:
                raise ConfigurationError("pass either model= or scorer=, not both")
            return LangChainCrossEncoderScorer(model), {**values, "model": None}
        return super()._scorer_and_model(scorer, values)

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


class LangChainCrossEncoderScorer:
    """A LangChain ``BaseCrossEncoder`` as a :class:`~rerank_plugins.scoring.Scorer`:
    its ``score(pairs)`` runs on our inference engine, under the deadline, breaker and
    cache (keyed by its class and model name).

    Scores are used as relevance in [0, 1] (``HuggingFaceCrossEncoder`` returns the
    model's sigmoid output; ``activation="sigmoid"`` for an encoder that returns raw
    logits).
    """

    revision = "langchain"

    def __init__(self, model: BaseCrossEncoder, *, activation: str = "identity") -> None:
        if not isinstance(model, BaseCrossEncoder):
            raise ConfigurationError(f"{type(model).__name__} is not a BaseCrossEncoder")
        self.model = model
        self.activation = activation
        name = getattr(model, "model_name", None) or ""
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        self.model_id = f"{type(model).__name__}:{name}" if name else type(model).__name__
        self.cache_namespace = f"langchain|{kind}|{name}|{activation}"

    def describe(self) -> dict[str, str]:
        return {"model": self.model_id, "revision": self.revision, "device": "n/a",
                "dtype": "n/a", "kind": "cross-encoder"}

    def score_many(self, requests):
        outputs = []
        for request in requests:
            started = time.perf_counter()
            scores = self.model.score([(request.query, text) for text in request.texts])
            outputs.append(ScoreOutput([float(x) for x in scores], 0,
                                       time.perf_counter() - started))
        return outputs


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
        **reranker_options: Any :class:`~rerank_plugins.RerankerSettings` field
            (``timeout_s``, ``cache``, ``calibration``, ...).

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
        self.reranker = Reranker(model=model, **options, **reranker_options)

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
