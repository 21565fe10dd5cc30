"""How big should one forward pass be? A sweep of the token budget per backend (issue #17).

The scorer packs each request's length-sorted pairs into batches of at most
``max_batch_tokens`` padded tokens and ``max_batch_size`` pairs. Bigger is not
faster on a CPU: past a few thousand tokens the activations of one batch no longer
fit the cores' caches. This sweep runs the same 50-candidate requests (cranfield/cisi,
80-250 words, the harness's inputs) through the shipped forward pass at each
(tokens, pairs) budget and prints the median milliseconds per request and the
achieved GFLOP/s, for the fast precision, for fp32 over whole requests (the path of
a CPU without bf16) and for fp32 over each request's best few candidates (the shape of
the adaptive re-score: ``--rescore`` texts, 7 by default, what the harness re-scores
at top_n=5 on the trained head), so the defaults in
:func:`rerank_plugins.scoring.tokens.default_batch_budget` can be checked on any
machine.

    python benchmarks/batch_budget.py [--model FOLDER] [--backend openvino|torch]
        [--requests 4] [--rounds 2] [--rescore 7] [--out FILE]
"""

from __future__ import annotations

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

import heads  # noqa: E402
import machine  # noqa: E402

#: (max_batch_tokens, max_batch_size) pairs tried; the first is the old default.
BUDGETS = ((8192, 128), (16384, 128), (4096, 128), (2048, 128), (1024, 128),
           (8192, 16), (8192, 8), (2048, 8), (8192, 4), (1024, 8), (1024, 4), (512, 4))


def sweep(scorer, requests, exact: bool, rounds: int, best: int | None = None) -> list[dict]:
    """Rows of ms per request at each budget; ``best`` keeps only each request's
    ``best`` top-scored candidates (by the fast pass), as the re-score does."""
    from rerank_plugins.scoring.cross_encoder import encoder_flops

    encoded = []
    for index, request in enumerate(requests):
        pairs, _, _ = scorer._encoder.encode(request.query, request.texts, index)
        if best is not None:
            fast = scorer._forward(pairs, exact=False)
            top = sorted(range(len(pairs)), key=lambda i: fast[i], reverse=True)[:best]
            pairs = [pairs[i] for i in top]
        encoded.append(pairs)
    flops = statistics.median(encoder_flops(scorer.config, [len(p.input_ids) for p in pairs])
                              for pairs in encoded)
    rows = []
    for tokens, size in BUDGETS:
        if exact:  # the fp32 passes have their own budget
            scorer.exact_batch_tokens, scorer.exact_batch_size = tokens, size
        else:
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
    parser = heads.sweep_parser(__doc__, requests=4, rounds=2)
    parser.add_argument("--backend", default="auto", choices=("auto", "openvino", "torch"))
    parser.add_argument("--rescore", type=int, default=7,
                        help="candidates per request in the re-score sweep")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    requests, folder = heads.sweep_inputs(args.data, args.requests, args.model)
    with tempfile.TemporaryDirectory() as tmp:
        scorer = CrossEncoderScorer(folder, backend=args.backend, compile_cache_dir=tmp)
        defaults = (scorer.max_batch_tokens, scorer.max_batch_size)
        exact_defaults = (scorer.exact_batch_tokens, scorer.exact_batch_size)
        results = {"fast": sweep(scorer, requests, False, args.rounds)}
        if scorer.dtype != "float32":
            results["float32"] = sweep(scorer, requests, True, args.rounds)
            results[f"float32 re-score of the best {args.rescore}"] = sweep(
                scorer, requests, True, args.rounds, best=args.rescore)
    hardware = machine.hardware()
    report = {"hardware": hardware, "versions": machine.versions(), "backend": scorer.backend,
              "dtype": scorer.dtype, "defaults": list(defaults),
              "fp32_defaults": list(exact_defaults),
              "requests": len(requests), "rounds": args.rounds, "rows": results}
    print(f"{hardware['cpu']} | class {hardware['hardware_class']} | flags "
          f"{','.join(hardware['cpu_flags'])} | backend {scorer.backend} | fast dtype "
          f"{scorer.dtype} | default budget {defaults[0]} tokens / {defaults[1]} pairs, "
          f"fp32 {exact_defaults[0]} / {exact_defaults[1]}")
    for precision, rows in results.items():
        print(f"{precision} path ({len(requests)} requests x {args.rounds} rounds, "
              "median ms of one request's forward passes):")
        for row in rows:
            print(f"  {row['max_batch_tokens']:>6} tokens / {row['max_batch_size']:>3} pairs: "
                  f"{row['ms_per_request']:7.1f} ms  {row['gflops']:7.1f} GFLOP/s")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
