"""One OpenVINO stream or two for the fast passes? (issue #17, throughput with 8 callers)

The shipped scorer (``CrossEncoderScorer``, OpenVINO, adaptive fp32 re-score) on the
harness's trained head, built twice: ``openvino_streams=1`` (the LATENCY hint, one
stream with both threads, what ships) and ``openvino_streams=2`` (the THROUGHPUT
hint, one thread per stream, a call's batches side by side). Each goes through a real
``Reranker`` (its engine merges concurrent requests), ``top_n`` 5 as the harness's
drop-ins. Per round, interleaved: the p50 of single calls, then 8 threads calling
concurrently (every query distinct, so nothing is cached); rounds are pooled.

    python benchmarks/openvino_streams.py [--model FOLDER] [--rounds 3] [--out FILE]

Prints the machine, the versions and both configurations' figures from the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heads  # noqa: E402
import machine  # noqa: E402  (offline environment first)
from workload import DEFAULT_DATA  # noqa: E402

TOP_N = 5


def _candidates(request):
    from rerank_plugins import Candidate

    return [Candidate(doc_id, text) for doc_id, text in
            zip(request.doc_ids, request.texts, strict=True)]


def single_p50(reranker, requests, tag: str) -> list[float]:
    times = []
    for index, request in enumerate(requests):
        started = time.perf_counter()
        reranker.rerank(f"{request.query} ({tag} {index})", _candidates(request), top_n=TOP_N)
        times.append(time.perf_counter() - started)
    return times


def concurrent_seconds(reranker, requests, callers: int, calls: int, tag: str) -> float:
    work = [dataclasses.replace(requests[i % len(requests)],
                                query=f"{requests[i % len(requests)].query} ({tag} {i})")
            for i in range(calls)]
    prepared = [_candidates(r) for r in work]
    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(lambda r, c: reranker.rerank(r.query, c, top_n=TOP_N),
                                work, prepared))
    seconds = time.perf_counter() - started
    fallbacks = [r.fallback_reason for r in results if r.fallback_reason]
    if fallbacks:
        raise SystemExit(f"a call fell back ({fallbacks[0]}): the figure would be wrong")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="cross-encoder folder (default: trained head)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "RERANK_DATA_DIR", DEFAULT_DATA)))
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--calls", type=int, default=24, help="concurrent calls per round")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from rerank_plugins import Reranker
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    requests, folder = heads.sweep_inputs(args.data, args.requests, args.model)
    hardware = machine.hardware()
    print(f"{hardware['cpu']} | class {hardware['hardware_class']} | flags "
          f"{' '.join(hardware['cpu_flags'])} | threads {hardware['torch_threads']} | load "
          f"{hardware.get('load_average_at_start')}")
    print(f"versions: {machine.versions()}")
    configs = {}
    for streams in (1, 2):
        scorer = CrossEncoderScorer(folder, backend="openvino", max_length=512,
                                    openvino_streams=streams)
        configs[streams] = Reranker(scorer, cache=None, timeout_s=600)
        print(f"streams {streams}: {scorer.describe()}")
    for streams, reranker in configs.items():  # warm-up: compiled kernels per shape
        single_p50(reranker, requests[:2], f"warm{streams}")
    singles = {s: [] for s in configs}
    seconds = {s: [] for s in configs}
    for round_index in range(args.rounds):
        order = list(configs) if round_index % 2 == 0 else list(reversed(configs))
        for streams in order:
            reranker = configs[streams]
            singles[streams] += single_p50(reranker, requests, f"r{round_index}")
            seconds[streams].append(concurrent_seconds(
                reranker, requests, args.callers, args.calls, f"r{round_index}"))
    report = {"hardware": hardware, "versions": machine.versions(),
              "settings": {"model": folder, "requests": len(requests), "rounds": args.rounds,
                           "callers": args.callers, "calls_per_round": args.calls,
                           "top_n": TOP_N},
              "streams": {}}
    print(f"{'streams':>7} {'single p50 ms':>14} {'8 callers req/s':>16}  per round")
    for streams in configs:
        pooled = args.calls * len(seconds[streams]) / sum(seconds[streams])
        row = {"single_p50_ms": round(1000 * statistics.median(singles[streams]), 1),
               "concurrent_req_per_s": round(pooled, 3),
               "per_round_req_per_s": [round(args.calls / s, 3) for s in seconds[streams]]}
        report["streams"][str(streams)] = row
        print(f"{streams:>7} {row['single_p50_ms']:>14.1f} {pooled:>16.3f}  "
              f"{row['per_round_req_per_s']}")
    one, two = report["streams"]["1"], report["streams"]["2"]
    print(f"two streams / one: single p50 {two['single_p50_ms'] / one['single_p50_ms']:.3f}, "
          f"throughput {two['concurrent_req_per_s'] / one['concurrent_req_per_s']:.3f}")
    for reranker in configs.values():
        reranker.close()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
