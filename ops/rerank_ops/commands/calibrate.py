"""`rerank-ops calibrate`: fit the calibration file the Reranker loads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from rerank_plugins.scoring import load_scorer

from ..calibration import METHODS
from ..options import (
    collection_option,
    device_option,
    dtype_option,
    json_option,
    model_option,
    progress_option,
    seed_option,
)


@click.command("calibrate")
@collection_option
@click.option("--pairs", "pairs_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help='JSONL of {"raw_score": x, "label": 0|1, "query_id": q} '
                                 "lines (instead of --collection).")
@click.option("--activation", type=click.Choice(["sigmoid", "cosine", "identity"]),
              default="sigmoid", show_default=True,
              help="With --pairs: how the uncalibrated Reranker maps raw scores (the "
                   "'before' numbers).")
@model_option
@device_option
@dtype_option
@click.option("--run", "run_file", default="bm25_top100.trec", show_default=True,
              help="First-stage run (TREC format) in the collection folder, or a path.")
@click.option("--depth", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Candidates per query scored and labeled from the run.")
@click.option("--max-queries", type=click.IntRange(min=1), default=None,
              help="Use only the first N judged queries (sorted by id).")
@click.option("--method", type=click.Choice(METHODS), default="platt", show_default=True,
              help="temperature: sigmoid(raw/T); platt: sigmoid(a*raw+b); isotonic: "
                   "monotone piecewise-linear.")
@click.option("--holdout", type=click.FloatRange(0.05, 0.9), default=0.3, show_default=True,
              help="Share of queries (or pairs) held out to measure the fit.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Calibration file to write (Reranker(calibration=...)).")
@json_option
@seed_option
@progress_option
def calibrate(collection_path, pairs_path, activation, model, device, dtype, run_file, depth,
              max_queries, method, holdout, out_path, json_path, seed, progress) -> None:
    """Fit temperature, Platt or isotonic scaling from labeled pairs.

    Pairs come from a BEIR collection (its first-stage run scored by --model, labels
    from qrels) or a JSONL file. The fit uses part of the queries; ECE and Brier score
    are reported before and after on the held-out rest.

    \b
    Examples:
      rerank-ops calibrate --collection cranfield --method platt --out calibration.json
      rerank-ops calibrate --pairs labeled.jsonl --method isotonic --out calibration.json
      python -c "from rerank_plugins import Reranker; Reranker(calibration='calibration.json')"
    """
    from .. import calibration as cal

    if (collection_path is None) == (pairs_path is None):
        raise click.UsageError("give exactly one of --collection or --pairs")
    try:
        pairs, model_id = _pairs(collection_path, pairs_path, activation, model, device,
                                 dtype, run_file, depth, max_queries, progress)
        fitting, held_out = cal.split(pairs, holdout=holdout, seed=seed)
        calibration = cal.fit(fitting, method, model_id=model_id)
        cal.check_pairs(held_out, "held-out split")
    except cal.CalibrationInputError as exc:
        raise click.ClickException(str(exc)) from None
    report = {"method": method, "pairs": {"fit": len(fitting), "held_out": len(held_out)},
              "held_out": cal.evaluate(held_out, calibration),
              "fit": cal.evaluate(fitting, calibration), "activation": pairs.activation}
    calibration.dump(out_path, evaluation=report)
    click.echo(_table(report))
    click.echo(f"wrote {out_path}")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _pairs(collection_path, pairs_path, activation, model, device, dtype, run_file, depth,
           max_queries, progress):
    from .. import calibration as cal
    from ..collections import EVALUATION_ONLY, CollectionError, load_collection

    if pairs_path is not None:
        return cal.read_pairs_jsonl(pairs_path, activation=activation), ""
    if collection_path.name in EVALUATION_ONLY:
        raise click.BadParameter(
            f"{collection_path.name} is kept for independent evaluation; calibrate on a "
            "development collection (cranfield, cisi, cacm, npl)", param_hint="--collection")
    try:
        collection = load_collection(collection_path, run_file=run_file)
    except CollectionError as exc:
        raise click.ClickException(str(exc)) from None
    if not collection.run:
        raise click.ClickException(f"{collection_path} has no first-stage run {run_file}")
    query_ids = sorted(q for q in collection.queries if q in collection.run)
    if max_queries:
        query_ids = query_ids[:max_queries]
    scorer = load_scorer(model, device=device, dtype=dtype)
    pairs = cal.pairs_from_collection(collection, scorer, depth=depth, query_ids=query_ids,
                                      progress=sys.stderr.isatty() if progress is None
                                      else progress)
    return pairs, scorer.model_id


def _table(report: dict) -> str:
    held = report["held_out"]
    rows = [f"{report['method']} calibration, {report['pairs']['fit']} pairs fitted, "
            f"{report['pairs']['held_out']} held out",
            f"{'held-out':<10} {'ECE':>8} {'Brier':>8} {'log loss':>9}"]
    for when in ("before", "after"):
        q = held[when]
        rows.append(f"{when:<10} {q['ece']:8.4f} {q['brier']:8.4f} {q['log_loss']:9.4f}")
    return "\n".join(rows)
