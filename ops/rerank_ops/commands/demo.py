"""``rerank-ops demo``: the quickstart main job, end to end and offline.

BM25 first stage (bm25s + PyStemmer) -> the guarded :class:`~rerank_plugins.Reranker`
on the embedded default model, with an event log -> a before/after table of
nDCG@10, MRR@10 and latency, and where the event log went. By default it runs on
the project's own small judged corpus (:mod:`rerank_ops.demo_corpus`);
``--collection`` takes any BEIR-format folder.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import click

from rerank_plugins.scoring import load_scorer

from ..collections import Collection, CollectionError, load_collection
from ..evaluation import evaluate
from ..options import collection_option, dtype_option, model_option

MEASURES = ("nDCG@10", "RR@10")
Rankings = dict[str, list[tuple[str, float]]]


@dataclass
class Pass:
    """One way of ranking every query: the rankings and what each query cost."""

    label: str
    rankings: Rankings
    latencies_s: list[float]
    statuses: Counter = field(default_factory=Counter)

    def latency_ms(self, quantile: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        # nearest-rank quantile: an observed latency, never an interpolated one
        index = max(0, min(len(ordered) - 1, round(quantile * len(ordered) + 0.5) - 1))
        return ordered[index] * 1000.0


def bm25_rankings(collection: Collection, query_ids: list[str], top_k: int) -> Pass:
    """Index the corpus with BM25 (Lucene variant, k1=1.2, b=0.75, English stemming and
    stopwords: the settings of the shared ``bm25_top100.trec`` runs) and retrieve
    ``top_k`` documents per query, timing each query on its own."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    doc_ids = list(collection.corpus)
    texts = [collection.doc_text(doc_id) for doc_id in doc_ids]
    index = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    index.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                show_progress=False)
    k = min(top_k, len(doc_ids))
    rankings: Rankings = {}
    latencies: list[float] = []
    for qid in query_ids:
        started = time.perf_counter()
        tokens = bm25s.tokenize([collection.queries[qid]], stopwords="en", stemmer=stemmer,
                                show_progress=False)
        found, scores = index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        latencies.append(time.perf_counter() - started)
        # a first stage returns only documents that match at least one query term
        rankings[qid] = [(doc_ids[int(d)], float(s))
                         for d, s in zip(found[0], scores[0], strict=True) if s > 0]
    return Pass("BM25 (first stage)", rankings, latencies)


def rerank_rankings(reranker, collection: Collection, first_stage: Rankings,
                    label: str) -> Pass:
    """Rerank each query's first-stage candidates through the guarded pipeline."""
    rankings: Rankings = {}
    latencies: list[float] = []
    statuses: Counter = Counter()
    for qid, ranked in first_stage.items():
        candidates = [{"id": doc_id, "text": collection.doc_text(doc_id),
                       "retrieval_score": score} for doc_id, score in ranked]
        started = time.perf_counter()
        result = reranker.rerank(collection.queries[qid], candidates)
        latencies.append(time.perf_counter() - started)
        statuses[result.status.value] += 1
        order = list(result.items) + [item for item in result.dropped]
        rankings[qid] = [(item.id, item.relevance_score or 0.0) for item in order]
    return Pass(label, rankings, latencies, statuses)


def format_table(rows: list[tuple[Pass, dict[str, float]]]) -> str:
    """Fixed-width before/after table; a last row shows the change over the first."""
    header = f"{'ranking':<34}{'nDCG@10':>9}{'MRR@10':>9}{'p50 ms':>10}{'p95 ms':>10}"
    lines = [header, "-" * len(header)]

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    for run, metrics in rows:
        lines.append(f"{run.label:<34}{metrics['nDCG@10']:>9.3f}{metrics['RR@10']:>9.3f}"
                     f"{ms(run.latency_ms(0.50)):>10}{ms(run.latency_ms(0.95)):>10}")
    if len(rows) > 1:
        (_, first), (_, second) = rows[0], rows[1]
        lines.append(f"{'change (rerank - first stage)':<34}"
                     f"{second['nDCG@10'] - first['nDCG@10']:>+9.3f}"
                     f"{second['RR@10'] - first['RR@10']:>+9.3f}")
    return "\n".join(lines)


def write_trec(path: Path, rankings: Rankings, tag: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for qid, ranked in rankings.items():
            for rank, (doc_id, _score) in enumerate(ranked, 1):
                # strictly decreasing scores so readers cannot re-sort ties
                fh.write(f"{qid} Q0 {doc_id} {rank} {len(ranked) - rank + 1} {tag}\n")


def _load(collection_path: Path | None) -> Collection:
    if collection_path is None:
        from ..demo_corpus import load_demo_collection

        return load_demo_collection()
    try:
        return load_collection(collection_path)
    except CollectionError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("demo")
@collection_option
@click.option("--max-queries", type=click.IntRange(min=1), default=None,
              help="Use only the first N judged queries (sorted by id). Default: all.")
@click.option("--top-k", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="First-stage candidates reranked per query.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-output"), show_default=True,
              help="Where the event log, the two runs and summary.json go.")
