"""What the adaptive fp32 re-score costs in one call, and what its pass budget buys.

Same inputs and model folder as ``run.py`` (50 BM25 candidates of 80-250 words from
cranfield/cisi; the trained head ``heads.TRAINED`` unless ``--model``). Two parts:

* the split of a bare ``score_many`` call at each exact head (``--heads``, 10 and
  5 by default: the scorer's default and the harness's ``top_n``): tokenising,
  the reduced-precision pass, the fp32 re-score, and how many candidates it took;
* the real error of the reduced-precision scores (every candidate of every request
  scored both ways) against the error calibrated at load and the band it sets, over
  all pairs and over each request's best 15 (where the re-score decides), and how
  often the adaptive call's ordered head equals the fp32 one at each exact head;
* a paired comparison of fp32 pass budgets (``--budgets``, tokens per pass): the
  same requests, the budgets alternating call by call, so drift on a shared
  machine hits every budget alike.

    python benchmarks/rescore_cost.py [--requests 12] [--rounds 3] [--heads 10,5]
        [--budgets 2048,1024] [--model FOLDER] [--out FILE]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import heads  # noqa: E402
import machine  # noqa: E402

from rerank_plugins.scoring.base import ScoreRequest  # noqa: E402

#: The fast-ranked places where the re-score decides: the head and its reach.
REACH = 15


class Split:
    """Wraps a scorer's encoder and forward pass to time each part of a call."""

    def __init__(self, scorer) -> None:
        self.parts = {"tokenise": 0.0, "fast pass": 0.0, "fp32 re-score": 0.0}
        forward, encode = scorer._forward, scorer._encoder.encode

        def timed_forward(pairs, *, exact):
            started = time.perf_counter()
            try:
                return forward(pairs, exact=exact)
            finally:
                key = "fp32 re-score" if exact else "fast pass"
                self.parts[key] += time.perf_counter() - started

        def timed_encode(*args):
            started = time.perf_counter()
            try:
                return encode(*args)
            finally:
                self.parts["tokenise"] += time.perf_counter() - started

        scorer._forward, scorer._encoder.encode = timed_forward, timed_encode

    def reset(self) -> None:
        for key in self.parts:
            self.parts[key] = 0.0


def ranking(scores) -> list[int]:
    """Indices from the best score down."""
    return sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)


def call(scorer, request, head: int):
    started = time.perf_counter()
    [output] = scorer.score_many([ScoreRequest(request.query, request.texts, head=head)])
    return time.perf_counter() - started, output.extra["exact"]


def main(argv: list[str] | None = None) -> int:
    parser = heads.sweep_parser(__doc__, requests=12, rounds=3)
    parser.add_argument("--heads", default="10,5")
    parser.add_argument("--budgets", default="2048,1024")
    args = parser.parse_args(argv)
    heads_wanted = [int(x) for x in args.heads.split(",")]
    budgets = [int(x) for x in args.budgets.split(",")]

    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    requests, folder = heads.sweep_inputs(args.data, args.requests, args.model)
    scorer = CrossEncoderScorer(folder, max_length=512)
    if not scorer.exact_adaptive:
        sys.exit(f"skip: {scorer.describe()} runs fp32 throughout, nothing is re-scored")
    default_budget = scorer.exact_batch_tokens
    split = Split(scorer)
    for request in requests[:2]:  # warm-up: compiled shapes
        call(scorer, request, heads_wanted[0])

    splits = {}
    for head in heads_wanted:
        rows = []
        for _ in range(args.rounds):
            for request in requests:
                split.reset()
                seconds, exact = call(scorer, request, head)
                rows.append({"total": seconds, **dict(split.parts), "exact": exact})
        splits[head] = {key: round(statistics.median(r[key] for r in rows)
                                   * (1 if key == "exact" else 1e3), 1)
                        for key in rows[0]}

    # the error over every pair, and where the re-score decides (each request's best
    # REACH by the fast pass); then whether the adaptive call's head is the fp32 head
    errors, head_errors = [], []
    exact_heads = {head: 0 for head in heads_wanted}
    for index, request in enumerate(requests):
        pairs, _, _ = scorer._encoder.encode(request.query, request.texts, index)
        fast = scorer._forward(pairs, exact=False)
        exact = scorer._forward(pairs, exact=True)
        differences = [abs(a - b) for a, b in zip(fast, exact, strict=True)]
        errors.extend(differences)
        head_errors.extend(differences[i] for i in ranking(fast)[:REACH])
        for head in heads_wanted:
            [output] = scorer.score_many([ScoreRequest(request.query, request.texts,
                                                       head=head)])
            exact_heads[head] += ranking(output.scores)[:head] == ranking(exact)[:head]
    errors.sort()
    error = {"pairs": len(errors), "max": errors[-1],
             "p99": errors[int(0.99 * (len(errors) - 1))],
             "median": statistics.median(errors),
             f"max_best_{REACH}": max(head_errors),
             "calibrated": scorer.precision_error, "band": scorer.exact_band,
             "ordered_head_equals_fp32": {head: f"{n}/{len(requests)}"
                                          for head, n in exact_heads.items()}}

    paired: dict[int, list[float]] = {budget: [] for budget in budgets}
    for _ in range(args.rounds):
        for request in requests:
            for budget in budgets:
                scorer.exact_batch_tokens = budget
                paired[budget].append(call(scorer, request, heads_wanted[-1])[0])
    scorer.exact_batch_tokens = default_budget
    first = paired[budgets[0]]
    comparison = {budget: {
        "median_ms": round(statistics.median(times) * 1e3, 1),
        "paired_median_difference_ms": round(statistics.median(
            b - a for a, b in zip(first, times, strict=True)) * 1e3, 1)}
        for budget, times in paired.items()}

    hardware = machine.hardware()
    print(f"{hardware['cpu']} | class {hardware['hardware_class']} | flags "
          f"{','.join(hardware['cpu_flags'])} | {scorer.describe()} | fp32 budget "
          f"{default_budget} tokens / {scorer.exact_batch_size} pairs (default)")
    print(f"split of one call, medians over {len(requests)} requests x {args.rounds} "
          "rounds (ms; exact = candidates re-scored in fp32):")
    for head, row in splits.items():
        print(f"  {head:>2} exact ranks: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    print(f"fast-pass error over {error['pairs']} real pairs: max {error['max']:.2e}, "
          f"p99 {error['p99']:.2e}, median {error['median']:.2e}; among each request's "
          f"best {REACH}: max {error[f'max_best_{REACH}']:.2e}; calibrated at load "
          f"{error['calibrated']:.2e}, band {error['band']:.2e}")
    print("adaptive call's ordered head equal to the fp32 head: " + ", ".join(
        f"{head} ranks {n}" for head, n in error["ordered_head_equals_fp32"].items()))
    print(f"fp32 pass budget, paired at {heads_wanted[-1]} exact ranks "
          f"({len(first)} calls each):")
    for budget, row in comparison.items():
        print(f"  {budget:>5} tokens: median {row['median_ms']} ms, paired difference "
              f"against {budgets[0]}: {row['paired_median_difference_ms']} ms")
    if args.out:
        args.out.write_text(json.dumps({
            "hardware": hardware, "versions": machine.versions(),
            "scorer": scorer.describe(), "requests": len(requests), "rounds": args.rounds,
            "split_ms": splits, "fast_pass_error": error,
            "fp32_budget": comparison}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
