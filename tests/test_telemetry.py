"""Spans and metrics of a rerank, read back through the OpenTelemetry SDK's in-memory
span exporter and metric reader (installed once for the session by conftest)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import counter_value, metric_points
from opentelemetry.trace import StatusCode

from rerank_plugins import Reranker
from rerank_plugins.telemetry import contract as c
from rerank_plugins.types import Status

DOCS = [
    "Airfoils turn the oncoming air downwards, and the reaction lifts the wing.",
    "Cats sleep for most of the day and hunt at dusk.",
    "Bernoulli's principle relates pressure and speed along a streamline.",
    "lift " * 600,  # longer than the model's 256-token window: truncated
]


def histogram_count(name: str, **labels) -> int:
    return sum(p.count for p in metric_points(name)
               if all(p.attributes.get(k) == v for k, v in labels.items()))


def rerank_spans(exporter) -> list:
    return [s for s in exporter.get_finished_spans() if s.name == c.SPAN_RERANK]


def children_of(exporter, parent) -> list:
    return sorted((s for s in exporter.get_finished_spans()
                   if s.parent is not None and s.parent.span_id == parent.context.span_id),
                  key=lambda s: s.start_time)


@pytest.fixture
def reranker(bi_scorer):
    # no deadline: a shared, loaded CI machine must not turn these into fallbacks
    instance = Reranker(bi_scorer, timeout_s=None)
    yield instance
    instance.close()


def test_one_span_per_rerank_with_one_child_per_stage(reranker, bi_scorer, span_exporter):
    result = reranker.rerank("how do wings lift", DOCS, top_n=2)
    [root] = rerank_spans(span_exporter)
    attrs = dict(root.attributes)
    assert attrs == {
        c.ATTR_MODEL: bi_scorer.model_id,
        c.ATTR_REVISION: bi_scorer.revision,
        c.ATTR_GENAI_MODEL: bi_scorer.model_id,
        c.ATTR_GENAI_OPERATION: "rerank",
        c.ATTR_CANDIDATES: 4,
        c.ATTR_KEPT: 2,
        c.ATTR_CACHE_HITS: 0,
        c.ATTR_STATUS: "ok",
        c.ATTR_FALLBACK_REASON: "",
        c.ATTR_TRUNCATIONS: result.truncated,
        c.ATTR_VARIANT: "control",
    }
    assert result.truncated == 1
    assert root.status.status_code is not StatusCode.ERROR
    stages = children_of(span_exporter, root)
    assert [s.name for s in stages] == [c.SPAN_STAGE_PREFIX + s for s in c.STAGES]
    assert all(root.start_time <= s.start_time <= s.end_time <= root.end_time for s in stages)
    assert all(a.end_time <= b.start_time for a, b in zip(stages, stages[1:], strict=False))
    score_ns = stages[2].end_time - stages[2].start_time
    assert score_ns == pytest.approx(result.timings.score * 1e9, abs=1e4)


def test_cache_served_request_reports_its_hits(reranker, span_exporter):
    reranker.rerank("how do wings lift", DOCS)
    hits_before = counter_value(c.CACHE_LOOKUPS.name, backend="memory", result="hit")
    result = reranker.rerank("how do wings lift", DOCS)
    assert result.status is Status.CACHE
    second = rerank_spans(span_exporter)[-1]
    assert second.attributes[c.ATTR_STATUS] == "cache"
    assert second.attributes[c.ATTR_CACHE_HITS] == 4
    assert counter_value(c.CACHE_LOOKUPS.name, backend="memory", result="hit") \
        - hits_before == 4


def test_fallback_marks_the_span_and_counts_the_reason(bi_scorer, span_exporter):
    # a 1 microsecond deadline: the real model cannot answer in time
    reranker = Reranker(bi_scorer, cache=None, timeout_s=1e-06)
    model = bi_scorer.model_id
    before = (counter_value(c.REQUESTS.name, model=model, status="fallback", reason="timeout"),
              counter_value(c.FALLBACKS.name, model=model, reason="timeout"))
    try:
        result = reranker.rerank("how do wings lift", DOCS)
    finally:
        reranker.close()
    assert (result.status, result.fallback_reason.value) == (Status.FALLBACK, "timeout")
    [root] = rerank_spans(span_exporter)
    assert root.attributes[c.ATTR_STATUS] == "fallback"
    assert root.attributes[c.ATTR_FALLBACK_REASON] == "timeout"
    assert root.status.status_code is StatusCode.ERROR
    after = (counter_value(c.REQUESTS.name, model=model, status="fallback", reason="timeout"),
             counter_value(c.FALLBACKS.name, model=model, reason="timeout"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_metrics_use_the_contract_names_labels_and_buckets(reranker, bi_scorer):
    model = bi_scorer.model_id
    before = {
        "requests": counter_value(c.REQUESTS.name, model=model, status="ok", reason=""),
        "duration": histogram_count(c.REQUEST_DURATION.name, model=model, status="ok"),
        "score_stage": histogram_count(c.STAGE_DURATION.name, model=model, stage="score"),
        "truncations": counter_value(c.TRUNCATIONS.name, model=model),
        "pairs": counter_value(c.MODEL_PAIRS.name, model=model),
        "top1": histogram_count(c.TOP1_SCORE.name, model=model),
    }
    result = reranker.rerank("why do planes fly", DOCS)
    assert result.status is Status.OK
    assert counter_value(c.REQUESTS.name, model=model, status="ok", reason="") \
        - before["requests"] == 1
    assert histogram_count(c.REQUEST_DURATION.name, model=model, status="ok") \
        - before["duration"] == 1
    assert histogram_count(c.STAGE_DURATION.name, model=model, stage="score") \
        - before["score_stage"] == 1
    assert counter_value(c.TRUNCATIONS.name, model=model) - before["truncations"] == 1
    assert counter_value(c.MODEL_PAIRS.name, model=model) - before["pairs"] == 4
    assert histogram_count(c.TOP1_SCORE.name, model=model) - before["top1"] == 1
    for spec in (c.REQUEST_DURATION, c.STAGE_DURATION, c.CANDIDATES, c.KEPT, c.TOP1_SCORE):
        points = metric_points(spec.name)
        assert points, spec.name
        assert all(tuple(p.explicit_bounds) == spec.buckets for p in points), spec.name
        assert all(set(p.attributes) == set(spec.labels) for p in points), spec.name
    stages = {p.attributes["stage"] for p in metric_points(c.STAGE_DURATION.name)}
    assert stages == set(c.STAGES)
    info = [p for p in metric_points(c.MODEL_INFO.name) if p.attributes["model"] == model]
    assert info and info[0].value == 1
    assert info[0].attributes["revision"] == bi_scorer.revision
    assert info[0].attributes["dtype"] == "float32"


def test_every_library_metric_is_created_with_its_contract_unit(metric_reader, bi_scorer,
                                                                 tmp_path):
    """Self-contained (run alone it used to read an empty reader): one request through a
    cache and an event log creates the metrics of a served request, each with its unit."""
    reranker = Reranker(bi_scorer, timeout_s=None, cache="memory",
                        event_log=str(tmp_path / "events"))
    try:
        assert reranker.rerank("units of the contract", DOCS).status is Status.OK
    finally:
        reranker.close()
    data = metric_reader.get_metrics_data()
    seen = {m.name: m.unit for rm in data.resource_metrics for sm in rm.scope_metrics
            if sm.scope.name == c.METER_NAME for m in sm.metrics}
    served = (c.REQUEST_DURATION, c.STAGE_DURATION, c.REQUESTS, c.CANDIDATES, c.KEPT,
              c.CACHE_LOOKUPS, c.TRUNCATIONS, c.MODEL_INFO, c.TOP1_SCORE, c.MODEL_PAIRS,
              c.MODEL_DURATION, c.EVENTS_WRITTEN, c.CIRCUIT_STATE)
    assert {spec.name for spec in served} <= set(seen), sorted(set(seen))
    for spec in c.LIBRARY_METRICS:
        if spec.name in seen:  # fault metrics appear once their fault happened
            assert seen[spec.name] == spec.unit, spec.name


def test_import_needs_only_the_api_and_records_nothing_without_an_sdk():
    script = textwrap.dedent("""
        import sys
        import rerank_plugins, rerank_plugins.telemetry
        from rerank_plugins.telemetry import contract as c, instruments
        from rerank_plugins.reranker import _tracer_enabled
        heavy = [m for m in ("opentelemetry.sdk", "prometheus_client", "pyarrow", "torch")
                 if m in sys.modules]
        assert not heavy, heavy
        instruments.add(c.REQUESTS, 1, model="m", status="ok", reason="")
        instruments.observe(c.REQUEST_DURATION, 0.1, model="m", status="ok")
        assert not _tracer_enabled()
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
