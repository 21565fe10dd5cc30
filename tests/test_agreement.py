"""Reduced precision must not change the ranking: our fast paths against the fp32
reference on real first-stage results (Cranfield and CISI BM25 top-100, 50
candidates of 80-250 words per query), and on the project's demo corpus (every
document for each of its 12 questions), which runs on a fresh clone.

The model is the MiniLM-L6 cross-encoder built from the bundled weights with a
seeded random head. Its scores for one query sit close together (a random
direction in the pooled representation carries little spread), so this is a
harder test of precision than a trained head, whose scores spread widely.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_collection

from rerank_plugins.scoring.base import ScoreRequest

QUERIES_PER_COLLECTION = 10
CANDIDATES = 50
TOP_K = 5


def _requests() -> list[ScoreRequest]:
    from rerank_ops.collections import load_collection

    requests = []
    for name in ("cranfield", "cisi"):
        collection = load_collection(require_collection(name))
        taken = 0
        for query_id, query in collection.queries.items():
            texts = [collection.doc_text(doc_id) for doc_id, _ in collection.run.get(query_id, [])]
            texts = [t for t in texts if 80 <= len(t.split()) <= 250][:CANDIDATES]
            if len(texts) < CANDIDATES:
                continue
            requests.append(ScoreRequest(query, texts))
            taken += 1
            if taken == QUERIES_PER_COLLECTION:
                break
    return requests


def _spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _top(scores: list[float]) -> list[int]:
    return [int(i) for i in np.argsort(scores)[::-1][:TOP_K]]


def _demo_requests(folder) -> list[ScoreRequest]:
    """The demo corpus: each question against every document, BM25 order first."""
    from rerank_ops.collections import load_collection

    collection = load_collection(folder)
    requests = []
    for query_id in sorted(collection.queries):
        ranked = [doc for doc, _ in collection.run.get(query_id, [])]
        ranked += [doc for doc in sorted(collection.corpus) if doc not in ranked]
        requests.append(ScoreRequest(collection.queries[query_id],
                                     [collection.doc_text(doc) for doc in ranked]))
    return requests


@pytest.fixture(scope="module", params=["demo", "shared"])
def real_requests(request):
    """The shipped demo corpus (12 questions x 60 documents, runs on a fresh clone),
    and the shared collections' real first-stage results."""
    if request.param == "demo":
        return _demo_requests(request.getfixturevalue("demo_collection"))
    return _requests()


@pytest.fixture(scope="module")
def reference(ce_scorer, real_requests):
    assert ce_scorer.dtype == "float32"
    return [out.scores for out in ce_scorer.score_many(real_requests)]


def _assert_agrees(reference, candidate) -> None:
    rhos = [_spearman(r, c) for r, c in zip(reference, candidate, strict=True)]
    same_top = [_top(r) == _top(c) for r, c in zip(reference, candidate, strict=True)]
    assert min(rhos) >= 0.99, f"Spearman per query: {sorted(rhos)[:5]} ..."
    assert sum(same_top) / len(same_top) >= 0.95, (
        f"identical top-{TOP_K} in {sum(same_top)}/{len(same_top)} queries")


def test_workload_is_the_benchmark_shape(real_requests):
    if len(real_requests) == 12:  # the demo corpus: every document for every question
        assert all(len(r.texts) == 60 for r in real_requests)
        return
    assert len(real_requests) >= 2 * QUERIES_PER_COLLECTION - 2
    assert all(len(r.texts) == CANDIDATES for r in real_requests)


def test_bf16_ranks_like_fp32(ce_folder, reference, real_requests):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(ce_folder, dtype="bfloat16")
    _assert_agrees(reference, [o.scores for o in scorer.score_many(real_requests)])


def test_automatic_precision_ranks_like_fp32(ce_folder, reference, real_requests):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(ce_folder)  # whatever this machine selects
    _assert_agrees(reference, [o.scores for o in scorer.score_many(real_requests)])


def test_batching_does_not_change_the_ranking(ce_scorer, reference, real_requests):
    one_by_one = [ce_scorer.score_many([r])[0].scores for r in real_requests[:4]]
    for merged, alone in zip(reference[:4], one_by_one, strict=True):
        assert merged == pytest.approx(alone, abs=1e-4)
