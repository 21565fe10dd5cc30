"""The cache-hit path alone: p50 of a request whose every pair is cached.

The same measurement as ``run.py``'s cache-hit rows (``run.time_cache_hits``: the
first request of the cranfield/cisi workload, 50 candidates of 80-250 words, 200
calls through ``Reranker.rerank`` with a memory cache and then a real redis-server,
an event log on), without the rest of the harness, so a change to the hit path can
be measured in a minute. The model is loaded (a cache-served request still asks the
scorer for its namespace) but never called after the warm-up. Targets (issue #17,
every hardware class): p50 < 2 ms memory, < 5 ms Redis.

Usage::

    python benchmarks/cache_hit.py              # the shared collections
    python benchmarks/cache_hit.py --calls 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' redis-server helper

import machine  # noqa: E402
from run import time_cache_hits  # noqa: E402
from workload import DEFAULT_DATA, mixed_requests  # noqa: E402

TARGETS_MS = {"memory": 2.0, "redis": 5.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "RERANK_DATA_DIR", DEFAULT_DATA)))
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rerank_plugins import Reranker
    from rerank_plugins.cache.memory import MemoryCache
    from rerank_plugins.scoring.cross_encoder import (
        CrossEncoderScorer,
        save_cross_encoder_from_bundled,
    )
    from rerank_plugins.telemetry.sinks import EventLog

    hw = machine.hardware()
    print(f"hardware: {hw['cpu']} ({hw['hardware_class']}), {hw['logical_cores']} logical "
          f"cores, load at start {hw['load_average_at_start']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in machine.versions().items() if v))
    requests = mixed_requests(args.data, ("cranfield", "cisi"), 1)
    if not requests:
        raise SystemExit(f"no cranfield or cisi with a bm25_top100.trec under {args.data}: "
                         "set RERANK_DATA_DIR or pass --data")
    request = requests[0]
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        scorer = CrossEncoderScorer(save_cross_encoder_from_bundled(
            os.path.join(workdir, "ce")), max_length=512)
        event_log = EventLog(os.path.join(workdir, "events"))
        caches = {"memory": lambda: MemoryCache()}
        server = None
        if not args.no_redis:
            from redis_server import RedisServer

            from rerank_plugins.cache.redis import RedisCache

            server = RedisServer(Path(workdir))
            caches["redis"] = lambda: RedisCache(
                f"redis://127.0.0.1:{server.port}/0", secret="bench-secret",
                socket_timeout_s=0.5, connect_timeout_s=0.5)
        try:
            for name, make in caches.items():
                reranker = Reranker(scorer, cache=make(), event_log=event_log, timeout_s=600)
                rows[name] = time_cache_hits(reranker, request, args.calls)
                reranker.close()
        finally:
            if server is not None:
                server.stop()
            event_log.close()
    print(f"request: {len(request.texts)} candidates, {args.calls} calls")
    for name, row in rows.items():
        verdict = "met" if row.get("p50_ms", float("inf")) < TARGETS_MS[name] else "NOT MET"
        print(f"cache hit ({name}): {json.dumps(row)} (target < {TARGETS_MS[name]} ms: "
              f"{verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
