"""A LlamaIndex question-answering app with the rerank-plugins drop-in, offline.

The one-line change from LlamaIndex's own reranker::

    - rerank = SentenceTransformerRerank(model="cross-encoder/ms-marco-MiniLM-L-6-v2", top_n=3)
    + rerank = CrossEncoderRerank(model="cross-encoder/ms-marco-MiniLM-L-6-v2", top_n=3)

Run ``python examples/llama_index_app.py``. It embeds with the all-MiniLM-L6-v2 weights
shipped inside rerank-plugins and answers with LlamaIndex's MockLLM, so nothing is
downloaded. Without ``RERANK_MODEL`` (a cross-encoder folder or hub name) the reranker
uses the embedded bi-encoder.
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core import Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.bridge.pydantic import PrivateAttr  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.schema import Document  # noqa: E402

from rerank_plugins.llama_index import CrossEncoderRerank  # noqa: E402
from rerank_plugins.scoring import bundled_model_path  # noqa: E402

DOCUMENTS = [
    "An airfoil turns the oncoming air downward; the reaction pushes the wing up (lift).",
    "Cats purr at 25 to 150 Hz, a range that may help their bones heal.",
    "Bernoulli's principle relates faster airflow over the wing to lower pressure.",
    "A sourdough starter is a culture of wild yeast and lactic acid bacteria.",
    "Angle of attack: tilting the wing up increases lift until the wing stalls.",
    "Espresso is brewed by forcing hot water through finely ground coffee.",
    "Winglets reduce the drag caused by vortices at the wing tips.",
    "The Great Wall of China is not visible to the naked eye from orbit.",
]


class MiniLMEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from the bundled all-MiniLM-L6-v2 (no download)."""

    _model: object = PrivateAttr()

    def __init__(self, **kwargs) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(bundled_model_path(), device="cpu",
                                          local_files_only=True)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(texts, normalize_embeddings=True,
                                  show_progress_bar=False).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


def main() -> None:
    Settings.embed_model = MiniLMEmbedding()
    Settings.llm = MockLLM()
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS])

    # The one line: LlamaIndex's SentenceTransformerRerank -> CrossEncoderRerank.
    rerank = CrossEncoderRerank(model=os.environ.get("RERANK_MODEL"), top_n=3,
                                timeout_ms=2000)

    engine = index.as_query_engine(similarity_top_k=6, node_postprocessors=[rerank])
    question = "How does a wing produce lift?"
    response = engine.query(question)
    print(f"Q: {question}")
    for node in response.source_nodes:
        meta = node.node.metadata
        print(f"  {node.score:.3f}  [{meta['rerank_status']}, was #{meta['retrieval_rank']}]"
              f"  {node.node.get_content()[:70]}")

    async_response = asyncio.run(engine.aquery(question))
    statuses = {n.node.metadata["rerank_status"] for n in async_response.source_nodes}
    print(f"async query: {len(async_response.source_nodes)} nodes, status {sorted(statuses)}")
    rerank.close()


if __name__ == "__main__":
    main()
