"""`rerank-ops bench`: latency percentiles and throughput of the guarded reranker on
this machine, across candidate counts, batch token budgets, dtypes and concurrency.

Every request goes through ``Reranker.rerank`` (cache off, so every pair is scored),
which is what an application pays; concurrency is threads calling it at once, so the
inference engine's micro-batching is part of the measurement.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from ..options import collection_option, json_option, model_option, progress_option, seed_option

_VOCABULARY = (
    "boundary layer flow pressure gradient wing lift drag shock wave supersonic "
    "heat transfer laminar turbulent surface velocity temperature model experiment "
    "theory measured results data analysis stability flutter panel cylinder nozzle "
    "library retrieval index query document search relevance indexing catalog "
    "system information users evaluation method approach effect numerical solution "
    "the of and a in to for with on by is are was from at an as this that which"
).split()


def generated_texts(count: int, *, seed: int, low: int = 60, high: int = 160) -> list[str]:
    """Deterministic pseudo-technical passages of ``low``-``high`` words."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_VOCABULARY) for _ in range(rng.randint(low, high))) + "."
            for _ in range(count)]


def load_texts(collection_path: Path | None, *, queries: int, docs: int, seed: int):
    """(queries, documents): generated, or a collection's queries and corpus."""
    if collection_path is None:
        return (generated_texts(queries, seed=seed, low=5, high=12),
                generated_texts(docs, seed=seed + 1))
    from ..collections import load_collection

    collection = load_collection(collection_path, run_file=None)
    rng = random.Random(seed)
    query_texts = sorted(collection.queries.values())
    doc_ids = sorted(collection.corpus)
    return (rng.sample(query_texts, min(queries, len(query_texts))),
            [collection.doc_text(d) for d in rng.sample(doc_ids, min(docs, len(doc_ids)))])


@dataclass
class Cell:
    """One measured combination."""

    dtype: str
    batch_tokens: int | None
    candidates: int
    concurrency: int
    requests: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    requests_per_s: float | None = None
    pairs_per_s: float | None = None
    fallbacks: int = 0
    error: str = ""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure(reranker, cell: Cell, queries: list[str], docs: list[str], *, requests: int,
            warmup: int, seed: int, bar) -> Cell:
    """Run ``requests`` reranks (after ``warmup``) with ``cell.concurrency`` threads."""
    rng = random.Random(seed)
    work = [(queries[i % len(queries)], rng.sample(docs, cell.candidates))
            for i in range(requests + warmup)]
    for query, candidates in work[:warmup]:
        reranker.rerank(query, candidates)
    latencies: list[float] = []
    fallbacks = 0

    def one(item):
        started = time.perf_counter()
        result = reranker.rerank(*item)
        return time.perf_counter() - started, result.status.value

    started = time.perf_counter()
    with ThreadPoolExecutor(cell.concurrency) as pool:
        for seconds, status in pool.map(one, work[warmup:]):
            latencies.append(seconds)
            fallbacks += status == "fallback"
            bar.update(1)
    wall = time.perf_counter() - started
    cell.requests = len(latencies)
    cell.p50_ms = 1000 * statistics.median(latencies)
    cell.p95_ms = 1000 * _percentile(latencies, 0.95)
    cell.p99_ms = 1000 * _percentile(latencies, 0.99)
    cell.requests_per_s = len(latencies) / wall
    cell.pairs_per_s = cell.requests_per_s * cell.candidates
    cell.fallbacks = fallbacks
    return cell


def _scorer(model: str | None, dtype: str, batch_tokens: int | None):
    from rerank_plugins.scoring import load_scorer

    if model is None:
        return load_scorer(None, dtype=dtype)
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    return CrossEncoderScorer(model, dtype=dtype, max_batch_tokens=batch_tokens or 8192)


def run_grid(model, dtypes, batch_budgets, candidate_counts, concurrencies, queries, docs, *,
             requests: int, warmup: int, seed: int, progress) -> tuple[list[Cell], dict]:
    """Measure every combination; a combination that cannot run records its error."""
    from tqdm import tqdm

    from rerank_plugins import Reranker
    from rerank_plugins.errors import RerankError

    budgets = batch_budgets if model is not None else (None,)  # bi-encoder: no token budget
    total = len(dtypes) * len(budgets) * len(candidate_counts) * len(concurrencies) * requests
    bar = tqdm(total=total, desc="bench", unit="req", disable=None if progress is None
               else not progress, leave=False)
    cells: list[Cell] = []
    described: dict = {}
    try:
        for dtype in dtypes:
            for budget in budgets:
                try:
                    scorer = _scorer(model, dtype, budget)
                except (RerankError, ValueError, OSError) as exc:
                    for n in candidate_counts:
                        for threads in concurrencies:
                            cells.append(Cell(dtype, budget, n, threads, error=str(exc)))
                            bar.update(requests)
                    continue
                described = scorer.describe()
                reranker = Reranker(scorer, cache=None, timeout_s=None,
                                    max_candidates=max(candidate_counts),
                                    max_inference_threads=max(concurrencies))
                try:
                    for n in candidate_counts:
                        for threads in concurrencies:
                            cells.append(measure(reranker, Cell(scorer.dtype, budget, n, threads),
                                                 queries, docs, requests=requests,
                                                 warmup=warmup, seed=seed, bar=bar))
                finally:
                    reranker.close()
    finally:
        bar.close()
    return cells, described


