"""A LlamaIndex question-answering app with the rerank-plugins drop-in, offline.

The one-line change from LlamaIndex's own reranker::

    - rerank = SentenceTransformerRerank(model="cross-encoder/ms-marco-MiniLM-L-6-v2", top_n=3)
    + rerank = CrossEncoderRerank(model="cross-encoder/ms-marco-MiniLM-L-6-v2", top_n=3)

Run ``python examples/llama_index_app.py``. It embeds with LlamaIndex's own
``HuggingFaceEmbedding`` (package ``llama-index-embeddings-huggingface``, which installs
beside our transformers/huggingface-hub versions) pointed at the all-MiniLM-L6-v2
folder shipped inside rerank-plugins, and answers with LlamaIndex's MockLLM, so
nothing is downloaded. Without ``RERANK_MODEL`` (a cross-encoder folder or hub name)
the reranker uses the embedded bi-encoder (it says so in its log line and
``rerank.describe()``).
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core import Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.schema import Document  # noqa: E402
from llama_index.embeddings.huggingface import HuggingFaceEmbedding  # noqa: E402

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


def main() -> None:
    Settings.embed_model = HuggingFaceEmbedding(model_name=bundled_model_path(), device="cpu")
    Settings.llm = MockLLM()
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS])

    # The one line: LlamaIndex's SentenceTransformerRerank -> CrossEncoderRerank.
    rerank = CrossEncoderRerank(model=os.environ.get("RERANK_MODEL"), top_n=3,
                                timeout_s=2.0)

    engine = index.as_query_engine(similarity_top_k=6, node_postprocessors=[rerank])
    question = "How does a wing produce lift?"
    response = engine.query(question)
    print(f"Q: {question}")
    for node in response.source_nodes:
        meta = node.node.metadata
        print(f"  {node.score:.3f}  [{meta['rerank_status']}, was #{meta['retrieval_rank']}]"
              f"  {node.node.get_content()[:70]}")

    described = rerank.describe()
    print(f"reranked with {described['model']} ({described['kind']})")
    async_response = asyncio.run(engine.aquery(question))
    statuses = {n.node.metadata["rerank_status"] for n in async_response.source_nodes}
    print(f"async query: {len(async_response.source_nodes)} nodes, status {sorted(statuses)}")
    rerank.close()


if __name__ == "__main__":
    main()
