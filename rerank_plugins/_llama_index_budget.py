"""A LlamaIndex node postprocessor that keeps ranked nodes within a context token budget.

For apps that rerank elsewhere (LlamaIndex's own rerankers, a vector store that
already orders well): put it last in ``node_postprocessors``. Re-exported from
:mod:`rerank_plugins.llama_index`.

    from rerank_plugins.llama_index import ContextBudgetPostprocessor

    engine = index.as_query_engine(node_postprocessors=[
        SentenceTransformerRerank(top_n=10), ContextBudgetPostprocessor(context_tokens=1500)])
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "ContextBudgetPostprocessor needs LlamaIndex: "
        "pip install 'rerank-plugins[llama-index]'") from exc

from .context_budget import ContextBudget

__all__ = ["ContextBudgetPostprocessor"]

#: Metadata key set on a node whose text was cut to fit (hidden from the LLM).
TRUNCATED_KEY = "context_budget_truncated"


class ContextBudgetPostprocessor(BaseNodePostprocessor):
    """Keeps nodes, in the order received (most relevant first), while their tokens
    fit in ``context_tokens``; the rest are dropped.

    Tokens are those of the text the LLM will read (``MetadataMode.LLM``: text plus
    the metadata not excluded from the LLM). With ``truncate_last`` the first node
    that does not fit is kept as a copy with its text cut (metadata key
    ``context_budget_truncated`` = True, hidden from the LLM; a node without text of
    its own to cut is left out instead); the input nodes are never modified.

    Args:
        context_tokens: Token budget. Defaults to 3000.
        tokenizer: ``None`` (``ceil(chars / 4)``), a Hugging Face tokenizer folder or a
            locally cached tiktoken encoding name. Defaults to ``None``.
        truncate_last: Cut the first node that does not fit. Defaults to False.
        per_document_overhead: Tokens each node costs besides its text. Defaults to 0.

    Example::

        budget = ContextBudgetPostprocessor(context_tokens=1500, truncate_last=True)
        nodes = budget.postprocess_nodes(nodes, query_str="how do wings lift")
    """

    context_tokens: int = Field(default=3000, description="Token budget for the nodes.")
    tokenizer: str | None = Field(
        default=None, description="None (ceil(chars / 4)), a Hugging Face tokenizer "
        "folder or a locally cached tiktoken encoding name.")
    truncate_last: bool = Field(default=False, description="Cut the first node that does "
                                "not fit instead of dropping it.")
    per_document_overhead: int = Field(default=0, description="Tokens each node costs "
                                       "besides its text (separators, labels).")
    _budget: ContextBudget = PrivateAttr()

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._budget = ContextBudget(
            self.context_tokens, tokenizer=self.tokenizer, truncate_last=self.truncate_last,
            per_document_overhead=self.per_document_overhead)

    @classmethod
    def class_name(cls) -> str:
        return "RerankPluginsContextBudget"

    @property
    def budget(self) -> ContextBudget:
        return self._budget

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if not isinstance(nodes, (list, tuple)):
            raise TypeError(f"nodes must be a list of NodeWithScore, got "
                            f"{type(nodes).__name__}")
        for position, node in enumerate(nodes):
            if not isinstance(node, NodeWithScore):
                raise TypeError(f"node {position} is a {type(node).__name__}, "
                                "not a NodeWithScore")
        if not nodes:
            return []
        result = self._budget.apply(
            list(nodes), text=lambda n: n.node.get_content(metadata_mode=MetadataMode.LLM))
        kept = list(result.kept)
        if result.truncated_text is not None:
            room = (self._budget.context_tokens - sum(result.token_counts[:-1])
                    - self.per_document_overhead)
            copy = _cut_copy(kept[-1], self._budget, room)
            if copy is None:
                kept.pop()
            else:
                kept[-1] = copy
        return kept


def _cut_copy(source: NodeWithScore, budget: ContextBudget,
              room: int) -> NodeWithScore | None:
    """A copy of ``source`` whose own text is cut so its LLM content fits in ``room``
    (``None`` for a node without text of its own to cut: it is left out)."""
    node = source.node
    if not isinstance(node, TextNode):
        return None
    full = node.get_content(metadata_mode=MetadataMode.LLM)
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    # the metadata header stays whole; only the node's own text gives way
    header = max(0, budget.count(full) - budget.count(text))
    cut = budget.truncate(text, max(0, room - header))
    copy = node.model_copy(update={
        "text": cut,
        "metadata": {**node.metadata, TRUNCATED_KEY: True},
        "excluded_llm_metadata_keys": [*(node.excluded_llm_metadata_keys or []),
                                       TRUNCATED_KEY],
        "excluded_embed_metadata_keys": [*(node.excluded_embed_metadata_keys or []),
                                         TRUNCATED_KEY],
    })
    return NodeWithScore(node=copy, score=source.score)
