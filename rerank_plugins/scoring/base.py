"""The scorer protocol: everything the pipeline needs from a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ScoreRequest:
    """One query with the documents to score against it.

    ``deadline_at`` is the ``time.monotonic()`` instant after which nobody waits for
    these scores (the reranker fills it with the request deadline). Local scorers may
    ignore it; a remote scorer caps its timeouts and retries by it.

    ``head`` is how many leading ranks of the model's order the caller will use (the
    reranker fills it with ``top_n`` when the result is cut in model order: no
    fusion, no policies). A reduced-precision scorer then keeps at most that many
    ranks in exact order instead of its own ``exact_head``; ``None`` leaves its
    default.
    """

    query: str
    texts: Sequence[str]
    deadline_at: float | None = None
    head: int | None = None


@dataclass
class ScoreOutput:
    """Raw scores for one request, in the order of its texts."""

    scores: list[float]
    truncated: int = 0
    model_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Scorer(Protocol):
    """A model that scores (query, text) pairs.

    ``score_many`` takes several requests at once so a micro-batcher can merge
    concurrent callers into one forward pass. Scores are raw (logits or cosine);
    ``activation`` names how the selection step turns them into ``[0, 1]``.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def revision(self) -> str: ...

    @property
    def cache_namespace(self) -> str:
        """Changes whenever the same text could get a different raw score."""
        ...

    @property
    def activation(self) -> str:
        """'sigmoid', 'cosine' (maps [-1,1] to [0,1]) or 'identity'."""
        ...

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]: ...

    def describe(self) -> dict[str, str]:
        """model, revision, device, dtype (for the model-info metric and doctor)."""
        ...


class Identified:
    """``model_id`` and ``revision`` of a scorer, from its ``_model_id`` and ``_revision``."""

    _model_id: str
    _revision: str

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def revision(self) -> str:
        return self._revision
