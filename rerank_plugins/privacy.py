"""Keyed fingerprints of user text: what logs and caches store instead of the text.

Fingerprints are HMAC-SHA256 under an operator secret, so nobody without the
secret can test a guess ("was the query 'salary of X'?") against a log or a cache
key. Set the secret with ``RERANK_PLUGINS_SECRET`` (or pass ``secret=``); processes
that share a Redis cache must share it. Without one, a random per-process secret is
used: private, but cache entries are then not shared across processes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

SECRET_ENV = "RERANK_PLUGINS_SECRET"


def safe_text(text: str) -> str:
    """Replace lone surrogates (not encodable as UTF-8) with U+FFFD."""
    if text.isascii():  # the common case, without encoding a copy
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Fingerprinter:
    """HMAC-SHA256 fingerprints under one secret."""

    def __init__(self, secret: str | bytes | None = None) -> None:
        if secret is None:
            secret = os.environ.get(SECRET_ENV)
        self.ephemeral = secret is None or secret == ""
        if self.ephemeral:
            key = secrets.token_bytes(32)
        else:
            key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        self._key = key

    def fingerprint(self, text: str) -> str:
        """Hex HMAC of ``text`` (lone surrogates are encoded, not rejected)."""
        data = text.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def sign(self, payload: bytes) -> str:
        return hmac.new(self._key, b"value|" + payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: str) -> bool:
        return hmac.compare_digest(self.sign(payload), signature)
