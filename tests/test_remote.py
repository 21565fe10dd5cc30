"""RemoteScorer against a real engine the tests start on loopback.

The default engine is ``tests/engine_server.py``: real inference with the CrossEncoder
built from the bundled MiniLM weights, speaking TEI ``/rerank`` and the
Cohere-compatible ``/v1/rerank``. The slow tests add a fleet behind a real nginx
running ``ops/deploy/fleet/nginx.conf``. Every engine binds 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import require_binary
from redis_server import stop_process

from rerank_plugins import CircuitBreaker, Reranker, Status
from rerank_plugins.errors import (
    ConfigurationError,
    RemoteOverloaded,
    ScorerError,
    ScorerTimeout,
)
from rerank_plugins.scoring.base import Scorer, ScoreRequest
from rerank_plugins.scoring.remote import RemoteScorer
from rerank_plugins.types import FallbackReason

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "tests" / "engine_server.py"
MODEL_ID = "minilm-ce"

QUERY = "how do airplane wings produce lift"
DOCS = [
    "Cats sleep for most of the day and hunt at night.",
    "An airfoil turns the air downwards, and the reaction lifts the wing.",
    "The stock market closed higher on Tuesday.",
    "Bernoulli's principle relates pressure and speed of air over a wing.",
    "A recipe for banana bread with walnuts.",
    "Jet engines push aircraft forward; wings provide the lift.",
    "Mountain bikes have wide tyres and suspension.",
    "Birds flap their wings to generate lift and thrust.",
    "Tax returns are due in April in the United States.",
    "Gliders stay aloft by trading height for speed.",
    "The wing's angle of attack changes how much lift it makes.",
    "Tomatoes grow best in full sun.",
    "Helicopter rotors are rotating wings.",
    "Paper planes fly because their wings deflect air.",
    "The library opens at nine on weekdays.",
    "Flaps on a wing increase lift at low speed.",
    "Submarines use ballast tanks to dive.",
    "Stall happens when the angle of attack is too high.",
    "Coffee contains caffeine.",
    "Lift equals the lift coefficient times dynamic pressure times wing area.",
]


class EngineProcess:
    """One ``engine_server.py`` process: one model load, one or more loopback servers."""

    def __init__(self, model_dir: str, servers: dict[str, dict],
                 env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ENGINE), "--model-dir", model_dir, "--model-id", MODEL_ID,
             "--host", "127.0.0.1", "--servers", json.dumps(servers)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
        self.specs = servers
        self.endpoints: dict[str, Endpoint] = {}

    def wait_ready(self, timeout_s: float = 240.0) -> EngineProcess:
        if self.endpoints:
            return self
        result: dict = {}
        reader = threading.Thread(
            target=lambda: result.update(line=self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        line = result.get("line")
        if not line:
            self.stop()
            raise RuntimeError(f"engine did not start (exit code {self.proc.poll()})")
        for name, port in json.loads(line)["ports"].items():
            scheme = "https" if self.specs[name].get("certfile") else "http"
            self.endpoints[name] = Endpoint(self, scheme, port)
        return self

    def kill(self) -> None:
        """SIGKILL: the engine dies without closing anything, as on an OOM kill."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, 10)


class Endpoint:
    """One listening server of an engine process."""

    def __init__(self, process: EngineProcess, scheme: str, port: int) -> None:
        self.process, self.scheme, self.port = process, scheme, port

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", timeout=5).json()

    def kill(self) -> None:
        self.process.kill()


def _self_signed_cert(folder: Path) -> tuple[str, str] | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None  # the TLS test reports it (skip, or a failure under CI=true)
    cert, key = folder / "engine.crt", folder / "engine.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return str(cert), str(key)


API_KEY_ENV = "RERANK_TEST_ENGINE_KEY"
API_KEY = "sk-test-7f3a9c-never-log-me"


@pytest.fixture(scope="module")
def engines(ce_folder, tmp_path_factory):
    """The engines of this module: two processes started together (loads overlap).

    One process serves three engines with different limits from one model load; the
    engine that gets killed has a process of its own.
    """
    cert = _self_signed_cert(tmp_path_factory.mktemp("tls"))
    servers = {
        "main": {"max_client_batch_size": 8},
        # a slow model with room for one call at a time: timeouts, 429s, retries
        "slow": {"delay_ms": 1500, "max_concurrent_requests": 1},
    }
    if cert is not None:
        servers["tls"] = {"certfile": cert[0], "keyfile": cert[1],
                          "api_key_env": API_KEY_ENV}
    shared = EngineProcess(ce_folder, servers, env={API_KEY_ENV: API_KEY})
    # shortly slow, so a request is still in flight when the process is killed
    victim = EngineProcess(ce_folder, {"victim": {"delay_ms": 400}})
    try:
        shared.wait_ready()
        victim.wait_ready()
        ready: dict = {**shared.endpoints, **victim.endpoints}
        ready["ca_bundle"] = cert[0] if cert else None
        yield ready
    finally:
        shared.stop()
        victim.stop()


