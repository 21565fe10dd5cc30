"""The LlamaIndex drop-in: a node postprocessor over the guarded :class:`Reranker`.

Swap it in for ``SentenceTransformerRerank`` with one line::

    from rerank_plugins.llama_index import CrossEncoderRerank

    rerank = CrossEncoderRerank(model="cross-encoder/ms-marco-MiniLM-L-6-v2", top_n=3)
    engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

try:
    from llama_index.core.bridge.pydantic import Field
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "rerank_plugins.llama_index needs LlamaIndex: "
        "pip install 'rerank-plugins[llama-index]'") from exc

from ._adapter_common import (
    RESULT_KEYS,
    RETRIEVAL_SCORE,
    RerankSettings,
    kept_positions,
    make_candidates,
    result_metadata,
)
from ._llama_index_budget import ContextBudgetPostprocessor
from .reranker import Reranker
from .settings import upgrade_names
from .types import RerankResult

__all__ = ["ContextBudgetPostprocessor", "CrossEncoderRerank"]

dispatcher = get_dispatcher(__name__)


class CrossEncoderRerank(BaseNodePostprocessor, RerankSettings):
    """Reranks retrieved nodes, guarded by a cache, a deadline, a circuit breaker and
    a fallback to the retrieval order.

    **Which model**: with ``model=None`` (the default) it uses the embedded
    all-MiniLM-L6-v2 weights as a *bi-encoder* (offline, no download; fused with
    the retrieval score). Name a real cross-encoder (``model="cross-encoder/
    ms-marco-MiniLM-L-6-v2"`` or a local folder) for cross-encoder reranking. The
    choice is logged once at construction and shown by :meth:`describe`.

    Accepts every argument of LlamaIndex's ``SentenceTransformerRerank`` with the
    same meaning and default (``top_n=2``, ``device=None`` = automatic,
    ``keep_retrieval_score=False``, ``trust_remote_code=True``) except ``model``'s
    default, plus every :class:`~rerank_plugins.RerankerSettings` field (``timeout_s``,
    ``threshold``, ``min_keep``, ``cache``, ``fusion``, ``shadow``, ``event_log``, ...;
    see the field descriptions), ``scorer=``, ``config=`` and ``reranker=``.
    Returned nodes are copies: ``score`` is the relevance score (the retrieval score
    on fallback) and the metadata gains ``relevance_score``, ``retrieval_rank``
    (0-based), ``rerank_status``, ``rerank_fallback_reason`` (and ``retrieval_score``
    with ``keep_retrieval_score=True``), hidden from the LLM and embedding text.

    Example::

        rerank = CrossEncoderRerank(model="/models/ms-marco-MiniLM-L-6-v2", top_n=3,
                                    threshold=0.2, timeout_s=0.3)
        engine = index.as_query_engine(node_postprocessors=[rerank])
    """

    top_n: int | None = Field(default=2, description="Number of nodes to return "
                              "sorted by relevance (None = all).")
    keep_retrieval_score: bool = Field(
        default=False, description="Also keep the retrieval score in metadata "
        "['retrieval_score'] (the other rerank keys are always written).")
    trust_remote_code: bool = Field(
        default=True, description="Allow custom model code when loading `model` (True, "
        "as SentenceTransformerRerank).")

    def __init__(self, *, reranker: Reranker | None = None, **data: Any) -> None:
        super().__init__(**upgrade_names(data))
        self._attach_reranker(reranker)

    @classmethod
    def class_name(cls) -> str:
        return "RerankPluginsCrossEncoderRerank"

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query, candidates = self._prepare(nodes, query_bundle)
        if not candidates:
            return []
        with self._events(nodes, query_bundle) as finish:
            result = self._reranker.rerank(query, candidates,
                                           top_n=self._call_top_n(self.top_n))
            return finish(self._to_nodes(nodes, result))

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query, candidates = self._prepare(nodes, query_bundle)
        if not candidates:
            return []
        with self._events(nodes, query_bundle) as finish:
            result = await self._reranker.arerank(query, candidates,
                                                  top_n=self._call_top_n(self.top_n))
            return finish(self._to_nodes(nodes, result))

    # -- translation ----------------------------------------------------------------
    @staticmethod
    def _prepare(nodes, query_bundle):
        # Validate everything before any event is emitted.
        if query_bundle is None:
            raise ValueError("Missing query bundle in extra info.")
        if not isinstance(nodes, (list, tuple)):
            raise TypeError(f"nodes must be a list of NodeWithScore, got "
                            f"{type(nodes).__name__}")
        for position, node in enumerate(nodes):
            if not isinstance(node, NodeWithScore):
                raise TypeError(f"node {position} is a {type(node).__name__}, "
                                "not a NodeWithScore")
        candidates = make_candidates(
            [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes],
            [n.score for n in nodes],
            [n.node.metadata for n in nodes])
        return query_bundle.query_str, candidates

    def _to_nodes(self, nodes: list[NodeWithScore], result: RerankResult):
        out = []
        for position, item in kept_positions(result):
            source = nodes[position]
            added = result_metadata(item, result)
            if not self.keep_retrieval_score:
                added.pop(RETRIEVAL_SCORE)
            node = source.node
            hidden = [k for k in RESULT_KEYS if k in added]
            copy = node.model_copy(update={
                "metadata": {**node.metadata, **added},
                "excluded_llm_metadata_keys": _union(node.excluded_llm_metadata_keys, hidden),
                "excluded_embed_metadata_keys": _union(
                    node.excluded_embed_metadata_keys, hidden),
            })
            score = item.relevance_score if item.relevance_score is not None else source.score
            out.append(NodeWithScore(node=copy, score=score))
        return out

    @contextmanager
    def _events(self, nodes, query_bundle):
        """The RERANKING callback event and the ReRank instrumentation events around
        one call; the caller ends both with ``finish(new_nodes)``."""
        model_name = self._reranker.model_id
        top_n = self.top_n if self.top_n is not None else len(nodes)
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=list(nodes),
                                          top_n=top_n, model_name=model_name))
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: model_name,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: top_n,
            },
        ) as event:

            def finish(new_nodes: list[NodeWithScore]) -> list[NodeWithScore]:
                event.on_end(payload={EventPayload.NODES: new_nodes})
                dispatcher.event(ReRankEndEvent(nodes=new_nodes))
                return new_nodes

            yield finish


def _union(existing: list[str] | None, extra: list[str]) -> list[str]:
    existing = list(existing or [])
    return existing + [key for key in extra if key not in existing]
