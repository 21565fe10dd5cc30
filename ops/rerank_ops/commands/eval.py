"""`rerank-ops eval`: offline quality of a scorer on a BEIR collection, before/after."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import click

from rerank_plugins.config import load_settings
from rerank_plugins.scoring import load_scorer

from ..collections import EVALUATION_ONLY, CollectionError, load_collection, split_queries
from ..evaluation import evaluate
from ..options import collection_option, dtype_option, json_option, model_option
from ..quality import (
    config_summary,
    grid_point,
    per_query_deltas,
    rerank_rankings,
    score_run,
    tune,
    write_config,
)

MEASURES = ("nDCG@10", "RR@10", "R@100")


def _table(rows: list[tuple[str, dict[str, float]]]) -> str:
    header = f"{'ranking':<28}" + "".join(f"{m:>10}" for m in MEASURES)
    lines = [header, "-" * len(header)]
    for name, metrics in rows:
        lines.append(f"{name:<28}" + "".join(f"{metrics.get(m, 0.0):>10.4f}" for m in MEASURES))
    return "\n".join(lines)


@click.command("eval")
@collection_option(required=True)
@click.option("--run", "run_file", default="bm25_top100.trec", show_default=True,
              help="First-stage run in TREC format (relative to the collection or absolute).")
@model_option
@click.option("--kind", type=click.Choice(["auto", "cross", "bi"]), default="auto",
              show_default=True, help="Scorer type when --model is given (auto = cross).")
@dtype_option
@click.option("--depth", default=100, show_default=True, type=click.IntRange(1, 1000),
              help="Candidates per query taken from the run.")
@click.option("--fusion", type=click.Choice(["none", "linear", "rrf"]), default=None,
              help="Fusion with the first-stage score. Default: from --config, else none.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=None)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Reranker settings file to evaluate (from --tune).")
@click.option("--max-queries", type=click.IntRange(1), default=None,
              help="Evaluate only the first N judged queries (sorted by id).")
@click.option("--tune", "tune_out", type=click.Path(dir_okay=False), default=None,
              help="Grid-search settings on a dev split and write this config file.")
@click.option("--dev-fraction", default=0.5, show_default=True, type=click.FloatRange(0.1, 0.9))
@click.option("--min-ndcg-gain", type=float, default=None,
              help="Exit 3 when reranked nDCG@10 minus first-stage nDCG@10 is below this.")
@json_option
@click.option("--allow-eval-collection", is_flag=True,
              help="Allow --tune on an evaluation-only collection (scifact, med).")
@click.option("--semantic-cache", is_flag=True,
              help="Also replay the queries and paraphrase-like variants through the "
              "semantic query layer: hit rate by kind, wrong hits, nDCG@10 change.")
@click.option("--semantic-threshold", default=0.95, show_default=True,
              type=click.FloatRange(0, 1, min_open=True),
              help="Cosine threshold of the semantic layer for --semantic-cache.")
def eval_cmd(collection_path, run_file, model, kind, dtype, depth, fusion, alpha, config_path,
             max_queries, tune_out, dev_fraction, min_ndcg_gain, json_path,
             allow_eval_collection, semantic_cache, semantic_threshold):
    """Rerank a collection's first-stage run and report nDCG@10, MRR@10, R@100.

    Metrics come from ir-measures. With --tune, settings are chosen on a dev split
    of the queries and reported on the held-out rest (never the same queries).

    \b
    Examples:
      rerank-ops eval --collection ../shared/data/cranfield --min-ndcg-gain 0
      rerank-ops eval --collection ../shared/data/cisi --tune cisi.json
      rerank-ops eval --collection ../shared/data/cisi --config cisi.json
      rerank-ops eval --collection ../shared/data/cranfield --semantic-cache
    """
    try:
        collection = load_collection(collection_path, run_file=run_file)
    except CollectionError as exc:
        raise click.ClickException(str(exc)) from exc
    if not collection.run:
        raise click.ClickException(
            f"no first-stage run {run_file!r} in {collection_path}: pass --run FILE (TREC)")
    if tune_out and collection.name in EVALUATION_ONLY and not allow_eval_collection:
        raise click.UsageError(
            f"{collection.name} is kept for independent evaluation; tuning on it would "
            "leak. Tune on cranfield/cisi/cacm/npl (or pass --allow-eval-collection).")
    qids = sorted(q for q in collection.queries if q in collection.run)
    if max_queries:
        qids = qids[:max_queries]
    setting = grid_point(depth=depth)
    if config_path:
        loaded = load_settings(config_path, base=setting)
        setting = loaded.replace(rerank_depth=min(depth, loaded.rerank_depth or depth),
                                 fusion="none" if loaded.fusion == "auto" else loaded.fusion)
    if fusion is not None or alpha is not None:
        setting = setting.replace(fusion=fusion or setting.fusion,
                                  alpha=alpha if alpha is not None else setting.alpha)
    scorer = load_scorer(model, kind="cross" if kind == "auto" else kind, dtype=dtype)
    scored = score_run(collection, scorer, depth=depth, query_ids=qids,
                       progress=sys.stderr.isatty())
    before = scored.first_stage(qids)
    after = rerank_rankings(scored, qids, setting)
    base, reranked = evaluate(collection.qrels, before), evaluate(collection.qrels, after)
    deltas = per_query_deltas(collection, before, after)
    report = {
        "collection": collection.name, "queries": len(qids), "depth": depth,
        "scorer": scorer.describe(), "setting": config_summary(setting),
        "first_stage": base, "reranked": reranked,
        "gain": {m: reranked[m] - base[m] for m in MEASURES},
        "per_query_ndcg10_delta": deltas,
    }
    click.echo(f"{collection.name}: {len(qids)} queries, top-{depth}, scorer "
               f"{scorer.model_id} ({scorer.describe()['dtype']}), setting "
               f"{config_summary(setting)}")
    click.echo(_table([("first stage", base), ("reranked", reranked)]))
    values = list(deltas.values())
    click.echo(f"per-query nDCG@10: {sum(v > 0 for v in values)} better, "
               f"{sum(v < 0 for v in values)} worse, {sum(v == 0 for v in values)} same; "
               f"median delta {statistics.median(values) if values else 0.0:+.4f}")
    if semantic_cache:
        from ..semantic_eval import format_report, replay_at

        report["semantic_cache"] = replay_at(collection, scorer, scored, qids, setting,
                                             semantic_threshold)
        click.echo("\n" + format_report(report["semantic_cache"]))
    if tune_out:
        dev, held = split_queries(qids, dev_fraction=dev_fraction)
        result = tune(collection, scored, dev, held, default=setting)
        write_config(tune_out, result.chosen, model=model, provenance={
            "collection": collection.name, "dev_queries": result.dev_queries,
            "held_out_queries": result.held_out_queries, "grid_size": result.grid_size,
            "objective": "nDCG@10", "scorer": scorer.describe(),
            "held_out": result.held_out})
        click.echo(f"\ntuned on {result.dev_queries} dev queries ({result.grid_size} settings);"
                   f" held-out {result.held_out_queries} queries:")
        click.echo(_table([("first stage", result.held_out["bm25"]),
                           (f"default {setting.fusion}", result.held_out["default"]),
                           ("tuned", result.held_out["tuned"])]))
        click.echo(f"chosen: {config_summary(result.chosen)}\nwrote {tune_out}")
        report["tuned"] = {"chosen": config_summary(result.chosen),
                           "held_out": result.held_out}
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if min_ndcg_gain is not None:
        gain = reranked["nDCG@10"] - base["nDCG@10"]
        if gain < min_ndcg_gain:
            click.echo(f"GATE FAILED: nDCG@10 gain {gain:+.4f} < {min_ndcg_gain:+.4f}",
                       err=True)
            sys.exit(3)
        click.echo(f"gate passed: nDCG@10 gain {gain:+.4f} >= {min_ndcg_gain:+.4f}")
