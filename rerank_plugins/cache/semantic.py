"""The semantic query layer: reuse the scores of an earlier, nearly identical query.

The pair cache is keyed by ``(namespace, query fingerprint, document fingerprint)``,
so "how do wings make lift" and "How do wings make lift?" miss each other. This
layer remembers, per earlier query, its embedding and its fingerprint; for a new
query it answers the fingerprint of the nearest earlier query whose cosine
similarity is at least ``threshold`` (default 0.95). The caller then looks the pair
cache up under that fingerprint for the candidates both requests share, and scores
only the rest.

Two paths, cheapest first:

* ``exact``: the same query text was remembered (a keyed fingerprint of the text,
  no embedding needed);
* ``near``: the query is embedded (the bundled all-MiniLM-L6-v2 by default, or any
  SentenceTransformer folder) and searched in a vector index (usearch HNSW when the
  ``semantic`` extra is installed, else an exact numpy scan).

Bounded by entries and bytes (least recently used goes first) and by a TTL; process
memory only; :meth:`SemanticQueryCache.clear` forgets everything. Query text is never
stored (only a keyed fingerprint) and embeddings never leave the object: not in
logs, not in ``repr``, not on disk.

A near hit is a bet that the two queries want the same ranking; the threshold is
what keeps that bet safe. See docs/semantic-cache.md for measured hit rates and
the nDCG cost of hits, and runbooks/rerank-semantic-cache-wrong-hits.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError
from ..privacy import Fingerprinter, safe_text
from ..telemetry import contract as c
from ..telemetry import instruments

logger = logging.getLogger(__name__)

__all__ = ["INDEXES", "SemanticHit", "SemanticQueryCache"]

INDEXES = ("auto", "usearch", "numpy")
# Bytes one entry holds besides its vector: fingerprints, dict and index slots.
_ENTRY_OVERHEAD = 400
_SEARCH_K = 8  # neighbours asked for, so an expired nearest one does not hide the next
# Embeddings of recent lookups, so remember() after a near-path lookup of the same
# text does not embed it twice (keyed by the text fingerprint, never the text).
_RECENT_VECTORS = 256


@dataclass(frozen=True)
class SemanticHit:
    """The earlier query whose pair-cache entries may serve this one.

    Attributes:
        query_fingerprint: The fingerprint it was remembered under (look the pair
            cache up with it).
        similarity: Cosine similarity of the two queries (1.0 for an exact hit).
        kind: ``"exact"`` (same text) or ``"near"`` (above the threshold).
    """

    query_fingerprint: str
    similarity: float
    kind: str


@dataclass
class _Entry:
    key: int
    text_fp: str
    query_fingerprint: str
    expires: float  # 0.0: never


class _NumpyIndex:
    """Exact cosine scan over a matrix of unit vectors (rows reused after removal)."""

    name = "numpy"

    def __init__(self, ndim: int) -> None:
        self._ndim = ndim
        self._vectors = np.zeros((64, ndim), dtype=np.float32)
        self._keys = np.full(64, -1, dtype=np.int64)
        self._size = 0  # rows in use or freed; the rest is spare capacity
        self._row: dict[int, int] = {}
        self._free: list[int] = []

    def add(self, key: int, vector: np.ndarray) -> None:
        if self._free:
            row = self._free.pop()
        else:
            row = self._size
            if row == len(self._keys):
                self._vectors = np.concatenate([self._vectors, np.zeros_like(self._vectors)])
                self._keys = np.concatenate([self._keys, np.full_like(self._keys, -1)])
            self._size += 1
        self._vectors[row] = vector
        self._keys[row] = key
        self._row[key] = row

    def remove(self, key: int) -> None:
        row = self._row.pop(key, None)
        if row is not None:
            self._keys[row] = -1
            self._free.append(row)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if not self._row:
            return []
        keys = self._keys[:self._size]
        sims = self._vectors[:self._size] @ vector
        sims[keys < 0] = -2.0
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [(int(keys[i]), float(sims[i])) for i in top if keys[i] >= 0]

    def clear(self) -> None:
        self.__init__(self._ndim)


class _UsearchIndex:
    """usearch HNSW index, cosine metric (distances are ``1 - similarity``)."""

    name = "usearch"

    def __init__(self, ndim: int) -> None:
        from usearch.index import Index

        self._ndim = ndim
        self._make = lambda: Index(ndim=ndim, metric="cos", dtype="f32")
        self._index = self._make()

    def add(self, key: int, vector: np.ndarray) -> None:
        self._index.add(key, vector)

    def remove(self, key: int) -> None:
        self._index.remove(key)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if len(self._index) == 0:
            return []
        matches = self._index.search(vector, min(k, len(self._index)))
        return [(int(key), 1.0 - float(distance))
                for key, distance in zip(matches.keys, matches.distances, strict=True)]

    def clear(self) -> None:
        self._index = self._make()


def _usearch_available() -> bool:
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


class SemanticQueryCache:
    """Maps a query to the fingerprint of a near-identical earlier query.

    Args:
        model: A SentenceTransformer folder to embed queries with; ``None`` uses the
            bundled all-MiniLM-L6-v2 (offline). Ignored when ``embedder`` is given.
            Defaults to ``None``.
        embedder: Any callable mapping a list of texts to a 2-D array of embeddings
            (e.g. an already loaded model's ``encode``); they are L2-normalised here.
        threshold: Minimum cosine similarity for a near hit, in (0, 1].
            Defaults to 0.95.
        max_entries: Earlier queries kept. Defaults to 10,000.
        max_bytes: Approximate memory cap (vectors + bookkeeping). Defaults to 32 MiB.
        ttl_s: Seconds an earlier query stays usable; ``None`` for no expiry. Keep it
            at or under the pair cache's TTL. Defaults to 1 day.
        index: ``"usearch"`` (HNSW; ``pip install 'rerank-plugins[semantic]'``),
            ``"numpy"`` (exact scan) or ``"auto"`` (usearch when installed).
            Defaults to ``"auto"``.
        secret: Key of the text fingerprints of the exact path (default
            ``RERANK_PLUGINS_SECRET``, else a random per-process key: the layer lives
            in one process anyway).
        device: Torch device for the bundled/folder model. Defaults to cpu.
        clock: Monotonic clock (injectable for tests).

    Example::

        layer = SemanticQueryCache(threshold=0.95)
        layer.remember("how do wings make lift", query_fp)
        hit = layer.nearest("How do wings make lift?")
        if hit:
            scores = pair_cache.get_many(keys_for(hit.query_fingerprint, candidates))
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        embedder: Callable[[list[str]], np.ndarray] | None = None,
        threshold: float = 0.95,
        max_entries: int = 10_000,
        max_bytes: int = 32 * 1024 * 1024,
        ttl_s: float | None = 86_400.0,
        index: str = "auto",
        secret: str | bytes | None = None,
        device: str | None = "cpu",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or \
                not 0.0 < threshold <= 1.0:
            raise ConfigurationError(f"threshold must be in (0, 1], got {threshold!r}")
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        if ttl_s is not None and not ttl_s > 0:
            raise ConfigurationError("ttl_s must be > 0 or None")
        if index not in INDEXES:
            raise ConfigurationError(f"index must be one of {INDEXES}, got {index!r}")
        if index == "usearch" and not _usearch_available():
            raise ConfigurationError(
                "index='usearch' needs usearch: pip install 'rerank-plugins[semantic]'")
        self.threshold = float(threshold)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._fp = Fingerprinter(secret)
        self._embed = embedder if embedder is not None else _load_embedder(model, device)
        self._index_choice = index
        self._index = None  # built on the first vector, when ndim is known
        self._ndim = 0
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._by_text: dict[str, int] = {}
        self._next_key = 1
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    # -- public -----------------------------------------------------------------------
    @property
    def index_name(self) -> str:
        """``"usearch"`` or ``"numpy"`` (what ``index="auto"`` chose)."""
        if self._index_choice == "auto":
            return "usearch" if _usearch_available() else "numpy"
        return self._index_choice

    @property
    def bytes_used(self) -> int:
        return len(self._entries) * self._entry_bytes()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (f"SemanticQueryCache(threshold={self.threshold}, entries={len(self)}, "
                f"index={self.index_name!r})")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 embeddings of ``texts`` (one row each)."""
        vectors = np.asarray(self._embed([safe_text(t) for t in texts]), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ConfigurationError(
                f"embedder returned shape {vectors.shape} for {len(texts)} texts")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    def nearest(self, query_text: str, *, vector: np.ndarray | None = None
                ) -> SemanticHit | None:
        """The earlier query to reuse for ``query_text``, or ``None``.

        Counts ``rerank_semantic_cache_lookups{kind}`` and, for near hits, the
        similarity. Never raises for a bad query: a non-string or empty one is a miss.
        """
        if not isinstance(query_text, str) or not query_text.strip():
            return self._count(None)
        text_fp = self._fp.fingerprint(safe_text(query_text))
        now = self._clock()
        with self._lock:
            key = self._by_text.get(text_fp)
            if key is not None:
                entry = self._entries[key]
                if self._alive(entry, now):
                    self._entries.move_to_end(key)
                    return self._count(SemanticHit(entry.query_fingerprint, 1.0, "exact"))
                self._drop(key)
            if not self._entries:
                return self._count(None)
        if vector is None:
            vector = self.embed([query_text])[0]
        with self._lock:
            self._recent[text_fp] = vector
            while len(self._recent) > _RECENT_VECTORS:
                self._recent.popitem(last=False)
            if self._index is None or vector.shape[0] != self._ndim:
                return self._count(None)
            for found, similarity in self._index.search(vector, _SEARCH_K):
                entry = self._entries.get(found)
                if entry is None:
                    continue
                if not self._alive(entry, now):
                    self._drop(found)
                    continue
                if similarity < self.threshold:
                    break  # results are best first
                self._entries.move_to_end(found)
                return self._count(SemanticHit(entry.query_fingerprint,
                                               min(1.0, similarity), "near"))
        return self._count(None)

    def remember(self, query_text: str, query_fingerprint: str, *,
                 vector: np.ndarray | None = None) -> None:
        """Remember that ``query_text``'s pair scores are cached under
        ``query_fingerprint`` (call it after they were stored)."""
        if not isinstance(query_text, str) or not query_text.strip():
            return
        if not isinstance(query_fingerprint, str) or not query_fingerprint:
            raise ConfigurationError("query_fingerprint must be a non-empty str")
        text_fp = self._fp.fingerprint(safe_text(query_text))
        expires = (self._clock() + self.ttl_s) if self.ttl_s else 0.0
        with self._lock:
            key = self._by_text.get(text_fp)
            if key is not None and self._entries[key].query_fingerprint == query_fingerprint:
                # known already: refresh its place and lifetime, no embedding needed
                self._entries[key].expires = expires
                self._entries.move_to_end(key)
                return
            if vector is None:
                vector = self._recent.pop(text_fp, None)
        if vector is None:
            vector = self.embed([query_text])[0]
        with self._lock:
            if self._index is None:
                self._ndim = int(vector.shape[0])
                self._index = self._new_index(self._ndim)
            elif vector.shape[0] != self._ndim:
                raise ConfigurationError(
                    f"embedding has {vector.shape[0]} dimensions, the index {self._ndim}")
            old = self._by_text.get(text_fp)
            if old is not None:
                self._drop(old)
            key = self._next_key
            self._next_key += 1
            self._index.add(key, vector)
            self._entries[key] = _Entry(key, text_fp, query_fingerprint, expires)
            self._by_text[text_fp] = key
            while self._entries and (len(self._entries) > self.max_entries
                                     or self.bytes_used > self.max_bytes):
                self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        """Forget every remembered query."""
        with self._lock:
            self._entries.clear()
            self._by_text.clear()
            self._recent.clear()
            if self._index is not None:
                self._index.clear()

    # -- internals ----------------------------------------------------------------------
    def _new_index(self, ndim: int):
        if self.index_name == "usearch":
            return _UsearchIndex(ndim)
        return _NumpyIndex(ndim)

    def _entry_bytes(self) -> int:
        return 4 * self._ndim + _ENTRY_OVERHEAD

    @staticmethod
    def _alive(entry: _Entry, now: float) -> bool:
        return not entry.expires or now < entry.expires

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        if self._by_text.get(entry.text_fp) == key:
            del self._by_text[entry.text_fp]
        self._index.remove(key)

    @staticmethod
    def _count(hit: SemanticHit | None) -> SemanticHit | None:
        try:
            instruments.add(c.SEMANTIC_LOOKUPS, 1, kind=hit.kind if hit else "miss")
            if hit is not None and hit.kind == "near":
                instruments.observe(c.SEMANTIC_SIMILARITY, hit.similarity)
        except Exception as exc:  # noqa: BLE001 - telemetry must never fail a lookup
            logger.warning("semantic cache telemetry failed: %s", type(exc).__name__)
        return hit


def _load_embedder(model: str | None, device: str | None):
    import os

    from sentence_transformers import SentenceTransformer

    from ..scoring.default_model import bundled_model_path, is_local_folder

    path = model or bundled_model_path()
    if not is_local_folder(path):
        raise ConfigurationError(
            f"model must be a SentenceTransformer folder on disk, got {path!r}: the "
            "semantic layer never downloads a model")
    encoder = SentenceTransformer(os.path.expanduser(path), device=device or "cpu",
                                  local_files_only=True)

    def embed(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, batch_size=32, convert_to_numpy=True,
                              normalize_embeddings=True, show_progress_bar=False)

    return embed
