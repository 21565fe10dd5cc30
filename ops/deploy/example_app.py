"""A process that runs the real reranker under steady load and exposes its metrics.

It is what the local Prometheus stack (``ops/deploy/prometheus``) and the live
monitoring test watch: the default :class:`BiEncoderScorer` behind the guarded
:class:`Reranker` (cache, deadline, circuit breaker, event log), a small built-in
corpus with repeated queries (cache hits), long documents (truncations) and
varied candidate counts, and switchable faults so alerts can be seen firing.

Faults are named in a JSON list in ``--faults-file`` (re-read twice a second):

- ``scorer_outage``: the model raises on every call (fallbacks, then the circuit
  opens);
- ``scorer_slow``: the model takes longer than the deadline (timeout fallbacks);
- ``event_log_failure``: the event-log directory is replaced by a regular file,
  as when a cleanup job removes it (events are dropped and counted).

A cache outage needs no switch: stop or pause the Redis server given by
``--redis-url`` (``kill -STOP <pid>``).

``--drift-port`` serves the ``*.prom`` files of ``--textfile-dir`` the way the
node_exporter textfile collector would, so the series that ``rerank-ops drift``
publishes can be scraped as their own job.

Example::

    python ops/deploy/example_app.py --port 9464 --drift-port 9465 \\
        --textfile-dir /tmp/rerank-textfiles --faults-file /tmp/rerank-faults.json
    echo '["scorer_outage"]' > /tmp/rerank-faults.json   # start an outage
    echo '[]' > /tmp/rerank-faults.json                  # end it
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rerank_plugins.telemetry.prometheus import start_metrics_server

logger = logging.getLogger("rerank-example-app")

FAULTS = ("scorer_outage", "scorer_slow", "event_log_failure")

_TOPICS = {
    "aviation": ["wings generate lift from the pressure difference over an airfoil",
                 "jet engines compress air, burn fuel and expel hot exhaust for thrust",
                 "pilots use flaps to increase lift at low landing speeds",
                 "turbulence comes from unstable air masses and wind shear"],
    "cooking": ["bread rises because yeast ferments sugar into carbon dioxide",
                "searing meat browns the surface through the Maillard reaction",
                "salt in pasta water seasons the noodles from the inside",
                "emulsions such as mayonnaise hold oil droplets suspended in water"],
    "astronomy": ["the moon's phases follow its orbit relative to the sun and earth",
                  "black holes bend light so strongly that nothing escapes the horizon",
                  "stars fuse hydrogen into helium in their cores",
                  "comets grow tails of gas and dust when they near the sun"],
    "biology": ["mitochondria produce most of the cell's ATP through respiration",
                "enzymes lower the activation energy of chemical reactions",
                "photosynthesis turns light, water and carbon dioxide into sugar",
                "vaccines train the immune system to recognise a pathogen"],
    "computing": ["a hash table maps keys to buckets for constant-time lookups",
                  "garbage collectors reclaim memory no longer reachable by the program",
                  "TCP retransmits segments that are not acknowledged in time",
                  "a cache keeps recent results close to avoid repeating slow work"],
}
_QUERIES = [
    "how do airplane wings create lift", "why does bread dough rise",
    "what causes the phases of the moon", "how do cells make energy",
    "how does a hash map find a key fast", "what makes a jet engine push",
    "why sear a steak before roasting", "can light escape a black hole",
    "how do vaccines protect against disease", "what does a garbage collector free",
    "why is turbulence bumpy", "how do plants make sugar",
]


def build_corpus(seed: int = 7) -> list[str]:
    """Short documents from every topic plus long ones that exceed the model's length."""
    rng = random.Random(seed)
    documents = []
    for sentences in _TOPICS.values():
        for sentence in sentences:
            documents.append(sentence)
            documents.append(f"In short, {sentence}; this is a common exam question.")
    # ~600 words: past the 256-token window of MiniLM, so these count as truncations
    for sentences in _TOPICS.values():
        documents.append(" ".join(rng.choice(sentences) for _ in range(50)))
    return documents


class FaultSwitch:
    """The set of active faults, read from a JSON file that an operator edits."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.active: frozenset[str] = frozenset()
        self._mtime: float | None = None

    def refresh(self) -> bool:
        """Re-read the file when it changed; returns whether the set changed."""
        if self.path is None:
            return False
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime, names = None, []
        else:
            if mtime == self._mtime:
                return False
            try:
                names = json.loads(self.path.read_text() or "[]")
            except (OSError, ValueError):
                return False  # half-written: try again next tick
        self._mtime = mtime
        unknown = set(names) - set(FAULTS)
        if unknown:
            logger.warning("ignoring unknown faults %s (known: %s)", sorted(unknown), FAULTS)
        active = frozenset(names) & frozenset(FAULTS)
        changed, self.active = active != self.active, active
        return changed

    def __contains__(self, name: str) -> bool:
        return name in self.active


class FaultInjectingScorer:
    """Fault injector, not a model: delegates to the real scorer unless a fault is on.

    Only used by this example app to show alerts firing; everything else about the
    scorer (model id, revision, activation, cache namespace) is the real one's.
    """

    def __init__(self, scorer, faults: FaultSwitch, deadline_s: float) -> None:
        self._scorer = scorer
        self._faults = faults
        self._deadline_s = deadline_s

    model_id = property(lambda self: self._scorer.model_id)
    revision = property(lambda self: self._scorer.revision)
    cache_namespace = property(lambda self: self._scorer.cache_namespace)
    activation = property(lambda self: self._scorer.activation)

    def describe(self) -> dict[str, str]:
        return self._scorer.describe()

    def score_many(self, requests):
        if "scorer_outage" in self._faults:
            raise RuntimeError("injected scorer outage")
        if "scorer_slow" in self._faults:
            time.sleep(self._deadline_s * 1.5)
        return self._scorer.score_many(requests)


def set_event_log_fault(directory: Path, on: bool) -> None:
    """Replace the event-log directory by a regular file (on) or restore it (off)."""
    if on:
        shutil.rmtree(directory, ignore_errors=True)
        directory.write_text("not a directory: injected event-log fault\n")
    elif directory.is_file():
        directory.unlink()
        directory.mkdir(parents=True, exist_ok=True)


class TextfileCollector:
    """Serves the metrics in ``*.prom`` files, like node_exporter's textfile collector."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self):
        from prometheus_client.parser import text_string_to_metric_families

        for path in sorted(self.directory.glob("*.prom")):
            try:
                text = path.read_text(encoding="utf-8")
                yield from list(text_string_to_metric_families(text))
            except (OSError, ValueError) as exc:
                logger.warning("skipping textfile %s: %s", path, exc)


