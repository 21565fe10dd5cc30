"""Remote scorer: a serving engine runs the model, the guard rails stay here.

Two wire protocols are spoken:

* ``"tei"`` -- Hugging Face text-embeddings-inference ``POST /rerank``:
  ``{query, texts, truncate, raw_scores}`` -> ``[{index, score}]``. The answer is
  sorted by score, so results are mapped back by ``index``, never by position. With
  ``raw_scores=True`` (the default here) the scores are logits (activation
  ``sigmoid``); otherwise TEI has applied the sigmoid already (``identity``).
* ``"cohere"`` -- the Cohere-compatible ``POST /v1/rerank`` served by Infinity, vLLM,
  Jina and Cohere: ``{model, query, documents, top_n}`` ->
  ``{results: [{index, relevance_score}]}``; ``relevance_score`` is already in
  ``[0, 1]`` (activation ``identity``).

Failures map onto the library's error tree, shaped by what the reranker does next
(every one of them is a fallback trigger)::

    httpx.TimeoutException (connect/read/write/pool)  -> ScorerTimeout     "timeout"
    HTTP 429, 503                                     -> RemoteOverloaded  "overloaded"
    HTTP 504 (a gateway gave up)                      -> ScorerTimeout     "timeout"
    other HTTP status >= 400, transport errors,
    answers that do not fit the protocol              -> ScorerError       "error"
    remaining deadline already spent                  -> ScorerTimeout     "timeout"

Retries (connect errors, 429/502/503/504, timeouts) happen only while the request
deadline still has room for a typical call (a moving average of recent call times)
plus the back-off; a retry never starts a call that cannot finish in time.

The exchange itself (pooled clients, this error mapping, the retry budget) lives in
:mod:`._http`, shared with :class:`~rerank_plugins.scoring.llm.LLMScorer`.

Deadlines: every ``ScoreRequest`` may carry ``deadline_at`` (a ``time.monotonic()``
instant, which :class:`~rerank_plugins.Reranker` fills with its request deadline);
otherwise ``score_many(..., deadline_s=...)`` or the scorer's ``timeout_s`` applies.
Connect and read timeouts are each capped by the time left.

Threads and async: :class:`~rerank_plugins.Reranker` calls ``score_many`` on its
inference-engine threads (also from ``arerank``), which is fine for a network-bound
scorer: the engine's ``max_threads`` bounds concurrent calls. ``ascore_many`` is the
native-async path for callers that drive the scorer from an event loop themselves.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..errors import ConfigurationError, ScorerError
from ._http import Attempt, HttpExchange, httpx_module, redact_url
from .base import Identified, ScoreOutput, ScoreRequest

__all__ = ["PROTOCOLS", "RemoteScorer", "redact_url"]

PROTOCOLS = ("tei", "cohere")
_DEFAULT_PATHS = {"tei": "/rerank", "cohere": "/v1/rerank"}


class RemoteScorer(Identified):
    """Scores pairs on a remote serving engine (TEI ``/rerank`` or ``/v1/rerank``).

    One pooled ``httpx.Client`` per scorer (thread-safe); texts above the server's
    batch limit are split client-side and the chunks sent concurrently.

    Args:
        url: Base URL of the engine or its load balancer, e.g. ``http://tei:80``.
        protocol: ``"tei"`` or ``"cohere"``. Defaults to ``"tei"``.
        model: The model id the endpoint serves (sent as ``model`` in the Cohere
            protocol). It is part of the cache namespace, so change it (or
            ``revision``) whenever the fleet is moved to other weights.
        revision: The served model's revision, if known. Defaults to ``""``.
        path: Request path. Defaults to ``/rerank`` (tei) or ``/v1/rerank`` (cohere).
        api_key_env: Name of the environment variable holding a bearer token. The
            value is read once, sent as ``Authorization: Bearer``, and never logged,
            shown in ``repr`` or ``describe``. Defaults to none.
        timeout_s: Deadline for a ``score_many`` call whose requests carry none.
            Defaults to 10.
        connect_timeout_s: TCP/TLS connect timeout (capped by the deadline).
            Defaults to 0.5.
        read_timeout_s: Wait for the answer (capped by the deadline). Defaults to 10.
        max_client_batch_size: Texts per HTTP call; keep it at or under the server's
            limit (TEI's ``--max-client-batch-size``, 32 by default). Defaults to 32.
        max_concurrency: HTTP calls in flight per ``score_many`` call. Defaults to 4.
        max_connections: Connection pool size. Defaults to 16.
        max_retries: Extra attempts per HTTP call, deadline permitting. Defaults to 2.
        retry_backoff_s: First back-off; doubles per retry, with jitter.
            Defaults to 0.05.
        raw_scores: TEI only: ask for logits (activation ``sigmoid``). Defaults to True.
        truncate: TEI only: let the server truncate long inputs. Defaults to True.
        ca_bundle: PEM file of CAs to trust (private CAs). TLS verification is always
            on; there is no switch to turn it off. Defaults to the system store.
        trust_env: Honour ``HTTP(S)_PROXY``/``NO_PROXY``/``SSL_CERT_FILE``. Defaults to
            False, so a proxy meant for other traffic never carries rerank calls.
        clock: Monotonic clock. Defaults to ``time.monotonic``.

    Example::

        scorer = RemoteScorer("http://127.0.0.1:8080", protocol="tei",
                              model="BAAI/bge-reranker-base")
        reranker = Reranker(scorer, cache=RedisCache("redis://127.0.0.1:6379/0"))
    """

    def __init__(
        self,
        url: str,
        *,
        protocol: str = "tei",
        model: str,
        revision: str = "",
        path: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 0.5,
        read_timeout_s: float = 10.0,
        max_client_batch_size: int = 32,
        max_concurrency: int = 4,
        max_connections: int = 16,
        max_retries: int = 2,
        retry_backoff_s: float = 0.05,
        raw_scores: bool = True,
        truncate: bool = True,
        ca_bundle: str | None = None,
        trust_env: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        httpx_module()
        if protocol not in PROTOCOLS:
            raise ConfigurationError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if not isinstance(model, str) or not model:
            raise ConfigurationError("model must name the model the endpoint serves")
        for name, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s),
                            ("read_timeout_s", read_timeout_s)):
            if not value > 0:
                raise ConfigurationError(f"{name} must be > 0")
        if max_client_batch_size < 1 or max_concurrency < 1 or max_connections < 1:
            raise ConfigurationError(
                "max_client_batch_size, max_concurrency and max_connections must be >= 1")
        if max_retries < 0 or retry_backoff_s < 0:
            raise ConfigurationError("max_retries and retry_backoff_s must be >= 0")
        self._http = HttpExchange(
            url, owner="RemoteScorer", api_key_env=api_key_env,
            connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
            max_connections=max_connections, max_retries=max_retries,
            retry_backoff_s=retry_backoff_s, ca_bundle=ca_bundle, trust_env=trust_env,
            clock=clock)
        self.protocol = protocol
        self.url = self._http.url
        self.endpoint = self.url + (path or _DEFAULT_PATHS[protocol])
        self._model_id = model
        self._revision = revision
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.max_client_batch_size = int(max_client_batch_size)
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.retry_backoff_s = float(retry_backoff_s)
        self.raw_scores = bool(raw_scores)
        self.truncate = bool(truncate)
        self._clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # -- protocol -----------------------------------------------------------------
    @property
    def activation(self) -> str:
        if self.protocol == "tei" and self.raw_scores:
            return "sigmoid"
        return "identity"

    @property
    def cache_namespace(self) -> str:
        settings = (f"raw={int(self.raw_scores)}|truncate={int(self.truncate)}"
                    if self.protocol == "tei" else "relevance")
        return (f"remote|{self.protocol}|{self._model_id}|{self._revision}|{self.endpoint}|"
                f"{settings}")

    def describe(self) -> dict[str, str]:
        return {"model": self._model_id, "revision": self._revision, "device": "remote",
                "dtype": "remote", "kind": f"remote-{self.protocol}",
                "endpoint": self.endpoint}

    def __repr__(self) -> str:
        return (f"RemoteScorer(protocol={self.protocol!r}, endpoint={self.endpoint!r}, "
                f"model={self._model_id!r})")

    def score_many(self, requests: Sequence[ScoreRequest], *,
                   deadline_s: float | None = None) -> list[ScoreOutput]:
        """Score every request on the engine.

        Args:
            requests: Queries with their texts. A request's own ``deadline_at`` wins.
            deadline_s: Seconds from now for requests without ``deadline_at``.
                Defaults to ``timeout_s``.

        Raises:
            ScorerTimeout: A deadline passed before the scores arrived.
            RemoteOverloaded: The engine answered 429/503 and no retry fit.
            ScorerError: Any other failure.
        """
        jobs = self._jobs(requests, deadline_s)
        started = self._clock()
        if len(jobs) <= 1 or self.max_concurrency == 1:
            results = [self._call_sync(*job[1:]) for job in jobs]
        else:
            pool = self._executor()
            futures = [pool.submit(self._call_sync, *job[1:]) for job in jobs]
            results = [future.result() for future in futures]
        return self._assemble(requests, jobs, results, self._clock() - started)

    async def ascore_many(self, requests: Sequence[ScoreRequest], *,
                          deadline_s: float | None = None) -> list[ScoreOutput]:
        """Async :meth:`score_many` on a pooled ``httpx.AsyncClient`` (same semantics)."""
        jobs = self._jobs(requests, deadline_s)
        started = self._clock()
        limit = asyncio.Semaphore(self.max_concurrency)

        async def bounded(job):
            async with limit:
                return await self._call_async(*job[1:])

        tasks = [asyncio.ensure_future(bounded(job)) for job in jobs]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return self._assemble(requests, jobs, results, self._clock() - started)

    def close(self) -> None:
        """Close the connection pool (and the chunk thread pool)."""
        self._http.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def aclose(self) -> None:
        """Close the async connection pool, then the sync one."""
        await self._http.aclose()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # -- planning -----------------------------------------------------------------
    def _jobs(self, requests: Sequence[ScoreRequest], deadline_s: float | None):
        """One (request index, query, texts, deadline_at) per HTTP call."""
        now = self._clock()
        default_at = now + (self.timeout_s if deadline_s is None else max(0.0, deadline_s))
        jobs = []
        for index, request in enumerate(requests):
            deadline_at = getattr(request, "deadline_at", None)
            if deadline_at is None:
                deadline_at = default_at
            texts = list(request.texts)
            for start in range(0, len(texts), self.max_client_batch_size):
                jobs.append((index, request.query, texts[start:start + self.max_client_batch_size],
                             deadline_at))
        return jobs

    def _assemble(self, requests, jobs, results, elapsed: float) -> list[ScoreOutput]:
        scores: list[list[float]] = [[] for _ in requests]
        calls = [0] * len(requests)
        for (index, *_), (chunk_scores, attempts) in zip(jobs, results, strict=True):
            scores[index].extend(chunk_scores)
            calls[index] += attempts
        total = max(1, sum(len(r.texts) for r in requests))
        return [ScoreOutput(scores[i], 0, elapsed * len(r.texts) / total,
                            extra={"http_calls": calls[i], "endpoint": self.endpoint})
                for i, r in enumerate(requests)]

    def _payload(self, query: str, texts: list[str]) -> dict:
        if self.protocol == "tei":
            return {"query": query, "texts": texts, "truncate": self.truncate,
                    "raw_scores": self.raw_scores, "return_text": False}
        return {"model": self._model_id, "query": query, "documents": texts,
                "top_n": len(texts), "return_documents": False}

    # -- one HTTP exchange (the shared HttpExchange does the calling) -------------
    def _call_sync(self, query: str, texts: list[str], deadline_at: float):
        return self._http.post(self.endpoint, self._payload(query, texts), deadline_at,
                               lambda content: self._parse(content, len(texts)))

    async def _call_async(self, query: str, texts: list[str], deadline_at: float):
        return await self._http.apost(self.endpoint, self._payload(query, texts),
                                      deadline_at,
                                      lambda content: self._parse(content, len(texts)))

    def _transport_failure(self, exc) -> Attempt:
        return self._http.transport_failure(exc, self.endpoint)

    def _interpret(self, status: int, headers, content: bytes, n: int,
                   started: float) -> Attempt:
        return self._http.interpret(status, headers, content, self.endpoint,
                                    lambda body: self._parse(body, n), started)

    def _parse(self, content: bytes, n: int) -> list[float]:
        import json

        try:
            body = json.loads(content)
        except ValueError as exc:
            raise ScorerError(f"{self.endpoint} answered non-JSON") from exc
        if self.protocol == "tei":
            items, score_key = body, "score"
        else:
            items = body.get("results") if isinstance(body, dict) else None
            score_key = "relevance_score"
        if not isinstance(items, list):
            raise ScorerError(f"{self.endpoint} answered {type(body).__name__}, not results")
        scores: list[float | None] = [None] * n
        for item in items:
            index = item.get("index") if isinstance(item, dict) else None
            score = item.get(score_key) if isinstance(item, dict) else None
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n \
                    or scores[index] is not None:
                raise ScorerError(f"{self.endpoint} answered a bad or repeated index {index!r}")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or \
                    not math.isfinite(score):
                raise ScorerError(f"{self.endpoint} answered a non-numeric score")
            scores[index] = float(score)
        missing = sum(1 for s in scores if s is None)
        if missing:
            raise ScorerError(f"{self.endpoint} left {missing} of {n} texts unscored")
        return scores  # type: ignore[return-value]

    def typical_call_s(self) -> float:
        """Recent successful call time (before the first success: the connect timeout)."""
        return self._http.typical_call_s()

    # -- pools ----------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency,
                                                thread_name_prefix="rerank-remote")
            return self._pool
