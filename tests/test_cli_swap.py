"""`rerank-ops swap` against the example app's hot-swap hook: the admin endpoint
in-process, SIGHUP on a real app process, no request failing across the switch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from click.testing import CliRunner
from conftest import ROOT
from redis_server import stop_process
from rerank_ops.cli import main


def example_app():
    spec = importlib.util.spec_from_file_location("example_app",
                                                  ROOT / "ops/deploy/example_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The example app's App (control + 50% canary) under load, with its admin endpoint."""
    module = example_app()
    workdir = tmp_path_factory.mktemp("swap")
    args = module.parse_args(["--canary-split", "0.5", "--event-log-dir",
                              str(workdir / "events"), "--timeout-s", "30"])
    app = module.App(args, module.FaultSwitch(None))
    port = module.start_admin_server(app, 0)
    results, stop = [], threading.Event()

    def load() -> None:
        corpus = module.build_corpus()
        import random

        rng = random.Random(1)
        while not stop.is_set():
            result = app.reranker.rerank("how do wings make lift",
                                         module.make_candidates(rng, corpus, 4),
                                         key=f"user-{rng.randrange(50)}")
            results.append(result)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        yield app, f"http://127.0.0.1:{port}", results
    finally:
        stop.set()
        worker.join(30)
        app.close()


def test_swap_over_the_admin_endpoint_switches_the_arm_and_no_request_falls_back(served):
    app, url, results = served
    before = len(results)
    out = CliRunner().invoke(main, ["swap", "--admin-url", url, "--arm", "candidate"])
    assert out.exit_code == 0, out.output
    assert "swapped: arm candidate serves the bundled model" in out.output
    deadline = time.monotonic() + 60
    while len(results) < before + 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    served_during = results[before:]
    assert len(served_during) >= 10
    assert {r.status.value for r in served_during} <= {"ok", "cache"}
    assert {r.variant for r in served_during} == {"control", "candidate"}
    with urllib.request.urlopen(url + "/admin/status", timeout=10) as response:
        status = json.load(response)
    assert set(status["arms"]) == {"control", "candidate"}


def test_a_refused_swap_exits_1_and_the_old_model_keeps_serving(served, tmp_path):
    app, url, results = served
    model_before = app.reranker.model_id
    out = CliRunner().invoke(main, ["swap", "--admin-url", url, "--model",
                                    str(tmp_path / "no-such-model"),
                                    "--json", str(tmp_path / "swap.json")])
    assert out.exit_code == 1
    assert "the old model keeps serving" in out.output
    assert json.loads((tmp_path / "swap.json").read_text())["ok"] is False
    assert app.reranker.model_id == model_before
    count = len(results)
    time.sleep(1.0)
    assert len(results) > count and results[-1].status.value in ("ok", "cache")


def test_unknown_arm_is_refused(served):
    _app, url, _results = served
    out = CliRunner().invoke(main, ["swap", "--admin-url", url, "--arm", "canary-7"])
    assert out.exit_code == 1 and "no arm 'canary-7'" in out.output


@pytest.mark.parametrize("args", [[], ["--admin-url", "http://x", "--pid", "1"],
                                  ["--pid", "1", "--model", "/m"]])
def test_swap_usage_errors_exit_2(args):
    assert CliRunner().invoke(main, ["swap", *args]).exit_code == 2


@pytest.mark.slow
def test_sighup_to_a_real_app_process_swaps_and_the_command_reports_it(tmp_path):
    ports, status = tmp_path / "ports.json", tmp_path / "status.json"
    (tmp_path / "swap.json").write_text(json.dumps({"arm": "control", "model": None}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "ops")])}
    log = open(tmp_path / "app.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "ops/deploy/example_app.py"), "--port", "0",
         "--port-file", str(ports), "--rps", "2", "--duration", "240",
         "--swap-model-file", str(tmp_path / "swap.json"), "--swap-status-file", str(status)],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while not ports.is_file():
            assert proc.poll() is None, (tmp_path / "app.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "example app did not start"
            time.sleep(0.5)
        done = subprocess.run(
            [sys.executable, "-m", "rerank_ops", "swap", "--pid", str(proc.pid),
             "--status-file", str(status), "--timeout-s", "120"],
            capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "swapped: arm control" in done.stdout
        assert json.loads(status.read_text())["ok"] is True
    finally:
        stop_process(proc, 20)
        log.close()