def _scorer(engine: Endpoint, **options) -> RemoteScorer:
    options.setdefault("model", MODEL_ID)
    return RemoteScorer(engine.url, **options)


# -- protocols against the real engine -------------------------------------------
def test_tei_scores_are_mapped_by_index_and_match_the_local_cross_encoder(engines, ce_scorer):
    main = engines["main"]
    # the engine answers sorted by score, not in input order ...
    answer = httpx.post(f"{main.url}/rerank", json={
        "query": QUERY, "texts": DOCS[:8], "raw_scores": True}, timeout=30).json()
    assert [item["index"] for item in answer] != list(range(8))
    # ... and refuses a batch above its limit, so the client must split
    too_big = httpx.post(f"{main.url}/rerank", json={"query": QUERY, "texts": DOCS},
                         timeout=30)
    assert too_big.status_code == 413

    scorer = _scorer(main, protocol="tei", max_client_batch_size=8)
    before = main.stats()["rerank_calls"]
    [remote] = scorer.score_many([ScoreRequest(QUERY, DOCS)])
    [local] = ce_scorer.score_many([ScoreRequest(QUERY, DOCS)])

    assert main.stats()["rerank_calls"] - before == 3  # 20 texts under a limit of 8
    assert remote.extra["http_calls"] == 3
    assert scorer.activation == "sigmoid"
    assert remote.scores == pytest.approx(local.scores, abs=1e-3)


def test_cohere_protocol_relevance_scores_are_already_probabilities(engines, ce_scorer):
    scorer = _scorer(engines["main"], protocol="cohere", max_client_batch_size=8)
    [remote] = scorer.score_many([ScoreRequest(QUERY, DOCS[:12])])
    [local] = ce_scorer.score_many([ScoreRequest(QUERY, DOCS[:12])])

    assert scorer.activation == "identity"
    assert remote.scores == pytest.approx(
        [1 / (1 + math.exp(-x)) for x in local.scores], abs=1e-4)


async def test_async_path_gives_the_sync_scores(engines):
    scorer = _scorer(engines["main"], max_client_batch_size=8)
    requests = [ScoreRequest(QUERY, DOCS), ScoreRequest("what do cats do", DOCS[:5])]
    sync = scorer.score_many(requests)
    asynchronous = await scorer.ascore_many(requests)
    await scorer.aclose()

    assert [len(o.scores) for o in asynchronous] == [20, 5]
    for got, expected in zip(asynchronous, sync, strict=True):
        assert got.scores == pytest.approx(expected.scores)


def test_reranker_on_a_remote_engine_ranks_like_the_local_model(engines, ce_scorer):
    remote = Reranker(_scorer(engines["main"], max_client_batch_size=8), top_n=5,
                      threshold=0.0, timeout_s=30)
    local = Reranker(ce_scorer, top_n=5, threshold=0.0, timeout_s=30, cache=None)
    try:
        first = remote.rerank(QUERY, DOCS)
        again = remote.rerank(QUERY, DOCS)
        reference = local.rerank(QUERY, DOCS)
    finally:
        remote.close()
        local.close()

    assert first.status is Status.OK
    assert [i.id for i in first] == [i.id for i in reference]
    assert [i.model_score for i in first] == pytest.approx(
        [i.model_score for i in reference], abs=1e-4)
    # the cache stays on the client side
    assert again.status is Status.CACHE and again.cache_hits == len(DOCS)
    assert [i.id for i in again] == [i.id for i in first]


# -- deadlines, overload, retries ----------------------------------------------------
def test_a_slow_engine_times_out_at_the_requests_deadline(engines):
    slow = engines["slow"]
    scorer = _scorer(slow, timeout_s=30.0, read_timeout_s=30.0)
    stats = slow.stats()
    started = time.monotonic()
    with pytest.raises(ScorerTimeout):
        scorer.score_many([ScoreRequest(QUERY, DOCS[:3], deadline_at=started + 0.3)])
    elapsed = time.monotonic() - started
    time.sleep(1.5)  # let the engine finish the abandoned call
    after = slow.stats()

    assert 0.25 <= elapsed < 1.0
    # no retry: the deadline had no room left for another call
    assert after["rerank_calls"] + after["overloaded"] == \
        stats["rerank_calls"] + stats["overloaded"] + 1


