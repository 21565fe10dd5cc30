"""Batch assembly in the cross-encoder scorer: padding, token budgets, request
merging in the inference engine, FLOP counting and precision settings."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rerank_plugins.errors import ConfigurationError
from rerank_plugins.resilience import InferenceEngine
from rerank_plugins.scoring.base import ScoreRequest
from rerank_plugins.scoring.tokens import (
    CPU_BATCH_BUDGET,
    CPU_FP32_BATCH_BUDGET,
    GPU_BATCH_BUDGET,
    default_batch_budget,
    pad_rows,
    token_budget_batches,
)

QUERY = "how does a swept wing behave at transonic speed"
TEXTS = [
    "swept wings delay the drag rise at transonic mach numbers.",
    "the boundary layer on a flat plate with heat transfer.",
    "buckling of thin cylindrical shells under axial compression and internal "
    "pressure, with experiments on imperfect shells of several sizes.",
    "cats.",
]


def test_pad_rows_places_every_id_and_masks_the_padding():
    rows = [[5, 6, 7], [8], [], [9, 10]]
    ids, mask = pad_rows(rows, pad_value=0)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]]


def test_pad_rows_rounds_the_width_up_but_never_past_the_limit():
    rows = [[1] * 17, [2] * 3]
    ids, mask = pad_rows(rows, multiple=16)
    assert ids.shape == (2, 32) and mask.sum(axis=1).tolist() == [17, 3]
    assert pad_rows(rows, multiple=16, limit=20)[0].shape == (2, 20)
    assert pad_rows([[1] * 25], multiple=16, limit=20)[0].shape == (1, 25)  # never cut
    assert pad_rows([[1] * 16], multiple=16)[0].shape == (1, 16)
    assert pad_rows([], multiple=16)[0].shape == (0, 0)


def test_pad_rows_uses_the_given_pad_id():
    ids, _ = pad_rows([[1], [2, 3]], pad_value=99)
    assert ids.tolist() == [[1, 99], [2, 3]]


@pytest.mark.parametrize("budget", [16, 64, 300, 10_000])
def test_token_budget_batches_cover_every_index_once_within_budget(budget):
    rng = np.random.default_rng(7)
    lengths = [int(x) for x in rng.integers(3, 120, size=200)]
    batches = token_budget_batches(lengths, budget, max_batch_size=32)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 32
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1


def test_token_budget_batches_sort_longest_first_so_padding_stays_small():
    lengths = [10, 200, 12, 190, 11, 195]
    batches = token_budget_batches(lengths, 600, 8)
    assert [sorted(lengths[i] for i in b) for b in batches] == [[190, 195, 200], [10, 11, 12]]


@pytest.mark.parametrize("device, expected", [
    ("cpu", CPU_BATCH_BUDGET), ("cuda", GPU_BATCH_BUDGET), ("cuda:1", GPU_BATCH_BUDGET),
    ("mps", GPU_BATCH_BUDGET)])
def test_default_batch_budget_is_small_on_a_cpu_and_large_on_an_accelerator(device, expected):
    assert default_batch_budget(device) == expected
    assert default_batch_budget(device, "bfloat16") == expected
    tokens, pairs = CPU_BATCH_BUDGET
    assert tokens < GPU_BATCH_BUDGET[0] and pairs < GPU_BATCH_BUDGET[1]
    # a budget still admits one full-length (512-token) pair
    assert tokens >= 512 and pairs >= 1


def test_fp32_passes_on_a_cpu_take_half_the_tokens_of_reduced_precision_ones():
    # fp32 activations take twice the bytes: the same cache footprint is half the tokens
    assert default_batch_budget("cpu", "float32") == CPU_FP32_BATCH_BUDGET
    assert CPU_FP32_BATCH_BUDGET[0] * 2 == CPU_BATCH_BUDGET[0] >= 512
    assert CPU_FP32_BATCH_BUDGET[1] == CPU_BATCH_BUDGET[1]
    for dtype in ("float16", "bfloat16", "float32"):  # GPUs: one large budget
        assert default_batch_budget("cuda", dtype) == GPU_BATCH_BUDGET


def test_scorers_take_the_device_budget_unless_told_otherwise(ce_folder, ce_scorer,
                                                              bi_scorer):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    # the fixtures run fp32 throughout: every pass takes the fp32 budget
    assert (ce_scorer.max_batch_tokens, ce_scorer.max_batch_size) == CPU_FP32_BATCH_BUDGET
    assert (ce_scorer.exact_batch_tokens, ce_scorer.exact_batch_size) == CPU_FP32_BATCH_BUDGET
    assert (bi_scorer.max_batch_tokens, bi_scorer.batch_size) == CPU_FP32_BATCH_BUDGET
    reduced = CrossEncoderScorer(ce_folder, dtype="bfloat16", backend="torch")
    assert (reduced.max_batch_tokens, reduced.max_batch_size) == CPU_BATCH_BUDGET
    assert (reduced.exact_batch_tokens, reduced.exact_batch_size) == CPU_FP32_BATCH_BUDGET
    explicit = CrossEncoderScorer(ce_folder, dtype="bfloat16", backend="torch",
                                  max_batch_tokens=4096, max_batch_size=3)
    # a budget the caller sets holds for both precisions
    assert (explicit.max_batch_tokens, explicit.max_batch_size) == (4096, 3)
    assert (explicit.exact_batch_tokens, explicit.exact_batch_size) == (4096, 3)
    with pytest.raises(ConfigurationError, match="max_batch_size"):
        CrossEncoderScorer(ce_folder, dtype="float32", max_batch_size=0)
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    with pytest.raises(ConfigurationError, match="batch_size"):
        BiEncoderScorer(dtype="float32", batch_size=0)  # 0 is not "the default"


def test_the_fp32_re_score_runs_under_its_own_budget(ce_folder):
    """Fast passes are packed by max_batch_*, the fp32 re-score by exact_batch_*."""
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(ce_folder, dtype="bfloat16", backend="torch", exact_top=4)
    scorer.max_batch_tokens, scorer.max_batch_size = 4096, 8
    scorer.exact_batch_tokens, scorer.exact_batch_size = 4096, 2
    seen: list[tuple[bool, int]] = []
    logits = scorer._logits

    def spy(inputs, exact):
        seen.append((exact, inputs["input_ids"].shape[0]))
        return logits(inputs, exact)

    scorer._logits = spy
    [output] = scorer.score_many([ScoreRequest(QUERY, TEXTS * 2)])
    assert output.extra["exact"] == 4
    assert [rows for exact, rows in seen if not exact] == [8]
    assert [rows for exact, rows in seen if exact] == [2, 2]


def test_score_many_merges_requests_without_changing_scores(ce_scorer):
    single = [ce_scorer.score_many([ScoreRequest(QUERY, TEXTS[:k])])[0].scores
              for k in (1, 4)]
    merged = ce_scorer.score_many([ScoreRequest(QUERY, TEXTS[:1]),
                                   ScoreRequest(QUERY, TEXTS)])
    assert merged[0].scores == pytest.approx(single[0], abs=1e-5)
    assert merged[1].scores == pytest.approx(single[1], abs=1e-5)


def test_batch_size_and_budget_do_not_change_scores(ce_folder, ce_scorer):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    tiny = CrossEncoderScorer(ce_folder, dtype="float32", max_batch_tokens=64,
                              max_batch_size=2)
    request = [ScoreRequest(QUERY, TEXTS)]
    assert tiny.score_many(request)[0].scores == pytest.approx(
        ce_scorer.score_many(request)[0].scores, abs=1e-5)


def test_scores_match_sentence_transformers_predict(ce_folder, ce_scorer):
    from sentence_transformers import CrossEncoder

    reference = CrossEncoder(ce_folder, device="cpu").predict(
        [(QUERY, t) for t in TEXTS], activation_fn=lambda x: x)
    ours = ce_scorer.score_many([ScoreRequest(QUERY, TEXTS)])[0].scores
    assert ours == pytest.approx([float(x) for x in reference], abs=1e-4)


def test_outputs_report_real_token_lengths(ce_scorer):
    [out] = ce_scorer.score_many([ScoreRequest(QUERY, TEXTS)])
    lengths = out.extra["token_lengths"]
    assert len(lengths) == len(TEXTS)
    encoded = ce_scorer.tokenizer([QUERY] * len(TEXTS), TEXTS)["input_ids"]
    assert lengths == [len(ids) for ids in encoded]


def test_encoder_flops_counts_projections_feed_forward_and_attention():
    from types import SimpleNamespace

    from rerank_plugins.scoring.cross_encoder import encoder_flops

    config = SimpleNamespace(hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                             num_labels=1)
    per_layer = 100 * (4 * 384 * 384 + 2 * 384 * 1536) + 2 * 100 * 100 * 384
    expected = 2 * (6 * per_layer + 384 * 384 + 384)
    assert encoder_flops(config, [100]) == expected
    assert encoder_flops(config, [100, 100]) == 2 * expected
    assert encoder_flops(config, []) == 0


def test_int8_is_cpu_only_and_unknown_modes_are_refused(ce_folder, monkeypatch):
    from rerank_plugins.scoring import cross_encoder
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    with pytest.raises(ConfigurationError, match="quantize"):
        CrossEncoderScorer(ce_folder, quantize="int4")
    # fault injection: this CPU-only machine has no GPU, so the device probe is made to
    # answer "cuda" (the refusal happens before any model is moved to the device)
    monkeypatch.setattr(cross_encoder, "resolve_device_dtype",
                        lambda device, dtype: ("cuda", "float16"))
    with pytest.raises(ConfigurationError, match="CPU path"):
        CrossEncoderScorer(ce_folder, quantize="int8")
    monkeypatch.undo()
    int8 = CrossEncoderScorer(ce_folder, quantize="int8", device="cpu")
    assert int8.device == "cpu" and int8.describe()["dtype"] == "float32+int8"


def test_cache_namespace_separates_precisions(ce_folder, ce_scorer):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    bf16 = CrossEncoderScorer(ce_folder, dtype="bfloat16", backend="torch")
    assert bf16.cache_namespace != ce_scorer.cache_namespace
    assert bf16.describe()["dtype"] == "bfloat16"


class _SlowScorer:
    """Records how many requests each model call received."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def score_many(self, requests):
        with self._lock:
            self.calls.append(len(requests))
        time.sleep(self.seconds)
        return [len(r.texts) for r in requests]


