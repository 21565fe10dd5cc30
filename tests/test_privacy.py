"""No user text leaves the request unless the operator opts in.

A rerank with a distinctive query and document runs with the defaults plus every
output switched on (JSONL and Parquet event logs, the shared Redis cache, metrics,
spans, Python logging). Then every place data lands is scanned for the text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.request

import pyarrow.parquet as pq
import pytest
from conftest import METRIC_READER

from rerank_plugins import Reranker
from rerank_plugins.cache.redis import RedisCache
from rerank_plugins.telemetry.events import read_events
from rerank_plugins.telemetry.prometheus import start_metrics_server, stop_metrics_server
from rerank_plugins.telemetry.sinks import EventLog, JsonlSink, ParquetSink

SECRET = "operator-secret-for-the-privacy-test"
QUERY = "zanzibar quokka 7731 what is Ingrid Vasquez's salary"
SECRET_DOC = "Confidential memo PLUMTREE-4491: the Halvorsen merger closes in May."
DOCS = [SECRET_DOC, "Cats sleep for most of the day.", "Airfoils turn air downwards."]
# distinctive fragments: a leak of any part of the text is found, not just the whole
NEEDLES = [QUERY, "zanzibar quokka", "Ingrid Vasquez", SECRET_DOC, "PLUMTREE-4491",
           "Halvorsen", hashlib.sha256(QUERY.encode()).hexdigest()]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode("utf-8")


def leaks(blob: str | bytes) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [needle for needle in NEEDLES if needle.lower() in text.lower()]


def log_texts(directory) -> dict[str, str]:
    """Every file under ``directory``: raw bytes, plus Parquet rows decoded."""
    texts = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        texts[path.name] = path.read_bytes().decode("utf-8", "replace")
        if path.suffix == ".parquet":  # compressed columns: scan the decoded rows too
            texts[path.name + ":rows"] = json.dumps(pq.read_table(path).to_pylist())
    return texts


def redis_texts(server) -> list[bytes]:
    client = server.client()
    try:
        keys = client.keys("*")
        return keys + [v for v in client.mget(keys) if v is not None] if keys else []
    finally:
        client.close()


def span_texts(exporter) -> list[str]:
    texts = []
    for span in exporter.get_finished_spans():
        texts.append(span.name)
        texts.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        texts.extend(f"{e.name} {dict(e.attributes or {})}" for e in span.events)
        texts.append(str(span.status.description))
    return texts


def metric_attribute_texts() -> list[str]:
    data = METRIC_READER.get_metrics_data()
    return [f"{m.name} {dict(p.attributes)}"
            for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics for p in m.data.data_points]


@pytest.fixture
def outputs(bi_scorer, redis_db, tmp_path, monkeypatch, caplog, span_exporter):
    """Rerank once per sink with every output on; return where things landed."""
    monkeypatch.setenv("RERANK_PLUGINS_SECRET", SECRET)
    caplog.set_level(logging.DEBUG)
    logs = tmp_path / "logs"
    results = []
    for sink in (JsonlSink(logs / "jsonl"), ParquetSink(logs / "parquet")):
        cache = RedisCache(redis_db.url, socket_timeout_s=1.0, connect_timeout_s=1.0)
        reranker = Reranker(bi_scorer, timeout_s=None, cache=cache, event_log=EventLog(sink))
        try:
            results.append(reranker.rerank(QUERY, DOCS))
        finally:
            cache.flush()
            reranker.close()
            reranker.event_log.close()
    port = start_metrics_server(port=0)
    try:
        exposition = scrape(port)
    finally:
        stop_metrics_server(port)
    return {"results": results, "logs": logs, "exposition": exposition,
            "redis": redis_db, "spans": span_exporter, "caplog": caplog}


def test_no_query_or_document_text_anywhere_by_default(outputs):
    first, second = outputs["results"]
    assert first.status.value == "ok" and second.status.value == "cache"  # Redis was used
    files = log_texts(outputs["logs"])
    assert any(name.endswith(".jsonl") for name in files)
    assert any(name.endswith(".parquet") for name in files)
    stored = redis_texts(outputs["redis"])
    assert len(stored) == 2 * len(DOCS)  # one key and one value per pair
    assert "rerank_requests_total" in outputs["exposition"]
    assert outputs["spans"].get_finished_spans()

    found = {name: leaks(text) for name, text in files.items()}
    found["redis"] = [n for blob in stored for n in leaks(blob)]
    found["prometheus"] = leaks(outputs["exposition"])
    found["spans"] = [n for text in span_texts(outputs["spans"]) for n in leaks(text)]
    found["metric attributes"] = [n for t in metric_attribute_texts() for n in leaks(t)]
    found["python logging"] = [n for r in outputs["caplog"].records
                               for n in leaks(r.getMessage())]
    assert {where: hits for where, hits in found.items() if hits} == {}


def test_fingerprints_are_keyed_with_the_operator_secret(outputs):
    records = list(read_events(outputs["logs"] / "jsonl"))
    assert len(records) == 1
    expected = hmac.new(SECRET.encode(), QUERY.encode(), hashlib.sha256).hexdigest()
    assert records[0]["query_fp"] == expected
    assert records[0]["query_text"] is None


def test_opting_in_puts_the_query_in_the_log(bi_scorer, redis_db, tmp_path, monkeypatch):
    # proves the scan above can find the text when it is there
    monkeypatch.setenv("RERANK_PLUGINS_SECRET", SECRET)
    cache = RedisCache(redis_db.url, socket_timeout_s=1.0, connect_timeout_s=1.0)
    reranker = Reranker(bi_scorer, timeout_s=None, cache=cache, include_text=True,
                        event_log=EventLog(JsonlSink(tmp_path / "opt-in")))
    try:
        reranker.rerank(QUERY, DOCS)
    finally:
        cache.flush()
        reranker.close()
        reranker.event_log.close()
    texts = log_texts(tmp_path / "opt-in")
    # one file, holding the query (documents stay out even with the opt-in)
    assert [leaks(t) for t in texts.values()] == [[QUERY, "zanzibar quokka", "Ingrid Vasquez"]]
