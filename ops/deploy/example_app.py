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

- ``canary_outage``: the canary arm's model raises (its fallbacks rise, control's
  do not: ``RerankCanaryWorseThanControl``).

A cache outage needs no switch: stop or pause the Redis server given by
``--redis-url`` (``kill -STOP <pid>``).

Rollout traffic: ``--canary-split 0.05`` serves 5% of users (a fingerprinted user
key) from a canary arm (``--canary-model`` folder, else a second copy of the default
model); ``--variant-mode shadow_compare`` scores that share with the canary in the
background instead. Candidates come with retrieval scores (5% without), a
``source`` metadata key (3% without) read by a ``block_if`` policy that blocks the
``quarantine`` source, and ``--click-rate`` of the requests get a simulated click
(``Reranker.feedback``) at a top-heavy position, so every rollout and SLI series has
data.

Hot swap: ``--admin-port`` serves a loopback-only admin endpoint
(``GET /admin/status``, ``POST /admin/swap`` with ``{"arm": "control"|"candidate",
"model": "/folder"|null}``); SIGHUP swaps the arm and folder written in
``--swap-model-file`` (``{"arm": ..., "model": ...}``, or just a folder for control)
and writes the outcome to ``--swap-status-file``. Both call
``swap_scorer(new, warmup=...)``: no request fails during the switch.
``rerank-ops swap`` drives either.

The rest of a production stage: ``--semantic-cache`` puts the semantic query cache in
front of the pair cache (10% of requests rephrase a recent query, so it has hits),
``--context-tokens N`` keeps results within an LLM context budget, and ``--llm-url``
(an OpenAI-compatible chat endpoint) runs a low-volume premium path every
``--llm-every-s`` seconds through a guarded :class:`LLMScorer`, so the semantic-cache,
context-budget and LLM panels have data.

``--drift-port`` serves the ``*.prom`` files of ``--textfile-dir`` the way the
node_exporter textfile collector would, so the series that ``rerank-ops drift``
publishes can be scraped as their own job.

Example::

    python ops/deploy/example_app.py --port 9464 --drift-port 9465 \\
        --textfile-dir /tmp/rerank-textfiles --faults-file /tmp/rerank-faults.json
    echo '["scorer_outage"]' > /tmp/rerank-faults.json   # start an outage
    echo '[]' > /tmp/rerank-faults.json                  # end it
    python ops/deploy/example_app.py --canary-split 0.05 --admin-port 9470
    rerank-ops swap --admin-url http://127.0.0.1:9470 --arm candidate   # roll back
