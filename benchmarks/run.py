"""Side-by-side benchmark: our reranker against LlamaIndex's and LangChain's own.

Everything runs in one process on the same inputs: real queries from the shared
Cranfield and CISI collections, each with 50 BM25 candidates of 80-250 words, and
CrossEncoder folders with exactly the architecture and cost of
ms-marco-MiniLM-L-6-v2 (built from the bundled MiniLM weights): a head trained by
our own ``rerank-ops finetune`` (``heads.py``; built once, cached outside the repo)
on which speed and agreement are judged, and the seeded random head (all scores
of a query within ~0.01: the worst case for reduced precision) reported beside
it. Systems are timed interleaved, rotating which goes first, so load changes hit
all of them alike.

Measured:

* latency p50/p90 per call of each system's public API, and ratios to the peers
  (our drop-ins return ``--top-n`` results, 5 by default, as an app asks for them;
  the peers return full rankings, which costs them the same: they score every
  candidate either way);
* ranking agreement of our default (auto backend and dtype, adaptive fp32
  re-scoring) with the torch fp32 reference, per head, on the 80-250-word inputs
  and on long inputs (two candidates joined: 300-512 tokens, attention-heavy),
  with the share of candidates re-scored in fp32;
* the bi-encoder default path with a document-embedding store: cold and warm p50
  and the store's hit rate;
* throughput with 8 concurrent callers, as threads and as asyncio tasks (2 rounds,
  interleaved over the systems, pooled; each round's figure kept to show the spread);
* the cache-hit path (every pair cached) in memory and in a real redis-server;
* the guarded pipeline (cache miss, telemetry, event log) over the bare scorer;
* achieved model FLOP/s against this machine's measured bf16 matmul peak: of the
  bf16 forward pass alone (the target), and of the whole scorer call (tokenising,
  bf16 pass and fp32 re-score; the request's model FLOPs over its time);
* memory: the cache byte cap, and RSS growth over 10k requests (``--soak``).

Usage::

    python benchmarks/run.py            # full run (a few minutes on a quiet machine)
    python benchmarks/run.py --quick    # smaller run
    python benchmarks/run.py --soak     # adds the 10k-request RSS soak

Writes ``benchmarks/results/<timestamp>.json`` and ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' redis-server helper

import heads  # noqa: E402
import machine  # noqa: E402
import systems  # noqa: E402
from workload import DEFAULT_DATA, BenchRequest, mixed_requests  # noqa: E402

RESULTS = HERE / "results"
TOP_K = 5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- setup ------------------------------------------------------------------------
def install_telemetry() -> None:
    """A real OpenTelemetry SDK, so the pipeline's metrics and spans cost what they do
    in production (an in-memory metric reader; spans are built and dropped)."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    trace.set_tracer_provider(TracerProvider())


def spearman(reference: list[str], other: list[str]) -> float:
    """Spearman correlation of two full rankings of the same ids."""
    position = {doc_id: rank for rank, doc_id in enumerate(other)}
    n = len(reference)
    if n < 2:
        return 1.0
    d2 = sum((rank - position[doc_id]) ** 2 for rank, doc_id in enumerate(reference))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


# -- phases -----------------------------------------------------------------------
def run_latency(all_systems, requests: list[BenchRequest], rounds: int) -> dict:
    """Per-call seconds of every system, interleaved with a rotating start."""
    times: dict[str, list[float]] = {s.name: [] for s in all_systems}
    rankings: dict[str, dict[str, list[str]]] = {s.name: {} for s in all_systems}
    step = 0
    for round_index in range(rounds):
        for request in requests:
            shift = step % len(all_systems)
            step += 1
            for system in all_systems[shift:] + all_systems[:shift]:
                system.before_call()
                prepared = system.prepare(request)
                started = time.perf_counter()
                ranking = system.rank(request, prepared)
                times[system.name].append(time.perf_counter() - started)
                if round_index == 0:
                    rankings[system.name][request.query_id + "@" + request.collection] = ranking
        log(f"latency round {round_index + 1}/{rounds} done")
    return {"times": times, "rankings": rankings}