def start_textfile_server(directory: Path, port: int, addr: str) -> int:
    """Serve ``directory``'s ``*.prom`` files on ``http://addr:port/metrics``."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(TextfileCollector(directory))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return int(server.server_port)


def make_reranker(args: argparse.Namespace, faults: FaultSwitch):
    """The guarded reranker around the real default model, wrapped for fault injection."""
    from rerank_plugins.reranker import Reranker
    from rerank_plugins.resilience import CircuitBreaker
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer
    from rerank_plugins.telemetry.sinks import EventLog

    scorer = FaultInjectingScorer(BiEncoderScorer(dtype="float32"), faults,
                                  args.timeout_s)
    cache = "memory"
    if args.redis_url:
        from rerank_plugins.cache.redis import RedisCache

        cache = RedisCache(args.redis_url, secret="example-app-secret")
    event_log = None
    if args.event_log_dir:
        Path(args.event_log_dir).mkdir(parents=True, exist_ok=True)
        event_log = EventLog(args.event_log_dir)
    return Reranker(
        scorer, cache=cache, timeout_s=args.timeout_s, top_n=8, threshold=0.55,
        min_keep=1, event_log=event_log, secret="example-app-secret",
        breaker=CircuitBreaker("scorer", reset_timeout_s=args.breaker_reset_s))


def run_load(reranker, corpus: Sequence[str], rps: float, stop: threading.Event,
             seed: int) -> None:
    """Send requests at about ``rps`` until ``stop``; 30% repeat a recent request."""
    rng = random.Random(seed)
    recent: list[tuple[str, list[str]]] = []
    interval = 1.0 / rps
    next_at = time.monotonic()
    while not stop.is_set():
        if recent and rng.random() < 0.3:
            query, docs = rng.choice(recent)
        else:
            query = rng.choice(_QUERIES)
            docs = rng.sample(list(corpus), rng.randint(3, 12))
            recent = (recent + [(query, docs)])[-20:]
        try:
            reranker.rerank(query, docs)
        except Exception:  # noqa: BLE001 - keep the load going; the metrics show it
            logger.exception("rerank raised")
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9464, help="metrics port (0: any free)")
    parser.add_argument("--addr", default="127.0.0.1")
    parser.add_argument("--drift-port", type=int, default=None,
                        help="serve --textfile-dir here (0: any free); off by default")
    parser.add_argument("--textfile-dir", type=Path, default=None)
    parser.add_argument("--port-file", type=Path, default=None,
                        help="write the bound ports here as JSON once serving")
    parser.add_argument("--faults-file", type=Path, default=None)
    parser.add_argument("--redis-url", default=None, help="use a RedisCache (else memory)")
    parser.add_argument("--event-log-dir", type=Path, default=None)
    parser.add_argument("--rps", type=float, default=2.0, help="requests/s per worker")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=5.0,
                        help="per-request model deadline in seconds")
    parser.add_argument("--timeout-ms", type=float, default=None,
                        help="deprecated: --timeout-s in milliseconds")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="intra-op threads; 1 keeps a shared small machine usable")
    parser.add_argument("--breaker-reset-s", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=None, help="stop after seconds")
    args = parser.parse_args(argv)
    if args.timeout_ms is not None:
        print("--timeout-ms is deprecated; use --timeout-s", file=sys.stderr)
        args.timeout_s = args.timeout_ms / 1000.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.torch_threads)
    faults = FaultSwitch(args.faults_file)
    faults.refresh()
    reranker = make_reranker(args, faults)
    ports = {"metrics": start_metrics_server(args.port, args.addr)}
    if args.drift_port is not None:
        if args.textfile_dir is None:
            raise SystemExit("--drift-port needs --textfile-dir")
        args.textfile_dir.mkdir(parents=True, exist_ok=True)
        ports["drift"] = start_textfile_server(args.textfile_dir, args.drift_port, args.addr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    corpus = build_corpus()
    workers = [threading.Thread(target=run_load, args=(reranker, corpus, args.rps, stop, i),
                                name=f"load-{i}", daemon=True) for i in range(args.workers)]
    for worker in workers:
        worker.start()
    if args.port_file is not None:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports))
        tmp.replace(args.port_file)
    logger.info("serving metrics on %s", ports)
    ends_at = time.monotonic() + args.duration if args.duration else None
    while not stop.wait(0.5):
        if faults.refresh():
            logger.info("active faults: %s", sorted(faults.active))
            if args.event_log_dir is not None:
                set_event_log_fault(args.event_log_dir, "event_log_failure" in faults)
        if ends_at is not None and time.monotonic() >= ends_at:
            stop.set()
    for worker in workers:
        worker.join(10)
    reranker.close()
    if reranker.event_log is not None:
        reranker.event_log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
