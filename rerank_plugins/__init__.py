"""rerank-plugins: a guarded cross-encoder reranking stage for LlamaIndex and LangChain.

Nothing is downloaded or loaded at import time; models load when a scorer is built.
"""

from .context_budget import ContextBudget
from .errors import (
    CacheError,
    CircuitOpenError,
    ConfigurationError,
    InvalidInputError,
    Overloaded,
    RerankError,
    ScorerError,
    ScorerTimeout,
)
from .reranker import Reranker
from .resilience import CircuitBreaker
from .selection import Calibration, block_if, boost_if
from .settings import RerankerSettings
from .types import Candidate, FallbackReason, RankedItem, RerankResult, StageTimings, Status

try:  # the one version: the installed distribution's metadata (pyproject.toml)
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("rerank-plugins")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0+unknown"

__all__ = [
    "BiEncoderScorer", "CacheError", "Calibration", "Candidate", "CircuitBreaker",
    "CircuitOpenError", "ConfigurationError", "ContextBudget", "CrossEncoderScorer",
    "FallbackReason", "InvalidInputError", "LLMScorer", "MemoryCache", "Overloaded",
    "RankedItem", "RedisCache", "SemanticQueryCache",
    "RerankError", "RerankResult", "Reranker", "RerankerSettings", "ScorerError", "ScorerTimeout",
    "StageTimings", "Status", "block_if", "boost_if",
]


def __getattr__(name: str):
    if name in ("CrossEncoderScorer", "BiEncoderScorer"):
        from . import scoring

        return getattr(scoring, name)
    if name in ("MemoryCache", "RedisCache"):
        from . import cache

        return getattr(cache, name)
    if name == "LLMScorer":  # httpx loads only when the LLM scorer is asked for
        from .scoring.llm import LLMScorer

        return LLMScorer
    if name == "SemanticQueryCache":  # numpy / usearch load only when asked for
        from .cache.semantic import SemanticQueryCache

        return SemanticQueryCache
    raise AttributeError(f"module 'rerank_plugins' has no attribute {name!r}")