def agreement(reference: dict[str, list[str]], ours: dict[str, list[str]]) -> dict:
    rhos, same_top_ordered, same_top_set = [], 0, 0
    for key, ref in reference.items():
        mine = ours[key]
        rhos.append(spearman(ref, mine))
        same_top_ordered += ref[:TOP_K] == mine[:TOP_K]
        same_top_set += set(ref[:TOP_K]) == set(mine[:TOP_K])
    n = max(1, len(reference))
    return {"queries": len(reference), "spearman_min": min(rhos, default=float("nan")),
            "spearman_median": statistics.median(rhos) if rhos else float("nan"),
            "top5_identical_ordered": same_top_ordered / n,
            "top5_identical_set": same_top_set / n}


def long_requests(requests: list[BenchRequest]) -> list[BenchRequest]:
    """Each candidate joined with the next one: 300-512-token inputs on the same queries."""
    out = []
    for request in requests:
        n = len(request.texts)
        texts = tuple(f"{request.texts[i]} {request.texts[(i + 1) % n]}" for i in range(n))
        out.append(dataclasses.replace(request, texts=texts))
    return out


def _ranking(doc_ids, scores) -> list[str]:
    return [doc_ids[i] for i in sorted(range(len(scores)), key=lambda i: -scores[i])]


def score_agreement(reference, candidate, requests: list[BenchRequest]) -> dict:
    """Bare ``score_many`` of ``candidate`` against the fp32 ``reference``, per query."""
    from rerank_plugins.scoring.base import ScoreRequest

    ref_rank, our_rank, exact, tokens = {}, {}, 0, []
    for request in requests:
        key = request.query_id + "@" + request.collection
        [ref] = reference.score_many([ScoreRequest(request.query, request.texts)])
        [ours] = candidate.score_many([ScoreRequest(request.query, request.texts)])
        ref_rank[key] = _ranking(request.doc_ids, ref.scores)
        our_rank[key] = _ranking(request.doc_ids, ours.scores)
        exact += ours.extra.get("exact", 0)
        tokens.extend(ours.extra.get("token_lengths", []))
    row = agreement(ref_rank, our_rank)
    row["fp32_rescored_share"] = exact / max(1, sum(len(r.texts) for r in requests))
    row["tokens_median"] = statistics.median(tokens) if tokens else None
    return row


def run_embedding_store(requests: list[BenchRequest], rounds: int, backend: str) -> dict:
    """The default bi-encoder with a memory document-embedding store: a cold call (store
    emptied first: every document embedded), a warm call (same documents, another
    query: only the query embedded), interleaved; then the hit rate of one pass over
    the workload followed by a pass with new queries (documents recurring, as RAG
    chunks do)."""
    from rerank_plugins.cache.embeddings import MemoryEmbeddingStore
    from rerank_plugins.scoring import load_scorer
    from rerank_plugins.scoring.base import ScoreRequest

    store = MemoryEmbeddingStore()
    scorer = load_scorer(None, backend=backend, embedding_store=store)
    plain = load_scorer(None, backend=backend)
    cold, warm, none = [], [], []
    scorer.score_many([ScoreRequest(requests[0].query, requests[0].texts)])  # warm-up
    for round_index in range(rounds):
        for request in requests:
            store.clear()
            started = time.perf_counter()
            scorer.score_many([ScoreRequest(request.query, request.texts)])
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            scorer.score_many([ScoreRequest(f"{request.query} ({round_index})",
                                            request.texts)])
            warm.append(time.perf_counter() - started)
            started = time.perf_counter()
            plain.score_many([ScoreRequest(request.query, request.texts)])
            none.append(time.perf_counter() - started)
    store.clear()
    store.hits = store.misses = 0
    for suffix in ("", " (later)"):
        for request in requests:
            scorer.score_many([ScoreRequest(request.query + suffix, request.texts)])
    return {"scorer": scorer.describe(), "no_store_p50_ms": 1000 * statistics.median(none),
            "cold_p50_ms": 1000 * statistics.median(cold),
            "warm_p50_ms": 1000 * statistics.median(warm),
            "two_pass_hit_rate": store.stats()["hit_rate"], "calls": len(cold),
            "vectors_stored": len(store), "store_bytes": store.bytes_used}


