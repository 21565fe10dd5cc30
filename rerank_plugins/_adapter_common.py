"""What both framework adapters share: their settings, how they build a Reranker,
and how framework objects become candidates and results become metadata.

Only the adapters import this module (it needs pydantic, which both frameworks
bring); the framework-specific parts stay in ``llama_index.py`` and ``langchain.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .errors import ConfigurationError
from .reranker import Reranker
from .scoring import load_scorer
from .types import Candidate, RankedItem, RerankResult

#: Metadata keys every adapter writes on the results it returns.
RELEVANCE_SCORE = "relevance_score"
RETRIEVAL_SCORE = "retrieval_score"
RETRIEVAL_RANK = "retrieval_rank"
RERANK_STATUS = "rerank_status"
RERANK_FALLBACK_REASON = "rerank_fallback_reason"
RESULT_KEYS = (RELEVANCE_SCORE, RETRIEVAL_SCORE, RETRIEVAL_RANK, RERANK_STATUS,
               RERANK_FALLBACK_REASON)



class RerankSettings(BaseModel):
    """The settings both drop-ins accept besides ``top_n`` (a pydantic mixin).

    Every field but ``top_n`` configures the Reranker the adapter builds, so none may
    be combined with ``reranker=`` (a ready, shared Reranker carries its own).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=(),
                              extra="forbid")

    model: str | None = Field(
        default=None,
        description="Cross-encoder hub name or local folder; None uses the embedded "
        "all-MiniLM-L6-v2 bi-encoder (offline).")
    device: str | None = Field(
        default=None, description="Torch device; None picks cuda > mps > cpu.")
    dtype: str | None = Field(
        default="auto", description="'auto' (bf16 where fast), 'float32', 'bfloat16', ...")
    max_length: int | None = Field(
        default=None, description="Tokens per (query, document) pair; None = model limit.")
    trust_remote_code: bool = Field(
        default=False, description="Allow custom model code when loading `model`.")
    scorer: Any = Field(
        default=None, exclude=True,
        description="A ready Scorer (e.g. one CrossEncoderScorer shared by several "
        "adapters); replaces `model`.")
    timeout_ms: float | None = Field(
        default=5000.0, description="Deadline for model scores; on expiry the retrieval "
        "order is returned (status 'fallback', reason 'timeout').")
    threshold: float | None = Field(
        default=None, description="Minimum model score in [0, 1] to keep a result.")
    min_keep: int = Field(
        default=1, description="Results kept even below the threshold; 0 allows empty.")
    relative_cutoff: float | None = Field(
        default=None, description="Keep only results within this of the best score.")
    fusion: str = Field(
        default="auto", description="'none', 'linear' or 'rrf' fusion with the "
        "retrieval score; 'auto' fuses (linear) for bi-encoders, not for cross-encoders.")
    alpha: float = Field(default=0.5, description="Weight of the model score in fusion.")
    normalization: str = Field(
        default="minmax", description="'minmax' or 'rank' normalization for linear fusion.")
    calibration: Any = Field(
        default=None, description="A Calibration or the path of a calibration file.")
    policies: tuple = Field(
        default=(), exclude=True,
        description="Business rules (block_if/boost_if) applied after scoring; they "
        "read the framework metadata of each result.")
    shadow: bool = Field(
        default=False, description="Score and record, but return the retrieval order.")
    cache: Any = Field(
        default="memory", exclude=True,
        description="'memory', None for no cache, or a PairCache such as RedisCache.")
    secondary_scorer: Any = Field(
        default=None, exclude=True,
        description="A cheaper Scorer tried when the primary fails.")
    event_log: Any = Field(
        default=None, exclude=True,
        description="An EventLog or a directory for the per-request JSONL events.")
    max_candidates: int = Field(
        default=1000, description="Requests with more candidates are refused.")
    rerank_depth: int | None = Field(
        default=None, description="Score only the first N candidates; the rest follow "
        "in retrieval order.")
    config: str | None = Field(
        default=None, description="Settings file written by `rerank-ops eval --tune`; its "
        "values apply to every setting not given explicitly here.")

    _reranker: Reranker = PrivateAttr()
    _shared: bool = PrivateAttr(default=False)

    def _attach_reranker(self, reranker: Reranker | None) -> None:
        """Use ``reranker`` or build one from the settings (called by ``__init__``)."""
        if reranker is not None:
            if not isinstance(reranker, Reranker):
                raise ConfigurationError(
                    f"reranker must be a rerank_plugins.Reranker, got "
                    f"{type(reranker).__name__}")
            conflicting = sorted(set(self.model_fields_set) & set(RerankSettings.model_fields))
            if conflicting:
                raise ConfigurationError(
                    f"{', '.join(conflicting)} cannot be combined with reranker=: set them "
                    "on the Reranker you pass")
            self._reranker, self._shared = reranker, True
            return
        scorer = self.scorer
        if scorer is not None and self.model is not None:
            raise ConfigurationError("pass either model= or scorer=, not both")
        if scorer is None:
            scorer = load_scorer(self.model, device=self.device, dtype=self.dtype,
                                 max_length=self.max_length,
                                 trust_remote_code=self.trust_remote_code)
        options = dict(
            secondary_scorer=self.secondary_scorer, cache=self.cache,
            timeout_ms=self.timeout_ms, threshold=self.threshold, min_keep=self.min_keep,
            relative_cutoff=self.relative_cutoff, fusion=self.fusion, alpha=self.alpha,
            normalization=self.normalization, calibration=self.calibration,
            policies=self.policies, shadow=self.shadow, event_log=self.event_log,
            max_candidates=self.max_candidates, rerank_depth=self.rerank_depth)
        if self.config is not None:
            from .config import load_reranker_settings

            for key, value in load_reranker_settings(self.config).items():
                if key == "top_n":
                    if "top_n" not in self.model_fields_set:
                        self.top_n = value
                elif key not in self.model_fields_set:
                    options[key] = value
        self._reranker = Reranker(scorer, **options)

    @property
    def reranker(self) -> Reranker:
        """The core Reranker behind this adapter (share it with ``reranker=``)."""
        return self._reranker

    def _call_top_n(self, top_n: int | None) -> int | None:
        """``top_n`` for one call: a shared Reranker keeps its own unless set here."""
        if self._shared and "top_n" not in self.model_fields_set:
            return None
        return top_n

    def close(self) -> None:
        """Stop the Reranker's worker threads (only if this adapter built it)."""
        if not self._shared:
            self._reranker.close()


