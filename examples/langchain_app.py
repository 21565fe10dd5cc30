"""A LangChain retrieval app with the rerank-plugins drop-ins, offline.

The one-line change from LangChain's own reranker::

    - compressor = CrossEncoderReranker(model=HuggingFaceCrossEncoder(model_name=NAME), top_n=3)
    + compressor = CrossEncoderRerank(model=NAME, top_n=3)

or, keeping ``CrossEncoderReranker`` and swapping only the model::

    - model = HuggingFaceCrossEncoder(model_name=NAME)
    + model = RerankCrossEncoder(model_name=NAME)

Run ``python examples/langchain_app.py``. It embeds with the all-MiniLM-L6-v2 weights
shipped inside rerank-plugins, so nothing is downloaded. Without ``RERANK_MODEL`` (a
cross-encoder folder or hub name) the reranker uses the embedded bi-encoder.
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_classic.retrievers import ContextualCompressionRetriever  # noqa: E402
from langchain_classic.retrievers.document_compressors import (  # noqa: E402
    CrossEncoderReranker,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from rerank_plugins.langchain import CrossEncoderRerank, RerankCrossEncoder  # noqa: E402
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


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings from the bundled all-MiniLM-L6-v2 (no download).

    Written here rather than taken from ``langchain-huggingface``: that package pins
    huggingface-hub < 2, and installing it would downgrade the huggingface-hub that
    transformers 5 / sentence-transformers 6 run on."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(bundled_model_path(), device="cpu",
                                          local_files_only=True)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(list(texts), normalize_embeddings=True,
                                  show_progress_bar=False).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def main() -> None:
    store = InMemoryVectorStore(MiniLMEmbeddings())
    store.add_documents([Document(page_content=t) for t in DOCUMENTS])
    model = os.environ.get("RERANK_MODEL")

    # The one line: CrossEncoderReranker(model=HuggingFaceCrossEncoder(...)) -> this.
    compressor = CrossEncoderRerank(model=model, top_n=3, timeout_s=2.0)

    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 6}))
    question = "How does a wing produce lift?"
    print(f"Q: {question}")
    for doc in retriever.invoke(question):
        meta = doc.metadata
        print(f"  {meta['relevance_score']:.3f}  [{meta['rerank_status']}, was "
              f"#{meta['retrieval_rank']}]  {doc.page_content[:70]}")
    async_docs = asyncio.run(retriever.ainvoke(question))
    print(f"async retriever: {len(async_docs)} documents, status "
          f"{sorted({d.metadata['rerank_status'] for d in async_docs})}")

    # Keeping LangChain's CrossEncoderReranker, swapping only the model (sharing the
    # Reranker above: one model in memory, one cache).
    langchain_own = CrossEncoderReranker(
        model=RerankCrossEncoder(reranker=compressor.reranker), top_n=3)
    top = langchain_own.compress_documents(store.similarity_search(question, k=6), question)
    print("CrossEncoderReranker + RerankCrossEncoder:", [d.page_content[:30] for d in top])
    compressor.close()


if __name__ == "__main__":
    main()
