"""Why a cross-encoder head learns little from the embedded bi-encoder.

A cross-encoder's head reads the [CLS] position (through BERT's pooler); the
embedded MiniLM was trained with mean pooling, so its [CLS] output was never
asked to carry meaning. This prints the mean cosine similarity between the
outputs for different (query, document) pairs at the [CLS] position, after the
pooler, and mean-pooled: the closer to 1, the less the head has to work with.

    python benchmarks/start_model_probe.py [--pairs 10]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ops"))


def mean_pairwise_cosine(rows) -> float:
    import torch

    unit = torch.nn.functional.normalize(rows, dim=-1)
    similarity = unit @ unit.T
    off_diagonal = ~torch.eye(len(rows), dtype=torch.bool)
    return float(similarity[off_diagonal].mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--collection", default="cranfield")
    args = parser.parse_args()

    import torch
    from rerank_ops.collections import CollectionError, data_dir, load_collection
    from transformers import AutoModel, AutoTokenizer

    from rerank_plugins.scoring.default_model import bundled_model_path

    try:
        collection = load_collection(data_dir() / args.collection)
    except CollectionError as exc:
        sys.exit(f"skip: {exc}")
    queries = list(collection.queries.values())[: args.pairs]
    documents = [collection.doc_text(d) for d in list(collection.corpus)[: args.pairs]]
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())
    model = AutoModel.from_pretrained(bundled_model_path()).eval()
    batch = tokenizer(queries, documents, truncation=True, max_length=128, padding=True,
                      return_tensors="pt")
    with torch.inference_mode():
        output = model(**batch)
    hidden = output.last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    mean_pooled = (hidden * mask).sum(1) / mask.sum(1)
    print(f"{len(queries)} different (query, document) pairs from {args.collection}; "
          "mean cosine between pairs:")
    print(f"  [CLS] output        {mean_pairwise_cosine(hidden[:, 0]):.3f}")
    print(f"  pooler([CLS])       {mean_pairwise_cosine(output.pooler_output):.3f}")
    print(f"  mean-pooled tokens  {mean_pairwise_cosine(mean_pooled):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
