"""The OpenVINO backend: parity with the torch fp32 reference, the on-disk cache of
converted models (reused, and invalidated by new weights), and the fallback to torch
when OpenVINO is missing or conversion fails.

Real models throughout (the embedded MiniLM and the cross-encoder built from it);
the only fakes are the injected faults, and each test says which."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from wing_texts import QUERY, TEXTS

from rerank_plugins.errors import ConfigurationError
from rerank_plugins.scoring import load_scorer
from rerank_plugins.scoring import openvino_backend as ovb
from rerank_plugins.scoring.base import ScoreRequest

pytest.importorskip("openvino", reason="the [openvino] extra is part of [dev]")

#: OpenVINO fp32 against torch fp32: the same graph in the same precision.
FP32_TOLERANCE = 1e-4


def _scores(scorer, texts=TEXTS):
    return scorer.score_many([ScoreRequest(QUERY, texts)])[0].scores


@pytest.fixture(scope="module")
def torch_fp32(ce_folder):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    return CrossEncoderScorer(ce_folder, dtype="float32", backend="torch")


def test_auto_picks_openvino_on_the_cpu_and_torch_elsewhere():
    assert ovb.choose_backend("auto", "cpu", available=True) == "openvino"
    assert ovb.choose_backend("auto", "cuda", available=True) == "torch"
    assert ovb.choose_backend("auto", "cpu", quantize="int8", available=True) == "torch"
    assert ovb.choose_backend("auto", "cpu", available=False) == "torch"
    with pytest.raises(ConfigurationError, match="CPU"):
        ovb.choose_backend("openvino", "cuda", available=True)
    with pytest.raises(ConfigurationError, match=r"rerank-plugins\[openvino\]"):
        ovb.choose_backend("openvino", "cpu", available=False)
    with pytest.raises(ConfigurationError, match="backend must be"):
        ovb.choose_backend("onnx", "cpu")


def test_cross_encoder_fp32_matches_torch_fp32(ce_folder, torch_fp32, tmp_path):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(ce_folder, dtype="float32", backend="openvino",
                                compile_cache_dir=tmp_path)
    assert scorer.describe()["backend"] == "openvino"
    # padding inside a batch (lengths differ) must not change any score
    assert _scores(scorer) == pytest.approx(_scores(torch_fp32), abs=FP32_TOLERANCE)
    one_by_one = [_scores(scorer, [t])[0] for t in TEXTS]
    assert one_by_one == pytest.approx(_scores(scorer), abs=FP32_TOLERANCE)


def test_cross_encoder_bf16_stays_within_its_measured_error(ce_folder, torch_fp32, tmp_path,
                                                            caplog):
    from rerank_plugins.device import cpu_has_fast_bf16, read_cpu_flags
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    with caplog.at_level(logging.WARNING, logger="rerank_plugins.scoring"):
        fast = CrossEncoderScorer(ce_folder, dtype="bfloat16", backend="openvino",
                                  exact_top=0, compile_cache_dir=tmp_path)
    differences = np.abs(np.array(_scores(fast)) - np.array(_scores(torch_fp32)))
    if cpu_has_fast_bf16(read_cpu_flags()):
        assert fast.dtype == "bfloat16"
        assert 0 < fast.precision_error < 0.05
        assert differences.max() <= 3 * fast.precision_error
    else:  # no native bf16: OpenVINO computes fp32, and the scorer says so
        assert fast.dtype == fast.describe()["dtype"] == "float32"
        assert fast.precision_error == 0.0 and fast.exact_mode == "off"
        assert differences.max() <= FP32_TOLERANCE
        assert "has no native bfloat16; OpenVINO computes in float32" in caplog.text


def test_the_precision_openvino_really_runs_at_is_the_one_reported(caplog):
    from rerank_plugins.scoring.openvino_backend import settle_dtype

    class Compiled:  # what CompiledEncoder records after compile_model (no model needed)
        effective = {"bfloat16": "float32", "float32": "float32"}

    with caplog.at_level(logging.WARNING, logger="rerank_plugins.scoring"):
        assert settle_dtype(Compiled(), "float32", "m") == "float32"
        assert caplog.text == ""
        assert settle_dtype(Compiled(), "bfloat16", "m") == "float32"
    assert "m: dtype='bfloat16' asked for" in caplog.text


def test_bi_encoder_matches_torch_fp32(bi_scorer, tmp_path):
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    compiled = BiEncoderScorer(dtype="float32", backend="openvino", compile_cache_dir=tmp_path)
    assert compiled.describe()["backend"] == "openvino"
    assert bi_scorer.describe()["dtype"] == "float32"
    assert _scores(compiled) == pytest.approx(_scores(bi_scorer), abs=1e-5)
    vectors = compiled.embed(TEXTS)
    assert vectors.shape == (4, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-5)


def test_converted_model_is_reused_and_invalidated_by_new_weights(tmp_path, ce_folder):
    from rerank_plugins.scoring.cross_encoder import (
        CrossEncoderScorer,
        save_cross_encoder_from_bundled,
    )

    first = CrossEncoderScorer(ce_folder, dtype="float32", backend="openvino",
                               compile_cache_dir=tmp_path)
    again = CrossEncoderScorer(ce_folder, dtype="float32", backend="openvino",
                               compile_cache_dir=tmp_path)
    assert first._compiled.converted and not again._compiled.converted
    assert again._compiled.folder == first._compiled.folder
    assert (first._compiled.folder / "model.xml").is_file()
    assert _scores(again) == pytest.approx(_scores(first), abs=1e-6)
    # another head (a new revision of the model) gets its own folder and conversion
    other_folder = save_cross_encoder_from_bundled(str(tmp_path / "other-ce"), seed=1)
    other = CrossEncoderScorer(other_folder, dtype="float32", backend="openvino",
                               compile_cache_dir=tmp_path)
    assert other.revision != first.revision
    assert other._compiled.converted and other._compiled.folder != first._compiled.folder
    assert _scores(other) != pytest.approx(_scores(first), abs=1e-3)


def test_a_cache_entry_for_other_weights_is_converted_again(tmp_path, ce_folder):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    first = CrossEncoderScorer(ce_folder, dtype="float32", backend="openvino",
                               compile_cache_dir=tmp_path)
    # fault: a manifest that does not describe what the folder's key promises
    (first._compiled.folder / "manifest.json").write_text('{"key": "something else"}')
    again = CrossEncoderScorer(ce_folder, dtype="float32", backend="openvino",
                               compile_cache_dir=tmp_path)
    assert again._compiled.converted
    assert _scores(again) == pytest.approx(_scores(first), abs=1e-6)


def test_missing_openvino_falls_back_to_torch_with_a_log_line(ce_folder, monkeypatch,
                                                              caplog):
    # fault: OpenVINO made unimportable (as if the extra were not installed)
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert ovb.openvino_version() is None
    with caplog.at_level(logging.INFO, logger="rerank_plugins.scoring"):
        scorer = load_scorer(ce_folder, dtype="float32")
    assert scorer.describe()["backend"] == "torch"
    assert "OpenVINO is not installed; using the torch backend" in caplog.text
    assert "rerank-plugins[openvino]" in caplog.text
    with pytest.raises(ConfigurationError, match="needs OpenVINO"):
        load_scorer(ce_folder, backend="openvino")


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_a_failed_conversion_falls_back_to_torch_with_a_warning(ce_folder, monkeypatch,
                                                                caplog, tmp_path, kind):
    # fault: the converter raises, as it does on a model it cannot trace
    def broken(self, module):
        raise RuntimeError("injected conversion failure")

    monkeypatch.setattr(ovb.CompiledEncoder, "_convert", broken)
    model = ce_folder if kind == "cross" else None
    with caplog.at_level(logging.WARNING, logger="rerank_plugins.scoring"):
        scorer = load_scorer(model, kind=kind, dtype="float32", compile_cache_dir=tmp_path)
    assert scorer.describe()["backend"] == "torch"
    assert "OpenVINO backend unavailable" in caplog.text
    assert "injected conversion failure" in caplog.text and "using torch" in caplog.text
    assert all(np.isfinite(_scores(scorer)))
    with pytest.raises(ConfigurationError, match="injected conversion failure"):
        load_scorer(model, kind=kind, dtype="float32", backend="openvino",
                    compile_cache_dir=tmp_path)


def test_backend_is_part_of_the_cache_namespace(ce_folder, torch_fp32, tmp_path):
    compiled = load_scorer(ce_folder, dtype="float32", backend="openvino",
                           compile_cache_dir=tmp_path)
    assert compiled.cache_namespace != torch_fp32.cache_namespace
    assert compiled.revision == torch_fp32.revision
