"""IR metrics through ir-measures (nDCG@10, RR@10 = MRR@10, R@k)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100")


def run_from_rankings(rankings: Mapping[str, Iterable[tuple[str, float]]]) -> dict:
    """qid -> [(doc, score)] in rank order -> ir-measures run dict with strictly
    decreasing scores (so ties cannot reorder what the reranker decided)."""
    run: dict[str, dict[str, float]] = {}
    for qid, ranked in rankings.items():
        ranked = list(ranked)
        n = len(ranked)
        run[qid] = {doc: float(n - position) for position, (doc, _score) in enumerate(ranked)}
    return run


def evaluate(qrels: Mapping[str, Mapping[str, int]], rankings, measures=DEFAULT_MEASURES):
    """Aggregate metrics: {"nDCG@10": 0.41, ...}. Only queries with judgments count."""
    import ir_measures

    parsed = [ir_measures.parse_measure(m) for m in measures]
    run = run_from_rankings(rankings)
    qrels = {q: dict(d) for q, d in qrels.items() if q in run}
    result = ir_measures.calc_aggregate(parsed, qrels, run)
    return {str(m): float(result.get(m, 0.0)) for m in parsed}


def per_query(qrels, rankings, measure: str = "nDCG@10") -> dict[str, float]:
    import ir_measures

    parsed = ir_measures.parse_measure(measure)
    run = run_from_rankings(rankings)
    qrels = {q: dict(d) for q, d in qrels.items() if q in run}
    return {m.query_id: float(m.value) for m in ir_measures.iter_calc([parsed], qrels, run)}