def test_the_reranker_passes_its_remaining_deadline_to_the_http_call(engines):
    slow = engines["slow"]
    reranker = Reranker(_scorer(slow, timeout_s=30.0, read_timeout_s=30.0),
                        timeout_s=0.3, cache=None)
    try:
        result = reranker.rerank(QUERY, DOCS[:3])
        # the engine thread was released at the deadline, not when the engine answered
        time.sleep(0.5)
        batches_done = reranker.engine.batches_run
    finally:
        reranker.close()
    time.sleep(1.0)

    assert result.status is Status.FALLBACK
    assert result.fallback_reason is FallbackReason.TIMEOUT
    assert [i.id for i in result] == ["0", "1", "2"]
    assert batches_done == 1


def _hold(engine: Endpoint) -> threading.Thread:
    """Hold the slow engine's only slot with a real call; return once it is in."""
    deadline = time.monotonic() + 10
    while engine.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)  # an abandoned call of an earlier test is still running
    thread = threading.Thread(target=lambda: httpx.post(
        f"{engine.url}/rerank", json={"query": QUERY, "texts": DOCS[:2]}, timeout=30))
    thread.start()
    while not engine.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return thread


def test_429_is_overloaded_not_error_and_is_not_retried_without_deadline_room(engines):
    slow = engines["slow"]
    holder = _hold(slow)
    base = slow.stats()
    # 0.4 s left after a refusal is less than back-off + a typical call (0.5 s connect)
    scorer = _scorer(slow, max_retries=10, connect_timeout_s=0.5)
    with pytest.raises(RemoteOverloaded) as caught:
        scorer.score_many([ScoreRequest(QUERY, DOCS[:2])], deadline_s=0.4)
    reranker = Reranker(_scorer(slow, max_retries=0), cache=None, timeout_s=5)
    try:
        result = reranker.rerank(QUERY, DOCS[:4])
    finally:
        reranker.close()
    holder.join()

    assert caught.value.reason == "overloaded"
    assert slow.stats()["overloaded"] - base["overloaded"] == 2  # one each, no retries
    assert result.status is Status.FALLBACK
    assert result.fallback_reason is FallbackReason.OVERLOADED


def test_overload_is_retried_while_the_deadline_allows(engines):
    slow = engines["slow"]
    holder = _hold(slow)
    base = slow.stats()
    scorer = _scorer(slow, max_retries=20, retry_backoff_s=0.2)
    [output] = scorer.score_many([ScoreRequest(QUERY, DOCS[:2])], deadline_s=8.0)
    holder.join()

    assert len(output.scores) == 2
    assert output.extra["http_calls"] >= 2
    assert slow.stats()["overloaded"] - base["overloaded"] == output.extra["http_calls"] - 1


# -- the engine dies mid-run ------------------------------------------------------
def test_engine_killed_mid_run_falls_back_to_retrieval_order(engines):
    victim = engines["victim"]
    reranker = Reranker(_scorer(victim, max_retries=1), cache=None, timeout_s=3,
                        breaker=CircuitBreaker("remote", failure_threshold=3))
    statuses, reasons, orders = [], [], []

    def run_one(query: str) -> None:
        result = reranker.rerank(query, DOCS[:6])
        statuses.append(result.status)
        reasons.append(result.fallback_reason)
        orders.append([i.id for i in result])

    try:
        for n in range(2):
            run_one(f"{QUERY} {n}")
        in_flight = threading.Thread(target=run_one, args=(f"{QUERY} in flight",))
        in_flight.start()
        time.sleep(0.2)  # the engine is inside its 400 ms model call
        victim.kill()
        in_flight.join(10)
        for n in range(4):
            run_one(f"{QUERY} after {n}")
    finally:
        reranker.close()

    assert statuses[:2] == [Status.OK, Status.OK]
    assert statuses[2:] == [Status.FALLBACK] * 5
    # the in-flight request and the next ones fail on the wire; then the breaker opens
    assert reasons[2:5] == [FallbackReason.ERROR] * 3
    assert reasons[5:] == [FallbackReason.CIRCUIT_OPEN] * 2
    assert all(order == ["0", "1", "2", "3", "4", "5"] for order in orders[2:])
    assert orders[0] != ["0", "1", "2", "3", "4", "5"]  # the model did reorder before


