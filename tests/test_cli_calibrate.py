"""`rerank-ops calibrate`: fits, held-out quality, and the file the Reranker loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, require_collection

from rerank_plugins import Reranker
from rerank_plugins.selection import Calibration


def _logistic_pairs(path: Path, *, n: int = 3000, a: float = 1.5, b: float = -2.0,
                    seed: int = 0) -> Path:
    """Labels drawn from a known logistic model of the raw score."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(0.0, 2.0, n)
    labels = rng.random(n) < 1.0 / (1.0 + np.exp(-(a * raw + b)))
    path.write_text("".join(
        json.dumps({"raw_score": float(x), "label": int(y), "query_id": f"q{i // 10}"}) + "\n"
        for i, (x, y) in enumerate(zip(raw, labels, strict=True))), encoding="utf-8")
    return path


def _cli(*args: str):
    from rerank_ops.cli import main

    return CliRunner().invoke(main, ["calibrate", *args], catch_exceptions=False)


def test_platt_fit_recovers_the_generating_parameters(tmp_path):
    from rerank_ops import calibration as cal

    pairs = cal.read_pairs_jsonl(_logistic_pairs(tmp_path / "p.jsonl", n=6000))
    fitted = cal.fit(pairs, "platt")
    assert fitted.a == pytest.approx(1.5, abs=0.15)
    assert fitted.b == pytest.approx(-2.0, abs=0.2)


def test_ece_of_known_cases():
    from rerank_ops.calibration import expected_calibration_error

    labels = np.array([1.0] * 9 + [0.0])
    assert expected_calibration_error(np.full(10, 0.9), labels) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 0.5), labels) == pytest.approx(0.4)


def test_split_keeps_each_query_on_one_side(tmp_path):
    from rerank_ops import calibration as cal

    pairs = cal.read_pairs_jsonl(_logistic_pairs(tmp_path / "p.jsonl"))
    fitting, held = cal.split(pairs, holdout=0.3, seed=1)
    assert not set(fitting.groups) & set(held.groups)
    assert len(fitting) + len(held) == len(pairs)
    assert 0.25 < len(held) / len(pairs) < 0.35


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_each_method_writes_a_file_the_reranker_loads(method, tmp_path, bi_scorer):
    pairs = _logistic_pairs(tmp_path / "pairs.jsonl")
    out, report = tmp_path / "cal.json", tmp_path / "report.json"
    result = _cli("--pairs", str(pairs), "--method", method, "--out", str(out),
                  "--json", str(report))
    assert result.exit_code == 0, result.output
    assert "ECE" in result.output and "Brier" in result.output
    loaded = Reranker(bi_scorer, calibration=out, cache=None).calibration
    assert loaded.method == method
    held = json.loads(report.read_text())["held_out"]
    if method != "temperature":  # a temperature cannot remove the generator's bias b
        assert held["after"]["ece"] < held["before"]["ece"] / 2
        assert held["after"]["brier"] < held["before"]["brier"]


def test_demo_corpus_run_improves_held_out_calibration_subprocess(demo_collection, tmp_path):
    """The same command on the corpus the project ships (runs on a fresh clone)."""
    out, report = tmp_path / "demo-platt.json", tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "ops"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "calibrate", "--collection", str(demo_collection),
         "--depth", "20", "--method", "platt", "--out", str(out), "--json", str(report),
         "--dtype", "float32"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    held = data["held_out"]
    assert data["pairs"]["fit"] > 100 and data["pairs"]["held_out"] > 30
    assert held["after"]["ece"] < held["before"]["ece"]
    assert held["after"]["brier"] < held["before"]["brier"]
    calibration = Calibration.load(out)
    assert calibration.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert calibration.fitted_on == demo_collection.name


def test_collection_run_improves_held_out_calibration_subprocess(tmp_path):
    require_collection("cranfield")
    out, report = tmp_path / "cranfield-platt.json", tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "ops"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "calibrate", "--collection", "cranfield",
         "--max-queries", "60", "--depth", "10", "--method", "platt", "--out", str(out),
         "--json", str(report), "--dtype", "float32"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert data["activation"] == "cosine"  # the embedded bi-encoder's uncalibrated map
    held = data["held_out"]
    assert held["after"]["ece"] < held["before"]["ece"]
    assert held["after"]["brier"] < held["before"]["brier"]
    calibration = Calibration.load(out)
    assert calibration.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert calibration.fitted_on == "cranfield"


def test_reranker_scores_follow_the_fitted_calibration(tmp_path, bi_scorer):
    out = tmp_path / "cal.json"
    assert _cli("--pairs", str(_logistic_pairs(tmp_path / "p.jsonl")), "--activation",
                "cosine", "--out", str(out)).exit_code == 0
    # no deadline: on a busy machine a timeout would fall back to retrieval order
    calibrated = Reranker(bi_scorer, calibration=out, cache=None, timeout_s=None)
    result = calibrated.rerank("wing lift", ["lift of a swept wing", "a recipe for bread"])
    calibrated.close()
    assert result.status.value == "ok"
    for item in result:
        assert item.model_score == pytest.approx(Calibration.load(out).apply(item.raw_score))


def test_malformed_pairs_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"raw_score": 1, "label": 1}\n{"raw_score": "high"}\n', encoding="utf-8")
    result = _cli("--pairs", str(bad), "--out", str(tmp_path / "c.json"))
    assert result.exit_code == 1
    assert "bad.jsonl:2" in result.output


def test_one_class_only_is_refused(tmp_path):
    rows = "".join(json.dumps({"raw_score": i / 10, "label": 0}) + "\n" for i in range(100))
    (tmp_path / "neg.jsonl").write_text(rows, encoding="utf-8")
    result = _cli("--pairs", str(tmp_path / "neg.jsonl"), "--out", str(tmp_path / "c.json"))
    assert result.exit_code == 1
    assert "both relevant and non-relevant" in result.output


@pytest.mark.parametrize("args", [
    ["--out", "c.json"],
    ["--pairs", "p.jsonl", "--collection", "cranfield", "--out", "c.json"],
    ["--pairs", "p.jsonl"],
    ["--pairs", "p.jsonl", "--out", "c.json", "--method", "beta"],
])
def test_usage_errors_exit_2(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _logistic_pairs(tmp_path / "p.jsonl", n=100)
    assert _cli(*args).exit_code == 2


def test_evaluation_only_collections_are_refused(data_dir):
    require_collection("scifact")
    result = _cli("--collection", "scifact", "--out", "c.json")
    assert result.exit_code == 2
    assert "independent evaluation" in result.output


def test_help_shows_an_example():
    result = _cli("--help")
    assert result.exit_code == 0 and "rerank-ops calibrate --collection" in result.output
