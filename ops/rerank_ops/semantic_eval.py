"""What the semantic query layer does to quality: replay a collection's queries plus
paraphrase-like variants through it and measure hit rates and the nDCG it costs.

The replay mirrors the request path: every original query is scored and remembered
(its pair scores "cached"); then each query is asked again as itself (``exact``)
and as three variants -- ``lower`` (lower-cased), ``no_stop_words`` (English stop
words dropped), ``reordered`` (word order reversed). A variant that hits an earlier
query is ranked with that query's scores for the candidates both share (the rest
scored by the model, as the pipeline does); a miss is ranked with its own scores.
The nDCG@10 change caused by hits compares the two rankings of each variant against
the original query's judgments. A hit on a different query than the variant's own
is a *wrong hit*.

Used by ``rerank-ops eval --semantic-cache``; :func:`replay` is the library entry.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from rerank_plugins.scoring.base import ScoreRequest
from rerank_plugins.settings import RerankerSettings

from .collections import Collection
from .evaluation import evaluate, per_query
from .quality import ScoredRun, rerank_rankings

VARIANT_KINDS = ("exact", "lower", "no_stop_words", "reordered")
#: A small English stop-word list: enough to make the variant, not a linguistic claim.
STOP_WORDS = frozenset(
    "a an and are as at be been but by can do does for from had has have how i if in "
    "into is it its of on or such that the their there these they this to was what when "
    "where which while who why will with".split())


def variant(query: str, kind: str) -> str:
    """The ``kind`` variant of ``query`` (see :data:`VARIANT_KINDS`)."""
    if kind == "exact":
        return query
    if kind == "lower":
        return query.lower()
    words = query.split()
    if kind == "no_stop_words":
        kept = [w for w in words if w.lower().strip(".,;:?!") not in STOP_WORDS]
        return " ".join(kept or words)
    if kind == "reordered":
        return " ".join(reversed(words))
    raise ValueError(f"unknown variant kind {kind!r}")


@dataclass
class KindReport:
    """Figures for one variant kind."""

    requests: int = 0
    exact: int = 0
    near: int = 0
    miss: int = 0
    wrong_hits: int = 0
    ndcg_own: float = 0.0  #: nDCG@10 when every variant is scored by the model
    ndcg_with_layer: float = 0.0  #: nDCG@10 when hits reuse the earlier query's scores
    hit_deltas: list[float] = field(default_factory=list, repr=False)

    @property
    def hit_rate(self) -> float:
        return (self.exact + self.near) / self.requests if self.requests else 0.0

    def as_dict(self) -> dict:
        deltas = self.hit_deltas
        return {
            "requests": self.requests, "exact": self.exact, "near": self.near,
            "miss": self.miss, "hit_rate": round(self.hit_rate, 4),
            "wrong_hits": self.wrong_hits,
            "ndcg10_own": round(self.ndcg_own, 4),
            "ndcg10_with_layer": round(self.ndcg_with_layer, 4),
            "ndcg10_change": round(self.ndcg_with_layer - self.ndcg_own, 4),
            "ndcg10_change_on_hits_mean": round(statistics.fmean(deltas), 4) if deltas else 0.0,
            "hits_worse": sum(d < 0 for d in deltas),
        }


def replay(collection: Collection, scorer, scored: ScoredRun, query_ids: Sequence[str],
           setting: RerankerSettings, layer, *,
           variant_scores: dict[str, dict[str, list[float]]] | None = None) -> dict:
    """Replay ``query_ids`` and their variants through ``layer``.

    Args:
        collection: Queries and judgments.
        scorer: The model that scored ``scored`` (scores the variants' misses).
        scored: The original queries' first-stage candidates and raw scores.
        query_ids: Queries to replay (judged, in ``scored``).
        setting: The selection setting both rankings use.
        layer: A :class:`~rerank_plugins.cache.semantic.SemanticQueryCache`; it is
            cleared first.
        variant_scores: A dict to keep the variants' own model scores in (kind ->
            qid -> raw), so replays at several thresholds score each variant once.

    Returns:
        ``{"threshold", "queries", "kinds": {kind: KindReport.as_dict()}}``.
    """
    layer.clear()
    qids = [q for q in query_ids if q in scored.raw]
    for q in qids:
        layer.remember(collection.queries[q], q)
    report = {"threshold": layer.threshold, "queries": len(qids), "kinds": {}}
    for kind in VARIANT_KINDS:
        texts = {q: variant(collection.queries[q], kind) for q in qids}
        memo = variant_scores if variant_scores is not None else {}
        if kind == "exact":
            own = {q: list(scored.raw[q]) for q in qids}
        else:
            known = memo.setdefault(kind, {})
            todo = {q: texts[q] for q in qids if q not in known}
            if todo:
                known.update(_own_scores(scorer, scored, todo))
            own = {q: known[q] for q in qids}
        layered: dict[str, list[float]] = {}
        figures = KindReport(requests=len(qids))
        for q in qids:
            hit = layer.nearest(texts[q])
            if hit is None:
                figures.miss += 1
                layered[q] = own[q]
                continue
            setattr(figures, hit.kind, getattr(figures, hit.kind) + 1)
            source = hit.query_fingerprint
            figures.wrong_hits += source != q
            cached = dict(zip((c.id for c in scored.candidates[source]), scored.raw[source],
                              strict=True))
            layered[q] = [cached.get(c.id, own_score)
                          for c, own_score in zip(scored.candidates[q], own[q], strict=True)]
        own_rankings = rerank_rankings(ScoredRun(scored.activation, scored.candidates, own),
                                       qids, setting)
        layer_rankings = rerank_rankings(
            ScoredRun(scored.activation, scored.candidates, layered), qids, setting)
        figures.ndcg_own = evaluate(collection.qrels, own_rankings, ("nDCG@10",))["nDCG@10"]
        figures.ndcg_with_layer = evaluate(collection.qrels, layer_rankings,
                                           ("nDCG@10",))["nDCG@10"]
        own_per = per_query(collection.qrels, own_rankings)
        layer_per = per_query(collection.qrels, layer_rankings)
        hit_qids = [q for q in qids if layered[q] is not own[q]]
        figures.hit_deltas = [layer_per.get(q, 0.0) - own_per.get(q, 0.0) for q in hit_qids]
        report["kinds"][kind] = figures.as_dict()
    return report


def _own_scores(scorer, scored: ScoredRun, texts: dict[str, str],
                chunk: int = 64) -> dict[str, list[float]]:
    qids = list(texts)
    if getattr(scorer, "activation", "") == "cosine":
        chunk = max(1, len(qids))  # a bi-encoder embeds each document once per call
    out: dict[str, list[float]] = {}
    for start in range(0, len(qids), chunk):
        batch = qids[start:start + chunk]
        outputs = scorer.score_many([ScoreRequest(texts[q], [c.text for c in
                                                             scored.candidates[q]])
                                     for q in batch])
        for q, output in zip(batch, outputs, strict=True):
            out[q] = list(output.scores)
    return out


def format_report(report: dict) -> str:
    """The table ``rerank-ops eval --semantic-cache`` prints."""
    header = (f"{'variant':<15}{'hit rate':>9}{'exact':>7}{'near':>6}{'wrong':>7}"
              f"{'nDCG own':>10}{'w/ layer':>10}{'change':>9}")
    lines = [f"semantic cache replay: {report['queries']} queries, threshold "
             f"{report['threshold']}", header, "-" * len(header)]
    for kind, row in report["kinds"].items():
        lines.append(f"{kind:<15}{row['hit_rate']:>9.3f}{row['exact']:>7}{row['near']:>6}"
                     f"{row['wrong_hits']:>7}{row['ndcg10_own']:>10.4f}"
                     f"{row['ndcg10_with_layer']:>10.4f}{row['ndcg10_change']:>+9.4f}")
    return "\n".join(lines)


def replay_at(collection: Collection, scorer, scored: ScoredRun, query_ids: Sequence[str],
              setting: RerankerSettings, threshold: float) -> dict:
    """:func:`replay` through a new layer on the bundled MiniLM at ``threshold``."""
    from rerank_plugins.cache.semantic import SemanticQueryCache

    return replay(collection, scorer, scored, query_ids, setting,
                  SemanticQueryCache(threshold=threshold))