# -- TLS, API key ----------------------------------------------------------------------
def test_tls_is_verified_and_the_api_key_never_leaks(engines, monkeypatch, caplog):
    if "tls" not in engines:
        require_binary("openssl")
    tls, ca_bundle = engines["tls"], engines["ca_bundle"]
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    caplog.set_level(logging.DEBUG)

    unverified = RemoteScorer(tls.url, model=MODEL_ID, api_key_env=API_KEY_ENV)
    with pytest.raises(ScorerError) as untrusted:
        unverified.score_many([ScoreRequest(QUERY, DOCS[:2])], deadline_s=10)
    no_key = RemoteScorer(tls.url, model=MODEL_ID, ca_bundle=ca_bundle)
    with pytest.raises(ScorerError) as unauthorized:
        no_key.score_many([ScoreRequest(QUERY, DOCS[:2])], deadline_s=10)
    scorer = RemoteScorer(tls.url, model=MODEL_ID, ca_bundle=ca_bundle,
                          api_key_env=API_KEY_ENV)
    [output] = scorer.score_many([ScoreRequest(QUERY, DOCS[:2])], deadline_s=10)

    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)
    assert "401" in str(unauthorized.value)
    assert len(output.scores) == 2
    shown = [repr(scorer), str(scorer.describe()), scorer.cache_namespace, caplog.text,
             str(untrusted.value), str(unauthorized.value)]
    assert not any(API_KEY in text for text in shown)
    assert "HTTP Request" in caplog.text  # httpx did log; the key was not in it


# -- mapping and configuration (pure functions, no engine) --------------------------
@pytest.mark.parametrize(("status", "error", "reason", "retryable"), [
    (429, RemoteOverloaded, "overloaded", True),
    (503, RemoteOverloaded, "overloaded", True),
    (504, ScorerTimeout, "timeout", True),
    (502, ScorerError, "error", True),
    (500, ScorerError, "error", False),
    (413, ScorerError, "error", False),
    (401, ScorerError, "error", False),
])
def test_every_http_status_maps_to_a_fallback_reason(status, error, reason, retryable):
    scorer = RemoteScorer("http://127.0.0.1:9", model=MODEL_ID)
    outcome = scorer._interpret(status, httpx.Headers(), b'{"error":"x"}', 2, 0.0)
    assert type(outcome.error) is error
    assert outcome.error.reason == reason
    assert outcome.retryable is retryable


@pytest.mark.parametrize(("exc", "error", "retryable"), [
    (httpx.ConnectTimeout("t"), ScorerTimeout, True),
    (httpx.ReadTimeout("t"), ScorerTimeout, True),
    (httpx.WriteTimeout("t"), ScorerTimeout, True),
    (httpx.PoolTimeout("t"), ScorerTimeout, True),
    (httpx.ConnectError("refused"), ScorerError, True),
    (httpx.ReadError("reset"), ScorerError, True),
    (httpx.RemoteProtocolError("closed"), ScorerError, True),
    (httpx.WriteError("broken pipe"), ScorerError, False),
    (httpx.UnsupportedProtocol("ftp"), ScorerError, False),
    (httpx.DecodingError("gzip"), ScorerError, False),
])
def test_every_httpx_failure_maps_to_a_scorer_error(exc, error, retryable):
    scorer = RemoteScorer("http://127.0.0.1:9", model=MODEL_ID)
    outcome = scorer._transport_failure(exc)
    assert type(outcome.error) is error
    assert outcome.error.__cause__ is exc
    assert outcome.retryable is retryable


@pytest.mark.parametrize("body", [
    b"not json",
    b'{"results": []}',  # tei answers a list
    b'[{"index": 0, "score": 0.1}]',  # one of two missing
    b'[{"index": 0, "score": 0.1}, {"index": 0, "score": 0.2}]',
    b'[{"index": 0, "score": 0.1}, {"index": 2, "score": 0.2}]',
    b'[{"index": 0, "score": 0.1}, {"index": 1, "score": "high"}]',
    b'[{"index": 0, "score": 0.1}, {"index": true, "score": 0.2}]',
])
def test_answers_that_do_not_fit_the_protocol_are_errors(body):
    scorer = RemoteScorer("http://127.0.0.1:9", model=MODEL_ID)
    with pytest.raises(ScorerError):
        scorer._parse(body, 2)


def test_unreachable_engine_is_an_error_within_the_deadline():
    port = _closed_port()
    scorer = RemoteScorer(f"http://127.0.0.1:{port}", model=MODEL_ID, max_retries=2,
                          retry_backoff_s=0.01)
    started = time.monotonic()
    with pytest.raises(ScorerError) as caught:
        scorer.score_many([ScoreRequest(QUERY, DOCS[:2])], deadline_s=2.0)
    assert caught.value.reason == "error"
    assert time.monotonic() - started < 2.0


