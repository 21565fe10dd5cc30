"""RemoteScorer against an engine that is overloaded, resets or trickles.

The engine is a small raw-socket HTTP server on 127.0.0.1 (fault injection: a real
TEI cannot be told to answer 429 or reset a connection on demand). It speaks the
TEI ``/rerank`` protocol when healthy and counts every request it receives, so
the tests can assert how many retries were really sent.
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
import time

import pytest

pytest.importorskip("httpx")

from rerank_plugins import CircuitBreaker, Reranker, Status  # noqa: E402
from rerank_plugins.scoring.remote import RemoteScorer  # noqa: E402

DOCS = ["alpha", "beta", "gamma"]


class FaultyEngine(socketserver.ThreadingTCPServer):
    """Answers each POST according to ``mode``; counts requests received."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.delay_s = 0.0
        self.retry_after: str | None = None
        self.requests = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(socketserver.BaseRequestHandler):
    def _read_request(self) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            body += self.request.recv(65536)
        return body

    def _send(self, status: str, body: bytes, extra: str = "") -> None:
        head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n").encode()
        self.request.sendall(head + body)

    def handle(self) -> None:
        engine: FaultyEngine = self.server  # type: ignore[assignment]
        while True:
            body = self._read_request()
            if body is None:
                return
            with engine.lock:
                engine.requests += 1
            mode = engine.mode
            time.sleep(engine.delay_s)
            if mode == "ok":
                texts = json.loads(body)["texts"]
                scores = [{"index": i, "score": float(len(t))} for i, t in enumerate(texts)]
                self._send("200 OK", json.dumps(scores).encode())
            elif mode in ("429", "503"):
                reason = "Too Many Requests" if mode == "429" else "Service Unavailable"
                extra = f"Retry-After: {engine.retry_after}\r\n" if engine.retry_after else ""
                self._send(f"{mode} {reason}", b'{"error":"overloaded"}', extra)
            elif mode == "reset":
                # SO_LINGER 0: close() sends RST instead of FIN
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                self.request.close()
                return
            elif mode == "trickle":
                payload = b'[{"index":0,"score":1.0},{"index":1,"score":0.5},' \
                          b'{"index":2,"score":0.1}]'
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(payload)}\r\n\r\n").encode()
                try:
                    self.request.sendall(head)
                    for byte in payload:  # one byte every 40 ms: no read ever times out
                        self.request.sendall(bytes([byte]))
                        time.sleep(0.04)
                except OSError:
                    return


@pytest.fixture
def engine():
    server = FaultyEngine()
    yield server
    server.shutdown()
    server.server_close()


def make(engine: FaultyEngine, timeout_ms: float, **scorer_options):
    scorer = RemoteScorer(engine.url, protocol="tei", model="faulty-engine",
                          retry_backoff_s=0.01, **scorer_options)
    # a breaker that stays closed, so every request really reaches the engine
    reranker = Reranker(scorer, cache=None, timeout_s=timeout_ms / 1000,
                        breaker=CircuitBreaker("remote-test", failure_threshold=10**6))
    return scorer, reranker


def timed(reranker: Reranker):
    started = time.perf_counter()
    result = reranker.rerank("which is best", DOCS)
    return result, (time.perf_counter() - started) * 1000


@pytest.mark.parametrize("status", ["429", "503"])
def test_overload_answers_are_overloaded_not_errors_and_retried_within_budget(
        engine, status):
    scorer, reranker = make(engine, timeout_ms=2000, max_retries=2)
    assert timed(reranker)[0].status is Status.OK  # healthy first
    engine.mode, engine.requests = status, 0
    result, elapsed = timed(reranker)
    assert result.status is Status.FALLBACK
    assert result.fallback_reason.value == "overloaded"
    assert result.ids == ["0", "1", "2"]  # retrieval order
    assert engine.requests == 3  # plenty of deadline: the first try plus two retries
    assert elapsed < 2000
    reranker.close()
    scorer.close()


def test_no_retry_once_the_remaining_deadline_is_shorter_than_a_call(engine, record_property):
    scorer, reranker = make(engine, timeout_ms=200, max_retries=5)
    engine.delay_s = 0.12  # healthy calls take ~120 ms: that is the typical call now
    for _ in range(3):
        assert timed(reranker)[0].status is Status.OK
    assert scorer.typical_call_s() >= 0.1
    engine.mode, engine.requests = "503", 0
    result, elapsed = timed(reranker)
    # the 503 arrives at ~120 ms; ~80 ms left < backoff + a 120 ms call: no retry sent
    assert engine.requests == 1
    assert result.fallback_reason.value == "overloaded"
    record_property("remote_no_retry_elapsed_ms", round(elapsed, 1))
    reranker.close()
    scorer.close()


def test_retry_after_longer_than_the_deadline_is_not_waited_for(engine):
    scorer, reranker = make(engine, timeout_ms=500, max_retries=3)
    engine.mode, engine.retry_after = "429", "5"
    result, elapsed = timed(reranker)
    assert engine.requests == 1
    assert result.fallback_reason.value == "overloaded"
    assert elapsed < 500 + 50
    reranker.close()
    scorer.close()


def test_connection_reset_is_an_error_fallback_within_the_deadline(engine):
    scorer, reranker = make(engine, timeout_ms=1000, max_retries=2)
    engine.mode = "reset"
    result, elapsed = timed(reranker)
    assert result.status is Status.FALLBACK
    assert result.fallback_reason.value == "error"
    assert 1 <= engine.requests <= 3
    assert elapsed < 1000 + 50
    reranker.close()
    scorer.close()


def test_slow_trickle_returns_retrieval_order_at_the_deadline(engine, record_property):
    scorer, reranker = make(engine, timeout_ms=300, max_retries=2)
    engine.mode = "trickle"
    latencies = []
    for _ in range(5):
        result, elapsed = timed(reranker)
        latencies.append(elapsed)
        assert result.status is Status.FALLBACK
        assert result.fallback_reason.value in ("timeout", "overloaded")
        assert result.ids == ["0", "1", "2"]
    record_property("remote_trickle_latencies_ms", [round(x, 1) for x in latencies])
    assert max(latencies) < 300 + 50
    reranker.close()
    scorer.close()
