"""Shared fixtures: the real bundled model (loaded once per session), a real
redis-server on a free loopback port, the shared IR collections and the project's
own demo collection, and OpenTelemetry SDK readers that every test can read metrics
and spans back from.

Missing parts: on a developer machine a test whose system package or shared data is
missing skips with what to install; under ``CI=true`` the same absence fails the run
(and the session stops before the first test), so a broken install step cannot pass
as a green run of skips.
"""

from __future__ import annotations

import os
import shutil
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


# -- required parts: skip on a laptop, fail under CI=true ---------------------------
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

#: executable -> the Debian package that installs it (scripts/install-system-deps.sh)
SYSTEM_BINARIES = {
    "redis-server": "redis-server",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "prometheus-pushgateway": "prometheus-pushgateway",
    "nginx": "nginx-light",
    "openssl": "openssl",
}
#: shared collections the real-data variants read (evaluation-only ones included:
#: the refusal tests need them present)
SHARED_COLLECTIONS = ("cranfield", "cisi", "scifact")


def missing_part(message: str) -> None:
    """Skip (developer machine) or fail (``CI=true``) because a required part is absent."""
    if IN_CI:
        pytest.fail(f"CI=true and a required part is missing: {message}", pytrace=False)
    pytest.skip(message)


def _binary_hint(name: str) -> str:
    return (f"{name} is not installed: run `make system-deps` "
            f"(apt-get install {SYSTEM_BINARIES[name]})")


def require_binary(name: str) -> str:
    """The path of a system executable the test needs (see :data:`SYSTEM_BINARIES`)."""
    path = shutil.which(name) or (shutil.which(name, path="/usr/sbin:/sbin")
                                  if name == "nginx" else None)
    if path is None:
        missing_part(_binary_hint(name))
    return path


def _missing_parts() -> list[str]:
    missing = [_binary_hint(name) for name in SYSTEM_BINARIES
               if shutil.which(name) is None
               and not (name == "nginx" and shutil.which(name, path="/usr/sbin:/sbin"))]
    missing += [_collection_hint(name) for name in SHARED_COLLECTIONS
                if not (_data_dir() / name / "corpus.jsonl").is_file()]
    return missing


def pytest_sessionstart(session) -> None:
    """Under ``CI=true`` check every required part before the first test runs."""
    if not IN_CI or session.config.option.collectonly:
        return
    missing = _missing_parts()
    if missing:
        lines = "\n  - ".join(missing)
        pytest.exit(f"CI=true and required parts are missing (nothing was tested):\n"
                    f"  - {lines}", returncode=4)


# -- shared data ----------------------------------------------------------------
def _data_dir() -> Path:
    from rerank_ops.collections import data_dir

    return data_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _data_dir()


def _collection_hint(name: str) -> str:
    return (f"collection {name!r} not found at {_data_dir() / name}: set RERANK_DATA_DIR to "
            "the folder holding the shared IR collections (default ../shared/data)")


def require_collection(name: str) -> Path:
    path = _data_dir() / name
    if not (path / "corpus.jsonl").is_file():
        missing_part(_collection_hint(name))
    return path


def write_demo_collection(folder: Path) -> Path:
    """The project's own demo corpus as a BEIR folder with a BM25 top-100 run (the
    shape of the shared collections), so every command runs on a fresh clone."""
    import json

    from rerank_ops.commands.demo import bm25_rankings, write_trec
    from rerank_ops.demo_corpus import load_demo_collection

    collection = load_demo_collection()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, doc in collection.corpus.items():
            fh.write(json.dumps({"_id": doc_id, **doc}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in collection.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in collection.qrels.items():
            for doc_id, grade in judged.items():
                fh.write(f"{qid}\t{doc_id}\t{grade}\n")
    first = bm25_rankings(collection, sorted(collection.queries), 100)
    write_trec(folder / "bm25_top100.trec", first.rankings, "bm25")
    return folder


@pytest.fixture(scope="session")
def demo_collection(tmp_path_factory) -> Path:
    """The demo corpus as a BEIR folder (never skipped: it ships with the project)."""
    return write_demo_collection(tmp_path_factory.mktemp("demo-collection") / "demo")


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
