"""How big should one forward pass be? A sweep of the token budget per backend (issue #17).

The scorer packs each request's length-sorted pairs into batches of at most
``max_batch_tokens`` padded tokens and ``max_batch_size`` pairs. Bigger is not
faster on a CPU: past a few thousand tokens the activations of one batch no longer
fit the cores' caches. This sweep runs the same 50-candidate requests (cranfield/cisi,
80-250 words, the harness's inputs) through the shipped forward pass at each
(tokens, pairs) budget and prints the median milliseconds per request and the
achieved GFLOP/s, for the fast precision and for fp32 (the adaptive re-score path),
so the defaults in :func:`rerank_plugins.scoring.tokens.default_batch_budget` can be
checked on any machine.

    python benchmarks/batch_budget.py [--model FOLDER] [--backend openvino|torch]
        [--requests 4] [--rounds 2] [--out FILE]
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

#: (max_batch_tokens, max_batch_size) pairs tried; the first is the old default.
BUDGETS = ((8192, 128), (16384, 128), (4096, 128), (2048, 128), (1024, 128),
           (8192, 16), (8192, 8), (2048, 8), (8192, 4))


def sweep(scorer, requests, exact: bool, rounds: int) -> list[dict]:
    from rerank_plugins.scoring.cross_encoder import encoder_flops

    encoded = []
    for index, request in enumerate(requests):
        pairs, _, _ = scorer._encoder.encode(request.query, request.texts, index)
        encoded.append(pairs)
    flops = statistics.median(encoder_flops(scorer.config, [len(p.input_ids) for p in pairs])
                              for pairs in encoded)
    rows = []
    for tokens, size in BUDGETS:
        scorer.max_batch_tokens, scorer.max_batch_size = tokens, size
        scorer._forward(encoded[0], exact=exact)  # warm-up: shapes new to this budget
        times = []
        for _ in range(rounds):
            for pairs in encoded:
                started = time.perf_counter()
                scorer._forward(pairs, exact=exact)
                times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        rows.append({"max_batch_tokens": tokens, "max_batch_size": size,
                     "ms_per_request": round(seconds * 1e3, 1),
                     "gflops": round(flops / seconds / 1e9, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="cross-encoder folder (default: the trained head)")
    parser.add_argument("--backend", default="auto", choices=("auto", "openvino", "torch"))
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    requests = mixed_requests(Path(args.data), ("cranfield", "cisi"),
                              per_collection=max(1, args.requests // 2))
    if not requests:
        sys.exit(f"skip: no cranfield/cisi collections under {args.data} "
                 "(set RERANK_DATA_DIR or pass --data)")
    if args.model:
        folder = args.model
    else:
        import heads

        folder, _ = heads.trained_head(Path(args.data), log=lambda *a: None)
    with tempfile.TemporaryDirectory() as tmp:
        scorer = CrossEncoderScorer(folder, backend=args.backend, compile_cache_dir=tmp)
        defaults = (scorer.max_batch_tokens, scorer.max_batch_size)
        results = {"fast": sweep(scorer, requests, False, args.rounds)}
        if scorer.dtype != "float32":
            results["float32"] = sweep(scorer, requests, True, args.rounds)
    hardware = machine.hardware()
    report = {"hardware": hardware, "versions": machine.versions(), "backend": scorer.backend,
              "dtype": scorer.dtype, "defaults": list(defaults),
              "requests": len(requests), "rounds": args.rounds, "rows": results}
    print(f"{hardware['cpu']} | class {hardware['hardware_class']} | flags "
          f"{','.join(hardware['cpu_flags'])} | backend {scorer.backend} | fast dtype "
          f"{scorer.dtype} | default budget {defaults[0]} tokens / {defaults[1]} pairs")
    for precision, rows in results.items():
        print(f"{precision} path ({len(requests)} requests x {args.rounds} rounds, "
              "median ms of the forward passes of one 50-candidate request):")
        for row in rows:
            print(f"  {row['max_batch_tokens']:>6} tokens / {row['max_batch_size']:>3} pairs: "
                  f"{row['ms_per_request']:7.1f} ms  {row['gflops']:7.1f} GFLOP/s")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