def run_throughput(system, requests: list[BenchRequest], total: int, concurrency: int,
                   mode: str) -> float:
    """Seconds for ``total`` calls with ``concurrency`` callers in flight."""
    # every call distinct (a numbered query), so our cache never answers a repeat
    work = [dataclasses.replace(requests[i % len(requests)],
                                query=f"{requests[i % len(requests)].query} ({i})")
            for i in range(total)]
    prepared = [system.prepare(r) for r in work]
    system.before_call()
    started = time.perf_counter()
    if mode == "threads":
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(system.rank, work, prepared))
    else:
        async def main() -> None:
            gate = asyncio.Semaphore(concurrency)

            async def one(request, inputs):
                async with gate:
                    await system.arank(request, inputs)

            await asyncio.gather(*(one(r, p) for r, p in zip(work, prepared, strict=True)))

        asyncio.run(main())
    return time.perf_counter() - started


def throughput_rounds(names_and_systems, requests: list[BenchRequest], total: int,
                      concurrency: int, rounds: int) -> tuple[dict, dict]:
    """Every system and mode ``rounds`` times, interleaved (a slow spell of the machine
    lands on all of them alike); returns pooled req/s (all calls over all seconds) and
    the per-round req/s that show the spread."""
    seconds: dict = {}
    for _ in range(rounds):
        for name, system in names_and_systems:
            for mode in ("threads", "asyncio"):
                seconds.setdefault(name, {}).setdefault(mode, []).append(
                    run_throughput(system, requests, total, concurrency, mode))
    pooled = {name: {mode: total * len(times) / sum(times) for mode, times in row.items()}
              for name, row in seconds.items()}
    per_round = {name: {mode: [round(total / t, 4) for t in times]
                        for mode, times in row.items()} for name, row in seconds.items()}
    return pooled, per_round


def run_pipeline_overhead(scorer, reranker, requests: list[BenchRequest], rounds: int) -> dict:
    """Bare scorer vs the guarded pipeline on the same request, back to back."""
    from rerank_plugins.scoring.base import ScoreRequest

    ratios, bare_times, guarded_times = [], [], []
    for round_index in range(rounds):
        for position, request in enumerate(requests):
            candidates = [{"id": d, "text": t, "retrieval_score": s} for d, t, s in
                          zip(request.doc_ids, request.texts, request.retrieval_scores,
                              strict=True)]
            pair = {}
            order = ("bare", "guarded") if (position + round_index) % 2 == 0 else (
                "guarded", "bare")
            for arm in order:
                reranker.cache.clear()
                started = time.perf_counter()
                if arm == "bare":
                    scorer.score_many([ScoreRequest(request.query, request.texts)])
                else:
                    result = reranker.rerank(request.query, candidates)
                    assert result.status.value == "ok", result.status
                pair[arm] = time.perf_counter() - started
            bare_times.append(pair["bare"])
            guarded_times.append(pair["guarded"])
            ratios.append(pair["guarded"] / pair["bare"])
    return {"bare_p50_s": statistics.median(bare_times),
            "guarded_p50_s": statistics.median(guarded_times),
            "overhead_median_paired": statistics.median(ratios) - 1.0,
            "overhead_of_medians": statistics.median(guarded_times)
            / statistics.median(bare_times) - 1.0,
            "pairs": len(ratios)}


def time_cache_hits(reranker, request: BenchRequest, calls: int) -> dict:
    candidates = [{"id": d, "text": t} for d, t in zip(request.doc_ids, request.texts,
                                                       strict=True)]
    first = reranker.rerank(request.query, candidates)
    deadline = time.monotonic() + 120  # each miss re-scores: seconds under load
    while reranker.rerank(request.query, candidates).status.value != "cache":
        if time.monotonic() > deadline:  # Redis writes are asynchronous
            return {"error": f"cache never served all pairs (first status {first.status})"}
        time.sleep(0.02)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        result = reranker.rerank(request.query, candidates)
        times.append(time.perf_counter() - started)
        if result.status.value != "cache":
            return {"error": f"status {result.status.value} on a warm cache"}
    return {"p50_ms": 1000 * statistics.median(times), "p90_ms": 1000 * percentile(times, 0.9),
            "calls": calls}




