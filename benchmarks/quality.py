"""Ranking quality on the development collections: the figures behind the fusion
default and the README quality table.

For each development collection (cranfield, cisi, cacm, npl — never the
evaluation-only scifact/med) it scores the BM25 top-100 once with the embedded
bi-encoder, then reports nDCG@10 / MRR@10 / R@100 for: BM25, the model alone,
each candidate fusion default (on all judged queries), and settings tuned on a
dev half of the queries (reported on the held-out half). ``--finetune`` adds a
cross-encoder fine-tuned on the dev half, evaluated on the held-out half.

    python benchmarks/quality.py                 # bi-encoder figures, ~10 min idle
    python benchmarks/quality.py --finetune      # + fine-tuned cross-encoders
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ops"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import machine  # noqa: E402  (benchmarks/machine.py: CPU model, flags, threads)
from rerank_ops.collections import DEVELOPMENT, data_dir, load_collection, split_queries  # noqa: E402
from rerank_ops.evaluation import evaluate  # noqa: E402
from rerank_ops.quality import grid_point, measure, score_run, tune  # noqa: E402

#: Candidate defaults compared on every development collection.
CANDIDATES = {
    "model only": grid_point("none", 1.0, "minmax", 100),
    "linear a=0.5 minmax": grid_point("linear", 0.5, "minmax", 100),
    "linear a=0.4 rank": grid_point("linear", 0.4, "rank", 100),
    "linear a=0.5 rank": grid_point("linear", 0.5, "rank", 100),
    "linear a=0.6 rank": grid_point("linear", 0.6, "rank", 100),
    "rrf a=0.5": grid_point("rrf", 0.5, "minmax", 100),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", default=",".join(DEVELOPMENT))
    parser.add_argument("--finetune", action="store_true")
    parser.add_argument("--finetune-only", action="store_true",
                        help="keep the bi-encoder figures already in --out; add fine-tuned rows")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=2e-4)
    parser.add_argument("--finetune-max-length", type=int, default=256)
    parser.add_argument("--keep-models", default=None,
                        help="folder to keep the fine-tuned models in (default: discarded)")
    parser.add_argument("--finetune-positives", type=int, default=5,
                        help="without a teacher: positives per training query (each with 2 "
                             "hard + 1 random negative)")
    parser.add_argument("--finetune-teacher", choices=("default", "none"), default="default",
                        help="soft labels for unjudged candidates from the library default "
                             "ranking (bi-encoder fused with BM25), or hard 0/1 labels")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.json"))
    args = parser.parse_args()

    import torch
    import transformers

    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    if args.finetune_only:
        finetune_only(args)
        return
    scorer = BiEncoderScorer()
    report = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "torch": torch.__version__, "transformers": transformers.__version__,
              "scorer": scorer.describe(), "collections": {}}
    for name in args.collections.split(","):
        if name in ("scifact", "med"):
            sys.exit(f"{name} is kept for independent evaluation; not used here")
        path = data_dir() / name
        if not (path / "corpus.jsonl").is_file():
            print(f"skip {name}: not found at {path}", file=sys.stderr)
            continue
        started = time.perf_counter()
        collection = load_collection(path)
        qids = sorted(q for q in collection.queries if q in collection.run)
        scored = score_run(collection, scorer, query_ids=qids)
        rows = {"BM25": evaluate(collection.qrels, scored.first_stage(qids))}
        for label, setting in CANDIDATES.items():
            rows[label] = measure(collection, scored, qids, setting)
        dev, held = split_queries(qids)
        tuned = tune(collection, scored, dev, held, default=CANDIDATES["linear a=0.5 minmax"])
        entry = {"queries": len(qids), "all_queries": rows,
                 "held_out": {"queries": len(held), **tuned.held_out},
                 "tuned_setting": tuned.chosen.__dict__}
        if args.finetune:
            entry["finetuned"] = finetune_rows(collection, dev, held, args)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        report["collections"][name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)
    names = list(report["collections"])
    if names:
        report["mean_ndcg10_all_queries"] = {
            label: sum(report["collections"][n]["all_queries"][label]["nDCG@10"]
                       for n in names) / len(names)
            for label in ["BM25", *CANDIDATES]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


def finetune_only(args) -> None:
    """Add fine-tuned rows to an existing report (the bi-encoder rows stay as they were)."""
    report = json.loads(Path(args.out).read_text())
    for name in args.collections.split(","):
        entry = report["collections"].get(name)
        if entry is None:
            sys.exit(f"{name}: no bi-encoder figures in {args.out}; run without --finetune-only")
        collection = load_collection(data_dir() / name)
        qids = sorted(q for q in collection.queries if q in collection.run)
        dev, held = split_queries(qids)
        started = time.perf_counter()
        entry["finetuned"] = finetune_rows(collection, dev, held, args)
        entry["finetuned"]["seconds"] = round(time.perf_counter() - started, 1)
        entry["finetuned"]["machine"] = machine.hardware()
        print(json.dumps({name: entry["finetuned"]}, indent=1), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


def finetune_rows(collection, dev, held, args):
    """Fine-tune the bundled MiniLM as a cross-encoder on the dev queries; measure held-out."""
    import tempfile

    from rerank_ops.finetuning import finetune, pairs_from_collection, teacher_scores

    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.default_model import bundled_model_path

    teacher = teacher_scores(collection, dev) if args.finetune_teacher == "default" else None
    pairs = pairs_from_collection(collection, dev, negatives_per_positive=2,
                                  random_negatives_per_positive=1,
                                  max_positives_per_query=args.finetune_positives,
                                  teacher=teacher)
    print(f"{collection.name}: {len(pairs)} training pairs ({pairs.positives} positive) "
          f"from {len(dev)} queries", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = (Path(args.keep_models) / f"{collection.name}-ce" if args.keep_models
                  else Path(tmp) / "ce")
        result = finetune(bundled_model_path(), pairs, folder,
                          epochs=args.finetune_epochs, learning_rate=args.finetune_lr,
                          max_length=args.finetune_max_length, progress=False)
        # bf16 without the fp32 head re-scoring: a trained head spreads its scores far
        # wider than bf16 rounding moves them (see docs/performance.md)
        scorer = CrossEncoderScorer(str(folder), max_length=args.finetune_max_length,
                                    exact_top=0)
        scored = score_run(collection, scorer, query_ids=held, progress=False)
    return {"pairs": result.pairs, "positives": result.positives,
            "train_seconds": round(result.seconds, 1), "bf16": result.bf16,
            "epochs": args.finetune_epochs, "learning_rate": args.finetune_lr,
            "max_length": args.finetune_max_length, "steps": result.steps,
            "teacher": args.finetune_teacher,
            "loss_first": result.loss_first, "loss_last": result.loss_last,
            "held_out": measure(collection, scored, held, grid_point("none", 1.0, "minmax", 100)),
            "held_out_fused": measure(collection, scored, held,
                                      grid_point("linear", 0.5, "minmax", 100))}


def markdown(report: dict) -> str:
    lines = ["| collection | ranking | nDCG@10 | MRR@10 | R@100 |", "|---|---|---|---|---|"]
    for name, entry in report["collections"].items():
        for label, m in entry["all_queries"].items():
            lines.append(f"| {name} ({entry['queries']} q) | {label} | {m['nDCG@10']:.3f} | "
                         f"{m['RR@10']:.3f} | {m['R@100']:.3f} |")
        held = entry["held_out"]
        for label in ("bm25", "default", "tuned"):
            m = held[label]
            lines.append(f"| {name} held-out ({held['queries']} q) | {label} | "
                         f"{m['nDCG@10']:.3f} | {m['RR@10']:.3f} | {m['R@100']:.3f} |")
        if "finetuned" in entry:
            for key in ("held_out", "held_out_fused"):
                m = entry["finetuned"][key]
                lines.append(f"| {name} held-out ({held['queries']} q) | fine-tuned CE "
                             f"{'+ fusion' if 'fused' in key else ''} | {m['nDCG@10']:.3f} | "
                             f"{m['RR@10']:.3f} | {m['R@100']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
