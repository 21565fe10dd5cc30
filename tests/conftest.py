"""Shared fixtures: the real bundled model (loaded once per session), a real
redis-server on a free loopback port, the shared IR collections, and OpenTelemetry
SDK readers that every test can read metrics and spans back from."""

from __future__ import annotations

import os
import sys
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
from redis_server import RedisServer, free_port  # noqa: E402,F401 - tests import them from here


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
