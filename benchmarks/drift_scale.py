"""How long does `rerank-ops drift` take on a million events?

Generates a synthetic schema-v1 event log of ``--events`` events spread over eight
days in a temporary directory (64 MiB JSONL parts, as ``JsonlSink`` rotates them,
a few malformed lines, and a shift in the last day: longer queries and lower
scores), then runs the real CLI the way cron does, over the default windows
(reference = previous 7 days, current = last day), and prints the wall time.

    python benchmarks/drift_scale.py                 # 1,000,000 events
    python benchmarks/drift_scale.py --events 200000 --keep /tmp/drift-bench

Exit 0 when the run finished under ``--budget-s`` (default 60) with the expected
verdict (drift, exit 3), else 1. ``--keep DIR`` keeps the log and reuses it next time.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400.0
PART_BYTES = 64 << 20
TEMPLATE = (
    '{{"schema_version":1,"event_id":"{id:032x}","timestamp":"","ts":{ts:.6f},'
    '"model_id":"sentence-transformers/all-MiniLM-L6-v2","model_revision":"d7d5ce9fddb1cfb2",'
    '"status":"{status}","fallback_reason":"{reason}","latency_total_ms":{lat:.3f},'
    '"latency_validate_ms":0.05,"latency_cache_ms":0.04,"latency_score_ms":{lat_s:.3f},'
    '"latency_select_ms":0.03,"n_candidates":{n},"n_kept":{kept},"n_truncated":{trunc},'
    '"cache_hits":0,"cache_misses":{n},"cache_hit_ratio":0.0,"query_fp":"{id:064x}",'
    '"query_length_tokens":{qlen},"doc_length_mean":{dmean:.3f},"doc_length_p50":{dmean:.1f},'
    '"doc_length_max":{dmax:.1f},"retrieval_score_mean":{rmean:.5f},'
    '"retrieval_score_min":1.0,"retrieval_score_max":20.0,"retrieval_score_std":{rstd:.5f},'
    '"score_top1":{top1:.5f},"score_mean":{smean:.5f},"score_std":{sstd:.5f},'
    '"score_gap12":{gap:.5f},"n_kept_after_threshold":{kept},"query_text":null}}\n'
)


def generate(directory: Path, events: int, *, until: float, seed: int = 0) -> int:
    """Write ``events`` events over the 8 days before ``until``; returns bytes written."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(until - 8 * DAY, until - 1.0, events))
    shifted = ts >= until - DAY
    qlen = rng.poisson(np.where(shifted, 14, 9)) + 1
    top1 = np.clip(rng.normal(np.where(shifted, 0.55, 0.7), 0.1), 0, 1)
    smean = np.clip(top1 - rng.uniform(0.05, 0.3, events), 0, 1)
    lat = rng.lognormal(3.5, 0.4, events)
    status = rng.choice(["ok", "cache", "fallback"], events, p=[0.8, 0.18, 0.02])
    n = rng.choice([10, 20, 50], events, p=[0.3, 0.5, 0.2])
    dmean = rng.normal(np.where(shifted, 175, 140), 30)
    rmean = rng.normal(np.where(shifted, 6.0, 8.0), 1.5)
    directory.mkdir(parents=True, exist_ok=True)
    part, written, handle = 0, 0, None
    for i in range(events):
        if handle is None or handle.tell() >= PART_BYTES:
            if handle:
                handle.close()
            handle = open(directory / f"events-bench-{part:04d}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
            part += 1
        if i % 100_000 == 99_999:
            handle.write('{"schema_version":1,"ts":' + f"{ts[i]:.3f}" + ',"broken\n')
        line = TEMPLATE.format(
            id=i, ts=ts[i], status=status[i],
            reason="timeout" if status[i] == "fallback" else "", lat=lat[i],
            lat_s=lat[i] * 0.9, n=n[i], kept=min(5, n[i]), trunc=int(qlen[i] > 30),
            qlen=qlen[i], dmean=dmean[i], dmax=dmean[i] * 1.8, rmean=rmean[i],
            rstd=abs(rmean[i]) * 0.2, top1=top1[i], smean=smean[i], sstd=0.1,
            gap=top1[i] - smean[i])
        handle.write(line)
        written += len(line)
    handle.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--keep", type=Path, default=None, help="Generate here and keep it.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drift-scale-") as scratch:
        root = args.keep or Path(scratch)
        log_dir = root / "events"
        stamp = root / "until.txt"
        if args.keep and stamp.is_file() and any(log_dir.glob("events-*.jsonl")):
            until = float(stamp.read_text())
            print(f"reusing the log in {log_dir}", flush=True)
        else:
            until = time.time()
            started = time.perf_counter()
            size = generate(log_dir, args.events, until=until)
            stamp.write_text(repr(until))
            print(f"generated {args.events:,} events ({size / 1e6:.0f} MB) in "
                  f"{time.perf_counter() - started:.1f}s", flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "ops"), "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "rerank_ops", "drift", "--log-dir", str(log_dir),
                   "--reference-days", "7", "--current-days", "1", "--until", str(until),
                   "--out", str(root / "report"), "--textfile", str(root / "drift.prom"),
                   "--no-progress"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(proc.stdout)
    if proc.returncode not in (0, 3):
        print(proc.stderr, file=sys.stderr)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # on a shared machine wall time includes waiting for a CPU; the CPU time does not
    print(f"rerank-ops drift over {args.events:,} events: {elapsed:.1f}s wall, "
          f"{cpu:.1f}s CPU (exit {proc.returncode}, budget {args.budget_s:.0f}s, "
          f"{os.cpu_count()} CPUs, load average {load:.1f})")
    return 0 if proc.returncode == 3 and elapsed < args.budget_s else 1


if __name__ == "__main__":
    sys.exit(main())