"""

from __future__ import annotations

import argparse
import http.server
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

FAULTS = ("scorer_outage", "scorer_slow", "event_log_failure", "canary_outage")
CANARY = "candidate"
#: Where users click, given they click (position bias: the top gets most clicks).
CLICK_POSITION_WEIGHTS = (0.55, 0.2, 0.1, 0.06, 0.04, 0.02, 0.02, 0.01)
SOURCES = ("wiki", "manual", "forum")
WARMUP_QUERIES = ("how do airplane wings create lift", "why does bread dough rise")

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

    def __init__(self, scorer, faults: FaultSwitch, deadline_s: float, *,
                 outage: str = "scorer_outage") -> None:
        self._scorer = scorer
        self._faults = faults
        self._deadline_s = deadline_s
        self._outage = outage

    model_id = property(lambda self: self._scorer.model_id)
    revision = property(lambda self: self._scorer.revision)
    cache_namespace = property(lambda self: self._scorer.cache_namespace)
    activation = property(lambda self: self._scorer.activation)

    def describe(self) -> dict[str, str]:
        return self._scorer.describe()

    def score_many(self, requests):
        if self._outage in self._faults:
            raise RuntimeError(f"injected {self._outage}")
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


def load_model(folder: str | None):
    """The scorer for a model folder (a cross-encoder), or the default bi-encoder."""
    if folder:
        from rerank_plugins.scoring import load_scorer

        return load_scorer(str(folder), dtype="float32")
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    return BiEncoderScorer(dtype="float32")


def quarantine_policy():
    """Blocks candidates from the ``quarantine`` source (a policy-action SLI)."""
    from rerank_plugins.selection import block_if

    return block_if(lambda meta: meta.get("source") == "quarantine", name="quarantine",
                    needs=("source",))


class App:
    """The served reranker, its canary arm, and the hot-swap entry points."""

    def __init__(self, args: argparse.Namespace, faults: FaultSwitch) -> None:
        from rerank_plugins.reranker import Reranker
        from rerank_plugins.resilience import CircuitBreaker
        from rerank_plugins.telemetry.sinks import EventLog

        self.args, self.faults = args, faults
        self._swap_lock = threading.Lock()
        cache = "memory"
        if args.redis_url:
            from rerank_plugins.cache.redis import RedisCache

            cache = RedisCache(args.redis_url, secret="example-app-secret")
        self.event_log = None
        if args.event_log_dir:
            Path(args.event_log_dir).mkdir(parents=True, exist_ok=True)
            self.event_log = EventLog(args.event_log_dir)
        common = dict(cache=cache, timeout_s=args.timeout_s, top_n=8, threshold=0.55,
                      min_keep=1, event_log=self.event_log, secret="example-app-secret",
                      policies=[quarantine_policy()], context_tokens=args.context_tokens)
        if args.semantic_cache:
            common.update(semantic_cache=True, semantic_threshold=args.semantic_threshold)
        self.models = {"control": args.model}
        self.arms: dict = {}
        variants = {}
        if args.canary_split > 0:
            self.models[CANARY] = args.canary_model
            canary = Reranker(self._scorer(CANARY, args.canary_model), **common,
                              breaker=CircuitBreaker("canary",
                                                     reset_timeout_s=args.breaker_reset_s))
            self.arms[CANARY] = canary
            variants = {"variants": {CANARY: canary}, "split": {CANARY: args.canary_split},
                        "variant_mode": args.variant_mode}
        self.reranker = Reranker(
            self._scorer("control", args.model), **common, **variants,
            breaker=CircuitBreaker("scorer", reset_timeout_s=args.breaker_reset_s))
        self.arms["control"] = self.reranker
        self.premium = None
        if args.llm_url:
            from rerank_plugins.scoring.llm import LLMScorer

            self.premium = Reranker(
                LLMScorer(args.llm_url, model=args.llm_model, max_concurrency=1),
                cache=None, timeout_s=args.llm_timeout_s, top_n=3, min_keep=1,
                event_log=self.event_log, secret="example-app-secret",
                context_tokens=args.context_tokens,
                breaker=CircuitBreaker("llm", reset_timeout_s=args.breaker_reset_s))

    def _scorer(self, arm: str, folder: str | None):
        outage = "canary_outage" if arm == CANARY else "scorer_outage"
        return FaultInjectingScorer(load_model(folder), self.faults, self.args.timeout_s,
                                    outage=outage)

    def status(self) -> dict:
        """Which model each arm serves."""
        return {"arms": {name: {"model": self.models[name], "model_id": arm.model_id}
                         for name, arm in self.arms.items()},
                "split": {CANARY: self.args.canary_split} if CANARY in self.arms else {}}

    def swap(self, arm: str = "control", model: str | None = None) -> dict:
        """Load ``model`` (a folder; None = the default model), warm it up off the
        request path and make ``arm`` serve it. Returns the outcome; never raises."""
        started = time.perf_counter()
        if arm not in self.arms:
            return {"ok": False, "arm": arm, "error": f"no arm {arm!r}; arms: "
                    f"{sorted(self.arms)}"}
        corpus = build_corpus()
        warmup = [(query, corpus[:4]) for query in WARMUP_QUERIES]
        with self._swap_lock:
            try:
                scorer = self._scorer(arm, model)
                self.arms[arm].swap_scorer(scorer, warmup=warmup)
            except Exception as exc:  # noqa: BLE001 - reported to the operator, old model serves
                logger.warning("swap of %s to %s refused: %s", arm, model, exc)
                return {"ok": False, "arm": arm, "model": model,
                        "error": f"{type(exc).__name__}: {exc}",
                        "seconds": round(time.perf_counter() - started, 3)}
            self.models[arm] = model
        logger.info("arm %s now serves %s", arm, model or "the default model")
        return {"ok": True, "arm": arm, "model": model, "model_id": scorer.model_id,
                "revision": scorer.revision,
                "seconds": round(time.perf_counter() - started, 3)}

    def swap_from_file(self, path: Path | None, status_file: Path | None,
                       seq: int) -> dict:
        """The SIGHUP path: read ``{"arm", "model"}`` (or a bare folder) from ``path``."""
        arm, model = "control", None
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                outcome = {"ok": False, "error": f"cannot read {path}: {exc.strerror}"}
                return _write_status(status_file, outcome, seq)
            if text.startswith("{"):
                try:
                    request = json.loads(text)
                except ValueError as exc:
                    return _write_status(status_file, {"ok": False,
                                                       "error": f"{path}: {exc}"}, seq)
                arm, model = request.get("arm", "control"), request.get("model")
            elif text:
                model = text
        return _write_status(status_file, self.swap(arm, model), seq)

    def close(self) -> None:
        self.reranker.close()
        if self.premium is not None:
            self.premium.close()
        for name, arm in self.arms.items():
            if name != "control":
                arm.close()
        if self.event_log is not None:
            self.event_log.close()


def _write_status(path: Path | None, outcome: dict, seq: int) -> dict:
    outcome = {**outcome, "seq": seq, "at": time.time()}
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(outcome))
        tmp.replace(path)
    return outcome


class _AdminHandler(http.server.BaseHTTPRequestHandler):
    app: App

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/admin/status":
            self._reply(200, self.app.status())
        else:
            self._reply(404, {"error": "GET /admin/status or POST /admin/swap"})

    def do_POST(self):  # noqa: N802
        if self.path != "/admin/swap":
            self._reply(404, {"error": "POST /admin/swap"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            arm, model = request.get("arm", "control"), request.get("model")
        except (ValueError, AttributeError):
            self._reply(400, {"error": 'body must be JSON {"arm": ..., "model": ...}'})
            return
        outcome = self.app.swap(arm, model)
        self._reply(200 if outcome["ok"] else 409, outcome)

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        logger.info("admin: " + format, *args)


def start_admin_server(app: App, port: int) -> int:
    """Serve the admin endpoint on 127.0.0.1 only (it swaps models: never expose it)."""
    handler = type("AdminHandler", (_AdminHandler,), {"app": app})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, name="admin", daemon=True).start()
    return int(server.server_address[1])


def make_candidates(rng: random.Random, corpus: Sequence[str], count: int) -> list:
    """Candidates as a retriever hands them over: ids, scores (5% missing), and a
    ``source`` metadata key (3% missing) for the quarantine policy, which blocks the
    one document in nine that comes from ``quarantine``."""
    from rerank_plugins.types import Candidate

    candidates = []
    for index in rng.sample(range(len(corpus)), count):
        score = None if rng.random() < 0.05 else round(rng.uniform(5.0, 20.0), 3)
        source = SOURCES[index % len(SOURCES)] if index % 9 else "quarantine"
        metadata = {} if rng.random() < 0.03 else {"source": source}
        candidates.append(Candidate(f"doc-{index}", corpus[index], score, metadata))
    return candidates


def run_load(reranker, corpus: Sequence[str], rps: float, stop: threading.Event,
             seed: int, click_rate: float = 0.0) -> None:
    """Send requests at about ``rps`` until ``stop``; 30% repeat a recent request.

    Each request comes from one of 200 users (the rollout key), and ``click_rate`` of
    them get a click on a result, recorded with ``reranker.feedback``.
    """
    rng = random.Random(seed)
    recent: list[tuple[str, list]] = []
    interval = 1.0 / rps
    next_at = time.monotonic()
    while not stop.is_set():
        draw = rng.random()
        if recent and draw < 0.3:
            query, docs = rng.choice(recent)
        elif recent and draw < 0.4:  # a near-repeat: the semantic cache's case
            query, docs = rng.choice(recent)
            query = rephrase(query, rng)
        else:
            query = rng.choice(_QUERIES)
            docs = make_candidates(rng, corpus, rng.randint(3, 12))
            recent = (recent + [(query, docs)])[-20:]
        try:
            result = reranker.rerank(query, docs, key=f"user-{rng.randrange(200)}")
            if result.items and rng.random() < click_rate:
                shown = len(result.items)
                position = rng.choices(range(shown), CLICK_POSITION_WEIGHTS[:shown])[0]
                reranker.feedback(result.request_id, result.items[position].id, 1.0,
                                  position=position)
        except Exception:  # noqa: BLE001 - keep the load going; the metrics show it
            logger.exception("rerank raised")
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))


def rephrase(query: str, rng: random.Random) -> str:
    """A light rewording of ``query`` (what users retype), never the same string."""
    forms = (lambda q: q + "?", lambda q: q.capitalize() + "?", lambda q: "so " + q,
             lambda q: q.replace(" the ", " a ", 1) + " ?")
    return rng.choice(forms)(query)


def run_premium(premium, corpus: Sequence[str], every_s: float,
                stop: threading.Event) -> None:
    """The low-volume LLM path: one three-candidate request every ``every_s``."""
    rng = random.Random(7)
    while not stop.wait(every_s):
        try:
            premium.rerank(rng.choice(_QUERIES), make_candidates(rng, corpus, 3))
        except Exception:  # noqa: BLE001 - keep the path going; the metrics show it
            logger.exception("premium rerank raised")


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
    parser.add_argument("--semantic-cache", action="store_true",
                        help="a semantic query cache in front of the pair cache")
    parser.add_argument("--semantic-threshold", type=float, default=0.95)
    parser.add_argument("--context-tokens", type=int, default=None,
                        help="keep results within this LLM context budget (tokens)")
    parser.add_argument("--llm-url", default=None,
                        help="OpenAI-compatible base URL for the premium LLM path")
    parser.add_argument("--llm-model", default="smollm2-135m")
    parser.add_argument("--llm-every-s", type=float, default=5.0)
    parser.add_argument("--llm-timeout-s", type=float, default=60.0)
    parser.add_argument("--duration", type=float, default=None, help="stop after seconds")
    parser.add_argument("--model", default=None,
                        help="control model folder (cross-encoder); default: the bundled "
                             "bi-encoder")
    parser.add_argument("--canary-split", type=float, default=0.0,
                        help="share of users served by the canary arm (0: no canary)")
    parser.add_argument("--canary-model", default=None,
                        help="canary model folder; default: the bundled bi-encoder")
    parser.add_argument("--variant-mode", choices=("split", "shadow_compare"),
                        default="split")
    parser.add_argument("--click-rate", type=float, default=0.3,
                        help="share of requests that get a simulated click (feedback)")
    parser.add_argument("--admin-port", type=int, default=None,
                        help="loopback admin endpoint for hot swaps (0: any free); off "
                             "by default")
    parser.add_argument("--swap-model-file", type=Path, default=None,
                        help='on SIGHUP, swap to the model named here ({"arm": ..., '
                             '"model": ...} or a folder)')
    parser.add_argument("--swap-status-file", type=Path, default=None,
                        help="write each SIGHUP swap's outcome here (JSON)")
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
    app = App(args, faults)
    reranker = app.reranker
    ports = {"metrics": start_metrics_server(args.port, args.addr)}
    if args.admin_port is not None:
        ports["admin"] = start_admin_server(app, args.admin_port)
    if args.drift_port is not None:
        if args.textfile_dir is None:
            raise SystemExit("--drift-port needs --textfile-dir")
        args.textfile_dir.mkdir(parents=True, exist_ok=True)
        ports["drift"] = start_textfile_server(args.textfile_dir, args.drift_port, args.addr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    hangups = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: hangups.set())
    swaps = 0
    corpus = build_corpus()
    workers = [threading.Thread(target=run_load,
                                args=(reranker, corpus, args.rps, stop, i, args.click_rate),
                                name=f"load-{i}", daemon=True) for i in range(args.workers)]
    if app.premium is not None:
        workers.append(threading.Thread(target=run_premium, name="premium", daemon=True,
                                        args=(app.premium, corpus, args.llm_every_s, stop)))
    for worker in workers:
        worker.start()
    if args.port_file is not None:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports))
        tmp.replace(args.port_file)
    logger.info("serving metrics on %s", ports)
    ends_at = time.monotonic() + args.duration if args.duration else None
    while not stop.wait(0.5):
        if hangups.is_set():
            hangups.clear()
            swaps += 1
            logger.info("SIGHUP: swap %s", app.swap_from_file(
                args.swap_model_file, args.swap_status_file, swaps))
        if faults.refresh():
            logger.info("active faults: %s", sorted(faults.active))
            if args.event_log_dir is not None:
                set_event_log_fault(args.event_log_dir, "event_log_failure" in faults)
        if ends_at is not None and time.monotonic() >= ends_at:
            stop.set()
    for worker in workers:
        worker.join(10)
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
