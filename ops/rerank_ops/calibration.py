"""Fitting score calibration (the engine of ``rerank-ops calibrate``).

Labeled pairs (a raw model score and a 0/1 relevance label) come from a BEIR
collection scored by a model, or from a JSONL file of ``{"raw_score", "label"}``
lines. Pairs are split into a fitting part and a held-out part - by query when
query ids are known, so no query's pairs land on both sides - and the fitted
:class:`~rerank_plugins.selection.Calibration` is judged on the held-out part only:
expected calibration error (ECE, 15 equal-width bins) and Brier score, before (the
scorer's own activation, what the Reranker returns uncalibrated) and after.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerank_plugins.selection import Calibration, activate

METHODS = ("temperature", "platt", "isotonic")
ECE_BINS = 15


class CalibrationInputError(ValueError):
    """The labeled pairs cannot support a fit (unreadable, one class only, too few)."""


@dataclass
class LabeledPairs:
    """Raw scores, 0/1 labels and (optionally) the query each pair belongs to."""

    raw: np.ndarray
    labels: np.ndarray
    groups: list[str] | None
    activation: str
    source: str

    def __len__(self) -> int:
        return len(self.raw)

    def subset(self, mask: np.ndarray) -> LabeledPairs:
        groups = None if self.groups is None else [g for g, m in zip(self.groups, mask,
                                                                      strict=True) if m]
        return LabeledPairs(self.raw[mask], self.labels[mask], groups, self.activation,
                            self.source)


def read_pairs_jsonl(path: str | Path, *, activation: str = "sigmoid") -> LabeledPairs:
    """``{"raw_score": 2.3, "label": 1, "query_id": "q1"}`` per line (query_id optional;
    a label > 0 counts as relevant)."""
    raw, labels, groups = [], [], []
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationInputError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            score, label = float(row["raw_score"]), float(row["label"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CalibrationInputError(
                f"{path}:{number}: expected {{\"raw_score\": <number>, \"label\": <0/1>}} "
                f"({type(exc).__name__}: {exc})") from None
        if not math.isfinite(score):
            raise CalibrationInputError(f"{path}:{number}: raw_score is not finite")
        raw.append(score)
        labels.append(1.0 if label > 0 else 0.0)
        groups.append(row.get("query_id"))
    has_groups = bool(groups) and all(g is not None for g in groups)
    return LabeledPairs(np.asarray(raw, dtype=float), np.asarray(labels, dtype=float),
                        [str(g) for g in groups] if has_groups else None, activation,
                        path.name)


def pairs_from_collection(collection, scorer, *, depth: int, query_ids=None,
                          progress: bool = True) -> LabeledPairs:
    """Score each query's top-``depth`` first-stage candidates; label = qrels grade > 0."""
    from .quality import score_run

    run = score_run(collection, scorer, depth=depth, query_ids=query_ids, progress=progress)
    raw, labels, groups = [], [], []
    for qid, candidates in run.candidates.items():
        judged = collection.qrels.get(qid, {})
        for candidate, score in zip(candidates, run.raw[qid], strict=True):
            raw.append(score)
            labels.append(1.0 if judged.get(candidate.id, 0) > 0 else 0.0)
            groups.append(qid)
    return LabeledPairs(np.asarray(raw, dtype=float), np.asarray(labels, dtype=float),
                        groups, run.activation, collection.name)


def split(pairs: LabeledPairs, *, holdout: float, seed: int) -> tuple[LabeledPairs,
                                                                       LabeledPairs]:
    """(fit, held_out): by query when ``groups`` are known, else by pair; seeded."""
    rng = np.random.default_rng(seed)
    if pairs.groups is not None:
        unique = sorted(set(pairs.groups))
        held = set(rng.permutation(unique)[: max(1, round(holdout * len(unique)))])
        mask = np.asarray([g in held for g in pairs.groups])
    else:
        order = rng.permutation(len(pairs))
        mask = np.zeros(len(pairs), dtype=bool)
        mask[order[: max(1, round(holdout * len(pairs)))]] = True
    return pairs.subset(~mask), pairs.subset(mask)


def check_pairs(pairs: LabeledPairs, what: str) -> None:
    positives = int(pairs.labels.sum())
    if len(pairs) < 20 or positives == 0 or positives == len(pairs):
        raise CalibrationInputError(
            f"{what}: {len(pairs)} pairs with {positives} relevant; a fit needs at least 20 "
            "pairs and both relevant and non-relevant ones (raise --depth or "
            "--max-queries, or lower --holdout)")


def fit(pairs: LabeledPairs, method: str, *, model_id: str = "") -> Calibration:
    """Fit ``method`` (temperature, platt or isotonic) by maximum likelihood."""
    check_pairs(pairs, "fitting split")
    x, y = pairs.raw, pairs.labels
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        def nll(log_t: float) -> float:
            return _log_loss(y, _sigmoid(x / math.exp(log_t)))

        best = minimize_scalar(nll, bounds=(-7.0, 7.0), method="bounded")
        return Calibration("temperature", temperature=math.exp(best.x), model_id=model_id,
                           fitted_on=pairs.source)
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6, max_iter=1000).fit(x.reshape(-1, 1), y)
        return Calibration("platt", a=float(model.coef_[0][0]), b=float(model.intercept_[0]),
                           model_id=model_id, fitted_on=pairs.source)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)
        xs, ys = model.X_thresholds_, model.y_thresholds_
        if len(xs) < 2:
            raise CalibrationInputError("isotonic fit collapsed to one point: the scores do "
                                        "not separate relevant from non-relevant pairs")
        return Calibration("isotonic", xs=tuple(map(float, xs)), ys=tuple(map(float, ys)),
                           model_id=model_id, fitted_on=pairs.source)
    raise ValueError(f"unknown method {method!r}; use one of {METHODS}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Weighted mean |observed relevance rate - mean probability| over equal-width bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(labels[members].mean() - probabilities[members].mean())
    return float(total / max(1, len(labels)))


def quality(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ECE, Brier score and log loss of ``probabilities`` against ``labels``."""
    return {"ece": expected_calibration_error(probabilities, labels),
            "brier": float(np.mean((probabilities - labels) ** 2)),
            "log_loss": _log_loss(labels, probabilities)}


def evaluate(pairs: LabeledPairs, calibration: Calibration) -> dict[str, dict[str, float]]:
    """Quality before (the scorer's activation) and after ``calibration``."""
    before = np.asarray([activate(r, pairs.activation) for r in pairs.raw])
    after = np.asarray([calibration.apply(r) for r in pairs.raw])
    return {"before": quality(before, pairs.labels), "after": quality(after, pairs.labels)}