def model_flops(scorer, requests: list[BenchRequest], bare_times: list[float],
                peaks: dict[str, float]) -> dict:
    from rerank_plugins.scoring.base import ScoreRequest
    from rerank_plugins.scoring.cross_encoder import encoder_flops

    per_request = []
    for request in requests:
        [out] = scorer.score_many([ScoreRequest(request.query, request.texts)])
        per_request.append(encoder_flops(scorer.config, out.extra["token_lengths"]))
    flops = statistics.median(per_request)
    achieved = flops / statistics.median(bare_times)
    compute_dtype = "bfloat16" if scorer.dtype == "bfloat16" else "float32"
    # the model's own pass at its compute dtype, alone: the same requests' pairs,
    # already tokenized, through the fast forward pass (no fp32 re-score)
    rates = []
    for request, pass_flops in zip(requests, per_request, strict=True):
        pairs, _, _ = scorer._encoder.encode(request.query, request.texts, 0)
        scorer._forward(pairs, exact=False)  # this request's shapes, once
        started = time.perf_counter()
        scorer._forward(pairs, exact=False)
        rates.append(pass_flops / (time.perf_counter() - started))
    pass_rate = statistics.median(rates)
    return {"model_gflop_per_request": flops / 1e9, "achieved_gflops": achieved / 1e9,
            "forward_pass_gflops": pass_rate / 1e9,
            "forward_pass_fraction_of_bf16_peak": pass_rate / peaks["bfloat16"],
            "peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
            "fraction_of_bf16_peak": achieved / peaks["bfloat16"],
            "fraction_of_own_dtype_peak": achieved / peaks[compute_dtype],
            "compute_dtype": compute_dtype}


def cache_byte_cap() -> dict:
    from rerank_plugins.cache.memory import MemoryCache

    cap = 1 << 20
    cache = MemoryCache(max_bytes=cap, max_entries=10**7, ttl_s=None)
    for start in range(0, 100_000, 1000):
        cache.set_many({f"{i:064x}": float(i) for i in range(start, start + 1000)})
    return {"max_bytes": cap, "bytes_used": cache.bytes_used, "entries": len(cache),
            "honoured": cache.bytes_used <= cap}


