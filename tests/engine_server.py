"""A small real reranking engine for the remote-scorer tests.

Why this exists instead of a real Infinity (which needs ``infinity-emb`` in a
virtualenv of its own that nothing in the set-up installs; see docs/scaling.md): it
starts in seconds with the project's own dependencies, so the default test run can
use it, and its limits can be
set per server to produce on demand the engine behaviours a client must handle. It
speaks the two wire protocols ``RemoteScorer`` targets, with the behaviour of the
real engines that matters to a client:

* ``POST /rerank`` as text-embeddings-inference serves it: ``{query, texts, truncate,
  raw_scores}`` -> ``[{index, score}]`` **sorted by score, best first**; a batch
  above ``--max-client-batch-size`` is refused with 413, and requests above
  ``--max-concurrent-requests`` get 429 ``{"error_type": "overloaded"}``.
* ``POST /v1/rerank`` as Infinity/vLLM/Cohere serve it: ``{model, query, documents,
  top_n}`` -> ``{results: [{index, relevance_score}]}`` (sigmoid scores, sorted).
* ``GET /health``, ``GET /info`` (TEI's fields) and ``GET /stats`` (call counters the
  tests read back).

Inference is real: a Hugging Face sequence-classification model loaded from a local
folder (the CrossEncoder built from the bundled MiniLM weights), run with plain
``transformers`` -- deliberately not through our own scorer code, so agreement
between ``RemoteScorer`` and ``CrossEncoderScorer`` is evidence, not a tautology.

It binds to loopback only and prints one JSON line ``{"port": N, "ports": {name: N}}``
on stdout once the model is loaded and the sockets listen, so a parent can start it
on port 0. ``--servers`` runs several engines with their own limits on one model load.

Run::

    python tests/engine_server.py --model-dir /tmp/minilm-ce --port 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOOPBACK = ("127.0.0.1", "::1")


class Model:
    """The weights, loaded once per process and shared by every listening server."""

    def __init__(self, model_dir: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(1)  # a shared 2-core test machine
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self._lock = threading.Lock()

    def logits(self, query: str, texts: list[str], truncate: bool) -> list[float]:
        torch = self._torch
        with self._lock, torch.inference_mode():
            inputs = self.tokenizer([query] * len(texts), texts, padding=True,
                                    truncation=truncate, max_length=512, return_tensors="pt")
            return self.model(**inputs).logits[:, 0].float().tolist()


class Engine:
    """One listening engine: the shared model plus its own limits and counters."""

    def __init__(self, model: Model, *, model_id: str, max_client_batch_size: int,
                 max_concurrent_requests: int, delay_s: float, api_key: str | None) -> None:
        self._model = model
        self.model_id = model_id
        self.max_client_batch_size = max_client_batch_size
        self.max_concurrent_requests = max_concurrent_requests
        # A slow model on demand: the tests need calls that outlast a deadline, which
        # a 6-layer MiniLM on a short text never does by itself.
        self.delay_s = delay_s
        self.api_key = api_key
        self._permits = threading.BoundedSemaphore(max_concurrent_requests)
        self.stats = {"rerank_calls": 0, "overloaded": 0, "pairs": 0, "in_flight": 0}
        self._stats_lock = threading.Lock()

    def count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def logits(self, query: str, texts: list[str], truncate: bool) -> list[float]:
        return self._model.logits(query, texts, truncate)

    def try_acquire(self) -> bool:
        return self._permits.acquire(blocking=False)

    def release(self) -> None:
        self._permits.release()


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def make_handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real engines do

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib name
            pass  # quiet; the tests read /stats instead

        def _send(self, status: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, error_type: str) -> None:
            self._send(status, {"error": message, "error_type": error_type})

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/info":
                self._send(200, {"model_id": engine.model_id, "model_sha": None,
                                 "model_type": {"reranker": {}},
                                 "max_client_batch_size": engine.max_client_batch_size,
                                 "max_concurrent_requests": engine.max_concurrent_requests})
            elif self.path == "/stats":
                with engine._stats_lock:
                    self._send(200, dict(engine.stats))
            else:
                self._error(404, "not found", "NotFound")

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if engine.api_key is not None and \
                    self.headers.get("Authorization") != f"Bearer {engine.api_key}":
                self._error(401, "unauthorized", "Unauthorized")
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._error(422, "body is not JSON", "Validation")
                return
            if self.path == "/rerank":
                self._rerank(body, cohere=False)
            elif self.path == "/v1/rerank":
                self._rerank(body, cohere=True)
            else:
                self._error(404, "not found", "NotFound")

        def _rerank(self, body, *, cohere: bool) -> None:
            texts = body.get("documents" if cohere else "texts") if isinstance(body, dict) \
                else None
            query = body.get("query") if isinstance(body, dict) else None
            if not isinstance(query, str) or not isinstance(texts, list) or not texts or \
                    not all(isinstance(t, str) for t in texts):
                self._error(422, "query must be a string and texts a non-empty list",
                            "Validation")
                return
            if cohere and body.get("model") != engine.model_id:
                self._error(400, f"model {body.get('model')!r} is not served here",
                            "Validation")
                return
            if len(texts) > engine.max_client_batch_size:
                # TEI's own wording and status for this validation error
                self._error(413, f"batch size {len(texts)} > maximum allowed batch size "
                            f"{engine.max_client_batch_size}", "Validation")
                return
            if not engine.try_acquire():
                engine.count("overloaded")
                self._error(429, "Model is overloaded", "overloaded")
                return
            engine.count("in_flight")
            try:
                engine.count("rerank_calls")
                engine.count("pairs", len(texts))
                if engine.delay_s:
                    time.sleep(engine.delay_s)
                logits = engine.logits(query, texts, bool(body.get("truncate", True)))
            finally:
                engine.count("in_flight", -1)
                engine.release()
            order = sorted(range(len(texts)), key=lambda i: logits[i], reverse=True)
            if cohere:
                top_n = body.get("top_n") or len(texts)
                results = [{"index": i, "relevance_score": _sigmoid(logits[i])}
                           for i in order[:top_n]]
                self._send(200, {"object": "rerank", "model": engine.model_id,
                                 "results": results})
            else:
                raw_scores = bool(body.get("raw_scores", False))
                self._send(200, [{"index": i, "score": logits[i] if raw_scores
                                  else _sigmoid(logits[i])} for i in order])

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, handler) -> None:
        if ":" in host:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__((host, port), handler)


SERVER_OPTIONS = ("max_client_batch_size", "max_concurrent_requests", "delay_ms",
                  "api_key_env", "certfile", "keyfile")


def _serve(model: Model, model_id: str, host: str, port: int, options: dict) -> _Server:
    api_key_env = options.get("api_key_env")
    engine = Engine(model, model_id=model_id,
                    max_client_batch_size=int(options.get("max_client_batch_size") or 32),
                    max_concurrent_requests=int(options.get("max_concurrent_requests") or 64),
                    delay_s=float(options.get("delay_ms") or 0.0) / 1000.0,
                    api_key=os.environ[api_key_env] if api_key_env else None)
    server = _Server(host, port, make_handler(engine))
    if options.get("certfile"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options["certfile"], options.get("keyfile"))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--model-id", default="minilm-ce")
    parser.add_argument("--host", default="127.0.0.1", choices=LOOPBACK)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-client-batch-size", type=int, default=32)
    parser.add_argument("--max-concurrent-requests", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--api-key-env", default=None,
                        help="environment variable holding the bearer token to require")
    parser.add_argument("--certfile", default=None)
    parser.add_argument("--keyfile", default=None)
    parser.add_argument(
        "--servers", default=None,
        help="JSON object {name: {option: value}}: several engines with their own limits "
             f"on their own free ports, sharing one model load (options: {SERVER_OPTIONS})")
    args = parser.parse_args(argv)
    if args.servers:
        specs = json.loads(args.servers)
        unknown = {key for spec in specs.values() for key in spec} - set(SERVER_OPTIONS)
        if unknown:
            parser.error(f"unknown server options {sorted(unknown)}")
    else:
        specs = {"default": {key: getattr(args, key) for key in SERVER_OPTIONS}}
    model = Model(args.model_dir)
    servers = {name: _serve(model, args.model_id, args.host, args.port if len(specs) == 1
                            else 0, spec) for name, spec in specs.items()}
    ports = {name: server.server_address[1] for name, server in servers.items()}
    print(json.dumps({"port": next(iter(ports.values())), "ports": ports}), flush=True)
    threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                daemon=True) for server in servers.values()]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers.values():
            server.server_close()


if __name__ == "__main__":
    sys.exit(main())
