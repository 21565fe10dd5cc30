"""Errors raised by rerank-plugins.

The tree is shaped by what a caller can do about each error::

    RerankError                      root of everything this library raises on purpose
    ├── InvalidInputError            (also ValueError) bad query/candidates/settings: fix the call
    ├── ConfigurationError           (also ValueError) bad constructor settings or config file
    ├── ScorerError                  the model could not produce scores (fallback trigger)
    │   ├── ScorerTimeout            the deadline passed before scores arrived
    │   ├── Overloaded               too many in-flight or abandoned model calls; shed load
    │   │   └── RemoteOverloaded     a remote engine answered 429/503
    │   └── CircuitOpenError         the breaker is open; the scorer was not called
    └── CacheError                   a cache backend failed (always swallowed on the request path)

``Reranker.rerank`` never lets a ``ScorerError`` or ``CacheError`` reach the caller:
they become a fallback status. Only ``InvalidInputError``/``TypeError`` for calls that
cannot be answered at all escape, and they are raised before any work starts.
Programming errors (bugs) are not wrapped.
"""

from __future__ import annotations


class RerankError(Exception):
    """Root of every error this library raises on purpose."""


class InvalidInputError(RerankError, ValueError):
    """The query, candidates or per-call settings cannot be reranked as given."""


class ConfigurationError(RerankError, ValueError):
    """A constructor setting or a configuration file is invalid."""


class ScorerError(RerankError):
    """The scorer failed to produce scores; the reranker falls back."""

    reason = "error"


class ScorerTimeout(ScorerError):
    """Scores did not arrive before the request deadline."""

    reason = "timeout"


class Overloaded(ScorerError):
    """The scorer refused work: too many in-flight or abandoned model calls."""

    reason = "overloaded"


class RemoteOverloaded(Overloaded):
    """A remote serving engine answered 429 or 503."""


class CircuitOpenError(ScorerError):
    """The circuit breaker is open, so the scorer was not called."""

    reason = "circuit_open"


class CacheError(RerankError):
    """A cache backend failed. Swallowed on the request path and counted."""
