"""Shared fixtures: the real bundled model (loaded once per session), a real
redis-server on a free loopback port, the shared IR collections, and OpenTelemetry
SDK readers that every test can read metrics and spans back from."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ops"))

from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

# One SDK for the whole session (OpenTelemetry allows setting the global provider
# once): an in-memory reader for assertions and the Prometheus reader whose
# registry the exposition tests scrape.
METRIC_READER = InMemoryMetricReader()
PROMETHEUS_READER = PrometheusMetricReader()
SPAN_EXPORTER = InMemorySpanExporter()
metrics.set_meter_provider(MeterProvider(metric_readers=[METRIC_READER, PROMETHEUS_READER]))
_tracer_provider = TracerProvider()
_tracer_provider.add_span_processor(SimpleSpanProcessor(SPAN_EXPORTER))
trace.set_tracer_provider(_tracer_provider)


@pytest.fixture(scope="session")
def metric_reader() -> InMemoryMetricReader:
    return METRIC_READER


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    SPAN_EXPORTER.clear()
    return SPAN_EXPORTER


def metric_points(name: str) -> list:
    """All data points of metric ``name`` currently held by the in-memory reader."""
    data = METRIC_READER.get_metrics_data()
    points = []
    if data is None:
        return points
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


def counter_value(name: str, **labels) -> float:
    return sum(
        p.value for p in metric_points(name)
        if all(p.attributes.get(k) == v for k, v in labels.items())
    )


# -- shared data ----------------------------------------------------------------
def _data_dir() -> Path:
    from rerank_ops.collections import data_dir

    return data_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _data_dir()


def require_collection(name: str) -> Path:
    path = _data_dir() / name
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(
            f"collection {name!r} not found at {path}: set RERANK_DATA_DIR to the folder "
            "holding the shared IR collections (default ../shared/data)")
    return path


# -- models ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def bi_scorer():
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    return BiEncoderScorer(dtype="float32")


@pytest.fixture(scope="session")
def ce_folder(tmp_path_factory) -> str:
    """A CrossEncoder folder from the bundled MiniLM weights (seeded head)."""
    from rerank_plugins.scoring.cross_encoder import save_cross_encoder_from_bundled

    return save_cross_encoder_from_bundled(str(tmp_path_factory.mktemp("ce") / "minilm-ce"))


@pytest.fixture(scope="session")
def ce_scorer(ce_folder):
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    return CrossEncoderScorer(ce_folder, dtype="float32")


# -- redis ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real redis-server on 127.0.0.1, no persistence."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run `make test` (it installs it) or "
                "`apt-get install redis-server`")
        self.port = free_port()
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_db(redis_server):
    """The session server, flushed before each test."""
    client = redis_server.client()
    client.flushall()
    yield redis_server
    client.close()
