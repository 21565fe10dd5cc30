"""What both framework adapters share: their settings (derived field by field from
:class:`RerankerSettings`), how they build a Reranker, and how framework objects
become candidates and results become metadata.

Only the adapters import this module (it needs pydantic, which both frameworks
bring); the framework-specific parts stay in ``llama_index.py`` and ``langchain.py``.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr, SkipValidation, create_model

from . import settings as settings_module
from .errors import ConfigurationError
from .reranker import Reranker
from .settings import RerankerSettings
from .types import Candidate, RankedItem, RerankResult

#: Metadata keys every adapter writes on the results it returns.
RELEVANCE_SCORE = "relevance_score"
RETRIEVAL_SCORE = "retrieval_score"
RETRIEVAL_RANK = "retrieval_rank"
RERANK_STATUS = "rerank_status"
RERANK_FALLBACK_REASON = "rerank_fallback_reason"
RERANK_REQUEST_ID = "rerank_request_id"  #: pass it to ``feedback()`` with a clicked result
RESULT_KEYS = (RELEVANCE_SCORE, RETRIEVAL_SCORE, RETRIEVAL_RANK, RERANK_STATUS,
               RERANK_FALLBACK_REASON, RERANK_REQUEST_ID)



def _settings_fields() -> dict[str, Any]:
    """One pydantic field per :class:`RerankerSettings` field: same name, type,
    default and description. Values are checked once, by RerankerSettings itself
    (``SkipValidation``), so both entry points give the same errors."""
    hints = typing.get_type_hints(RerankerSettings)
    fields: dict[str, Any] = {}
    for spec in settings_module.specs():
        # object-valued settings (a cache, a scorer, callables, the secret) are not
        # serialized with the framework component
        exclude = hints[spec.name] is Any or spec.name in settings_module.NOT_IN_CONFIG_FILE
        fields[spec.name] = (SkipValidation[hints[spec.name]], Field(
            default=settings_module.default_of(spec), description=spec.metadata["doc"],
            exclude=exclude))
    return fields


#: The pydantic mixin both drop-ins inherit: every Reranker setting as a field.
RerankSettingsFields = create_model(
    "RerankSettingsFields",
    __config__=ConfigDict(arbitrary_types_allowed=True, protected_namespaces=(),
                          extra="forbid"),
    __doc__="Every RerankerSettings field as a pydantic field (generated).",
    **_settings_fields(),
)


class RerankSettings(RerankSettingsFields):
    """The settings both drop-ins accept (a pydantic mixin): every
    :class:`RerankerSettings` field, plus ``scorer`` (a ready Scorer) and ``config``
    (a settings file). None may be combined with ``reranker=`` (a ready, shared
    Reranker carries its own), except each drop-in's own ``top_n``.
    """

    scorer: Any = Field(
        default=None, exclude=True,
        description="A ready Scorer (e.g. one CrossEncoderScorer shared by several "
        "adapters); replaces `model`.")
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
            own = set(settings_module.names()) - {"top_n"}
            conflicting = sorted(self.model_fields_set & (own | {"scorer", "config"}))
            if conflicting:
                raise ConfigurationError(
                    f"{', '.join(conflicting)} cannot be combined with reranker=: set them "
                    "on the Reranker you pass")
            self._reranker, self._shared = reranker, True
            return
        values = {name: getattr(self, name) for name in settings_module.names()}
        if self.config is not None:
            from .config import load_settings_values

            for key, value in load_settings_values(self.config).items():
                if key not in self.model_fields_set:
                    values[key] = value
                    if key == "top_n":
                        self.top_n = value
        scorer, values = self._scorer_and_model(self.scorer, values)
        self._reranker = Reranker(scorer, **values)

    def _scorer_and_model(self, scorer, values: dict[str, Any]):
        """Hook for a drop-in whose ``model`` may be an object (LangChain)."""
        if scorer is not None and values.get("model") is not None:
            raise ConfigurationError("pass either model= or scorer=, not both")
        return scorer, values

    @property
    def reranker(self) -> Reranker:
        """The core Reranker behind this adapter (share it with ``reranker=``)."""
        return self._reranker

    def describe(self) -> dict[str, Any]:
        """What this drop-in reranks with: model, kind (cross-encoder / bi-encoder),
        device, dtype, fusion, cache and the settings changed from the defaults."""
        return self._reranker.describe()

    def feedback(self, request_id: str, doc_id: str, label: float = 1.0, *,
                 position: int | None = None) -> bool:
        """Record a click or judgment on a returned result: ``request_id`` is its
        ``rerank_request_id`` metadata, ``doc_id`` any stable id of the document (it is
        fingerprinted). See :meth:`Reranker.feedback`."""
        return self._reranker.feedback(request_id, doc_id, label, position=position)

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
        RERANK_REQUEST_ID: result.request_id,
    }


def kept_positions(result: RerankResult) -> list[tuple[int, RankedItem]]:
    """(input position, item) for each kept item, in the final order."""
    return [(int(item.id), item) for item in result.items]
