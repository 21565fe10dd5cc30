"""`rerank-ops doctor`: each check passes on a healthy setup and fails with a fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT, free_port


def _cli(*args: str):
    from rerank_ops.cli import main

    return CliRunner().invoke(main, ["doctor", *args], catch_exceptions=False)


def test_healthy_setup_passes_every_check_subprocess(tmp_path, redis_server):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "ops"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "doctor", "--dtype", "float32",
         "--redis-url", redis_server.url, "--log-dir", str(tmp_path / "events"),
         "--json", str(tmp_path / "doctor.json")],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads((tmp_path / "doctor.json").read_text())}
    assert checks["device"]["ok"] and checks["device"]["detail"].startswith("cpu / float32")
    assert checks["model"]["ok"] and "all-MiniLM-L6-v2" in checks["model"]["detail"]
    assert checks["cache"]["ok"] and checks["log sink"]["ok"]
    assert checks["metrics"]["ok"] is None  # not asked for
    assert (tmp_path / "events").is_dir() and not list((tmp_path / "events").iterdir())


def test_cross_encoder_folder_loads_and_scores(ce_folder, ce_scorer, tmp_path):
    from rerank_plugins.scoring.base import ScoreRequest

    result = _cli("--model", ce_folder, "--dtype", "float32",
                  "--json", str(tmp_path / "doctor.json"))
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads((tmp_path / "doctor.json").read_text())}
    assert checks["model"]["ok"] is True
    assert "(cross-encoder, revision" in checks["model"]["detail"]
    # the pair doctor scored is the real model's score for it, not a placeholder
    [expected] = ce_scorer.score_many([ScoreRequest("what makes a wing lift",
                                                    ["Airfoils turn the flow downwards."])])
    assert f"one pair scored {expected.scores[0]:.3f}" in checks["model"]["detail"]


def test_missing_model_folder_fails_with_a_fix(tmp_path):
    result = _cli("--model", str(tmp_path / "no-such-model"), "--dtype", "float32")
    assert result.exit_code == 1
    assert "FAIL  model" in result.output and "local model folder" in result.output


def test_unreachable_redis_fails_with_a_fix():
    result = _cli("--no-model", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 1
    assert "FAIL  cache" in result.output and "redis-server running" in result.output


def test_unwritable_log_dir_fails_with_a_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # a path below a regular file cannot be created, whoever runs the test (even root)
    result = _cli("--no-model", "--log-dir", str(blocker / "events"))
    assert result.exit_code == 1
    assert "FAIL  log sink" in result.output and "write access" in result.output


def test_metrics_endpoint_with_our_series_passes(bi_scorer):
    from rerank_plugins import Reranker
    from rerank_plugins.telemetry.prometheus import start_metrics_server, stop_metrics_server

    reranker = Reranker(bi_scorer, cache=None)
    reranker.rerank("wing lift", ["airfoil", "bread"])
    port = start_metrics_server(port=free_port())
    try:
        result = _cli("--no-model", "--metrics-url", f"http://127.0.0.1:{port}/metrics")
    finally:
        stop_metrics_server(port)
        reranker.close()
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if "metrics" in line]
    assert row.startswith("ok    metrics")
    # a served request creates at least: requests, request and stage durations,
    # candidates, kept, top-1 score, model pairs, model info
    found = int(row.split(": ")[-1].split()[0])
    assert found >= 8, row


def test_dead_metrics_endpoint_fails_with_a_fix():
    result = _cli("--no-model", "--metrics-url", f"http://127.0.0.1:{free_port()}/metrics")
    assert result.exit_code == 1
    assert "FAIL  metrics" in result.output and "start_metrics_server" in result.output


def test_impossible_device_fails():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = _cli("--no-model", "--device", "cuda")
    assert result.exit_code == 1
    assert "FAIL  device" in result.output and "CUDA is not available" in result.output


def test_help_shows_an_example():
    result = _cli("--help")
    assert result.exit_code == 0 and "rerank-ops doctor --model" in result.output
