"""One JSON-over-HTTP exchange with a serving engine, shared by the remote scorers.

:class:`~rerank_plugins.scoring.remote.RemoteScorer` (TEI / Cohere-compatible rerank)
and :class:`~rerank_plugins.scoring.llm.LLMScorer` (OpenAI-compatible chat) differ in
the payload they send and in how they read the answer; everything else lives here
once: the pooled ``httpx`` clients, timeouts capped by the request deadline, the
translation of failures onto the library's error tree, and retries that only start
when the deadline still has room for them::

    httpx.TimeoutException (connect/read/write/pool)  -> ScorerTimeout     retried
    connect / read / remote-protocol errors           -> ScorerError       retried
    certificate that does not verify                  -> ScorerError       not retried
    HTTP 429, 503                                     -> RemoteOverloaded  retried
    HTTP 504 (a gateway gave up)                      -> ScorerTimeout     retried
    HTTP 502                                          -> ScorerError       retried
    other HTTP status >= 400                          -> ScorerError       not retried
    a 200 answer the caller's parser refuses          -> ScorerError       not retried
    remaining deadline already spent                  -> ScorerTimeout
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigurationError, RemoteOverloaded, ScorerError, ScorerTimeout
from ..waiting import CallWait, Plan, SleepWait, run_async, run_sync

logger = logging.getLogger(__name__)

OVERLOADED_STATUS = (429, 503)
RETRYABLE_STATUS = (429, 502, 503, 504)
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


#: The extra that installs httpx for each scorer (named in the ImportError).
_EXTRAS = {"RemoteScorer": "remote", "LLMScorer": "llm"}


def httpx_module(owner: str = "RemoteScorer"):
    """``httpx``, or an ImportError that names the extra to install."""
    try:
        import httpx
    except ImportError as exc:
        extra = _EXTRAS.get(owner, "remote")
        raise ImportError(f"{owner} needs httpx: pip install 'rerank-plugins[{extra}]'") \
            from exc
    return httpx


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to log and to key caches on."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class Attempt:
    """What one HTTP exchange produced: a parsed value, or an error and whether to retry."""

    value: Any = None
    error: ScorerError | None = None
    retryable: bool = False
    retry_after_s: float | None = None

    @property
    def scores(self):  # the name RemoteScorer's callers know
        return self.value


class HttpExchange:
    """Pooled clients to one engine, with deadline-capped calls and a retry budget.

    Args:
        url: Base URL; credentials in it are refused (use ``api_key_env``).
        owner: Class name used in messages.
        api_key_env: Environment variable holding a bearer token (read once, never
            logged). ``None`` sends no ``Authorization`` header.
        connect_timeout_s / read_timeout_s: Per-phase timeouts, capped by the deadline.
        max_connections: Pool size.
        max_retries / retry_backoff_s: Extra attempts and the first back-off (doubles,
            with jitter); a retry starts only when back-off plus a typical call fit in
            what is left of the deadline.
        ca_bundle: PEM file of CAs to trust. TLS verification is always on.
        trust_env: Honour proxy / ``SSL_CERT_FILE`` environment variables.
        clock: Monotonic clock.
    """

    def __init__(self, url: str, *, owner: str, api_key_env: str | None,
                 connect_timeout_s: float, read_timeout_s: float, max_connections: int,
                 max_retries: int, retry_backoff_s: float, ca_bundle: str | None,
                 trust_env: bool, clock: Callable[[], float]) -> None:
        httpx = httpx_module(owner)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"url must be http(s)://host[:port], got {redact_url(url)!r}")
        if parts.username or parts.password:
            raise ConfigurationError(
                "put credentials in an environment variable named by api_key_env, "
                "not in the url")
        self.url = redact_url(url)
        self.owner = owner
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.max_retries = int(max_retries)
        self.retry_backoff_s = float(retry_backoff_s)
        self._clock = clock
        headers = {"Accept": "application/json"}
        if api_key_env is not None:
            api_key = os.environ.get(api_key_env, "")
            if not api_key.strip():
                raise ConfigurationError(
                    f"environment variable {api_key_env} (api_key_env) is empty or unset")
            headers["Authorization"] = f"Bearer {api_key.strip()}"
            if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
                logger.warning("%s sends an API key over plain http to %s; "
                               "use https outside one host", owner, self.url)
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True)
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections)
        self._headers = headers
        self._trust_env = bool(trust_env)
        self._client = httpx.Client(headers=headers, verify=self._verify,
                                    limits=self._limits, follow_redirects=False,
                                    trust_env=self._trust_env)
        self._async_client = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._typical_call_s: float | None = None  # moving average of successful calls

    # -- one exchange, retried while the deadline allows ----------------------------
    def post(self, endpoint: str, payload: dict, deadline_at: float,
             parse: Callable[[bytes], Any]) -> tuple[Any, int]:
        """POST ``payload``; return ``(parse(body), attempts)`` or raise a ScorerError."""
        return run_sync(self.exchange(endpoint, payload, deadline_at, parse,
                                      self._client.post))

    async def apost(self, endpoint: str, payload: dict, deadline_at: float,
                    parse: Callable[[bytes], Any]) -> tuple[Any, int]:
        """Async :meth:`post` on a pooled ``httpx.AsyncClient`` (same plan)."""
        return await run_async(self.exchange(endpoint, payload, deadline_at, parse,
                                             self._async().post))

    @property
    def sync_post(self):
        """The pooled client's ``post``, for plans driven by :func:`run_sync`."""
        return self._client.post

    def async_post(self):
        """The event loop's ``AsyncClient.post``, for plans driven by :func:`run_async`."""
        return self._async().post

    def exchange(self, endpoint: str, payload: dict, deadline_at: float,
                 parse: Callable[[bytes], Any], post) -> Plan[tuple[Any, int]]:
        """The exchange as a plan (:mod:`rerank_plugins.waiting`), written once: the
        sync and async paths differ only in the ``post`` they pass and in how the
        driver waits. Callers compose it into their own plans with ``yield from``."""
        httpx = httpx_module(self.owner)
        attempt = 0
        while True:
            remaining = deadline_at - self._clock()
            if remaining <= 0:
                raise ScorerTimeout(f"deadline passed before calling {endpoint}")
            started = self._clock()
            call = functools.partial(post, endpoint, json=payload,
                                     timeout=self.timeout(remaining))
            try:
                response = yield CallWait(call)
            except httpx.HTTPError as exc:
                outcome = self.transport_failure(exc, endpoint)
            else:
                outcome = self.interpret(response.status_code, response.headers,
                                         response.content, endpoint, parse, started)
            attempt += 1
            if outcome.error is None:
                return outcome.value, attempt
            wait = self.retry_wait(outcome, attempt, deadline_at)
            if wait is None:
                raise outcome.error
            yield SleepWait(wait)

    def timeout(self, remaining: float):
        httpx = httpx_module(self.owner)
        connect = min(self.connect_timeout_s, remaining)
        read = min(self.read_timeout_s, remaining)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    # -- error translation ----------------------------------------------------------
    def transport_failure(self, exc, endpoint: str) -> Attempt:
        httpx = httpx_module(self.owner)
        name = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            error: ScorerError = ScorerTimeout(f"{name} calling {endpoint}")
            retryable = True
        elif caused_by(exc, ssl.SSLCertVerificationError):
            # a certificate that does not verify will not verify on the next try either
            error, retryable = ScorerError(f"{name} calling {endpoint}: {exc}"), False
        elif isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
            # nothing was processed (refused, reset, or a keep-alive connection the
            # server had closed): safe to send again
            error, retryable = ScorerError(f"{name} calling {endpoint}: {exc}"), True
        else:
            error, retryable = ScorerError(f"{name} calling {endpoint}: {exc}"), False
        error.__cause__ = exc
        return Attempt(error=error, retryable=retryable)

    def interpret(self, status: int, headers, content: bytes, endpoint: str,
                  parse: Callable[[bytes], Any], started: float) -> Attempt:
        if status == 200:
            try:
                value = parse(content)
            except ScorerError as exc:
                return Attempt(error=exc)
            self.observe(self._clock() - started)
            return Attempt(value=value)
        detail = content[:200].decode("utf-8", "replace")
        message = f"{endpoint} answered HTTP {status}: {detail}"
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status in OVERLOADED_STATUS:
            return Attempt(error=RemoteOverloaded(message), retryable=True,
                           retry_after_s=retry_after)
        if status == 504:
            return Attempt(error=ScorerTimeout(message), retryable=True)
        return Attempt(error=ScorerError(message), retryable=status in RETRYABLE_STATUS)

    # -- retry budget ---------------------------------------------------------------
    def observe(self, seconds: float) -> None:
        with self._lock:
            previous = self._typical_call_s
            self._typical_call_s = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def typical_call_s(self) -> float:
        """Recent successful call time (before the first success: the connect timeout)."""
        with self._lock:
            return self._typical_call_s if self._typical_call_s is not None \
                else self.connect_timeout_s

    def retry_wait(self, outcome: Attempt, attempt: int, deadline_at: float) -> float | None:
        """Seconds to wait before retrying, or ``None`` when no retry fits."""
        if not outcome.retryable or attempt > self.max_retries:
            return None
        backoff = self.retry_backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        if outcome.retry_after_s is not None:
            backoff = max(backoff, outcome.retry_after_s)
        remaining = deadline_at - self._clock()
        if remaining < backoff + self.typical_call_s():
            return None
        return backoff

    # -- pools ----------------------------------------------------------------------
    def _async(self):
        httpx = httpx_module(self.owner)
        loop = asyncio.get_running_loop()
        if self._async_client is None or self._async_loop is not loop:
            # an AsyncClient's connections belong to one event loop
            self._async_client = httpx.AsyncClient(
                headers=self._headers, verify=self._verify, limits=self._limits,
                follow_redirects=False, trust_env=self._trust_env)
            self._async_loop = loop
        return self._async_client

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None
        self.close()


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, kind):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: ignore, the deadline bounds the wait anyway
    return seconds if seconds >= 0 else None
