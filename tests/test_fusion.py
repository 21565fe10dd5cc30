"""Fusion of model and retrieval scores in the selection step."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerank_plugins.errors import ConfigurationError
from rerank_plugins.selection import RRF_K, fuse, select
from rerank_plugins.settings import RerankerSettings
from rerank_plugins.types import Candidate


def cands(retrieval):
    return [Candidate(str(i), f"doc {i}", r) for i, r in enumerate(retrieval)]


def test_linear_minmax_is_weighted_sum_of_normalized_scores():
    model = [0.9, 0.1, 0.5]
    fused = fuse(model, cands([1.0, 3.0, 2.0]), RerankerSettings(fusion="linear", alpha=0.25))
    # model normalized: 1, 0, 0.5 ; retrieval normalized: 0, 1, 0.5
    assert fused == pytest.approx([0.25, 0.75, 0.5])


def test_linear_alpha_one_is_model_order_and_zero_is_retrieval_order():
    model = [0.2, 0.9, 0.5]
    c = cands([3.0, 1.0, 2.0])
    only_model = fuse(model, c, RerankerSettings(fusion="linear", alpha=1.0))
    only_retrieval = fuse(model, c, RerankerSettings(fusion="linear", alpha=0.0))
    assert sorted(range(3), key=lambda i: -only_model[i]) == [1, 2, 0]
    assert sorted(range(3), key=lambda i: -only_retrieval[i]) == [0, 2, 1]


def test_rank_normalization_shares_average_rank_on_ties():
    fused = fuse([0.5, 0.5, 0.1], cands([1.0, 1.0, 1.0]),
                 RerankerSettings(fusion="linear", alpha=1.0, normalization="rank"))
    assert fused[0] == fused[1] == pytest.approx(0.75)
    assert fused[2] == pytest.approx(0.0)


def test_rrf_matches_formula_and_is_scaled_to_one_for_a_double_winner():
    model = [0.9, 0.2]
    fused = fuse(model, cands([5.0, 1.0]), RerankerSettings(fusion="rrf", alpha=0.5))
    assert fused[0] == pytest.approx(1.0)
    expected = (0.5 / (RRF_K + 2) + 0.5 / (RRF_K + 2)) * (RRF_K + 1)
    assert fused[1] == pytest.approx(expected)


def test_one_candidate_and_constant_scores_do_not_divide_by_zero():
    for mode in ("linear", "rrf"):
        assert all(math.isfinite(x) for x in fuse([0.3], cands([2.0]),
                                                  RerankerSettings(fusion=mode)))
    fused = fuse([0.4, 0.4, 0.4], cands([1.0, 1.0, 1.0]), RerankerSettings(fusion="linear"))
    assert fused == [0.5, 0.5, 0.5]


def test_nan_and_missing_retrieval_scores_rank_last_in_input_order():
    c = cands([float("nan"), 2.0, None, float("inf"), 1.0])
    assert c[0].retrieval_score is None and c[3].retrieval_score is None
    fused = fuse([0.5] * 5, c, RerankerSettings(fusion="linear", alpha=0.0))
    order = sorted(range(5), key=lambda i: (-fused[i], i))
    assert order[:2] == [1, 4]  # the known scores, best first
    assert order[2:] == [0, 2, 3]  # unknown ones keep their input order


def test_no_retrieval_scores_use_input_order_as_the_retrieval_ranking():
    fused = fuse([0.1, 0.1, 0.9], cands([None, None, None]),
                 RerankerSettings(fusion="linear", alpha=0.0))
    assert fused[0] > fused[1] > fused[2]


def test_fused_ties_keep_input_order_and_threshold_uses_model_score():
    c = cands([1.0, 1.0])
    kept, dropped, _ = select(c, [0.0, 0.0], [0.6, 0.6],
                              RerankerSettings(fusion="linear", threshold=0.7, min_keep=0))
    assert kept == [] and [d.id for d in dropped] == ["0", "1"]
    kept, _, _ = select(c, [0.0, 0.0], [0.6, 0.6], RerankerSettings(fusion="linear"))
    assert [k.id for k in kept] == ["0", "1"]


def test_invalid_fusion_settings_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="fusion"):
        RerankerSettings(fusion="borda")
    with pytest.raises(ConfigurationError, match="alpha"):
        RerankerSettings(fusion="linear", alpha=1.5)
    with pytest.raises(ConfigurationError, match="normalization"):
        RerankerSettings(normalization="zscore")


scores = st.floats(min_value=-50, max_value=50, allow_nan=False)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.one_of(st.none(), scores)), min_size=1,
                max_size=40),
       st.sampled_from(["linear", "rrf"]), st.floats(0, 1),
       st.sampled_from(["minmax", "rank"]))
def test_fused_scores_are_finite_and_within_unit_interval(rows, mode, alpha, norm):
    model = [m for m, _ in rows]
    fused = fuse(model, cands([r for _, r in rows]),
                 RerankerSettings(fusion=mode, alpha=alpha, normalization=norm))
    assert len(fused) == len(rows)
    assert all(math.isfinite(x) and -1e-9 <= x <= 1 + 1e-9 for x in fused)
