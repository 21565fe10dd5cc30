"""Time one cross-encoder training step, with and without attention-probability dropout.

Why it matters: with dropout on the attention probabilities, PyTorch's scaled
dot-product attention cannot use its fused CPU kernel in training and falls back
to explicit matmuls plus a random mask of batch x heads x length x length
elements; ``rerank-ops finetune`` turns that dropout off by default.

    python benchmarks/finetune_step.py                # batch 16 x 256 tokens, bf16 autocast
    python benchmarks/finetune_step.py --batch 32 --length 128 --steps 5
"""

from __future__ import annotations

import argparse
import json
import time

import machine  # noqa: F401  (sets the offline environment before model imports)


def time_steps(attention_dropout: float, *, batch: int, length: int, steps: int,
               bf16: bool) -> float:
    """Median seconds per forward + backward + AdamW step on random token ids."""
    import statistics

    import torch
    from transformers import AutoModelForSequenceClassification

    from rerank_plugins.scoring.default_model import bundled_model_path

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        bundled_model_path(), num_labels=1, attn_implementation="sdpa",
        attention_probs_dropout_prob=attention_dropout)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(1000, 20000, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    target = torch.rand(batch)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    args = parser.parse_args()
    report = {"machine": machine.hardware(), "versions": machine.versions(),
              "batch": args.batch, "length": args.length, "steps": args.steps,
              "bf16_autocast": not args.fp32}
    for dropout in (0.1, 0.0):
        report[f"attention_dropout_{dropout}"] = round(
            time_steps(dropout, batch=args.batch, length=args.length, steps=args.steps,
                       bf16=not args.fp32), 3)
    report["speedup"] = round(report["attention_dropout_0.1"] / report["attention_dropout_0.0"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