def _closed_port() -> int:
    from conftest import free_port

    return free_port()  # bound then released: nothing listens there


def test_cache_namespace_keeps_endpoints_models_and_protocols_apart():
    base = RemoteScorer("http://127.0.0.1:8080", model="bge-reranker-base")
    others = [
        RemoteScorer("http://127.0.0.1:8081", model="bge-reranker-base"),
        RemoteScorer("http://127.0.0.1:8080", model="bge-reranker-large"),
        RemoteScorer("http://127.0.0.1:8080", model="bge-reranker-base", revision="v2"),
        RemoteScorer("http://127.0.0.1:8080", model="bge-reranker-base", protocol="cohere"),
        RemoteScorer("http://127.0.0.1:8080", model="bge-reranker-base", raw_scores=False),
    ]
    assert isinstance(base, Scorer)
    assert len({base.cache_namespace, *(o.cache_namespace for o in others)}) == 6
    assert base.describe()["kind"] == "remote-tei"
    assert others[3].activation == "identity" and others[4].activation == "identity"


def test_configuration_errors_name_the_problem(monkeypatch):
    monkeypatch.delenv("RERANK_MISSING_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="RERANK_MISSING_KEY"):
        RemoteScorer("http://127.0.0.1:1", model="m", api_key_env="RERANK_MISSING_KEY")
    with pytest.raises(ConfigurationError, match="api_key_env"):
        RemoteScorer("http://user:pw@127.0.0.1:1", model="m")
    with pytest.raises(ConfigurationError, match="protocol"):
        RemoteScorer("http://127.0.0.1:1", model="m", protocol="grpc")
    with pytest.raises(ConfigurationError, match="model"):
        RemoteScorer("http://127.0.0.1:1", model="")


# -- a fleet behind the shipped nginx.conf (slow: two more model loads) ---------------
FLEET = ROOT / "ops" / "deploy" / "fleet"


def _nginx() -> str | None:
    return require_binary("nginx")


def _render_nginx_conf(replica_ports: list[int], listen_port: int) -> str:
    """The shipped nginx.conf with its upstreams and listener moved to loopback."""
    conf = (FLEET / "nginx.conf").read_text()
    replacements = [(f"server rerank-engine-{n}:80 ", f"server 127.0.0.1:{port} ")
                    for n, port in enumerate(replica_ports, start=1)]
    replacements.append(("listen 8080;", f"listen 127.0.0.1:{listen_port};"))
    for old, new in replacements:
        assert conf.count(old) == 1, f"nginx.conf no longer has {old!r}: update this test"
        conf = conf.replace(old, new)
    return conf


@pytest.mark.slow
def test_fleet_behind_nginx_survives_a_replica_loss(ce_folder, tmp_path):
    from conftest import free_port

    nginx = _nginx()
    replicas = [EngineProcess(ce_folder, {f"replica-{n}": {}}) for n in (1, 2)]
    lb = None
    try:
        endpoints = [next(iter(r.wait_ready().endpoints.values())) for r in replicas]
        listen_port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(_render_nginx_conf([e.port for e in endpoints], listen_port))
        lb = subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", "stderr",
             "-g", f"pid {tmp_path / 'nginx.pid'}; daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lb_url = f"http://127.0.0.1:{listen_port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{lb_url}/lb-health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if lb.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {lb.stderr.read()}")
            time.sleep(0.1)

        reranker = Reranker(RemoteScorer(lb_url, model=MODEL_ID), cache=None,
                            timeout_s=10)
        try:
            both = [reranker.rerank(f"{QUERY} {n}", DOCS[:6]).status for n in range(8)]
            spread = [e.stats()["rerank_calls"] for e in endpoints]
            replicas[0].kill()
            one = [reranker.rerank(f"{QUERY} one left {n}", DOCS[:6]).status
                   for n in range(8)]
            survivor_calls = endpoints[1].stats()["rerank_calls"] - spread[1]
            replicas[1].kill()
            none = reranker.rerank(f"{QUERY} none left", DOCS[:6])
        finally:
            reranker.close()
    finally:
        if lb is not None:
            lb.terminate()
            lb.wait(10)
        for replica in replicas:
            replica.stop()

    assert both == [Status.OK] * 8
    assert all(calls > 0 for calls in spread)  # the balancer used both replicas
    assert one == [Status.OK] * 8  # nginx re-sent calls from the dead replica
    assert survivor_calls == 8
    assert none.status is Status.FALLBACK  # 502 from nginx: fall back, never raise
    assert none.fallback_reason is FallbackReason.ERROR
    assert [i.id for i in none] == ["0", "1", "2", "3", "4", "5"]
