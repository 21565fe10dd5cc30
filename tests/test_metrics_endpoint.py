"""The Prometheus side of the contract: names after the exporter's translation, and the
real HTTP exposition endpoint started by ``start_metrics_server``."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import urllib.request

import pytest
from conftest import free_port
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from rerank_plugins import Candidate, Reranker, block_if
from rerank_plugins.cache.redis import RedisCache
from rerank_plugins.telemetry import contract as c
from rerank_plugins.telemetry.prometheus import start_metrics_server, stop_metrics_server
from rerank_plugins.telemetry.sinks import EventLog, JsonlSink
from rerank_plugins.types import Status

DOCS = [
    "Airfoils turn the oncoming air downwards, and the reaction lifts the wing.",
    "Cats sleep for most of the day and hunt at dusk.",
    "lift " * 600,  # truncated by the model's 256-token window
]


SCRAPE_HEADERS: list = []


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        SCRAPE_HEADERS[:] = response.headers.items()
        return response.read().decode("utf-8")


def sample_names(exposition: str) -> set[str]:
    """Series base names that have at least one sample (not just HELP/TYPE lines)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            names.add(re.sub(r"_(bucket|sum|count|created)$", "", name))
    return names


def sample_value(exposition: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_prom_name_is_what_the_exporter_emits_for_every_contract_metric():
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    meter = provider.get_meter("contract-check")
    for spec in c.ALL_METRICS:
        if spec.kind is c.Kind.COUNTER:
            meter.create_counter(spec.name, unit=spec.unit).add(1)
        elif spec.kind is c.Kind.HISTOGRAM:
            meter.create_histogram(spec.name, unit=spec.unit).record(0.5)
        else:
            meter.create_observable_gauge(
                spec.name, callbacks=[lambda _options: [Observation(1)]], unit=spec.unit)
    try:
        exposition = generate_latest(registry).decode()
    finally:
        provider.shutdown()
    emitted = sample_names(exposition)
    assert {spec.prom_name for spec in c.ALL_METRICS} <= emitted
    for spec in c.ALL_METRICS:
        kind = "counter" if spec.kind is c.Kind.COUNTER else spec.kind.value
        assert re.search(rf"^# TYPE {spec.prom_name}(_total)? {kind}$", exposition, re.M), spec


def test_a_reader_of_another_provider_is_not_taken_for_ours():
    # the SDK tracks readers of every provider in one class-wide set: an unrelated
    # provider's Prometheus reader (empty registry) must not be the one served
    other_registry = CollectorRegistry()
    other = MeterProvider(metric_readers=[PrometheusMetricReader(registry=other_registry)])
    try:
        port = start_metrics_server(port=0)
        try:
            exposition = scrape(port)
        finally:
            stop_metrics_server(port)
    finally:
        other.shutdown()
    assert "process_cpu_seconds_total" in exposition
    assert generate_latest(other_registry) == b""


def test_endpoint_serves_every_library_metric_after_traffic(bi_scorer, tmp_path):
    closed_port = free_port()  # nothing listens here: connections are refused
    served = Reranker(bi_scorer, timeout_s=None,
                      event_log=EventLog(JsonlSink(tmp_path / "events")),
                      policies=(block_if(lambda m: m.get("hidden", False), name="hidden"),))
    failing = Reranker(
        bi_scorer, timeout_s=0.000001,  # the real model cannot answer in 1 microsecond
        cache=RedisCache(f"redis://127.0.0.1:{closed_port}/0"),
        event_log=EventLog(JsonlSink(tmp_path / "dropped"), queue_size=0))
    try:
        first = served.rerank("how do wings lift", DOCS)
        again = served.rerank("how do wings lift", DOCS)
        # the SLI counters: a candidate without retrieval score, a policy block, feedback
        served.rerank("how do wings lift", [Candidate("x", DOCS[0], None, {"hidden": True}),
                                            Candidate("y", DOCS[1], 1.0)])
        served.feedback(first.request_id, "0", position=0)
        fallback = failing.rerank("how do wings lift", DOCS)
        assert served.event_log.flush()
    finally:
        for reranker in (served, failing):
            reranker.close()
            reranker.event_log.close()
    assert (first.status, again.status, fallback.status) == (
        Status.OK, Status.CACHE, Status.FALLBACK)
    assert first.truncated == 1

    port = start_metrics_server(port=0)
    try:
        assert start_metrics_server(port=port) == port  # a second call reuses the server
        exposition = scrape(port)
    finally:
        stop_metrics_server(port)
    missing = [s.prom_name for s in c.LIBRARY_METRICS
               if s.prom_name not in sample_names(exposition)]
    in_process = generate_latest().decode()  # the same registry, without HTTP
    assert missing == [], (repr(exposition[-2000:]), SCRAPE_HEADERS, port,
                           [s.prom_name for s in c.LIBRARY_METRICS
                            if s.prom_name not in sample_names(in_process)])
    model = bi_scorer.model_id
    assert sample_value(exposition, "rerank_requests_total", model=model, status="fallback",
                        reason="timeout") >= 1
    assert sample_value(exposition, "rerank_event_log_dropped_total", backend="jsonl",
                        reason="queue_full") >= 1
    assert sample_value(exposition, "rerank_cache_errors_total", backend="redis",
                        operation="get", cause="ConnectionError") >= 1
    assert sample_value(exposition, "rerank_request_duration_seconds_bucket", model=model,
                        le="+Inf") >= 3
    assert 'le="0.0025"' in exposition  # the contract's buckets, not the SDK defaults


SERVER_SCRIPT = textwrap.dedent("""
    import sys
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from rerank_plugins.telemetry import contract as c, instruments
    from rerank_plugins.telemetry.prometheus import start_metrics_server

    mode = sys.argv[1]
    memory = InMemoryMetricReader()
    if mode == "sdk":  # the application configured the SDK with another reader first
        metrics.set_meter_provider(MeterProvider(metric_readers=[memory]))
    instruments.get()  # instruments exist before the server starts (as in a Reranker)
    port = start_metrics_server(port=0)
    assert isinstance(metrics.get_meter_provider(), MeterProvider)
    instruments.add(c.REQUESTS, 3, model="probe", status="ok", reason="")
    if mode == "sdk":  # the application's own reader still gets the data
        data = memory.get_metrics_data()
        names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics]
        assert c.REQUESTS.name in names, names
    print(port, flush=True)
    sys.stdin.read()  # serve until the test closes stdin
""")


@pytest.mark.parametrize("mode", ["no_provider", "sdk"])
def test_start_metrics_server_in_a_fresh_process(mode):
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read() if proc.poll() is not None else line
        exposition = scrape(int(line))
    finally:
        proc.stdin.close()
        proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read()
    assert sample_value(exposition, "rerank_requests_total", model="probe") == 3.0
    assert "process_cpu_seconds_total" in exposition  # the default registry is served
