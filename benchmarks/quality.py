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

from rerank_ops.collections import DEVELOPMENT, data_dir, load_collection, split_queries  # noqa: E402
from rerank_ops.evaluation import evaluate  # noqa: E402
from rerank_ops.quality import Setting, measure, score_run, tune  # noqa: E402

#: Candidate defaults compared on every development collection.
CANDIDATES = {
    "model only": Setting("none", 1.0, "minmax", 100),
    "linear a=0.5 minmax": Setting("linear", 0.5, "minmax", 100),
    "linear a=0.4 rank": Setting("linear", 0.4, "rank", 100),
    "linear a=0.5 rank": Setting("linear", 0.5, "rank", 100),
    "linear a=0.6 rank": Setting("linear", 0.6, "rank", 100),
    "rrf a=0.5": Setting("rrf", 0.5, "minmax", 100),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", default=",".join(DEVELOPMENT))
    parser.add_argument("--finetune", action="store_true")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.json"))
    args = parser.parse_args()

    import torch
    import transformers

    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

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
            entry["finetuned"] = finetune_rows(collection, dev, held, args.finetune_epochs)
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


def finetune_rows(collection, dev, held, epochs):
    import tempfile

    from rerank_ops.finetuning import finetune, pairs_from_collection

    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.default_model import bundled_model_path

    pairs = pairs_from_collection(collection, dev, negatives_per_positive=3)
    with tempfile.TemporaryDirectory() as tmp:
        result = finetune(bundled_model_path(), pairs, Path(tmp) / "ce", epochs=epochs,
                          progress=False)
        scored = score_run(collection, CrossEncoderScorer(str(Path(tmp) / "ce")),
                           query_ids=held, progress=False)
    return {"pairs": result.pairs, "train_seconds": round(result.seconds, 1),
            "bf16": result.bf16, "epochs": epochs,
            "held_out": measure(collection, scored, held, Setting("none", 1.0, "minmax", 100)),
            "held_out_fused": measure(collection, scored, held,
                                      Setting("linear", 0.5, "rank", 100))}


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
