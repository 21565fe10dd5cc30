"""Soak: 10,000 requests with faults mixed in, and nothing leaks.

Healthy calls are the real bundled model (the session's bi-encoder, real
tokenisation and inference), so the leak check covers the model path too. Faults: a
wrapper around it that sometimes raises and sometimes overruns the deadline (fault
injection: a real model does neither on demand), and the real redis-server killed
and restarted on the same loopback port while requests flow. Checked: every request
is answered, RSS grows less than 50 MB, and threads and file descriptors return to
where they started once the reranker is closed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest
from conftest import free_port, require_binary

from rerank_plugins import CircuitBreaker, Reranker
from rerank_plugins.cache.redis import RedisCache

REQUESTS = 10_000
# generous for the real model on a loaded 2-core machine (a healthy call of up to 20
# short documents takes 10-50 ms idle); the injected overruns sleep twice this
DEADLINE_MS = 500.0


class FaultyScorer:
    """The real model; 3 % of calls raise, 2 % sleep past the deadline first."""

    def __init__(self, model, seed: int) -> None:
        self.model = model
        self.model_id = model.model_id
        self.revision = model.revision
        self.activation = model.activation
        self.cache_namespace = model.cache_namespace + "-soak"
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.model_calls = 0

    def describe(self) -> dict[str, str]:
        return self.model.describe()

    def score_many(self, requests):
        with self.lock:
            roll = self.rng.random()
        if roll < 0.03:
            raise RuntimeError("injected scorer failure")
        if roll < 0.05:
            time.sleep(DEADLINE_MS / 1000 * 2)
        with self.lock:
            self.model_calls += 1
        return self.model.score_many(requests)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def start_redis(port: int, workdir) -> subprocess.Popen:
    """redis-server on a fixed loopback port (the soak restarts it on the same one)."""
    proc = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def stop_redis(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(5)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 1,018 s seen beside the default suite on 2 cores
def test_soak_10k_requests_with_faults(tmp_path, record_property, span_exporter, bi_scorer):
    require_binary("redis-server")
    scorer = FaultyScorer(bi_scorer, 7)
    from rerank_plugins.scoring.base import ScoreRequest

    # the model's one-time set-up (threads, buffers) happens before the baselines:
    # the leak check is about requests, not about loading the model
    bi_scorer.score_many([ScoreRequest("warm up", ["the model", "is warm"])])
    rng = random.Random(1234)
    port = free_port()
    server = start_redis(port, tmp_path)
    gc.collect()
    threads_before, fds_before = threading.active_count(), fd_count()
    cache = RedisCache(url=f"redis://127.0.0.1:{port}/0", secret="soak",
                       breaker=CircuitBreaker("soak-cache", failure_threshold=3,
                                              reset_timeout_s=0.5, probe_timeout_s=1.0))
    reranker = Reranker(scorer, cache=cache, timeout_s=DEADLINE_MS / 1000,
                        breaker=CircuitBreaker("soak", failure_threshold=5,
                                               reset_timeout_s=0.2),
                        # a real model call under CPU contention takes well over 0.2 s;
                        # only a call past 5 s counts as stuck (the overruns sleep 1 s)
                        max_inference_threads=4, stuck_after_s=5.0)
    vocabulary = [f"term{i}" for i in range(400)]
    # 300 distinct requests, so repeats exercise the Redis cache (hits and misses)
    pool = []
    for _ in range(300):
        docs = [" ".join(rng.sample(vocabulary, 12)) for _ in range(rng.randint(1, 20))]
        pool.append((" ".join(rng.sample(vocabulary, 4)), docs))
    statuses: Counter = Counter()
    answered = 0
    rss_after_warmup = None
    redis_down_at = None
    started = time.monotonic()
    loop = asyncio.new_event_loop()
    try:
        for n in range(REQUESTS):
            if n == 1_000:
                gc.collect()
                rss_after_warmup = rss_mb()
            if n % 2_000 == 1_500 and server is not None:
                stop_redis(server)  # Redis dies mid-traffic ...
                server, redis_down_at = None, n
            if server is None and n - redis_down_at >= 300:
                server = start_redis(port, tmp_path)  # ... and comes back on the same port
            if n % 500 == 0:
                # the test session's in-memory span exporter keeps every span it sees;
                # that is the harness, not the library, so it is emptied as we go
                span_exporter.clear()
            query, docs = rng.choice(pool)
            if n % 4 == 0:
                result = loop.run_until_complete(reranker.arerank(query, docs, top_n=5))
            else:
                result = reranker.rerank(query, docs, top_n=5)
            assert 1 <= len(result) <= 5
            answered += 1
            statuses[(result.status.value, result.fallback_reason.value
                      if result.fallback_reason else "")] += 1
    finally:
        loop.close()
        reranker.close()
        cache.close()
        if server is not None:
            stop_redis(server)
    elapsed = time.monotonic() - started
    gc.collect()
    rss_growth = rss_mb() - rss_after_warmup
    end = time.monotonic() + 10  # abandoned threads end once their sleep is over
    while threading.active_count() > threads_before and time.monotonic() < end:
        time.sleep(0.05)
    record_property("soak_requests", answered)
    record_property("soak_seconds", round(elapsed, 1))
    record_property("soak_rss_growth_mb", round(rss_growth, 1))
    record_property("soak_statuses", dict(statuses))
    record_property("soak_threads_before_after", [threads_before, threading.active_count()])
    record_property("soak_fds_before_after", [fds_before, fd_count()])
    record_property("soak_model_calls", scorer.model_calls)
    assert answered == REQUESTS
    # the model really served: first passes, and every request while Redis was down
    assert scorer.model_calls >= 1_000
    assert rss_growth < 50
    assert threading.active_count() <= threads_before
    assert fd_count() <= fds_before
    # the faults really happened and were absorbed
    reasons = {reason for _, reason in statuses}
    assert {"error", "timeout"} <= reasons
    assert statuses[("ok", "")] + statuses[("cache", "")] > REQUESTS // 2
    assert statuses[("cache", "")] > 0
