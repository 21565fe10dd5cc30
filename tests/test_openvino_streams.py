"""OpenVINO streams (``openvino_streams``): a call's batches run side by side, one per
stream, and give the same scores as the one-stream model.

Real compiled models of the cross-encoder built from the bundled weights; the one
fault (a batch OpenVINO refuses) is a real malformed input, not a fake."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wing_texts import QUERY
from wing_texts import TEXTS as WING_TEXTS

from rerank_plugins.errors import ConfigurationError
from rerank_plugins.scoring.base import ScoreRequest
from rerank_plugins.scoring.tokens import spread_batches

TEXTS = [*WING_TEXTS,
         "shock waves on a swept wing at high subsonic speed and the onset of buffet."]


@given(st.lists(st.lists(st.integers(0, 10_000), min_size=1, max_size=9), max_size=6),
       st.integers(1, 4))
def test_spread_batches_cuts_the_largest_and_keeps_every_row_once(batches, parts):
    spread = spread_batches(batches, parts)
    flat = [row for batch in batches for row in batch]
    assert sorted(row for batch in spread for row in batch) == sorted(flat)
    assert all(spread)  # no empty batch
    if len(batches) >= parts:
        assert spread == batches  # enough work already: nothing is cut
    else:
        assert len(spread) == min(parts, len(flat)) or all(len(b) == 1 for b in spread)


def test_spread_batches_splits_in_order():
    assert spread_batches([[4, 2, 7, 1, 9]], 2) == [[4, 2, 7], [1, 9]]
    assert spread_batches([[1, 2], [3, 4, 5, 6]], 3) == [[1, 2], [3, 4], [5, 6]]
    assert spread_batches([[5]], 2) == [[5]]
    assert spread_batches([], 2) == []


@pytest.fixture(scope="module")
def compiled_pair(ce_folder, tmp_path_factory):
    pytest.importorskip("openvino", reason="the [openvino] extra is part of [dev]")
    from sentence_transformers import CrossEncoder

    from rerank_plugins.scoring.openvino_backend import CompiledEncoder

    module = CrossEncoder(ce_folder, device="cpu")[0].auto_model.float().eval()
    cache = tmp_path_factory.mktemp("ov-streams")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    kwargs = {"kind": "cross-encoder", "model_id": "ce", "input_names": names,
              "precisions": ["float32"], "output": "logits", "cache_dir": cache}
    return (CompiledEncoder(module, **kwargs),
            CompiledEncoder(module, **kwargs, streams={"float32": 2}))


def _batches(shapes):
    rng = np.random.default_rng(7)
    out = []
    for rows, width in shapes:
        ids = rng.integers(1000, 5000, size=(rows, width), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[-1, width // 2:] = 0  # a padded row in every batch
        out.append({"input_ids": ids, "attention_mask": mask,
                    "token_type_ids": np.zeros_like(ids)})
    return out


def test_run_many_on_two_streams_matches_one_stream_in_order(compiled_pair):
    one, two = compiled_pair
    assert one.streams["float32"] == 1 and two.streams["float32"] == 2
    assert str(two._compiled["float32"].get_property("NUM_STREAMS")) == "2"
    batches = _batches([(3, 40), (1, 9), (5, 24), (2, 64), (4, 16)])
    expected = [one.run(batch, "float32") for batch in batches]
    for _ in range(2):  # the second call reuses the pooled async queue
        got = two.run_many(batches, "float32")
        assert [g.shape for g in got] == [e.shape for e in expected]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, atol=1e-4)


def test_a_batch_openvino_refuses_raises_and_the_streams_stay_usable(compiled_pair):
    _, two = compiled_pair
    good = _batches([(2, 12), (3, 20)])
    bad = dict(good[1])
    bad["attention_mask"] = bad["attention_mask"][:, :5]  # shape disagrees with the ids
    with pytest.raises(Exception):  # noqa: B017 - OpenVINO's own error type
        two.run_many([good[0], bad], "float32")
    again = two.run_many(good, "float32")
    assert len(again) == 2 and again[1].shape[0] == 3


def test_the_scorer_on_two_streams_scores_like_one_stream(ce_folder, tmp_path):
    pytest.importorskip("openvino", reason="the [openvino] extra is part of [dev]")
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    kwargs = {"dtype": "bfloat16", "backend": "openvino", "compile_cache_dir": tmp_path,
              "max_batch_size": 2}
    one = CrossEncoderScorer(ce_folder, **kwargs, openvino_streams=1)
    two = CrossEncoderScorer(ce_folder, **kwargs, openvino_streams=2)
    assert "openvino_streams" not in one.describe()
    if two.dtype == "bfloat16":
        assert two.describe()["openvino_streams"] == "2"
    requests = [ScoreRequest(QUERY, TEXTS), ScoreRequest(QUERY, TEXTS[:1])]
    for a, b in zip(one.score_many(requests), two.score_many(requests), strict=True):
        # the same precision on both; thread splits may round differently, within
        # the error the scorers measured at load (the re-score is exact on both)
        band = 3 * max(one.precision_error, two.precision_error, 1e-5)
        assert np.abs(np.array(a.scores) - np.array(b.scores)).max() <= band
        assert a.extra["token_lengths"] == b.extra["token_lengths"]


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_openvino_streams_must_be_a_positive_integer(ce_folder, value):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    with pytest.raises(ConfigurationError, match="openvino_streams"):
        CrossEncoderScorer(ce_folder, dtype="float32", openvino_streams=value)


@pytest.mark.parametrize(("flags", "dtype", "streams"), [
    ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16", 2),   # AMD EPYC Zen 4
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, "bfloat16", 1),  # Xeon with AMX
    ({"avx2", "avx512f", "avx512_bf16"}, "float32", 1),    # fp32 passes: not measured
    ({"avx2", "fma"}, "float32", 1),
    (set(), "bfloat16", 1),
])
def test_default_streams_follow_the_measured_cpu_class(flags, dtype, streams):
    from rerank_plugins.scoring.openvino_backend import default_streams

    assert default_streams(frozenset(flags), dtype) == streams


def test_the_scorer_takes_its_cpu_class_default_unless_told(ce_folder, tmp_path):
    pytest.importorskip("openvino", reason="the [openvino] extra is part of [dev]")
    from rerank_plugins.device import read_cpu_flags
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.openvino_backend import default_streams

    scorer = CrossEncoderScorer(ce_folder, backend="openvino", compile_cache_dir=tmp_path)
    expected = default_streams(read_cpu_flags(), scorer.dtype)
    assert scorer._compiled.streams[scorer.dtype] == expected
    assert scorer.describe().get("openvino_streams", "1") == str(expected)