def machine_info() -> dict:
    """What the numbers were measured on."""
    import torch

    from rerank_plugins.device import cpu_has_fast_bf16, read_cpu_flags

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "cpu_fast_bf16": cpu_has_fast_bf16(read_cpu_flags()),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def table(cells: list[Cell]) -> str:
    """The printed table."""
    header = (f"{'dtype':<9} {'tokens':>6} {'cands':>5} {'thr':>3} {'p50 ms':>8} "
              f"{'p95 ms':>8} {'p99 ms':>8} {'req/s':>7} {'pairs/s':>8}")
    rows = [header, "-" * len(header)]
    for c in cells:
        budget = "-" if c.batch_tokens is None else str(c.batch_tokens)
        if c.error:
            rows.append(f"{c.dtype:<9} {budget:>6} {c.candidates:>5} {c.concurrency:>3} "
                        f"skipped: {c.error[:60]}")
            continue
        rows.append(f"{c.dtype:<9} {budget:>6} {c.candidates:>5} {c.concurrency:>3} "
                    f"{c.p50_ms:8.1f} {c.p95_ms:8.1f} {c.p99_ms:8.1f} "
                    f"{c.requests_per_s:7.2f} {c.pairs_per_s:8.1f}")
    return "\n".join(rows)


def _ints(_ctx, param, value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("a comma-separated list of integers, e.g. 10,50") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter("give at least one integer >= 1")
    return numbers


def _words(_ctx, _param, value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command("bench")
@model_option
@click.option("--bundled-cross-encoder", is_flag=True,
              help="Benchmark a cross-encoder built from the embedded MiniLM weights (the "
                   "cost of ms-marco-MiniLM-L-6-v2; its scores are meaningless).")
@collection_option
@click.option("--candidates", default="10,50", show_default=True, callback=_ints,
              help="Candidate counts per request (comma-separated).")
@click.option("--batch-tokens", default="8192", show_default=True, callback=_ints,
              help="Cross-encoder token budgets per forward pass (comma-separated).")
@click.option("--dtypes", default="float32", show_default=True, callback=_words,
              help="Compute dtypes (comma-separated): float32, bfloat16, auto.")
@click.option("--concurrency", default="1,2", show_default=True, callback=_ints,
              help="Threads calling rerank at once (comma-separated).")
@click.option("--requests", type=click.IntRange(min=2), default=6, show_default=True,
              help="Measured requests per combination.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Unmeasured requests per combination first (model warm-up).")
@json_option
@seed_option
@progress_option
def bench(model, bundled_cross_encoder, collection_path, candidates, batch_tokens, dtypes,
          concurrency, requests, warmup, json_path, seed, progress) -> None:
    """Measure rerank latency (p50/p95/p99) and throughput on this machine.

    The default run (embedded bi-encoder, 10 and 50 candidates, 1 and 2 threads, 6
    measured requests each) scores about 750 pairs: well under a minute on an idle
    2-core CPU. Widen it with the options.

    \b
    Examples:
      rerank-ops bench
      rerank-ops bench --collection cranfield --candidates 10,50,100 --concurrency 1,4
      rerank-ops bench --bundled-cross-encoder --batch-tokens 2048,8192 \\
          --dtypes float32,bfloat16 --json bench.json
    """
    if model is not None and bundled_cross_encoder:
        raise click.UsageError("use either --model or --bundled-cross-encoder")
    queries, docs = load_texts(collection_path, queries=64, docs=max(200, max(candidates)),
                               seed=seed)
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as scratch:
        if bundled_cross_encoder:
            from rerank_plugins.scoring.cross_encoder import save_cross_encoder_from_bundled

            model = save_cross_encoder_from_bundled(str(Path(scratch) / "minilm-ce"))
        cells, described = run_grid(model, dtypes, batch_tokens, candidates, concurrency,
                                    queries, docs, requests=requests, warmup=warmup, seed=seed,
                                    progress=progress)
    click.echo(f"model: {described.get('model', '?')} ({described.get('kind', '')}) on "
               f"{described.get('device', '?')}, texts: "
               f"{collection_path.name if collection_path else 'generated'}")
    click.echo(table(cells))
    if json_path is not None:
        json_path.write_text(json.dumps(
            {"machine": machine_info(), "model": described, "cells": [asdict(c) for c in cells]},
            indent=2) + "\n", encoding="utf-8")
    if all(c.error for c in cells):
        raise click.ClickException("no combination could run (see the table)")
