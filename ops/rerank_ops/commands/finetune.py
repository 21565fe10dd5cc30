"""`rerank-ops finetune`: domain-adapt a cross-encoder from labeled pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..collections import EVALUATION_ONLY, CollectionError, load_collection, split_queries
from ..finetuning import (
    TrainingDataError,
    default_learning_rate,
    embedded_bi_encoder,
    finetune,
    gate_verdict,
    has_ranking_head,
    held_out_metrics,
    pairs_from_collection,
    pairs_from_feedback,
    teacher_scores,
    write_model_card,
)
from ..options import collection_option, json_option, model_option, seed_option


@click.command("finetune")
@model_option
@collection_option
@click.option("--feedback", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSONL feedback log: {query, document, label|feedback}.")
@click.option("--out", "output_dir", required=True, type=click.Path(file_okay=False),
              help="Where the fine-tuned model folder is written.")
@click.option("--train-fraction", default=0.5, show_default=True,
              type=click.FloatRange(0.1, 0.9), help="Share of queries used for training.")
@click.option("--max-train-queries", type=click.IntRange(1), default=None)
@click.option("--negatives", default=2, show_default=True, type=click.IntRange(0, 20),
              help="Hard negatives per positive (unjudged documents of the run's top 100).")
@click.option("--random-negatives", default=1, show_default=True, type=click.IntRange(0, 20),
              help="Random corpus negatives per positive.")
@click.option("--teacher", type=click.Choice(["auto", "default", "none"]), default="auto",
              show_default=True,
              help="Soft labels for unjudged first-stage candidates from the library default "
                   "ranking (embedded bi-encoder fused with the first stage): 'default'; hard "
                   "0/1 labels: 'none'. auto = default for a start model without a ranking "
                   "head, none for an existing cross-encoder.")
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(1, 50))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1, 512))
@click.option("--lr", "learning_rate", default=None, type=float,
              help="Default: 2e-4 from a model without a trained ranking head (the embedded "
                   "MiniLM), 3e-5 from an existing cross-encoder.")
@click.option("--max-length", default=256, show_default=True, type=click.IntRange(16, 512))
@click.option("--eval-depth", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--max-eval-queries", type=click.IntRange(1), default=None)
@click.option("--no-eval", is_flag=True, help="Skip the before/after evaluation.")
@click.option("--min-ndcg-gain", type=float, default=0.0, show_default=True,
              help="Exit 3 (model written, card marked REJECTED) when the fine-tuned model's "
                   "held-out nDCG@10 minus the best of the first stage, the start model and "
                   "the library default is below this. A large negative value accepts any "
                   "result.")
@seed_option
@json_option
def finetune_cmd(model, collection_path, feedback, output_dir, train_fraction,
                 max_train_queries, negatives, random_negatives, teacher, epochs, batch_size,
                 learning_rate, max_length, eval_depth, max_eval_queries, no_eval,
                 min_ndcg_gain, seed, json_path):
    """Fine-tune a cross-encoder; the folder loads in CrossEncoderScorer unchanged.

    Trains on a split of the collection's queries and reports nDCG@10 before and
    after on the other split (never on the training queries). The result is gated:
    exit 3 when it does not beat the first stage, the start model and the library
    default (embedded bi-encoder + fusion) there.

    \b
    Examples:
      rerank-ops finetune --collection ../shared/data/cranfield --out models/cranfield-ce
      rerank-ops finetune --feedback feedback.jsonl --model models/base --out models/v2

    --model is the start model (default: the embedded MiniLM); --collection gives
    qrels positives and first-stage hard negatives.
    """
    from rerank_plugins.scoring.default_model import bundled_model_path

    if (collection_path is None) == (feedback is None):
        raise click.UsageError("give exactly one of --collection or --feedback")
    start = model or bundled_model_path()
    if learning_rate is None:
        learning_rate = default_learning_rate(start)
    held: list[str] = []
    collection = default_scorer = None
    try:
        if collection_path:
            collection = load_collection(collection_path)
            if collection.name in EVALUATION_ONLY:
                raise click.UsageError(
                    f"{collection.name} is kept for independent evaluation; do not train on it")
            qids = sorted(q for q in collection.queries if q in collection.run)
            train_q, held = split_queries(qids, dev_fraction=train_fraction, seed=seed)
            if max_train_queries:
                train_q = train_q[:max_train_queries]
            if max_eval_queries:
                held = held[:max_eval_queries]
            use_teacher = teacher == "default" or (
                teacher == "auto" and not has_ranking_head(start))
            if use_teacher or not no_eval:
                # one bi-encoder for the teacher and the gate's library-default baseline
                default_scorer = embedded_bi_encoder()
            soft = teacher_scores(collection, train_q, default_scorer) if use_teacher else None
            pairs = pairs_from_collection(collection, train_q, negatives_per_positive=negatives,
                                          random_negatives_per_positive=random_negatives,
                                          seed=seed, teacher=soft)
            data = {"collection": collection.name, "train_queries": len(train_q),
                    "held_out_queries": len(held),
                    "teacher": "library default (embedded bi-encoder + first-stage fusion)"
                    if use_teacher else "none (hard 0/1 labels)",
                    "hard_negatives_per_positive": "all scored candidates (soft labels)"
                    if use_teacher else negatives,
                    "random_negatives_per_positive": random_negatives}
        else:
            pairs = pairs_from_feedback(feedback)
            data = {"feedback_log": str(feedback)}
        click.echo(f"training pairs: {pairs.summary()}", err=True)
        result = finetune(start, pairs, output_dir, epochs=epochs, batch_size=batch_size,
                          learning_rate=learning_rate, max_length=max_length, seed=seed,
                          progress=sys.stderr.isatty())
    except (TrainingDataError, CollectionError) as exc:
        raise click.ClickException(str(exc)) from exc
    metrics = None
    if collection is not None and held and not no_eval:
        metrics = held_out_metrics(collection, held, start_model=start, tuned_model=output_dir,
                                   max_length=max_length, depth=eval_depth,
                                   progress=sys.stderr.isatty(),
                                   default_scorer=default_scorer)
    gate = gate_verdict(metrics, min_ndcg_gain) if metrics else None
    settings = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                "max_length": max_length, "seed": seed}
    card = write_model_card(output_dir, start_model=start, data=data, settings=settings,
                            result=result, metrics=metrics, gate=gate)
    summary = {"output_dir": result.output_dir, "pairs": result.pairs,
               "seconds": round(result.seconds, 1), "bf16": result.bf16,
               "loss_first": result.loss_first, "loss_last": result.loss_last,
               "held_out": metrics, "gate": gate}
    (Path(output_dir) / "finetune_summary.json").write_text(json.dumps(summary, indent=2))
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    click.echo(f"trained {result.pairs_summary} in {result.seconds:.1f}s "
               f"(bf16={result.bf16}); loss {result.loss_summary()}")
    if metrics:
        for name, values in metrics.items():
            click.echo(f"  {name:<20} nDCG@10 {values['nDCG@10']:.4f}  RR@10 "
                       f"{values['RR@10']:.4f}  R@100 {values['R@100']:.4f}")
    click.echo(f"model: {output_dir}  card: {card}")
    if gate is not None:
        verdict = "gate passed" if gate["passed"] else "GATE FAILED (do not ship this model)"
        click.echo(f"{verdict}: held-out nDCG@10 gain {gate['gain']:+.4f} over "
                   f"{gate['best_baseline']} (bar {min_ndcg_gain:+.4f})",
                   err=not gate["passed"])
        if not gate["passed"]:
            sys.exit(3)