def retrieval_score_of(value: Any) -> float | None:
    """A retrieval score as a float, or ``None`` when it is missing or not a number.

    Framework metadata is user data: a non-numeric value under the score key is
    documented to count as "no retrieval score" rather than to fail the request.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def make_candidates(texts: Sequence[str], retrieval_scores: Sequence[Any],
                    metadatas: Sequence[Mapping[str, Any]]) -> list[Candidate]:
    """Candidates with positional ids, so duplicate framework ids never collide.

    Policies see each item's framework metadata read-only.
    """
    return [
        Candidate(id=str(position), text=text, retrieval_score=retrieval_score_of(score),
                  metadata=MappingProxyType(dict(metadata or {})))
        for position, (text, score, metadata) in enumerate(
            zip(texts, retrieval_scores, metadatas, strict=True))
    ]


def result_metadata(item: RankedItem, result: RerankResult) -> dict[str, Any]:
    """The metadata an adapter adds to one returned item."""
    return {
        RELEVANCE_SCORE: item.relevance_score,
        RETRIEVAL_SCORE: item.retrieval_score,
        RETRIEVAL_RANK: item.retrieval_rank,
        RERANK_STATUS: result.status.value,
        RERANK_FALLBACK_REASON: (
            result.fallback_reason.value if result.fallback_reason is not None else None),
    }


def kept_positions(result: RerankResult) -> list[tuple[int, RankedItem]]:
    """(input position, item) for each kept item, in the final order."""
    return [(int(item.id), item) for item in result.items]
