"""Semantic-layer replay on the development collections (what
``rerank-ops eval --semantic-cache`` reports), for docs/semantic-cache.md.

For each collection: score the BM25 top-``--depth`` with the bundled bi-encoder,
then replay the queries and their variants through a ``SemanticQueryCache`` at each
``--threshold`` (see ``rerank_ops.semantic_eval``). Development collections only
(cranfield, cisi, cacm, npl): scifact and med stay for independent evaluation.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/semantic_replay.py [--depth 50] [--threshold 0.95 0.9]

Writes ``benchmarks/results/semantic_replay.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import machine  # noqa: E402,F401 - sets the offline environment before model imports

RESULT = ROOT / "benchmarks" / "results" / "semantic_replay.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi", "cacm", "npl"])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.95, 0.9])
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    from rerank_ops.collections import EVALUATION_ONLY, data_dir, load_collection
    from rerank_ops.quality import library_default, score_run
    from rerank_ops.semantic_eval import format_report, replay

    from rerank_plugins.cache.semantic import SemanticQueryCache
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    scorer = BiEncoderScorer(dtype="float32")
    base = SemanticQueryCache()
    report: dict = {"depth": args.depth, "scorer": scorer.describe(), "collections": {},
                    "load_average_before": os.getloadavg()}
    for name in args.collections:
        if name in EVALUATION_ONLY:
            raise SystemExit(f"{name} is evaluation-only; replay development collections")
        folder = data_dir() / name
        if not (folder / "corpus.jsonl").is_file():
            print(f"skipping {name}: not found at {folder}")
            continue
        collection = load_collection(folder)
        qids = sorted(q for q in collection.queries if q in collection.run and q in
                      collection.qrels)
        scored = score_run(collection, scorer, depth=args.depth, query_ids=qids,
                           progress=False)
        setting = library_default(scorer, depth=args.depth)
        report["collections"][name] = {}
        variant_scores: dict = {}  # each variant scored once, reused per threshold
        for threshold in args.threshold:
            layer = SemanticQueryCache(embedder=base._embed, threshold=threshold)
            result = replay(collection, scorer, scored, qids, setting, layer,
                            variant_scores=variant_scores)
            report["collections"][name][str(threshold)] = result
            print(f"\n{name}:\n{format_report(result)}", flush=True)
    report["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
