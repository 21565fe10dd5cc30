"""Shared pair-score cache in Redis.

Values are JSON ``{"v": 1, "s": <raw score>, "h": <HMAC>}`` signed with the
operator secret, so a value planted or altered by anyone without the secret
(including a pickle payload) is rejected and counted as a miss. Nothing is ever
unpickled. The request path uses short socket timeouts, no client retries and a
circuit breaker of its own; writes go through a bounded background queue so a
slow Redis never delays a response.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Iterable, Mapping

from ..errors import CacheError, ConfigurationError
from ..privacy import Fingerprinter
from ..resilience import CircuitBreaker
from ..telemetry import instruments

VALUE_SCHEMA = 1
#: A signed value is ~100 bytes; anything much longer was not written by us.
MAX_VALUE_BYTES = 512


class RedisCache:
    """Pair-score cache in Redis, safe to share between processes.

    Args:
        url: ``redis://host:port/db``. Mutually exclusive with ``client``.
        client: A ``redis.Redis`` whose connection settings (host, port, db,
            credentials, TLS) are reused; the cache opens its own pool with its
            own short timeouts and no retries, so a client built with redis-py's
            defaults (seconds of socket timeout, retries) never slows a request.
        prefix: Key namespace. Defaults to ``"rrp:"``.
        ttl_s: Entry lifetime in seconds. Defaults to 1 day.
        socket_timeout_s: Per-operation timeout. Defaults to 0.025.
        connect_timeout_s: Connect timeout. Defaults to 0.025.
        secret: HMAC secret for values (defaults to ``RERANK_PLUGINS_SECRET``);
            processes sharing the cache must share it.
        breaker: Circuit breaker for Redis. Defaults to 3 failures, 5 s cool-down.
        write_queue: Pending write batches before new ones are dropped. Defaults to 1024.

    Example::

        cache = RedisCache("redis://127.0.0.1:6379/0", secret=os.environ["RERANK_SECRET"])
        reranker = Reranker(cache=cache)
    """

    backend = "redis"

    def __init__(
        self,
        url: str | None = None,
        *,
        client=None,
        prefix: str = "rrp:",
        ttl_s: int | None = 86_400,
        socket_timeout_s: float = 0.025,
        connect_timeout_s: float = 0.025,
        secret: str | bytes | None = None,
        fingerprinter: Fingerprinter | None = None,
        breaker: CircuitBreaker | None = None,
        write_queue: int = 1024,
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise ImportError(
                "RedisCache needs redis-py: pip install 'rerank-plugins[redis]'") from exc
        if (url is None) == (client is None):
            raise ConfigurationError("give exactly one of url= or client=")
        if not 0 < socket_timeout_s <= 1.0 or not 0 < connect_timeout_s <= 1.0:
            raise ConfigurationError(
                "socket_timeout_s and connect_timeout_s must be in (0, 1] seconds: the "
                "cache sits on the request path")
        client = _fast_client(redis, url, client, socket_timeout_s, connect_timeout_s)
        self._redis = redis
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._fp = fingerprinter or Fingerprinter(secret)
        self.breaker = breaker or CircuitBreaker(
            "cache", failure_threshold=3, reset_timeout_s=5.0, probe_timeout_s=1.0)
        instruments.register_breaker(self.breaker)
        self._writes: queue.Queue = queue.Queue(maxsize=write_queue)
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._closed = False

    # -- values -------------------------------------------------------------------
    def _encode(self, key: str, score: float) -> bytes:
        body = json.dumps({"v": VALUE_SCHEMA, "s": float(score)}, separators=(",", ":"))
        signature = self._fp.sign(key.encode() + b"|" + body.encode())
        return json.dumps({"v": VALUE_SCHEMA, "s": float(score), "h": signature},
                          separators=(",", ":")).encode()

    def _decode(self, key: str, raw: bytes) -> float | None:
        """The score stored under ``key``, or ``None`` for anything we did not sign.

        Never raises: hostile bytes (pickles, deep nesting, huge numbers, wrong
        types, a valid value copied from another key) all come back as ``None``.
        """
        if not isinstance(raw, (bytes, bytearray, str)) or len(raw) > MAX_VALUE_BYTES:
            return None
        try:
            value = json.loads(raw)
            if not isinstance(value, dict) or set(value) != {"v", "s", "h"}:
                return None
            version, score, signature = value["v"], value["s"], value["h"]
            if type(version) is not int or version != VALUE_SCHEMA:
                return None
            if type(score) not in (int, float) or not isinstance(signature, str):
                return None
            score = float(score)
            if not math.isfinite(score):
                return None
            body = json.dumps({"v": VALUE_SCHEMA, "s": score}, separators=(",", ":"))
            if not self._fp.verify(key.encode() + b"|" + body.encode(), signature):
                return None
            return score
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            return None

    # -- protocol -----------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, float]:
        keys = list(keys)
        if not keys:
            return {}
        try:
            permit = self.breaker.acquire()
        except Exception as exc:
            raise CacheError("redis circuit open") from exc
        try:
            values = self.client.mget([self.prefix + k for k in keys])
        except Exception as exc:  # noqa: BLE001 - any client failure is a cache failure
            self.breaker.record_failure(permit)
            instruments.cache_error(self.backend, "get", type(exc).__name__)
            raise CacheError(f"redis get failed: {type(exc).__name__}") from exc
        self.breaker.record_success(permit)
        found: dict[str, float] = {}
        for key, raw in zip(keys, values, strict=True):
            if raw is None:
                continue
            score = self._decode(key, raw)
            if score is None:
                instruments.cache_error(self.backend, "get", "bad_value")
                continue
            found[key] = score
        return found

    def set_many(self, items: Mapping[str, float]) -> None:
        if not items:
            return
        if self._closed:
            return
        self._ensure_writer()
        try:
            self._writes.put_nowait(dict(items))
        except queue.Full:
            instruments.cache_error(self.backend, "set", "queue_full")

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until queued writes are sent (tests, shutdown)."""
        import time

        end = time.monotonic() + timeout_s
        while self._writes.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.005)

    def _ensure_writer(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            return
        with self._writer_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_loop, name="rerank-redis-writer", daemon=True)
                self._writer.start()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the writer thread (queued writes are attempted first) and the pool."""
        self._closed = True
        writer = self._writer
        if writer is not None and writer.is_alive():
            try:
                self._writes.put(None, timeout=timeout_s)
            except queue.Full:
                pass
            writer.join(timeout_s)
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a broken pool must not raise
            pass

    def _write_loop(self) -> None:
        while True:
            items = self._writes.get()
            if items is None:
                self._writes.task_done()
                return
            try:
                try:
                    permit = self.breaker.acquire()
                except Exception:
                    instruments.cache_error(self.backend, "set", "circuit_open")
                    continue
                try:
                    pipe = self.client.pipeline(transaction=False)
                    for key, score in items.items():
                        pipe.set(self.prefix + key, self._encode(key, score), ex=self.ttl_s)
                    pipe.execute()
                    self.breaker.record_success(permit)
                except Exception as exc:  # noqa: BLE001 - the writer must outlive any failure
                    self.breaker.record_failure(permit)
                    instruments.cache_error(self.backend, "set", type(exc).__name__)
            finally:
                self._writes.task_done()

    def ping(self) -> bool:
        """True when Redis answers (for ``rerank-ops doctor``)."""
        try:
            return bool(self.client.ping())
        except self._redis.RedisError:
            return False


def _fast_client(redis, url: str | None, client, socket_timeout_s: float,
                 connect_timeout_s: float):
    """A client for the request path: short timeouts, no retries, no health checks.

    redis-py's defaults (5 s socket and connect timeouts, three retries with
    backoff, timeouts relaxed to 10 s during maintenance notifications) would turn
    one Redis outage into seconds per request; here every operation either
    answers within ``socket_timeout_s`` or fails once.
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    fast = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_error": [],
        "health_check_interval": 0,
    }
    try:
        from redis.maint_notifications import MaintNotificationsConfig

        fast["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    except ImportError:  # redis-py < 7 has no maintenance notifications
        pass
    if url is not None:
        return redis.Redis.from_url(url, **fast)
    kwargs = dict(client.connection_pool.connection_kwargs)
    for derived in ("maint_notifications_pool_handler", "orig_host_address",
                    "orig_socket_timeout", "orig_socket_connect_timeout", "retry_on_timeout"):
        kwargs.pop(derived, None)
    kwargs.update(fast)
    pool = redis.ConnectionPool(
        connection_class=client.connection_pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=pool)
