"""Offline quality: score a collection's first-stage run once, then replay the
selection step under any settings (fusion, alpha, depth, threshold) to measure and
tune them. The replay uses the library's own ``selection.select``, so what is
measured is exactly what the Reranker would return.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rerank_plugins.config import write_settings
from rerank_plugins.reranker import resolve_fusion
from rerank_plugins.scoring.base import ScoreRequest
from rerank_plugins.selection import normalize, select
from rerank_plugins.settings import RerankerSettings
from rerank_plugins.types import Candidate

from .collections import Collection
from .evaluation import evaluate, per_query

#: The settings ``eval --tune`` chooses and writes.
TUNED_KEYS = ("fusion", "alpha", "normalization", "rerank_depth", "threshold")


@dataclass
class ScoredRun:
    """Raw model scores for each query's first-stage candidates (in run order)."""

    activation: str
    candidates: dict[str, list[Candidate]]  # qid -> run order, retrieval scores attached
    raw: dict[str, list[float]]  # qid -> raw score per candidate

    def first_stage(self, query_ids: Iterable[str]) -> dict[str, list[tuple[str, float]]]:
        return {q: [(c.id, c.retrieval_score or 0.0) for c in self.candidates[q]]
                for q in query_ids}


def score_run(collection: Collection, scorer, *, depth: int = 100,
              query_ids: Sequence[str] | None = None, chunk: int = 64,
              progress: bool = True) -> ScoredRun:
    """Score the top-``depth`` candidates of every query with ``scorer`` (raw scores)."""
    from tqdm import tqdm

    qids = [q for q in (query_ids or sorted(collection.queries)) if q in collection.run]
    candidates = {
        q: [Candidate(doc, collection.doc_text(doc), score)
            for doc, score in collection.run[q][:depth] if doc in collection.corpus]
        for q in qids
    }
    raw: dict[str, list[float]] = {}
    if getattr(scorer, "activation", "") == "cosine":
        # a bi-encoder embeds each text once per call: one call over every query
        # encodes each corpus document once instead of once per chunk
        chunk = max(1, len(qids))
    bar = tqdm(total=len(qids), desc=f"scoring {collection.name}", unit="query",
               disable=not progress, leave=False)
    for start in range(0, len(qids), chunk):
        batch = qids[start : start + chunk]
        outputs = scorer.score_many(
            [ScoreRequest(collection.queries[q], [c.text for c in candidates[q]])
             for q in batch])
        for q, output in zip(batch, outputs, strict=True):
            raw[q] = list(output.scores)
        bar.update(len(batch))
    bar.close()
    return ScoredRun(scorer.activation, candidates, raw)


def library_default(scorer, depth: int = 100) -> RerankerSettings:
    """The settings a ``Reranker(scorer)`` uses out of the box (``fusion="auto"``
    resolved for this scorer), scoring the first ``depth`` candidates."""
    return RerankerSettings(fusion=resolve_fusion("auto", scorer), rerank_depth=depth)


def rerank_rankings(run: ScoredRun, query_ids: Iterable[str], settings: RerankerSettings,
                    calibration=None) -> dict[str, list[tuple[str, float]]]:
    """What the Reranker returns for each query under ``settings``: the library's own
    ``normalize`` and ``select`` over the stored raw scores (``top_n`` aside, which
    a ranking metric does not want)."""
    settings = settings.replace(top_n=None)
    depth = settings.rerank_depth
    out = {}
    for q in query_ids:
        cands = run.candidates[q]
        head, tail = cands[:depth], cands[depth:] if depth is not None else []
        raw = run.raw[q][: len(head)]
        model = normalize(raw, run.activation, calibration)
        kept = select(head, raw, model, settings, tail=tail).kept
        out[q] = [(i.id, i.relevance_score or 0.0) for i in kept]
    return out


def measure(collection: Collection, run: ScoredRun, query_ids, setting: RerankerSettings,
            measures=("nDCG@10", "RR@10", "R@100")) -> dict[str, float]:
    return evaluate(collection.qrels, rerank_rankings(run, query_ids, setting), measures)


def grid_point(fusion: str = "none", alpha: float = 0.5, normalization: str = "minmax",
               depth: int = 100, threshold: float | None = None) -> RerankerSettings:
    """One point of the tuning grid (the fields ``eval --tune`` writes)."""
    return RerankerSettings(fusion=fusion, alpha=alpha, normalization=normalization,
                            rerank_depth=depth, threshold=threshold)


def default_grid(max_depth: int) -> list[RerankerSettings]:
    depths = sorted({d for d in (10, 20, 30, 50, 100) if d <= max_depth} | {max_depth})
    grid = [grid_point("none", 1.0, "minmax", d) for d in depths]
    for fusion, norm in (("linear", "minmax"), ("linear", "rank"), ("rrf", "minmax")):
        for alpha in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            for depth in depths:
                grid.append(grid_point(fusion, alpha, norm, depth))
    grid += [grid_point("linear", 0.5, "minmax", max_depth, t) for t in (0.3, 0.5, 0.6)]
    return grid


@dataclass
class TuneResult:
    chosen: RerankerSettings
    dev_metrics: dict[str, float]
    held_out: dict[str, dict[str, float]]  # "bm25" / "default" / "tuned" -> metrics
    grid_size: int
    dev_queries: int
    held_out_queries: int


def tune(collection: Collection, run: ScoredRun, dev: Sequence[str], held: Sequence[str],
         *, default: RerankerSettings, grid: list[RerankerSettings] | None = None,
         objective: str = "nDCG@10") -> TuneResult:
    """Pick the grid point with the best ``objective`` on ``dev``; report on ``held``."""
    depth = max(len(c) for c in run.candidates.values())
    grid = grid or default_grid(depth)
    best, best_metrics = None, None
    for setting in grid:
        metrics = measure(collection, run, dev, setting, (objective,))
        # ties go to the earlier (simpler) grid point
        if best_metrics is None or metrics[objective] > best_metrics[objective] + 1e-12:
            best, best_metrics = setting, metrics
    bm25 = evaluate(collection.qrels, run.first_stage(held))
    held_out = {
        "bm25": bm25,
        "default": measure(collection, run, held, default),
        "tuned": measure(collection, run, held, best),
    }
    dev_full = measure(collection, run, dev, best)
    return TuneResult(best, dev_full, held_out, len(grid), len(dev), len(held))


def config_summary(settings: RerankerSettings) -> dict:
    """The tuned fields of ``settings``, for reports and JSON."""
    return {key: getattr(settings, key) for key in TUNED_KEYS}


def write_config(path: str | Path, chosen: RerankerSettings, *, model: str | None,
                 provenance: dict) -> dict:
    """Write the settings file ``Reranker.from_config`` and the drop-ins load: the
    tuned fields (and the model they were tuned for)."""
    keys = TUNED_KEYS + (("model",) if model is not None else ())
    return write_settings(path, chosen.replace(model=model), keys=keys, provenance=provenance)


def per_query_deltas(collection: Collection, before, after, measure_name="nDCG@10"):
    b = per_query(collection.qrels, before, measure_name)
    a = per_query(collection.qrels, after, measure_name)
    return {q: a.get(q, 0.0) - b.get(q, 0.0) for q in sorted(set(a) | set(b))}

