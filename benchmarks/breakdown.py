"""Where the time of one 50-candidate rerank goes, and what the hardware allows.

Same workload and model folder as ``run.py`` (MiniLM-L6 cross-encoder built from
the bundled weights; 50 BM25 candidates of 80-250 words from cranfield/cisi).
It reports, on this machine:

* the bare scorer's median time in fp32, bf16, and bf16 with the fp32 re-scoring
  of the top 8 (our default), so the price of each step is visible;
* the operator profile of one bf16 request (matrix products vs attention vs the rest)
  and the FLOP/s each part achieves against the measured bf16 matmul peak;
* the lower bound: the request's FLOPs at 100% of the measured peaks, against a
  third of the peers' p50 taken from a ``run.py`` result file.

    python benchmarks/breakdown.py [--requests 6] [--peers results/latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import machine  # noqa: E402
from workload import DEFAULT_DATA, mixed_requests  # noqa: E402


def median_time(scorer, requests, rounds: int = 2) -> float:
    from rerank_plugins.scoring.base import ScoreRequest

    scorer.score_many([ScoreRequest(requests[0].query, requests[0].texts)])  # warm-up
    times = []
    for _ in range(rounds):
        for request in requests:
            started = time.perf_counter()
            scorer.score_many([ScoreRequest(request.query, request.texts)])
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def attention_flops(config, lengths) -> int:
    """Scores and weighted values: ``2 * 2 * L^2 * h`` FLOPs per layer and sequence."""
    return sum(4 * n * n * int(config.hidden_size) for n in lengths) * int(
        config.num_hidden_layers)


def profile_one(scorer, request) -> dict[str, float]:
    """Self CPU seconds per operator group for one bf16 request."""
    from torch.profiler import ProfilerActivity, profile

    from rerank_plugins.scoring.base import ScoreRequest

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        scorer.score_many([ScoreRequest(request.query, request.texts)])
    groups = {"matrix products (addmm)": 0.0, "attention (sdpa)": 0.0, "everything else": 0.0}
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        if event.key in ("aten::addmm", "aten::mm", "aten::bmm"):
            groups["matrix products (addmm)"] += seconds
        elif "scaled_dot_product" in event.key or "flash_attention" in event.key:
            groups["attention (sdpa)"] += seconds
        else:
            groups["everything else"] += seconds
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--peers", default=str(HERE / "results" / "latest.json"),
                        help="a run.py result file whose peer p50s set the 1/3 target")
    parser.add_argument("--out", default=str(HERE / "results" / "breakdown.json"))
    args = parser.parse_args()

    from rerank_plugins.scoring.base import ScoreRequest
    from rerank_plugins.scoring.cross_encoder import (
        CrossEncoderScorer,
        encoder_flops,
        save_cross_encoder_from_bundled,
    )

    requests = mixed_requests(Path(args.data), ("cranfield", "cisi"),
                              per_collection=max(1, args.requests // 2))
    if not requests:
        sys.exit(f"skip: no cranfield/cisi collections under {args.data} "
                 "(set RERANK_DATA_DIR or pass --data)")
    peaks = {name: machine.matmul_peak(name) for name in ("bfloat16", "float32")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_cross_encoder_from_bundled(os.path.join(tmp, "ce"))
        variants = {
            "fp32": CrossEncoderScorer(folder, dtype="float32"),
            "bf16, no re-scoring": CrossEncoderScorer(folder, dtype="bfloat16", exact_top=0),
            "bf16 + fp32 top 8 (default)": CrossEncoderScorer(folder, dtype="bfloat16"),
        }
        times = {name: median_time(scorer, requests) for name, scorer in variants.items()}
        bf16 = variants["bf16, no re-scoring"]
        lengths = [bf16.score_many([ScoreRequest(r.query, r.texts)])[0].extra["token_lengths"]
                   for r in requests]
        total = statistics.median(encoder_flops(bf16.config, ls) for ls in lengths)
        attention = statistics.median(attention_flops(bf16.config, ls) for ls in lengths)
        groups = profile_one(bf16, requests[len(requests) // 2])
    profiled = sum(groups.values())
    report = {
        "hardware": machine.hardware(), "versions": machine.versions(),
        "requests": len(requests),
        "peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
        "median_seconds": times,
        "gflop_per_request": total / 1e9, "attention_gflop_per_request": attention / 1e9,
        "profile_seconds": groups,
        "matrix_products_fraction_of_bf16_peak":
            (total - attention) / groups["matrix products (addmm)"] / peaks["bfloat16"],
        "attention_fraction_of_bf16_peak":
            attention / groups["attention (sdpa)"] / peaks["bfloat16"],
        "lower_bound_seconds_at_100pct_peak": {
            "bf16 only": total / peaks["bfloat16"],
            "bf16 + fp32 top 8": total / peaks["bfloat16"] + total * 8 / 50 / peaks["float32"],
        },
    }
    try:
        latency = json.loads(Path(args.peers).read_text())["latency"]
        peer_p50 = {name: row["p50_s"] for name, row in latency.items() if row["kind"] == "peer"}
        report["peer_p50_seconds"] = peer_p50
        report["target_seconds"] = min(peer_p50.values()) / 3
    except (OSError, KeyError, ValueError) as exc:
        print(f"no peer figures from {args.peers} ({exc!r})", file=sys.stderr)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    print(f"hardware: {report['hardware']}")
    print(f"peaks: bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s, fp32 "
          f"{peaks['float32'] / 1e9:.0f} GFLOP/s; {total / 1e9:.0f} GFLOP per request "
          f"({attention / 1e9:.0f} in attention)")
    for name, seconds in times.items():
        print(f"  {name:<30} {seconds:6.3f} s  ({total / seconds / 1e9:5.0f} GFLOP/s)")
    for name, seconds in groups.items():
        print(f"  profile: {name:<26} {seconds:6.3f} s  {100 * seconds / profiled:4.0f}%")
    print(f"  matrix products at {100 * report['matrix_products_fraction_of_bf16_peak']:.0f}% "
          f"of the bf16 peak; attention at {100 * report['attention_fraction_of_bf16_peak']:.0f}%")
    bound = report["lower_bound_seconds_at_100pct_peak"]
    print(f"  at 100% of peak: bf16 only {bound['bf16 only']:.3f} s, with the fp32 top 8 "
          f"{bound['bf16 + fp32 top 8']:.3f} s")
    if "target_seconds" in report:
        print(f"  target (1/3 of the faster peer's p50 in {args.peers}): "
              f"{report['target_seconds']:.3f} s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
