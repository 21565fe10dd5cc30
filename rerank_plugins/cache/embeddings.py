"""Document-embedding stores: the bi-encoder's memo of document vectors.

A bi-encoder's document embedding does not depend on the query, so a scorer handed
one of these stores embeds only the query and the documents it has not seen. The
scorer only calls the small :class:`EmbeddingStore` interface (it never imports the
pair cache, and nothing here imports a model).

Keys never contain text: ``sha256(namespace | fp(document))``, where the namespace
carries model id, revision and the embedding settings, and ``fp`` is the keyed
fingerprint from :mod:`rerank_plugins.privacy`. Vectors are stored as raw
little-endian float32 (or float16) bytes with a small header, never pickled; in
Redis every value is signed with the operator secret, so a planted or altered value
is a miss, not a vector.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigurationError
from ..privacy import Fingerprinter
from .memory import BoundedLRU
from .redis import RedisCache

VECTOR_DTYPES = {"float32": ("<f4", 0), "float16": ("<f2", 1)}
_CODES = {code: np.dtype(fmt) for fmt, code in VECTOR_DTYPES.values()}
#: magic, dtype code, dimension
_HEADER = struct.Struct("<4sBI")
_MAGIC = b"RPE1"
MAX_DIMENSION = 16_384
_ENTRY_OVERHEAD = 160  # key string, array header, dict slot (approximate)


@runtime_checkable
class EmbeddingStore(Protocol):
    """What a bi-encoder scorer needs from a document-embedding store.

    ``get_many`` and ``set_many`` never raise on the request path except
    ``CacheError`` (the scorer then embeds the documents itself).
    """

    backend: str

    def key(self, namespace: str, text: str) -> str: ...

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]: ...

    def set_many(self, items: Mapping[str, np.ndarray]) -> None: ...


def embedding_key(namespace: str, text_fp: str) -> str:
    return hashlib.sha256(f"emb\x1f{namespace}\x1f{text_fp}".encode()).hexdigest()


def encode_vector(vector: np.ndarray, vector_dtype: str = "float32") -> bytes:
    """Header plus raw little-endian values (no pickle, no JSON floats)."""
    fmt, code = VECTOR_DTYPES[vector_dtype]
    flat = np.asarray(vector, dtype=np.float32).reshape(-1)
    return _HEADER.pack(_MAGIC, code, flat.size) + flat.astype(fmt).tobytes()


def decode_vector(raw: bytes) -> np.ndarray | None:
    """The float32 vector in ``raw``, or ``None`` for anything malformed."""
    if not isinstance(raw, (bytes, bytearray)) or len(raw) < _HEADER.size:
        return None
    magic, code, dimension = _HEADER.unpack_from(raw)
    dtype = _CODES.get(code)
    if magic != _MAGIC or dtype is None or not 0 < dimension <= MAX_DIMENSION:
        return None
    if len(raw) != _HEADER.size + dimension * dtype.itemsize:
        return None
    vector = np.frombuffer(raw, dtype=dtype, offset=_HEADER.size).astype(np.float32)
    return vector if np.isfinite(vector).all() else None


class _Counting:
    """Hit and miss counters shared by the stores (read by the benchmark)."""

    def _count(self, asked: int, found: int) -> None:
        with self._stats_lock:
            self.hits += found
            self.misses += asked - found

    def stats(self) -> dict[str, float]:
        asked = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / asked if asked else 0.0}


class MemoryEmbeddingStore(_Counting, BoundedLRU):
    """In-process LRU of document embeddings with an entry cap, a byte cap and a TTL.

    Args:
        max_entries: Vectors kept. Defaults to 200,000.
        max_bytes: Approximate memory cap. Defaults to 256 MiB (about 160k
            384-dimensional float32 vectors).
        ttl_s: Seconds a vector lives; ``None`` (default) for no expiry (a vector
            only changes with the model, and the model is in the key).
        vector_dtype: ``"float32"`` (default, warm scores equal cold ones) or
            ``"float16"`` (half the memory, scores within ~1e-3).
        secret: Fingerprint secret (defaults to ``RERANK_PLUGINS_SECRET``, else a
            random per-process one).

    Example::

        store = MemoryEmbeddingStore(max_bytes=64 << 20)
        scorer = BiEncoderScorer(embedding_store=store)
    """

    backend = "memory"

    def __init__(self, *, max_entries: int = 200_000, max_bytes: int = 256 << 20,
                 ttl_s: float | None = None, vector_dtype: str = "float32",
                 secret: str | bytes | None = None,
                 fingerprinter: Fingerprinter | None = None, clock=time.monotonic) -> None:
        if vector_dtype not in VECTOR_DTYPES:
            raise ConfigurationError(f"vector_dtype must be one of {tuple(VECTOR_DTYPES)}")
        super().__init__(max_entries=max_entries, max_bytes=max_bytes, ttl_s=ttl_s,
                         value_bytes=len, overhead=_ENTRY_OVERHEAD, clock=clock)
        self.vector_dtype = vector_dtype
        self._fp = fingerprinter or Fingerprinter(secret)
        self._stats_lock = threading.Lock()
        self.hits = self.misses = 0

    def key(self, namespace: str, text: str) -> str:
        return embedding_key(namespace, self._fp.fingerprint(text))

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        keys = list(keys)
        decoded = {k: v for k, v in ((k, decode_vector(raw))
                                     for k, raw in super().get_many(keys).items())
                   if v is not None}
        self._count(len(keys), len(decoded))
        return decoded

    def set_many(self, items: Mapping[str, np.ndarray]) -> None:
        super().set_many({k: encode_vector(v, self.vector_dtype) for k, v in items.items()})


class RedisEmbeddingStore(_Counting, RedisCache):
    """Document embeddings in Redis, shared by every replica of a model.

    The connection handling, short timeouts, circuit breaker and background writer
    are :class:`~rerank_plugins.cache.redis.RedisCache`'s; only the values differ:
    the vector bytes (see :func:`encode_vector`) followed by a hex HMAC of key and
    vector under the operator secret. Processes sharing the store must share the
    secret (and then share keys too).

    Args:
        url: ``redis://host:port/db`` (or ``client=``), as for ``RedisCache``.
        prefix: Key namespace. Defaults to ``"rrp:emb:"``.
        ttl_s: Entry lifetime in seconds. Defaults to 7 days.
        vector_dtype: ``"float32"`` (default) or ``"float16"``.
        **redis_options: Every other ``RedisCache`` argument (``client``,
            ``socket_timeout_s``, ``secret``, ``breaker``, ``write_queue``, ...).

    Example::

        store = RedisEmbeddingStore("redis://127.0.0.1:6379/0", secret=SECRET)
        scorer = BiEncoderScorer(embedding_store=store)
    """

    backend = "redis"

    def __init__(self, url: str | None = None, *, prefix: str = "rrp:emb:",
                 ttl_s: int | None = 7 * 86_400, vector_dtype: str = "float32",
                 **redis_options) -> None:
        if vector_dtype not in VECTOR_DTYPES:
            raise ConfigurationError(f"vector_dtype must be one of {tuple(VECTOR_DTYPES)}")
        super().__init__(url, prefix=prefix, ttl_s=ttl_s, **redis_options)
        self.vector_dtype = vector_dtype
        self._stats_lock = threading.Lock()
        self.hits = self.misses = 0
        self._max_value = _HEADER.size + MAX_DIMENSION * 4 + 64

    def key(self, namespace: str, text: str) -> str:
        return embedding_key(namespace, self._fp.fingerprint(text))

    def _encode(self, key: str, vector) -> bytes:  # the writer thread calls this
        body = encode_vector(vector, self.vector_dtype)
        return body + self._fp.sign(key.encode() + b"|" + body).encode()

    def _decode(self, key: str, raw: bytes) -> np.ndarray | None:
        if not isinstance(raw, (bytes, bytearray)) or not 64 < len(raw) <= self._max_value:
            return None
        body, signature = bytes(raw[:-64]), bytes(raw[-64:])
        try:
            if not self._fp.verify(key.encode() + b"|" + body, signature.decode("ascii")):
                return None
        except UnicodeDecodeError:
            return None
        return decode_vector(body)

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        keys = list(keys)
        found = RedisCache.get_many(self, keys)
        self._count(len(keys), len(found))
        return found

