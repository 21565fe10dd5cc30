"""Where the OpenVINO passes spend their time, op by op (issue #17).

The shipped scorer (``CrossEncoderScorer``, OpenVINO, adaptive fp32 re-score) scores
the harness's requests (50 BM25 candidates of 80-250 words from cranfield/cisi, the
trained head ``heads.TRAINED`` unless ``--model``, 5 exact ranks as the drop-ins ask);
every batch its passes really run is kept. Then a second copy of the same cached IR
is compiled with the scorer's own settings plus OpenVINO's performance counters,
the kept batches are run through it again, and each node's time is summed by part of
the encoder (attention, dense layers, layer norm, the rest) and by op type and kernel.

    python benchmarks/ov_profile.py [--requests 6] [--model FOLDER] [--out FILE]

Prints the machine, the versions and, per precision, the wall time of the kept
batches and the shares. The counters add a little time of their own; the shares, not
the absolute figures, are what this is for.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heads  # noqa: E402
import machine  # noqa: E402  (offline environment first)

#: How a node's name or type places it in the encoder.
PARTS = (("attention", ("scaled_dot_product_attention", "ScaledDotProductAttention")),
         ("dense layers", ("FullyConnected",)),
         ("layer norm", ("MVN",)))


def part_of(node_type: str, node_name: str) -> str:
    for part, needles in PARTS:
        if any(needle in node_name or needle == node_type for needle in needles):
            return part
    return "other"


def profile(compiled_model, batches, input_names, rounds: int) -> dict:
    """Node times summed over ``rounds`` runs of every batch, and the wall time."""
    request = compiled_model.create_infer_request()
    for batch in batches:  # first run of each shape: kernels are built here
        request.infer({name: batch[name] for name in input_names})
    by_part: collections.Counter = collections.Counter()
    by_kernel: collections.Counter = collections.Counter()
    started = time.perf_counter()
    for _ in range(rounds):
        for batch in batches:
            request.infer({name: batch[name] for name in input_names})
            for node in request.profiling_info:
                ms = node.real_time.total_seconds() * 1e3
                by_part[part_of(node.node_type, node.node_name)] += ms
                by_kernel[f"{node.node_type} [{node.exec_type}]"] += ms
    wall = (time.perf_counter() - started) * 1e3 / rounds
    total = sum(by_part.values()) or 1.0
    pairs = sum(int(batch["input_ids"].shape[0]) for batch in batches)
    parts = {k: v / rounds for k, v in by_part.items()}
    return {"batches": len(batches), "pairs": pairs, "wall_ms_per_round": round(wall, 1),
            "attention_ms_per_pair": round(parts.get("attention", 0.0) / max(1, pairs), 2),
            "node_ms_per_round": round(total / rounds, 1),
            "parts": {k: round(v / total, 3) for k, v in by_part.most_common()},
            "kernels": {k: round(v / total, 3) for k, v in by_kernel.most_common(12)}}


def main(argv: list[str] | None = None) -> int:
    parser = heads.sweep_parser(__doc__, requests=6, rounds=2)
    parser.add_argument("--head", type=int, default=5, help="exact ranks per request")
    args = parser.parse_args(argv)

    import openvino as ov

    from rerank_plugins.scoring.base import ScoreRequest
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.openvino_backend import PRECISION_HINTS

    requests, folder = heads.sweep_inputs(args.data, args.requests, args.model)
    scorer = CrossEncoderScorer(folder, backend="openvino", max_length=512)
    encoder = scorer._compiled
    kept: dict[str, list] = collections.defaultdict(list)
    run_many = encoder.run_many

    def keep(batches, dtype):
        kept[dtype].extend(batches)
        return run_many(batches, dtype)

    encoder.run_many = keep
    for request in requests:
        scorer.score_many([ScoreRequest(request.query, request.texts, head=args.head)])
    encoder.run_many = run_many

    core = ov.Core()
    model = core.read_model(str(encoder.folder / "model.xml"))
    results = {}
    for dtype, batches in kept.items():
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[dtype],
                  "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
        compiled = core.compile_model(model, "CPU", config)
        results[dtype] = profile(compiled, batches, encoder.input_names, args.rounds)

    hardware = machine.hardware()
    print(f"{hardware['cpu']} | class {hardware['hardware_class']} | flags "
          f"{' '.join(hardware['cpu_flags'])} | load {hardware.get('load_average_at_start')}")
    print(f"versions: {machine.versions()}")
    print(f"scorer: {scorer.describe()}; {len(requests)} requests, {args.head} exact ranks, "
          f"{args.rounds} profiled rounds")
    for dtype, row in results.items():
        role = "fast pass" if dtype == scorer.dtype else "fp32 re-score"
        print(f"{dtype} ({role}): {row['batches']} batches of {row['pairs']} pairs, "
              f"{row['wall_ms_per_round']} ms wall per round ({row['node_ms_per_round']} ms "
              f"in nodes; attention {row['attention_ms_per_pair']} ms per pair)")
        print("  by part:   " + ", ".join(f"{k} {v:.0%}" for k, v in row["parts"].items()))
        print("  by kernel: " + ", ".join(f"{k} {v:.0%}" for k, v in row["kernels"].items()
                                          if v >= 0.01))
    if args.out:
        args.out.write_text(json.dumps({
            "hardware": hardware, "versions": machine.versions(),
            "scorer": scorer.describe(), "requests": len(requests), "head": args.head,
            "rounds": args.rounds, "profile": results}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