@click.option("--fusion", type=click.Choice(["auto", "none", "linear", "rrf"]), default="auto",
              show_default=True, help="Blend the model score with the BM25 score ('auto' is "
              "the library default: linear for the embedded bi-encoder).")
@click.option("--timeout-s", type=click.FloatRange(min=0.001), default=5.0,
              show_default=True, help="Per-request model deadline in seconds (then: fallback).")
@click.option("--timeout-ms", type=click.FloatRange(min=1.0), default=None, hidden=True,
              help="Deprecated: --timeout-s in milliseconds.")
@model_option
@dtype_option
def demo(collection_path: Path | None, max_queries: int | None, top_k: int, out_dir: Path,
         fusion: str, timeout_s: float, timeout_ms: float | None, model: str | None,
         dtype: str) -> None:
    """Run BM25, rerank through the guarded pipeline, print before/after.

    \b
    Examples:
      rerank-ops demo
      rerank-ops demo --collection cranfield --max-queries 50
    """
    from rerank_plugins import Reranker
    from rerank_plugins.telemetry.sinks import EventLog, JsonlSink

    collection = _load(collection_path)
    query_ids = sorted(collection.queries)[:max_queries]
    if not query_ids:
        raise click.ClickException(f"{collection.name} has no judged queries")
    started = time.perf_counter()
    if collection.run:
        first = Pass(f"first stage ({'bm25_top100.trec'})",
                     {qid: collection.run.get(qid, [])[:top_k] for qid in query_ids}, [])
    else:
        first = bm25_rankings(collection, query_ids, top_k)

    scorer = load_scorer(model, dtype=dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    sink = JsonlSink(out_dir / "events")
    event_log = EventLog(sink)
    if timeout_ms is not None:
        click.echo("--timeout-ms is deprecated; use --timeout-s", err=True)
        timeout_s = timeout_ms / 1000.0
    reranker = Reranker(scorer, event_log=event_log, fusion=fusion, timeout_s=timeout_s)
    fusion = reranker.settings.fusion  # "auto" resolved for this scorer
    # one throwaway forward pass so the first timed query does not pay for warm-up
    from rerank_plugins.scoring.base import ScoreRequest

    scorer.score_many([ScoreRequest("warm up", ["the model loads its kernels"])])
    label = f"+ rerank ({scorer.model_id.split('/')[-1]})"
    reranked = rerank_rankings(reranker, collection, first.rankings, label)
    repeat = rerank_rankings(reranker, collection, first.rankings, "+ rerank again (cache)")
    reranker.close()
    event_log.close()

    rows = [(run, evaluate(collection.qrels, run.rankings, MEASURES))
            for run in (first, reranked, repeat)]
    write_trec(out_dir / "run-first-stage.trec", first.rankings, "first_stage")
    write_trec(out_dir / "run-reranked.trec", reranked.rankings, "reranked")
    events_path = sink.path.resolve() if sink.path else None
    summary = {
        "collection": collection.name, "queries": len(query_ids), "top_k": top_k,
        "model": scorer.model_id, "device": scorer.describe().get("device"),
        "dtype": scorer.describe().get("dtype"), "fusion": fusion,
        "metrics": {run.label: m for run, m in rows},
        "latency_ms": {run.label: {"p50": run.latency_ms(0.5), "p95": run.latency_ms(0.95)}
                       for run, _ in rows},
        "statuses": {run.label: dict(run.statuses) for run, _ in rows[1:]},
        "events": {"path": str(events_path) if events_path else None,
                   "written": event_log.written, "dropped": event_log.dropped},
        "seconds": time.perf_counter() - started,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n",
                                          encoding="utf-8")

    describe = scorer.describe()
    mean_candidates = statistics.fmean(len(r) for r in first.rankings.values())
    click.echo(f"collection: {collection.name}  queries: {len(query_ids)}  "
               f"candidates/query: {mean_candidates:.1f} (top-k {top_k})  fusion: {fusion}")
    click.echo(f"model: {scorer.model_id} ({describe.get('device')}, {describe.get('dtype')})"
               f"  deadline: {timeout_s:g} s")
    click.echo("")
    click.echo(format_table(rows))
    click.echo("")
    for run, _ in rows[1:]:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(run.statuses.items()))
        click.echo(f"statuses {run.label}: {counts}")
    click.echo(f"event log: {events_path} ({event_log.written} events written, "
               f"{event_log.dropped} dropped)")
    click.echo(f"runs and summary: {out_dir.resolve()}")
