"""A Redis cache shared by worker processes: one warms it, the others hit it.

Each worker is a separate Python process (as replicas of an app are) with its own
model load, its own ``Reranker`` and its own ``RedisCache``, all pointed at the real
``redis_server`` fixture. Sharing works only with the same model folder (the cache
namespace carries the weights' fingerprint) and the same ``RERANK_PLUGINS_SECRET``
(fingerprints and value signatures are keyed by it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

QUERIES = [
    "how do airplane wings produce lift",
    "what do cats do at night",
]
DOCS = [
    "Cats sleep for most of the day and hunt at night.",
    "An airfoil turns the air downwards, and the reaction lifts the wing.",
    "The stock market closed higher on Tuesday.",
    "Bernoulli's principle relates pressure and speed of air over a wing.",
    "Birds flap their wings to generate lift and thrust.",
    "Owls and cats are nocturnal hunters.",
]

WORKER = r"""
import json, sys
from rerank_plugins import Reranker, RedisCache
from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

model_dir, redis_url = sys.argv[1], sys.argv[2]
queries, docs, secrets = (json.loads(arg) for arg in sys.argv[3:6])
scorer = CrossEncoderScorer(model_dir, dtype="float32")
runs = []
for secret in secrets:  # None: the process's RERANK_PLUGINS_SECRET
    cache = RedisCache(redis_url, socket_timeout_s=1.0, connect_timeout_s=1.0,
                       secret=secret)
    reranker = Reranker(scorer, cache=cache, timeout_s=60, secret=secret)
    results = []
    for query in queries:
        result = reranker.rerank(query, docs)
        results.append({"status": result.status.value, "hits": result.cache_hits,
                        "misses": result.cache_misses,
                        "order": [item.id for item in result],
                        "raw": {item.id: item.raw_score for item in result}})
    cache.flush()
    reranker.close()
    runs.append(results)
print(json.dumps(runs))
"""


def _start_worker(model_dir: str, redis_url: str, secret: str,
                  extra_secrets: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "RERANK_PLUGINS_SECRET": secret, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, model_dir, redis_url, json.dumps(QUERIES),
         json.dumps(DOCS), json.dumps([None, *extra_secrets])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _results(worker: subprocess.Popen) -> list[list[dict]]:
    out, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_one_worker_warms_the_shared_cache_and_another_process_hits_it(ce_folder, redis_db):
    secret = "shared-operator-secret-for-this-fleet"
    [warm] = _results(_start_worker(ce_folder, redis_db.url, secret))
    keys_after_warmup = redis_db.client().dbsize()
    # a second process with the same secret; then, in it, a reranker keyed by another
    # deployment's secret (negative control: same model, same Redis, no sharing)
    hit, foreign = _results(_start_worker(ce_folder, redis_db.url, secret,
                                          ("another-deployments-secret",)))

    assert keys_after_warmup == len(QUERIES) * len(DOCS)
    assert [r["status"] for r in warm] == ["ok"] * len(QUERIES)
    assert all(r["misses"] == len(DOCS) and r["hits"] == 0 for r in warm)

    assert [r["status"] for r in hit] == ["cache"] * len(QUERIES)
    assert all(r["hits"] == len(DOCS) and r["misses"] == 0 for r in hit)
    for before, after in zip(warm, hit, strict=True):
        assert after["order"] == before["order"]
        assert after["raw"] == pytest.approx(before["raw"])

    assert [r["status"] for r in foreign] == ["ok"] * len(QUERIES)
    assert all(r["hits"] == 0 for r in foreign)
