"""One OpenVINO stream or two for the fast passes? (issue #17, throughput with 8 callers)

The shipped scorer (``CrossEncoderScorer``, OpenVINO, adaptive fp32 re-score) on the
harness's trained head, built twice: ``openvino_streams=1`` (the LATENCY hint, one
stream with both threads, what ships on AMX) and ``openvino_streams=2`` (the
THROUGHPUT hint, one thread per stream, a call's batches side by side, what ships
on AVX512-BF16 without AMX: ``openvino_backend.default_streams``). Each goes through a real
``Reranker`` (its engine merges concurrent requests), ``top_n`` 5 as the harness's
drop-ins. The harness's own phases (``run.py``): single calls interleaved between
the two, then 8 concurrent callers as threads and as asyncio tasks (every query
distinct), rounds interleaved and pooled.

    python benchmarks/openvino_streams.py [--model FOLDER] [--rounds 3] [--out FILE]

Prints the machine, the versions and both configurations' figures from the same run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heads  # noqa: E402
import machine  # noqa: E402  (offline environment first)
import run  # noqa: E402  (the harness's latency and throughput phases)
import systems  # noqa: E402

TOP_N = 5


def main(argv: list[str] | None = None) -> int:
    parser = heads.sweep_parser(__doc__, requests=8, rounds=3)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--calls", type=int, default=24, help="concurrent calls per round")
    args = parser.parse_args(argv)

    from rerank_plugins import Reranker
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    requests, folder = heads.sweep_inputs(args.data, args.requests, args.model)
    hardware = machine.hardware()
    print(f"{hardware['cpu']} | class {hardware['hardware_class']} | flags "
          f"{' '.join(hardware['cpu_flags'])} | threads {hardware['torch_threads']} | load "
          f"{hardware.get('load_average_at_start')}")
    print(f"versions: {machine.versions()}")
    rerankers, compared = [], []
    for streams in (1, 2):
        scorer = CrossEncoderScorer(folder, backend="openvino", max_length=512,
                                    openvino_streams=streams)
        reranker = Reranker(scorer, cache=None, timeout_s=600)
        system = systems.ours(reranker, TOP_N)[2]  # Reranker.rerank / arerank
        system.name = f"{streams} stream{'s' if streams > 1 else ''}"
        rerankers.append(reranker)
        compared.append((system.name, system))
        print(f"{system.name}: {scorer.describe()}")
    run.run_latency([s for _, s in compared], requests[:2], 1)  # warm-up: kernels per shape
    latency = run.run_latency([s for _, s in compared], requests, args.rounds)["times"]
    pooled, per_round = run.throughput_rounds(compared, requests, args.calls,
                                              args.callers, args.rounds)
    report = {"hardware": hardware, "versions": machine.versions(),
              "settings": {"model": folder, "requests": len(requests), "rounds": args.rounds,
                           "callers": args.callers, "calls_per_round": args.calls,
                           "top_n": TOP_N},
              "streams": {}}
    print(f"{'':>9} {'single p50 ms':>14} {'threads req/s':>14} {'asyncio req/s':>14}"
          "  per round (threads; asyncio)")
    for name, _ in compared:
        row = {"single_p50_ms": round(1000 * statistics.median(latency[name]), 1),
               "threads_req_per_s": round(pooled[name]["threads"], 3),
               "asyncio_req_per_s": round(pooled[name]["asyncio"], 3),
               "per_round_req_per_s": per_round[name]}
        report["streams"][name] = row
        print(f"{name:>9} {row['single_p50_ms']:>14.1f} {row['threads_req_per_s']:>14.3f} "
              f"{row['asyncio_req_per_s']:>14.3f}  {per_round[name]['threads']}; "
              f"{per_round[name]['asyncio']}")
    one, two = (report["streams"][name] for name, _ in compared)
    print(f"two streams / one: single p50 {two['single_p50_ms'] / one['single_p50_ms']:.3f}, "
          f"threads {two['threads_req_per_s'] / one['threads_req_per_s']:.3f}, "
          f"asyncio {two['asyncio_req_per_s'] / one['asyncio_req_per_s']:.3f}")
    for reranker in rerankers:
        reranker.close()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
