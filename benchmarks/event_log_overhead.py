"""What the feature/score event log costs a rerank request.

Two rerankers share one model and differ only in the event log (JSONL sink on a
local directory). Requests are real first-stage results (Cranfield BM25 top-k) and
the two arms run interleaved, alternating which goes first, so load changes on a
shared machine hit both alike. Reported:

* end to end: median request time with and without the log, their ratio, and the
  median of the per-pair differences (the robust estimate on a noisy machine);
* on the request path: p50/p99 of ``build_event`` and ``EventLog.emit`` for the
  same request shapes (the only logging work the caller waits for).

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/event_log_overhead.py [--requests 60] [--top-k 20]

Writes ``benchmarks/results/event_log_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cranfield"
RESULT = ROOT / "benchmarks" / "results" / "event_log_overhead.json"


def load_requests(folder: Path, count: int, top_k: int) -> list[tuple[str, list[dict]]]:
    """(query, candidates) pairs from the collection's BM25 run, in query order."""
    corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            corpus[row["_id"]] = (row.get("title", "") + " " + row["text"]).strip()
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    run: dict[str, list[tuple[str, float]]] = {}
    with open(folder / "bm25_top100.trec", encoding="utf-8") as fh:
        for line in fh:
            qid, _, docid, rank, score, _ = line.split()
            if int(rank) <= top_k and qid in queries:
                run.setdefault(qid, []).append((docid, float(score)))
    requests = []
    for qid in list(run)[:count]:
        candidates = [{"id": d, "text": corpus[d], "retrieval_score": s} for d, s in run[qid]]
        requests.append((queries[qid], candidates))
    return requests


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("rerank-plugins", "torch", "sentence-transformers", "transformers",
                 "opentelemetry-api", "opentelemetry-sdk"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def request_path_costs(reranker, requests, repeats: int) -> dict[str, float]:
    """p50/p99 (microseconds) of the logging work done on the caller's thread."""
    from rerank_plugins.telemetry.events import build_event
    from rerank_plugins.telemetry.sinks import EventLog, JsonlSink

    results = [reranker.rerank(q, c) for q, c in requests[:5]]
    build_us, emit_us = [], []
    with tempfile.TemporaryDirectory() as folder:
        log = EventLog(JsonlSink(folder), queue_size=repeats * len(results) + 1)
        for _ in range(repeats):
            for (query, candidates), result in zip(requests, results, strict=False):
                texts = [c["text"] for c in candidates]
                started = time.perf_counter_ns()
                event = build_event(
                    query=query, query_fp="0" * 64, texts=texts,
                    retrieval_scores=[c["retrieval_score"] for c in candidates],
                    model_scores=[i.model_score for i in result.items], result=result,
                    model_revision="bench", kept_after_threshold=len(result.items))
                built = time.perf_counter_ns()
                log.emit(event)
                emitted = time.perf_counter_ns()
                build_us.append((built - started) / 1000)
                emit_us.append((emitted - built) / 1000)
        log.close()
        assert log.dropped == 0, log.stats()
    return {"build_event_p50_us": percentile(build_us, 0.5),
            "build_event_p99_us": percentile(build_us, 0.99),
            "emit_p50_us": percentile(emit_us, 0.5), "emit_p99_us": percentile(emit_us, 0.99),
            "samples": len(emit_us)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="interleaved pairs")
    parser.add_argument("--top-k", type=int, default=20, help="candidates per request")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rerank_plugins import Reranker
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer
    from rerank_plugins.telemetry.sinks import EventLog, JsonlSink

    requests = load_requests(args.data, args.requests + args.warmup, args.top_k)
    if len(requests) < args.requests + args.warmup:
        print(f"only {len(requests)} queries available", file=sys.stderr)
    scorer = BiEncoderScorer()
    settings = {"cache": None, "timeout_ms": None}  # every request scores all candidates
    with tempfile.TemporaryDirectory() as folder:
        log = EventLog(JsonlSink(folder))
        plain = Reranker(scorer, **settings)
        logged = Reranker(scorer, event_log=log, **settings)
        for query, candidates in requests[:args.warmup]:
            plain.rerank(query, candidates)
            logged.rerank(query, candidates)
        with_log, without_log = [], []
        for index, (query, candidates) in enumerate(requests[args.warmup:]):
            arms = [(logged, with_log), (plain, without_log)]
            for reranker, sink in arms if index % 2 == 0 else arms[::-1]:
                started = time.perf_counter()
                reranker.rerank(query, candidates)
                sink.append(time.perf_counter() - started)
        costs = request_path_costs(plain, requests, repeats=200)
        plain.close()
        logged.close()
        log.close()
        stats = log.stats()
        lines = sum(1 for f in Path(folder).glob("*.jsonl") for _ in open(f, "rb"))

    median_with = statistics.median(with_log)
    median_without = statistics.median(without_log)
    paired = statistics.median(a - b for a, b in zip(with_log, without_log, strict=True))
    on_path_us = costs["build_event_p50_us"] + costs["emit_p50_us"]
    report = {
        "benchmark": "event_log_overhead",
        "machine": machine(),
        "versions": versions(),
        "settings": {"collection": args.data.name, "requests": len(with_log),
                     "candidates_per_request": args.top_k, "warmup": args.warmup,
                     "scorer": scorer.model_id, "device": scorer.device, "dtype": scorer.dtype,
                     "cache": None, "timeout_ms": None, "sink": "JsonlSink (local dir)",
                     "sample_rate": 1.0, "otel_sdk": "not configured (API no-op)"},
        "median_request_s_without_log": median_without,
        "median_request_s_with_log": median_with,
        "ratio_with_over_without": median_with / median_without,
        "median_paired_difference_s": paired,
        "paired_overhead_share": paired / median_without,
        "request_path": costs,
        "request_path_p50_share": on_path_us / 1e6 / median_without,
        "events": stats,
        "event_lines_on_disk": lines,
        "target": "logging <= 2% of request time at p50",
    }
    report["target_met"] = report["request_path_p50_share"] <= 0.02 and \
        report["paired_overhead_share"] <= 0.02
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")

    print(f"machine   {report['machine']}")
    print(f"versions  {report['versions']}")
    print(f"settings  {report['settings']}")
    print(f"p50 request without log {median_without * 1000:9.2f} ms")
    print(f"p50 request with log    {median_with * 1000:9.2f} ms  "
          f"(ratio {report['ratio_with_over_without']:.4f})")
    print(f"median paired difference {paired * 1000:+.3f} ms "
          f"({report['paired_overhead_share']:+.2%} of p50)")
    print(f"build_event p50/p99 {costs['build_event_p50_us']:.1f}/"
          f"{costs['build_event_p99_us']:.1f} us   emit p50/p99 {costs['emit_p50_us']:.2f}/"
          f"{costs['emit_p99_us']:.2f} us")
    print(f"request-path logging at p50: {report['request_path_p50_share']:.3%} of a request")
    print(f"events {stats}, lines on disk {lines}")
    print(f"target met: {report['target_met']}  -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
