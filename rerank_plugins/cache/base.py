"""Pair-score cache protocol and key derivation.

Keys never contain text: ``sha256(namespace | fp(query) | fp(document))`` where the
namespace carries model id, revision and scoring settings, and ``fp`` is the keyed
fingerprint from :mod:`rerank_plugins.privacy`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class PairCache(Protocol):
    """Stores raw pair scores. Implementations never raise on the request path
    except ``CacheError``, which the reranker swallows and counts."""

    backend: str

    def get_many(self, keys: Iterable[str]) -> dict[str, float]: ...

    def set_many(self, items: Mapping[str, float]) -> None: ...


def pair_key(namespace: str, query_fp: str, doc_fp: str) -> str:
    digest = hashlib.sha256(f"{namespace}\x1f{query_fp}\x1f{doc_fp}".encode()).hexdigest()
    return digest