def rss_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def soak(reranker, requests: list[BenchRequest], total: int) -> dict:
    """``total`` requests through the pipeline: varied queries, mostly cache hits,
    a new (query, 10 candidates) pair every 10th call, so model, cache inserts,
    telemetry and the event log all keep working."""
    import gc

    pool = [(r.query, [{"id": d, "text": t} for d, t in zip(r.doc_ids[:10], r.texts[:10],
                                                             strict=True)])
            for r in requests]
    warm = min(500, total // 10)
    baseline = None
    started = time.perf_counter()
    for index in range(total):
        query, candidates = pool[index % len(pool)]
        if index % 10 == 0:
            query = f"{query} #{index}"
        reranker.rerank(query, candidates)
        if index + 1 == warm:
            gc.collect()
            baseline = rss_mib()
        if (index + 1) % 2000 == 0:
            log(f"soak {index + 1}/{total}")
    gc.collect()
    final = rss_mib()
    return {"requests": total, "rss_after_warmup_mib": baseline, "rss_end_mib": final,
            "growth_mib": final - baseline, "seconds": time.perf_counter() - started,
            "cache_bytes": getattr(reranker.cache, "bytes_used", None)}


# -- report -----------------------------------------------------------------------
def table(report: dict) -> str:
    lat = report["latency"]
    peers = [name for name, row in lat.items() if row["kind"] == "peer"]
    lines = ["| system | p50 ms | p90 ms | " + " | ".join(f"p50 / {p.split('.')[0]}"
                                                          for p in peers) + " |",
             "|---|---:|---:|" + "---:|" * len(peers)]
    for name, row in lat.items():
        ratios = " | ".join(f"{row['p50_s'] / lat[p]['p50_s']:.2f}" for p in peers)
        lines.append(f"| {name} | {1000 * row['p50_s']:.0f} | {1000 * row['p90_s']:.0f} | "
                     f"{ratios} |")
    lines.append("")
    lines.append("| throughput, 8 concurrent (req/s) | threads | asyncio |")
    lines.append("|---|---:|---:|")
    for name, row in report["throughput"].items():
        lines.append(f"| {name} | {row['threads']:.2f} | {row['asyncio']:.2f} |")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT MET")


def summary(report: dict) -> list[str]:
    """One line per target: measured, target for this hardware class, met or not."""
    lat, thr = report["latency"], report["throughput"]
    hw_class = report["hardware"]["hardware_class"]
    targets = machine.TARGETS[hw_class]
    peers = [n for n, r in lat.items() if r["kind"] == "peer"]
    ours_name = "ours.llama_index.CrossEncoderRerank"
    out = [f"hardware class: {hw_class}; targets that apply: {targets} "
           f"+ agreement {machine.AGREEMENT_TARGETS} everywhere",
           f"load average at start {report['hardware']['load_average_at_start']}, "
           f"at end {report.get('load_average_at_end')}"]
    p50_target = targets["p50_ratio"]
    for peer in peers:
        ratio = lat[ours_name]["p50_s"] / lat[peer]["p50_s"]
        out.append(f"p50 ours(llama_index drop-in) / {peer}: {ratio:.3f} "
                   f"(target <= {p50_target and round(p50_target, 3)}: "
                   f"{_verdict(None if p50_target is None else ratio <= p50_target)})")
    thr_target = targets["throughput_ratio"]
    for peer in peers:
        if peer in thr and ours_name in thr:
            for mode in ("threads", "asyncio"):
                ratio = thr[ours_name][mode] / thr[peer][mode]
                out.append(f"throughput ours / {peer} ({mode}): {ratio:.2f}x (target >= "
                           f"{thr_target}: "
                           f"{_verdict(None if thr_target is None else ratio >= thr_target)})")
    need = machine.AGREEMENT_TARGETS
    for label, agree in report["agreement"].items():
        ok = (agree["spearman_min"] >= need["spearman_min"]
              and agree["top5_identical_ordered"] >= need["top5_identical_ordered"])
        judged = label.startswith("trained")
        out.append(f"agreement vs fp32, {label}: Spearman min {agree['spearman_min']:.4f}, "
                   f"top-5 identical (ordered) {agree['top5_identical_ordered']:.0%}, "
                   f"(as a set) {agree['top5_identical_set']:.0%} over {agree['queries']} "
                   f"queries; {agree['fp32_rescored_share']:.1%} of candidates re-scored in "
                   f"fp32; median {agree['tokens_median']} tokens "
                   f"({_verdict(ok) if judged else 'worst case, reported only: ' + _verdict(ok)})")
    if "embedding_store" in report:
        emb = report["embedding_store"]
        out.append(f"bi-encoder default path ({emb['scorer']['backend']}, "
                   f"{emb['scorer']['dtype']}): no store {emb['no_store_p50_ms']:.0f} ms, "
                   f"cold store {emb['cold_p50_ms']:.0f} ms, warm store "
                   f"{emb['warm_p50_ms']:.0f} ms p50; hit rate over two passes "
                   f"{emb['two_pass_hit_rate']:.0%}")
    for backend, row in report["cache_hit"].items():
        limit = 2.0 if backend == "memory" else 5.0
        ok = "p50_ms" in row and row["p50_ms"] < limit
        out.append(f"cache hit ({backend}): {row} (target < {limit} ms: {_verdict(ok)})")
    pipe = report["pipeline_overhead"]
    out.append(f"guarded pipeline over bare scorer: {pipe['overhead_median_paired']:+.1%} "
               f"(median of {pipe['pairs']} paired runs; target <= +5%: "
               f"{_verdict(pipe['overhead_median_paired'] <= 0.05)})")
    flops = report["flops"]
    peak_target = targets["fraction_of_bf16_peak"]
    share = flops["fraction_of_bf16_peak"]
    if flops["compute_dtype"] == "bfloat16":
        passed = flops["forward_pass_fraction_of_bf16_peak"]
        out.append(f"model FLOP/s, bf16 forward pass: {flops['forward_pass_gflops']:.1f} "
                   f"GFLOP/s, {passed:.0%} of measured bf16 matmul peak "
                   f"{flops['peak_gflops']['bfloat16']:.1f} GFLOP/s (target >= "
                   f"{peak_target}: "
                   f"{_verdict(None if peak_target is None else passed >= peak_target)})")
        out.append(f"whole scorer call (tokenise + bf16 pass + fp32 re-score, the "
                   f"request's model FLOPs over its time): {flops['achieved_gflops']:.1f} "
                   f"GFLOP/s, {share:.0%} of the bf16 peak (fp32 peak "
                   f"{flops['peak_gflops']['float32']:.1f}; reported only)")
    else:  # no native bf16 here: the model runs fp32, its own peak is the yardstick
        out.append(f"model FLOP/s: {flops['achieved_gflops']:.1f} GFLOP/s achieved in fp32, "
                   f"{flops['fraction_of_own_dtype_peak']:.0%} of the measured fp32 matmul "
                   f"peak {flops['peak_gflops']['float32']:.1f} GFLOP/s (emulated bf16 "
                   f"peak {flops['peak_gflops']['bfloat16']:.1f}; the bf16-peak target "
                   f"applies to AMX machines only: n/a)")
    out.append(f"cache byte cap: {report['memory']['cache_byte_cap']}")
    if "soak" in report["memory"]:
        soak_row = report["memory"]["soak"]
        out.append(f"soak: {soak_row} (target growth < 50 MB: "
                   f"{_verdict(soak_row['growth_mib'] * 1.048576 < 50)})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer queries and rounds")
    parser.add_argument("--soak", action="store_true", help="add the 10k-request RSS soak")
    parser.add_argument("--soak-requests", type=int, default=10_000)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "RERANK_DATA_DIR", DEFAULT_DATA)))
    parser.add_argument("--collections", default="cranfield,cisi")
    parser.add_argument("--queries", type=int, help="queries per collection")
    parser.add_argument("--rounds", type=int, help="latency rounds over the queries")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--throughput-rounds", type=int,
                        help="interleaved throughput rounds, pooled (default 2; 1 with --quick)")
    parser.add_argument("--top-n", type=int, default=5,
                        help="top_n of our drop-ins (0: the full ranking); the peers "
                             "always return the full ranking, which costs them the same")
    parser.add_argument("--dtype", default="auto", help="our scorer's dtype")
    parser.add_argument("--quantize", default=None, choices=[None, "int8"])
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"],
                        help="our scorers' backend")
    parser.add_argument("--openvino-streams", type=int, default=None,
                        help="OpenVINO streams for our fast passes (default: what ships, "
                             "the CPU class's default)")
    parser.add_argument("--exact-top", type=int, default=None,
                        help="fixed fp32 re-scoring of the N best (default: adaptive)")
    parser.add_argument("--trained-head", type=Path, default=None,
                        help="use this CrossEncoder folder as the trained head (default: "
                             "build it with rerank-ops finetune, cached; see heads.py)")
    parser.add_argument("--no-long", action="store_true", help="skip the long-input agreement")
    parser.add_argument("--no-embeddings", action="store_true",
                        help="skip the bi-encoder embedding-store phase")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--out", type=Path, help="JSON path (default results/<time>.json)")
    args = parser.parse_args(argv)
    if not args.no_redis and shutil.which("redis-server") is None:
        # its phase comes after the long ones: say so before the first minute
        parser.error("redis-server is not installed (the Redis cache-hit target needs a "
                     "real one): `./scripts/install-system-deps.sh test`, or --no-redis")
    per_collection = args.queries or (3 if args.quick else 6)
    rounds = args.rounds or (1 if args.quick else 2)
    throughput_calls = 2 * args.concurrency if args.quick else 3 * args.concurrency
    throughput_rounds_count = args.throughput_rounds or (1 if args.quick else 2)

    import torch

    from rerank_plugins.cache.memory import MemoryCache
    from rerank_plugins.reranker import Reranker
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.telemetry.sinks import EventLog

    install_telemetry()
    workdir = tempfile.mkdtemp(prefix="rerank-bench-")
    started = time.perf_counter()
    report: dict = {"started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "hardware": machine.hardware(), "versions": machine.versions()}
    try:
        requests = mixed_requests(args.data, tuple(args.collections.split(",")),
                                  per_collection)
        if not requests:
            raise SystemExit(f"no requests: is {args.data} the shared data folder?")
        if args.trained_head:
            folder, trained_info = str(args.trained_head), {"folder": str(args.trained_head)}
        else:
            folder, trained_info = heads.trained_head(args.data, log)
        random_folder = heads.random_head(workdir)
        log(f"{len(requests)} requests; trained head {folder}; random head {random_folder}")
        ours_kwargs = {"dtype": args.dtype, "quantize": args.quantize, "backend": args.backend,
                       "exact_top": args.exact_top, "max_length": 512,
                       "openvino_streams": args.openvino_streams}
        started_load = time.perf_counter()
        scorer = CrossEncoderScorer(folder, **ours_kwargs)
        load_seconds = time.perf_counter() - started_load
        random_scorer = CrossEncoderScorer(random_folder, **ours_kwargs)
        log(f"ours: {scorer.describe()} (loaded in {load_seconds:.1f} s)")
        event_log = EventLog(os.path.join(workdir, "events"))
        reranker = Reranker(scorer, cache=MemoryCache(), event_log=event_log,
                            timeout_s=600)
        # the peers return full rankings (their agreement with each other needs every
        # rank; their cost does not depend on top_n: both score every candidate and
        # sort); ours return the top_n an app asks for, which sets how many ranks the
        # adaptive re-score keeps exact. Agreement is measured on the bare scorer.
        full = len(requests[0].doc_ids)
        top_n = min(args.top_n or full, full)
        peer_systems = [systems.llama_index_peer(folder, full),
                        systems.langchain_peer(folder, full)]
        our_systems = systems.ours(reranker, top_n) + [systems.bare_scorer(scorer)]
        worst_case = systems.bare_scorer(random_scorer)
        worst_case.name = "ours.scorer.score_many (bare, random head)"
        torch_scorer = CrossEncoderScorer(folder, **{**ours_kwargs, "backend": "torch"})
        torch_bare = systems.bare_scorer(torch_scorer)
        torch_bare.name = "ours.scorer.score_many (bare, torch backend)"
        everything = peer_systems + our_systems + [worst_case, torch_bare]
        report["settings"] = {
            "requests": len(requests), "collections": args.collections,
            "candidates": len(requests[0].doc_ids), "words_per_candidate": [80, 250],
            "latency_rounds": rounds, "concurrency": args.concurrency,
            "throughput_calls": throughput_calls,
            "throughput_rounds": throughput_rounds_count, "ours": scorer.describe(),
            "ours_top_n": top_n, "peers_top_n": full,
            "ours_random_head": random_scorer.describe(), "ours_load_seconds": load_seconds,
            "max_batch_tokens": scorer.max_batch_tokens, "max_batch_size": scorer.max_batch_size,
            "exact_batch_tokens": scorer.exact_batch_tokens,
            "exact_batch_size": scorer.exact_batch_size, "max_length": scorer.max_length,
            "peer_notes": {s.name: s.notes for s in peer_systems if s.notes},
            "model": "MiniLM-L6 cross-encoder (bundled weights) with a head trained by "
                     f"rerank-ops finetune {trained_info}; speed, peers and throughput on "
                     "it, agreement on it and on the seeded random head",
        }
        for system in everything:  # warm-up: first calls allocate and JIT kernels
            system.before_call()
            system.rank(requests[0], system.prepare(requests[0]))
        log("warm-up done")

        latency = run_latency(everything, requests, rounds)
        report["latency"] = {
            s.name: {"kind": s.kind, "p50_s": statistics.median(latency["times"][s.name]),
                     "p90_s": percentile(latency["times"][s.name], 0.9),
                     "calls": len(latency["times"][s.name])} for s in everything}
        reference = latency["rankings"][peer_systems[0].name]
        report["agreement_peers"] = agreement(reference,
                                              latency["rankings"][peer_systems[1].name])
        report["agreement"] = {}
        inputs = {"80-250 words": requests}
        if not args.no_long:
            inputs["long (two candidates joined)"] = long_requests(requests)
        for head, (head_folder, ours_scorer) in {
                "trained": (folder, scorer), "random": (random_folder, random_scorer)}.items():
            fp32 = CrossEncoderScorer(head_folder, dtype="float32", backend="torch",
                                      max_length=512)
            for label, batch in inputs.items():
                row = score_agreement(fp32, ours_scorer, batch)
                report["agreement"][f"{head} head, {label}"] = row
                log(f"agreement {head} head, {label}: {row}")
            del fp32

        report["throughput"], report["throughput_per_round"] = throughput_rounds(
            [(system.name, system) for system in peer_systems + our_systems[:2]],
            requests, throughput_calls, args.concurrency, throughput_rounds_count)
        for name, row in report["throughput"].items():
            log(f"throughput {name}: {row} (per round {report['throughput_per_round'][name]})")
        report["engine_batches_run"] = reranker.engine.batches_run
        if not args.no_embeddings:
            report["embedding_store"] = run_embedding_store(requests, rounds, args.backend)
            log(f"embedding store: {report['embedding_store']}")

        report["pipeline_overhead"] = run_pipeline_overhead(scorer, reranker, requests, rounds)
        log(f"pipeline overhead: {report['pipeline_overhead']}")
        peaks = {dtype: machine.matmul_peak(dtype) for dtype in ("float32", "bfloat16")}
        report["flops"] = model_flops(scorer, requests[:4],
                                      latency["times"]["ours.scorer.score_many (bare)"], peaks)

        # the deadline is the main reranker's: on a loaded machine a first (miss) call
        # past the default deadline would fall back and never fill the cache
        report["cache_hit"] = {"memory": time_cache_hits(
            Reranker(scorer, cache=MemoryCache(), event_log=event_log, timeout_s=600),
            requests[0], 200)}
        if not args.no_redis:
            from redis_server import RedisServer

            from rerank_plugins.cache.redis import RedisCache

            server = RedisServer(Path(workdir))
            try:
                cache = RedisCache(f"redis://127.0.0.1:{server.port}/0",
                                   secret="bench-secret", socket_timeout_s=0.5,
                                   connect_timeout_s=0.5)
                report["cache_hit"]["redis"] = time_cache_hits(
                    Reranker(scorer, cache=cache, event_log=event_log, timeout_s=600),
                    requests[0], 200)
            finally:
                server.stop()
        report["memory"] = {"cache_byte_cap": cache_byte_cap()}
        if args.soak:
            report["memory"]["soak"] = soak(
                Reranker(scorer, cache=MemoryCache(max_bytes=8 << 20), event_log=event_log),
                requests, args.soak_requests)
        report["settings"]["torch_threads"] = torch.get_num_threads()
        report["load_average_at_end"] = list(os.getloadavg())
        report["wall_seconds"] = time.perf_counter() - started
        reranker.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"run-{datetime.now():%Y%m%d-%H%M%S}.json"
    text = json.dumps(report, indent=2, default=str)
    out.write_text(text + "\n", encoding="utf-8")
    (RESULTS / "latest.json").write_text(text + "\n", encoding="utf-8")
    hw = report["hardware"]
    print(f"\nhardware: {hw['cpu']}, {hw['logical_cores']} logical cores, flags "
          f"{' '.join(hw['cpu_flags'])}, AMX {'yes' if hw['amx'] else 'no'}, "
          f"torch threads {hw['torch_threads']}, load at start {hw['load_average_at_start']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v))
    print(f"settings: {json.dumps(report['settings'], default=str)}\n")
    print(table(report))
    print()
    for line in summary(report):
        print(line)
    print(f"\nwrote {out} ({report['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