def test_engine_merges_concurrent_requests_into_few_model_calls():
    scorer = _SlowScorer(0.2)
    engine = InferenceEngine(scorer.score_many, max_threads=4)
    try:
        futures = [engine.submit([ScoreRequest(f"q{i}", ["a"] * (i + 1))]) for i in range(8)]
        assert [f.result(timeout=10) for f in futures] == [[i + 1] for i in range(8)]
    finally:
        engine.close()
    assert sum(scorer.calls) == 8
    # the first call takes what was queued then; the rest arrive while it runs and
    # are merged into the next call instead of eight separate forward passes
    assert len(scorer.calls) <= 3


def test_engine_respects_max_batch_requests():
    scorer = _SlowScorer(0.05)
    engine = InferenceEngine(scorer.score_many, max_batch_requests=3)
    try:
        futures = [engine.submit([ScoreRequest("q", ["a"])]) for _ in range(10)]
        for future in futures:
            future.result(timeout=10)
    finally:
        engine.close()
    assert max(scorer.calls) <= 3 and sum(scorer.calls) == 10


@pytest.mark.parametrize("precision", [{"dtype": "bfloat16"}, {"quantize": "int8"}])
def test_reduced_precision_re_scores_exactly_the_top_in_fp32(ce_folder, ce_scorer, precision):
    """The head of each ranking carries fp32 scores and the rest keeps the reduced
    precision (the fp32 model is kept, not reloaded: the weights are the ones the fast
    path was made from). Twelve distinct texts, so a copy of a re-scored text cannot
    match fp32 by being the same input, and an all-fp32 run fails the second half."""
    from rerank_ops.demo_corpus import DOCUMENTS

    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    fast = CrossEncoderScorer(ce_folder, exact_top=3, backend="torch", **precision)
    plain = CrossEncoderScorer(ce_folder, exact_top=0, backend="torch", **precision)
    texts = [text for _, text in list(DOCUMENTS.values())[::5]][:12]
    assert len(set(texts)) == 12
    [reference] = ce_scorer.score_many([ScoreRequest(QUERY, texts)])
    [scored] = fast.score_many([ScoreRequest(QUERY, texts)])
    [reduced] = plain.score_many([ScoreRequest(QUERY, texts)])
    # the head is the reduced-precision ranking's top 3 (after re-scoring, a fourth
    # candidate's reduced score may pass one of them: exact_top promises the re-score
    # of the reduced top N, the adaptive mode the order of the head)
    head = set(sorted(range(len(texts)), key=lambda i: reduced.scores[i], reverse=True)[:3])
    for i in head:  # fp32 scores: the reference's to float rounding
        assert scored.scores[i] == pytest.approx(reference.scores[i], abs=1e-6), i
    rest = set(range(len(texts))) - head
    for i in rest:  # untouched: exactly the reduced-precision run's scores
        assert scored.scores[i] == pytest.approx(reduced.scores[i], abs=1e-6), i
    # and that precision is really reduced (an all-fp32 run fails here)
    assert max(abs(scored.scores[i] - reference.scores[i]) for i in rest) > 1e-4
    assert str(next(fast._exact_model.parameters()).dtype) == "torch.float32"
