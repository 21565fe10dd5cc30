"""Offline quality: score a collection's first-stage run once, then replay the
selection step under any settings (fusion, alpha, depth, threshold) to measure and
tune them. The replay uses the library's own ``selection.select``, so what is
measured is exactly what the Reranker would return.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rerank_plugins.scoring.base import ScoreRequest
from rerank_plugins.selection import SelectionSettings, activate, select
from rerank_plugins.types import Candidate

from .collections import Collection
from .evaluation import evaluate, per_query

CONFIG_SCHEMA = 1


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


@dataclass(frozen=True)
class Setting:
    """One point of the tuning grid (also the config file the adapters load)."""

    fusion: str = "none"
    alpha: float = 0.5
    normalization: str = "minmax"
    depth: int = 100
    threshold: float | None = None

    def selection(self) -> SelectionSettings:
        return SelectionSettings(fusion=self.fusion, alpha=self.alpha,
                                 normalization=self.normalization, threshold=self.threshold,
                                 min_keep=1)


def library_default(scorer, depth: int = 100) -> Setting:
    """The setting a ``Reranker(scorer)`` uses out of the box: ``fusion="auto"``
    resolved for this scorer, with the selection step's own alpha and normalization."""
    from rerank_plugins.reranker import resolve_fusion

    defaults = SelectionSettings()
    return Setting(resolve_fusion("auto", scorer), defaults.alpha, defaults.normalization, depth)


def rerank_rankings(run: ScoredRun, query_ids: Iterable[str], setting: Setting,
                    calibration=None) -> dict[str, list[tuple[str, float]]]:
    """Replay the selection step; candidates past ``depth`` follow in retrieval order."""
    settings = setting.selection()
    out = {}
    for q in query_ids:
        cands = run.candidates[q]
        head, tail = cands[: setting.depth], cands[setting.depth :]
        raw = run.raw[q][: setting.depth]
        if not head:
            out[q] = []
            continue
        model = [calibration.apply(r) if calibration else activate(r, run.activation)
                 for r in raw]
        kept, dropped, _ = select(head, raw, model, settings)
        # threshold-dropped candidates are not returned by the reranker; they are
        # ranked after the kept ones here only when no threshold is set
        ranked = [(i.id, i.relevance_score or 0.0) for i in kept]
        if setting.threshold is None:
            ranked += [(i.id, 0.0) for i in dropped]
            ranked += [(c.id, 0.0) for c in tail]
        out[q] = ranked
    return out


def measure(collection: Collection, run: ScoredRun, query_ids, setting: Setting,
            measures=("nDCG@10", "RR@10", "R@100")) -> dict[str, float]:
    return evaluate(collection.qrels, rerank_rankings(run, query_ids, setting), measures)


def default_grid(max_depth: int) -> list[Setting]:
    depths = sorted({d for d in (10, 20, 30, 50, 100) if d <= max_depth} | {max_depth})
    grid = [Setting("none", 1.0, "minmax", d) for d in depths]
    for fusion, norm in (("linear", "minmax"), ("linear", "rank"), ("rrf", "minmax")):
        for alpha in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            for depth in depths:
                grid.append(Setting(fusion, alpha, norm, depth))
    grid += [Setting("linear", 0.5, "minmax", max_depth, t) for t in (0.3, 0.5, 0.6)]
    return grid


@dataclass
class TuneResult:
    chosen: Setting
    dev_metrics: dict[str, float]
    held_out: dict[str, dict[str, float]]  # "bm25" / "default" / "tuned" -> metrics
    grid_size: int
    dev_queries: int
    held_out_queries: int


def tune(collection: Collection, run: ScoredRun, dev: Sequence[str], held: Sequence[str],
         *, default: Setting, grid: list[Setting] | None = None,
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


def write_config(path: str | Path, setting: Setting, *, model: str | None,
                 provenance: dict) -> None:
    """Write the config file ``Reranker.from_config`` and the adapters load."""
    data = {
        "schema_version": CONFIG_SCHEMA,
        "reranker": {
            "fusion": setting.fusion,
            "alpha": setting.alpha,
            "normalization": setting.normalization,
            "threshold": setting.threshold,
            "candidate_depth": setting.depth,
        },
        "model": model,
        "provenance": provenance,
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def per_query_deltas(collection: Collection, before, after, measure_name="nDCG@10"):
    b = per_query(collection.qrels, before, measure_name)
    a = per_query(collection.qrels, after, measure_name)
    return {q: a.get(q, 0.0) - b.get(q, 0.0) for q in sorted(set(a) | set(b))}

