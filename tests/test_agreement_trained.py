"""Agreement judged on a trained head: our default path (auto backend and dtype,
adaptive fp32 re-scoring) against the torch fp32 reference, on the MiniLM-L6
cross-encoder fine-tuned by ``rerank-ops finetune`` on 10 cranfield queries with hard
judged labels (``heads.TEST_HEAD``, built once by ``benchmarks/heads.py`` into
``~/.cache/rerank-plugins/bench-heads``, about a minute the first time; slow because
scoring 40 requests twice in fp32 and bf16 takes minutes;
the harness uses the 40-query head). The random-head worst case stays in ``test_agreement.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import require_collection
from test_agreement import TOP_K, _requests, _spearman, _top

from rerank_plugins.scoring.base import ScoreRequest

# the first test builds the trained head (a fine-tune): minutes, more under load
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_folder() -> str:
    require_collection("cranfield")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import heads

    folder, _ = heads.trained_head(require_collection("cranfield").parent,
                                   recipe=heads.TEST_HEAD)
    return folder


def _long(requests: list[ScoreRequest]) -> list[ScoreRequest]:
    """Each candidate joined with the next: 300-512 tokens, attention-heavy."""
    return [ScoreRequest(r.query, [f"{t} {r.texts[(i + 1) % len(r.texts)]}"
                                   for i, t in enumerate(r.texts)]) for r in requests]


@pytest.mark.parametrize("inputs", ["80-250 words", "long"])
def test_default_path_ranks_like_fp32_on_a_trained_head(trained_folder, inputs):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    requests = _requests()
    if inputs == "long":
        requests = _long(requests)
    reference = CrossEncoderScorer(trained_folder, dtype="float32", backend="torch",
                                   max_length=512)
    ours = CrossEncoderScorer(trained_folder, max_length=512)
    ref = [o.scores for o in reference.score_many(requests)]
    outs = ours.score_many(requests)
    rhos = [_spearman(r, o.scores) for r, o in zip(ref, outs, strict=True)]
    same = [_top(r) == _top(o.scores) for r, o in zip(ref, outs, strict=True)]
    assert min(rhos) >= 0.99, sorted(rhos)[:5]
    assert sum(same) / len(same) >= 0.95, f"identical top-{TOP_K} in {sum(same)}/{len(same)}"
    # a trained head spreads its scores: the adaptive path re-scores only a few
    rescored = sum(o.extra["exact"] for o in outs) / sum(len(r.texts) for r in requests)
    if ours.dtype != "float32":
        assert rescored < 0.25, rescored
