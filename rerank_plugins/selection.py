"""From raw scores to the final list: activation, calibration, fusion, policies,
threshold, relative cutoff, ``top_n`` and ``min_keep``.

Everything here is pure and deterministic: ties are broken by the model score,
then by retrieval rank, so equal inputs always give equal outputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigurationError, InvalidInputError
from .types import Candidate, RankedItem

FUSION_MODES = ("none", "linear", "rrf")
NORMALIZATIONS = ("minmax", "rank")
RRF_K = 60


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def activate(raw: float, activation: str) -> float:
    """Map a raw model output into [0, 1]."""
    if activation == "sigmoid":
        return sigmoid(raw)
    if activation == "cosine":
        return min(1.0, max(0.0, (raw + 1.0) / 2.0))
    if activation == "identity":
        return min(1.0, max(0.0, raw))
    raise ConfigurationError(f"unknown activation {activation!r}")


@dataclass(frozen=True)
class Calibration:
    """Maps a raw score to a probability of relevance.

    ``method``: ``"temperature"`` (sigmoid(raw / T)), ``"platt"`` (sigmoid(a*raw + b))
    or ``"isotonic"`` (piecewise-linear through ``xs``/``ys``).
    """

    method: str
    temperature: float = 1.0
    a: float = 1.0
    b: float = 0.0
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()
    model_id: str = ""
    fitted_on: str = ""

    def __post_init__(self) -> None:
        if self.method not in ("temperature", "platt", "isotonic"):
            raise ConfigurationError(f"unknown calibration method {self.method!r}")
        if self.method == "temperature" and not self.temperature > 0:
            raise ConfigurationError("calibration temperature must be > 0")
        if self.method == "isotonic" and (len(self.xs) < 2 or len(self.xs) != len(self.ys)):
            raise ConfigurationError("isotonic calibration needs >= 2 matching xs/ys points")

    def apply(self, raw: float) -> float:
        if self.method == "temperature":
            return sigmoid(raw / self.temperature)
        if self.method == "platt":
            return sigmoid(self.a * raw + self.b)
        xs, ys = self.xs, self.ys
        if raw <= xs[0]:
            return ys[0]
        if raw >= xs[-1]:
            return ys[-1]
        lo, hi = 0, len(xs) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if xs[mid] <= raw:
                lo = mid
            else:
                hi = mid
        span = xs[hi] - xs[lo]
        weight = 0.0 if span == 0 else (raw - xs[lo]) / span
        return ys[lo] + weight * (ys[hi] - ys[lo])

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration file written by ``rerank-ops calibrate``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise ConfigurationError(f"cannot read calibration file {path}: {exc}") from exc
        if not isinstance(data, dict) or "method" not in data:
            raise ConfigurationError(f"{path} is not a calibration file (no 'method')")
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise ConfigurationError(f"{path}: 'params' must be an object")
        try:
            return cls(
                method=data["method"],
                temperature=float(params.get("temperature", 1.0)),
                a=float(params.get("a", 1.0)),
                b=float(params.get("b", 0.0)),
                xs=tuple(float(x) for x in params.get("xs", ())),
                ys=tuple(float(y) for y in params.get("ys", ())),
                model_id=str(data.get("model_id", "")),
                fitted_on=str(data.get("fitted_on", "")),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad calibration parameters in {path}: {exc}") from exc

    def dump(self, path: str | Path, **extra) -> None:
        params = {"temperature": self.temperature, "a": self.a, "b": self.b,
                  "xs": list(self.xs), "ys": list(self.ys)}
        data = {"method": self.method, "params": params, "model_id": self.model_id,
                "fitted_on": self.fitted_on, **extra}
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


Policy = Callable[[Candidate, float], float | None]
"""A business rule: given a candidate and its score, return a new score, or ``None``
to block the candidate (it is then listed in ``RerankResult.dropped``)."""


def block_if(predicate: Callable[[Mapping], bool]) -> Policy:
    """Policy that blocks candidates whose metadata satisfies ``predicate``."""

    def policy(candidate: Candidate, score: float) -> float | None:
        return None if predicate(candidate.metadata) else score

    return policy


def boost_if(predicate: Callable[[Mapping], bool], amount: float) -> Policy:
    """Policy that adds ``amount`` to the score of matching candidates (clamped to [0, 1])."""

    def policy(candidate: Candidate, score: float) -> float | None:
        if predicate(candidate.metadata):
            return min(1.0, max(0.0, score + amount))
        return score

    return policy


@dataclass(frozen=True)
class SelectionSettings:
    """How scored candidates become the returned list."""

    top_n: int | None = None
    threshold: float | None = None
    min_keep: int = 1
    relative_cutoff: float | None = None
    fusion: str = "none"
    alpha: float = 0.5
    normalization: str = "minmax"
    policies: tuple[Policy, ...] = field(default=())

    def __post_init__(self) -> None:
        validate_top_n(self.top_n)
        if self.threshold is not None and not (
            isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool)
            and 0.0 <= self.threshold <= 1.0
        ):
            raise ConfigurationError(
                f"threshold={self.threshold!r} must be in [0, 1] (scores are probabilities "
                "after activation/calibration) or None")
        if not isinstance(self.min_keep, int) or self.min_keep < 0:
            raise ConfigurationError("min_keep must be an int >= 0 (0 allows empty results)")
        if self.relative_cutoff is not None and not 0.0 <= self.relative_cutoff <= 1.0:
            raise ConfigurationError("relative_cutoff must be in [0, 1] or None")
        if self.fusion not in FUSION_MODES:
            raise ConfigurationError(f"fusion must be one of {FUSION_MODES}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigurationError("alpha (weight of the model score) must be in [0, 1]")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigurationError(f"normalization must be one of {NORMALIZATIONS}")


def validate_top_n(top_n) -> None:
    if top_n is None:
        return
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise InvalidInputError(f"top_n must be an int or None, got {type(top_n).__name__}")
    if top_n <= 0:
        raise InvalidInputError(f"top_n={top_n} must be >= 1 (or None for all candidates)")


def _minmax(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi - lo <= 0:
        return [0.5] * len(values)  # constant scores carry no preference
    return [(v - lo) / (hi - lo) for v in values]


def _rank_norm(values: Sequence[float]) -> list[float]:
    """1 for the best, 0 for the worst, ties share the average rank."""
    n = len(values)
    if n == 1:
        return [1.0]
    order = sorted(range(n), key=lambda i: values[i], reverse=True)
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2.0
        for k in range(i, j + 1):
            ranks[order[k]] = 1.0 - avg / (n - 1)
        i = j + 1
    return ranks


def _retrieval_values(candidates: Sequence[Candidate]) -> list[float]:
    """Retrieval scores; missing ones are ranked below all known ones, in input order."""
    known = [c.retrieval_score for c in candidates if c.retrieval_score is not None]
    if not known:
        # no retrieval scores: the input order is the retrieval ranking
        return [float(len(candidates) - i) for i in range(len(candidates))]
    floor = min(known) - 1.0
    return [
        c.retrieval_score if c.retrieval_score is not None else floor - i * 1e-9
        for i, c in enumerate(candidates)
    ]


def fuse(model_scores: Sequence[float], candidates: Sequence[Candidate],
         settings: SelectionSettings) -> list[float]:
    """Combine model and retrieval scores per request into one score in [0, 1]."""
    if settings.fusion == "none" or not candidates:
        return list(model_scores)
    retrieval = _retrieval_values(candidates)
    if settings.fusion == "rrf":
        def ranks(values):
            order = sorted(range(len(values)), key=lambda i: (-values[i], i))
            out = [0] * len(values)
            for position, index in enumerate(order):
                out[index] = position + 1
            return out

        model_rank, retrieval_rank = ranks(model_scores), ranks(retrieval)
        best = 1.0 / (RRF_K + 1)
        return [
            (settings.alpha / (RRF_K + m) + (1 - settings.alpha) / (RRF_K + r)) / best
            for m, r in zip(model_rank, retrieval_rank, strict=True)
        ]
    normalize = _minmax if settings.normalization == "minmax" else _rank_norm
    m_norm, r_norm = normalize(model_scores), normalize(retrieval)
    return [settings.alpha * m + (1 - settings.alpha) * r
            for m, r in zip(m_norm, r_norm, strict=True)]


def select(
    candidates: Sequence[Candidate],
    raw_scores: Sequence[float],
    model_scores: Sequence[float],
    settings: SelectionSettings,
    *,
    top_n: int | None = None,
) -> tuple[list[RankedItem], list[RankedItem], int]:
    """Order and cut. Returns (kept, dropped, kept_after_threshold_count)."""
    fused = fuse(model_scores, candidates, settings)
    items: list[tuple[float, float, int, RankedItem]] = []
    blocked: list[RankedItem] = []
    for index, candidate in enumerate(candidates):
        score = fused[index]
        for policy in settings.policies:
            score = policy(candidate, score)
            if score is None:
                break
        item = RankedItem(candidate, None if score is None else float(score),
                          float(model_scores[index]), float(raw_scores[index]), index)
        if score is None:
            blocked.append(item)
        else:
            items.append((-item.relevance_score, -item.model_score, index, item))
    items.sort(key=lambda t: t[:3])
    ordered = [t[3] for t in items]

    passing = ordered
    if settings.threshold is not None:
        passing = [i for i in passing if i.model_score >= settings.threshold]
    if settings.relative_cutoff is not None and passing:
        best = passing[0].relevance_score
        passing = [i for i in passing if i.relevance_score >= best - settings.relative_cutoff]
    kept_after_threshold = len(passing)
    if len(passing) < settings.min_keep:
        # never empty unless the caller allows it: keep the best few regardless
        passing = ordered[: settings.min_keep]
    limit = top_n if top_n is not None else settings.top_n
    kept = passing[:limit] if limit is not None else passing
    kept_ids = {id(i) for i in kept}
    dropped = [i for i in ordered if id(i) not in kept_ids] + blocked
    return kept, dropped, kept_after_threshold
