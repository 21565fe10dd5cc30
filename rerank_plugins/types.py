"""Framework-neutral value types: what goes into a rerank and what comes out."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """Which path served a request."""

    OK = "ok"  #: the model scored at least one pair
    CACHE = "cache"  #: every pair came from the cache
    #: every pair came from the caches, some under a near-identical earlier query
    #: (the semantic query layer); ``semantic_similarity`` says how near
    SEMANTIC_CACHE = "semantic_cache"
    FALLBACK = "fallback"  #: the primary model did not serve; see ``fallback_reason``
    SHADOW = "shadow"  #: scored and recorded, but the retrieval order was returned


class FallbackReason(str, enum.Enum):
    """Why a request fell back."""

    TIMEOUT = "timeout"
    ERROR = "error"
    CIRCUIT_OPEN = "circuit_open"
    OVERLOADED = "overloaded"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One document to rerank.

    Args:
        id: Caller's identifier; must be unique within one request.
        text: The text the model reads.
        retrieval_score: First-stage score (higher = better), if known.
        metadata: Anything the caller wants carried through (policies may read it).
    """

    id: str
    text: str
    retrieval_score: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(f"Candidate.id must be a str, got {type(self.id).__name__}")
        if not isinstance(self.text, str):
            raise TypeError(
                f"Candidate.text must be a str, got {type(self.text).__name__} "
                f"(id={self.id!r}); convert or drop it before reranking"
            )
        score = self.retrieval_score
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise TypeError(
                    f"Candidate.retrieval_score must be a number or None, got "
                    f"{type(score).__name__} (id={self.id!r})"
                )
            if not math.isfinite(score):
                # NaN/inf carry no ordering information: documented safe result is None
                object.__setattr__(self, "retrieval_score", None)
            else:
                object.__setattr__(self, "retrieval_score", float(score))


@dataclass(frozen=True, slots=True)
class RankedItem:
    """One candidate in the reranked order.

    ``relevance_score`` is what the order follows: the model's normalized score, or
    the fused score when fusion is on. ``model_score`` is the model's score after
    activation/calibration (what the threshold compares). Both are ``None`` when no
    model scored the candidate (retrieval-order fallback).
    """

    candidate: Candidate
    relevance_score: float | None
    model_score: float | None
    raw_score: float | None
    retrieval_rank: int  #: 0-based position in the input list

    @property
    def id(self) -> str:
        return self.candidate.id

    @property
    def text(self) -> str:
        return self.candidate.text

    @property
    def retrieval_score(self) -> float | None:
        return self.candidate.retrieval_score


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Seconds spent per pipeline stage."""

    validate: float = 0.0
    cache: float = 0.0
    score: float = 0.0
    select: float = 0.0
    total: float = 0.0


@dataclass(frozen=True, slots=True)
class RerankResult:
    """The outcome of one rerank request.

    ``items`` is the kept candidates in final order. Candidates removed by the
    threshold, ``top_n`` or a policy are listed in ``dropped`` (never silently lost).
    """

    items: tuple[RankedItem, ...]
    status: Status
    fallback_reason: FallbackReason | None = None
    timings: StageTimings = field(default_factory=StageTimings)
    cache_hits: int = 0
    cache_misses: int = 0
    truncated: int = 0
    dropped: tuple[RankedItem, ...] = ()
    model_id: str = ""
    request_id: str = ""
    variant: str = "control"  #: which rollout arm served ("control" without a split)
    model_version: str = ""  #: the serving scorer's revision
    #: pairs whose scores came from an earlier query through the semantic layer
    semantic_hits: int = 0
    #: cosine similarity of that earlier query (None: no semantic hit)
    semantic_similarity: float | None = None
    #: tokens of the kept items when a context budget is set (None: no budget)
    context_tokens: int | None = None
    #: results the context budget left out (listed first in ``dropped``)
    context_cut: int = 0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, index: int) -> RankedItem:
        return self.items[index]

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]
