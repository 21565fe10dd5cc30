"""From raw scores to the final list -- the one step that decides order.

:func:`normalize` maps raw model outputs to scores in [0, 1] (activation or
calibration); :func:`select` then applies fusion, policies, threshold, relative
cutoff, ``min_keep``, the unscored ``rerank_depth`` tail, shadow mode, the one
``top_n`` cut and, last, the context token budget, in that order. Nothing else on
the request path reorders or cuts.

Everything here is pure and deterministic: ties are broken by the model score,
then by retrieval rank, so equal inputs always give equal outputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigurationError
from .settings import RerankerSettings, validate_top_n
from .types import Candidate, RankedItem

if TYPE_CHECKING:
    from .context_budget import ContextBudget

#: Deprecated name of :class:`RerankerSettings` (selection reads its fields).
SelectionSettings = RerankerSettings
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


def _named(policy, name: str | None, default: str, needs: Sequence[str]) -> Policy:
    policy.policy_name = name or default  # the ``policy`` label of rerank_policy_actions
    policy.needs = tuple(needs)  # metadata keys it reads (missing ones are counted)
    return policy


def policy_name(policy: Policy) -> str:
    """The name a policy is counted under in ``rerank_policy_actions``."""
    return getattr(policy, "policy_name", None) or getattr(policy, "__name__", "policy")


def block_if(predicate: Callable[[Mapping], bool], *, name: str | None = None,
             needs: Sequence[str] = ()) -> Policy:
    """Policy that blocks candidates whose metadata satisfies ``predicate``.

    Args:
        predicate: Reads a candidate's metadata; True blocks it.
        name: The ``policy`` label in metrics. Defaults to ``"block_if"``.
        needs: Metadata keys the predicate reads; candidates without one are
            counted in ``rerank_candidate_features_missing{feature="policy_metadata"}``.
    """

    def policy(candidate: Candidate, score: float) -> float | None:
        return None if predicate(candidate.metadata) else score

    return _named(policy, name, "block_if", needs)


def boost_if(predicate: Callable[[Mapping], bool], amount: float, *, name: str | None = None,
             needs: Sequence[str] = ()) -> Policy:
    """Policy that adds ``amount`` to the score of matching candidates (clamped to [0, 1]);
    ``name`` and ``needs`` as for :func:`block_if`."""

    def policy(candidate: Candidate, score: float) -> float | None:
        if predicate(candidate.metadata):
            return min(1.0, max(0.0, score + amount))
        return score

    return _named(policy, name, "boost_if", needs)


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
         settings: RerankerSettings) -> list[float]:
    """Combine model and retrieval scores per request into one score in [0, 1]."""
    if settings.fusion == "auto":
        raise ConfigurationError("fusion='auto' must be resolved for a scorer first "
                                 "(see rerank_plugins.reranker.resolve_fusion)")
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




def normalize(raw_scores: Sequence[float], activation: str,
              calibration: Calibration | None = None) -> list[float]:
    """Raw model outputs -> model scores in [0, 1] (what the threshold compares)."""
    if calibration is not None:
        return [calibration.apply(r) for r in raw_scores]
    return [activate(r, activation) for r in raw_scores]


@dataclass(frozen=True)
class Selection:
    """What the selection step decided: the kept items in final order, everything
    else (cut, below threshold, blocked, unscored past a threshold) in ``dropped``,
    and how many scored candidates passed the threshold and relative cutoff."""

    kept: list[RankedItem]
    dropped: list[RankedItem]
    passed_threshold: int
    #: (policy name, "blocked" | "boosted" | "lowered") -> candidates
    policy_actions: dict[tuple[str, str], int] = field(default_factory=dict)
    #: kept items the context budget left out (they are in ``dropped``, first)
    budget_cut: int = 0
    #: tokens of the kept items when a budget applied, else None
    tokens_kept: int | None = None

    def __iter__(self):  # ``kept, dropped, passed = select(...)``
        return iter((self.kept, self.dropped, self.passed_threshold))


def _apply_policies(policies, candidate: Candidate, score: float,
                    actions: dict | None = None) -> float | None:
    for policy in policies:
        before, score = score, policy(candidate, score)
        if actions is not None and score != before:
            action = "blocked" if score is None else "boosted" if score > before else "lowered"
            key = (policy_name(policy), action)
            actions[key] = actions.get(key, 0) + 1
        if score is None:
            return None
    return score


def _score_order(candidates, raw_scores, model_scores, settings, actions):
    """Scored candidates by relevance (ties: model score, then retrieval rank), and
    the policy-blocked ones."""
    fused = fuse(model_scores, candidates, settings)
    ranked: list[tuple[float, float, int, RankedItem]] = []
    blocked: list[RankedItem] = []
    for index, candidate in enumerate(candidates):
        score = _apply_policies(settings.policies, candidate, fused[index], actions)
        item = RankedItem(candidate, None if score is None else float(score),
                          float(model_scores[index]), float(raw_scores[index]), index)
        if score is None:
            blocked.append(item)
        else:
            ranked.append((-item.relevance_score, -item.model_score, index, item))
    ranked.sort(key=lambda entry: entry[:3])
    return [entry[3] for entry in ranked], blocked


def _passing(ordered: list[RankedItem], settings) -> tuple[list[RankedItem], int]:
    passing = ordered
    if settings.threshold is not None:
        passing = [i for i in passing if i.model_score >= settings.threshold]
    if settings.relative_cutoff is not None and passing:
        best = passing[0].relevance_score
        passing = [i for i in passing if i.relevance_score >= best - settings.relative_cutoff]
    count = len(passing)
    if len(passing) < settings.min_keep:
        # never empty unless the caller allows it: keep the best few regardless
        passing = ordered[: settings.min_keep]
    return passing, count


def _unscored(candidates: Sequence[Candidate], policies, actions, offset: int = 0):
    """Candidates without a model score, in retrieval order, and the blocked ones.

    Policies still run (with a neutral 0.5 for the missing score): a model outage or
    a ``rerank_depth`` tail must not lift a business block."""
    allowed, blocked = [], []
    for index, candidate in enumerate(candidates):
        item = RankedItem(candidate, None, None, None, offset + index)
        verdict = _apply_policies(policies, candidate, 0.5, actions)
        (blocked if verdict is None else allowed).append(item)
    return allowed, blocked


def select(
    candidates: Sequence[Candidate],
    raw_scores: Sequence[float] | None,
    model_scores: Sequence[float] | None,
    settings: RerankerSettings,
    *,
    top_n: int | None = None,
    tail: Sequence[Candidate] = (),
    shadow: bool = False,
    budget: ContextBudget | None = None,
) -> Selection:
    """Order and cut, in one place.

    Args:
        candidates: The scored head, in retrieval order.
        raw_scores: Raw model output per candidate, or ``None`` when no model served
            (retrieval-order fallback).
        model_scores: Normalized scores in [0, 1] (see :func:`normalize`), or ``None``.
        settings: Fusion, policies, threshold, relative cutoff, ``min_keep``, ``top_n``.
        top_n: This call's ``top_n``; ``None`` uses ``settings.top_n``.
        tail: Unscored candidates past ``rerank_depth`` (retrieval ranks continue after
            ``candidates``). They follow the scored ones, or are dropped when a
            threshold is set (they were never scored against it).
        shadow: Return the retrieval order of everything not blocked (scores kept on
            the items for the record).
        budget: The context token budget, applied last (after ``top_n``) to what is
            kept: most relevant first until it is full (see
            :class:`~rerank_plugins.context_budget.ContextBudget`). A result cut to fit
            is a copy whose candidate text is the cut text.
    """
    validate_top_n(top_n)
    limit = top_n if top_n is not None else settings.top_n
    actions: dict[tuple[str, str], int] = {}
    tail_items, tail_blocked = _unscored(tail, settings.policies, actions,
                                         offset=len(candidates))
    if raw_scores is None:
        head, blocked = _unscored(candidates, settings.policies, actions)
        ordered, rest, passed = head + tail_items, [], 0
    else:
        ordered, blocked = _score_order(candidates, raw_scores, model_scores, settings,
                                        actions)
        passing, passed = _passing(ordered, settings)
        passing_ids = {id(i) for i in passing}
        rest = [i for i in ordered if id(i) not in passing_ids]
        if shadow:
            ordered, rest = sorted(ordered + tail_items, key=lambda i: i.retrieval_rank), []
        elif settings.threshold is None:
            ordered = passing + tail_items
        else:
            ordered, rest = passing, rest + tail_items
    kept = ordered if limit is None else ordered[:limit]
    cut = [] if limit is None else ordered[limit:]
    if budget is None or not kept:
        return Selection(kept, cut + rest + blocked + tail_blocked, passed, actions)
    fitted = budget.apply(kept, record=False)
    kept_now = list(fitted.kept)
    if fitted.truncated_text is not None:
        last = kept_now[-1]
        kept_now[-1] = dataclasses.replace(
            last, candidate=dataclasses.replace(last.candidate, text=fitted.truncated_text))
    return Selection(kept_now, fitted.cut + cut + rest + blocked + tail_blocked, passed,
                     actions, budget_cut=len(fitted.cut), tokens_kept=fitted.tokens_kept)
