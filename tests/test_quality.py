"""Quality: on the shared Cranfield and CISI collections the guarded pipeline with the
embedded default model raises nDCG@10 over the BM25 order it reranks.

The first stage is each collection's ``bm25_top100.trec`` (BM25 top-100). To stay
near a minute per collection on a 2-core CPU a fixed, deterministic subset of the
judged queries is used: every 7th Cranfield query (33 of 225) and every 3rd CISI
query (26 of 76), by sorted query id. These are development collections; nothing
here was tuned on scifact or med.
"""

from __future__ import annotations

import pytest
from conftest import require_collection
from rerank_ops.collections import load_collection
from rerank_ops.evaluation import evaluate

from rerank_plugins import Reranker, Status

SUBSETS = {"cranfield": 7, "cisi": 3}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SUBSETS))
def test_reranking_bm25_top100_raises_ndcg_at_10(name, bi_scorer):
    collection = load_collection(require_collection(name))
    if not collection.run:
        pytest.skip(f"{name} has no bm25_top100.trec first-stage run")
    query_ids = sorted(q for q in collection.queries if q in collection.run)[::SUBSETS[name]]
    bm25 = {qid: collection.run[qid][:100] for qid in query_ids}
    # no deadline: this measures the model, not how busy the machine is
    reranker = Reranker(bi_scorer, timeout_s=None, cache=None)
    reranked = {}
    try:
        for qid in query_ids:
            result = reranker.rerank(collection.queries[qid], [
                {"id": doc_id, "text": collection.doc_text(doc_id), "retrieval_score": score}
                for doc_id, score in bm25[qid]])
            assert result.status is Status.OK
            assert sorted(result.ids) == sorted(doc_id for doc_id, _ in bm25[qid])
            reranked[qid] = [(item.id, item.relevance_score) for item in result]
    finally:
        reranker.close()
    before = evaluate(collection.qrels, bm25, ("nDCG@10", "RR@10"))
    after = evaluate(collection.qrels, reranked, ("nDCG@10", "RR@10"))
    print(f"\n{name} ({len(query_ids)} queries, BM25 top-100): "
          f"nDCG@10 BM25 {before['nDCG@10']:.4f} -> reranked {after['nDCG@10']:.4f}; "
          f"MRR@10 {before['RR@10']:.4f} -> {after['RR@10']:.4f}")
    assert after["nDCG@10"] > before["nDCG@10"]
