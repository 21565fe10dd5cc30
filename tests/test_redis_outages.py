"""Redis outages must cost a request at most its socket timeouts and never an exception.

With the cache's 25 ms connect and 25 ms socket timeouts that is 50 ms on an idle
machine (the figure ``benchmarks/reliability.py`` checks); here the bound is the
configured timeouts plus the scheduling allowance this machine needs right now
(tests/timing.py), so a loaded CI runner does not turn a kept promise into a red run.

Three real outages, all on 127.0.0.1: a port nobody listens on (connection
refused), a listener that accepts connections and never answers (fault injection:
a real Redis cannot be made to accept and stay silent on demand), and the real
redis-server paused with ``CLIENT PAUSE``. The cache's own breaker then opens and
requests stop touching Redis at all.

The scorer is the crc one on purpose: the subject is what Redis adds to a request,
measured against a baseline; the real model's own latency varies by tens of
milliseconds on a shared machine and would drown the figure being measured. The
real model behind a real Redis is covered by test_differential.py and the soak.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest
import redis
from cheap_scorers import CrcScorer
from conftest import free_port
from timing import SchedulingAllowance

from rerank_plugins import CircuitBreaker, Reranker, Status
from rerank_plugins.cache.redis import RedisCache

ADDED_BUDGET_MS = 50.0  # tight, idle machine: connect 25 ms + socket 25 ms
DOCS = [f"document number {i} about wings and lift" for i in range(8)]





class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (fault injection)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_listener():
    listener = SilentListener()
    yield listener
    listener.close()


def _cache(**kwargs) -> RedisCache:
    # a long cool-down so the breaker stays open for the whole test once tripped
    breaker = CircuitBreaker("cache-outage-test", failure_threshold=3, reset_timeout_s=60.0)
    return RedisCache(secret="outage-test", breaker=breaker, **kwargs)


def _latencies(reranker: Reranker, n: int, tag: str) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        result = reranker.rerank(f"{tag} query {i}", DOCS)  # any exception fails the test
        out.append((time.perf_counter() - started) * 1000)
        assert result.status is Status.OK
        assert len(result) == len(DOCS)
    return out


@pytest.fixture(scope="module")
def baseline_ms() -> float:
    reranker = Reranker(CrcScorer(), cache=None, timeout_s=2)
    _latencies(reranker, 20, "warm")
    median = statistics.median(_latencies(reranker, 100, "base"))
    reranker.close()
    return median


def _assert_added(latencies, baseline_ms, record_property, name, cache: RedisCache,
                  allowance: SchedulingAllowance):
    added = [lat - baseline_ms for lat in latencies]
    record_property(f"{name}_max_added_ms", round(max(added), 2))
    record_property(f"{name}_first3_ms", [round(x, 1) for x in latencies[:3]])
    connection = cache.client.connection_pool.make_connection()
    # one lookup per request: at worst a connect and a read, each cut at its timeout
    configured_ms = 1000 * (connection.socket_connect_timeout + connection.socket_timeout)
    assert configured_ms <= ADDED_BUDGET_MS
    bound = configured_ms + allowance.record(record_property, name)
    assert max(added) <= bound, f"{name}: worst request added {max(added):.1f} ms > {bound:.1f}"


def test_refused_port_adds_at_most_the_socket_timeouts(baseline_ms, record_property):
    cache = _cache(url=f"redis://127.0.0.1:{free_port()}/0")
    reranker = Reranker(CrcScorer(), cache=cache, timeout_s=2)
    allowance = SchedulingAllowance()
    latencies = _latencies(reranker, 40, "refused")
    _assert_added(latencies, baseline_ms, record_property, "refused", cache, allowance)
    assert cache.breaker.state == "open"
    reranker.close()
    cache.close()


@pytest.mark.parametrize("defaults_client", [False, True], ids=["url", "client-with-defaults"])
def test_silent_listener_adds_at_most_the_socket_timeouts_then_redis_is_skipped(
        baseline_ms, silent_listener, record_property, defaults_client):
    if defaults_client:
        # redis-py's own defaults: 5 s socket timeout and 3 retries with backoff; the
        # cache must not inherit them on the request path
        cache = _cache(client=redis.Redis(host="127.0.0.1", port=silent_listener.port))
    else:
        cache = _cache(url=f"redis://127.0.0.1:{silent_listener.port}/0")
    connection = cache.client.connection_pool.make_connection()
    assert connection.socket_timeout <= 0.05 and connection.socket_connect_timeout <= 0.05
    assert connection.retry.get_retries() == 0
    reranker = Reranker(CrcScorer(), cache=cache, timeout_s=2)
    allowance = SchedulingAllowance()
    latencies = _latencies(reranker, 10, "silent")
    cache.flush(2)
    assert cache.breaker.state == "open"
    connections = len(silent_listener.accepted)
    assert connections >= 1  # the outage really was reached before the breaker opened
    latencies += _latencies(reranker, 30, "silent-open")
    cache.flush(2)
    time.sleep(0.1)  # give any connection attempt time to be accepted
    assert len(silent_listener.accepted) == connections  # open breaker: Redis untouched
    _assert_added(latencies, baseline_ms, record_property,
                  "silent_client" if defaults_client else "silent", cache, allowance)
    reranker.close()
    cache.close()


def test_paused_server_adds_at_most_the_socket_timeouts_and_breaker_skips_redis(
        baseline_ms, redis_db, record_property):
    admin = redis_db.client()
    cache = _cache(url=redis_db.url)
    reranker = Reranker(CrcScorer(), cache=cache, timeout_s=2)
    _latencies(reranker, 5, "before-pause")  # connections open, values written
    cache.flush(2)
    allowance = SchedulingAllowance()
    admin.client_pause(1_500, all=True)
    try:
        latencies = _latencies(reranker, 10, "paused")
        assert cache.breaker.state == "open"
    finally:
        admin.client_unpause()
    mget_before = admin.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    latencies += _latencies(reranker, 30, "after-pause")
    mget_after = admin.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    assert mget_after == mget_before  # breaker open: no lookup reached Redis
    _assert_added(latencies, baseline_ms, record_property, "paused", cache, allowance)
    reranker.close()
    cache.close()
    admin.close()


def test_cache_breaker_recovers_when_redis_returns(redis_db):
    admin = redis_db.client()
    breaker = CircuitBreaker("cache-recover", failure_threshold=2, reset_timeout_s=0.2,
                             probe_timeout_s=1.0)
    cache = RedisCache(url=redis_db.url, secret="outage-test", breaker=breaker)
    reranker = Reranker(CrcScorer(), cache=cache, timeout_s=2)
    admin.client_pause(2_000, all=True)
    try:
        _latencies(reranker, 3, "down")
        assert breaker.state == "open"
    finally:
        admin.client_unpause()
    time.sleep(0.25)
    _latencies(reranker, 2, "probe")  # the half-open probe succeeds
    assert breaker.state == "closed"
    first = reranker.rerank("steady query", DOCS)
    cache.flush(2)
    second = reranker.rerank("steady query", DOCS)
    assert first.status is Status.OK and second.status is Status.CACHE
    reranker.close()
    cache.close()
    admin.close()
