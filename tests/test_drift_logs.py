"""Drift reads traffic only: feedback records and the non-served arm of a
shadow-compare in the same log are skipped and counted apart, in JSONL and Parquet,
and never make a drift run see malformed lines or extra rows."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner
from rerank_ops.cli import main
from rerank_ops.drift.logs import Window, read_samples
from rerank_ops.drift.schema import DriftConfig
from test_cli_compare import START_TS, request_event

from rerank_plugins.telemetry.events import build_feedback_event
from rerank_plugins.telemetry.sinks import JsonlSink, ParquetSink

CONFIG = DriftConfig()


def mixed_log(seed: int, requests: int) -> tuple[list[dict], int, int]:
    """Served request records, one or two feedback records for a third of them, and
    a shadow record for every tenth; returns (events, feedback count, shadow count)."""
    rng = random.Random(seed)
    events, feedback, shadow = [], 0, 0
    for index in range(requests):
        ts = START_TS + index
        record = request_event(rng, ts, variant="control", model_version="a",
                               fallback=0.02, latency_ms=40)
        record.update(n_candidates=rng.randint(3, 12), query_length_tokens=rng.randint(2, 9),
                      doc_length_mean=rng.uniform(5, 40), cache_hit_ratio=rng.random())
        events.append(record)
        if index % 10 == 0:
            events.append({**request_event(rng, ts, variant="candidate", model_version="b",
                                           fallback=0.0, latency_ms=50, served=False)})
            shadow += 1
        if index % 3 == 0:
            for position in range(rng.choice((1, 2))):
                event = build_feedback_event(
                    request_id=record["request_id"], doc_fp="fp", label=1.0,
                    position=position, variant="control", model_id="minilm",
                    model_version="a")
                event["ts"] = ts + 0.5
                events.append(event)
                feedback += 1
    return events, feedback, shadow


@pytest.fixture(params=["jsonl", "parquet"])
def sink_kind(request):
    return request.param


def write(directory, events, kind):
    sink = JsonlSink(directory) if kind == "jsonl" else ParquetSink(directory,
                                                                    rows_per_file=10_000)
    sink.write(events)
    sink.close()
    return sorted(directory.glob("events-*"))


def test_feedback_and_shadow_records_are_skipped_and_counted_not_malformed(tmp_path,
                                                                           sink_kind):
    events, feedback, shadow = mixed_log(1, 600)
    files = write(tmp_path / "mixed", events, sink_kind)
    only_requests = [e for e in events if e["event"] == "rerank" and e["served"]]
    plain = write(tmp_path / "plain", only_requests, sink_kind)
    [mixed] = read_samples(files, [None], config=CONFIG, max_rows=50_000, seed=1,
                           labels=["current"], progress=False)
    [alone] = read_samples(plain, [None], config=CONFIG, max_rows=50_000, seed=1,
                           labels=["current"], progress=False)
    assert feedback > 200 and shadow == 60
    assert (mixed.stats.feedback, mixed.stats.shadow) == (feedback, shadow)
    assert mixed.stats.malformed == 0 and mixed.stats.valid == 600
    assert mixed.stats.as_dict()["feedback"] == feedback
    # the rows drift sees are exactly the served requests, as if feedback never existed
    assert mixed.frame.equals(alone.frame)


def test_skipped_records_are_counted_in_the_window_they_fall_in(tmp_path):
    events, _, _ = mixed_log(2, 400)
    files = write(tmp_path, events, "jsonl")
    first = Window(START_TS, START_TS + 200)
    second = Window(START_TS + 200, START_TS + 400)
    samples = read_samples(files, [first, second], config=CONFIG, max_rows=50_000, seed=1,
                           labels=["reference", "current"], progress=False)
    per_window = [sum(1 for e in events if e["event"] == "feedback" and w.contains(e["ts"]))
                  for w in (first, second)]
    assert [s.stats.feedback for s in samples] == per_window
    assert [s.stats.valid for s in samples] == [200, 200]


def test_a_line_that_mentions_feedback_in_its_text_is_still_traffic(tmp_path):
    rng = random.Random(3)
    record = request_event(rng, START_TS, variant="control", model_version="a",
                           fallback=0, latency_ms=10)
    record["query_text"] = 'why is "event":"feedback" in my query'
    files = write(tmp_path, [record], "jsonl")
    [sample] = read_samples(files, [None], config=CONFIG, max_rows=10, seed=1,
                            labels=["current"], progress=False)
    assert sample.stats.valid == 1 and sample.stats.feedback == 0


def test_drift_command_summary_counts_feedback_apart(tmp_path):
    reference, _, _ = mixed_log(4, 300)
    current, feedback, shadow = mixed_log(5, 300)
    write(tmp_path / "ref", reference, "jsonl")
    write(tmp_path / "cur", current, "jsonl")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["drift", "--reference", str(tmp_path / "ref"),
                                       "--current", str(tmp_path / "cur"), "--min-rows", "100",
                                       "--out", str(out), "--no-progress"])
    assert result.exit_code in (0, 3), result.output
    summary = json.loads((out / "drift-summary.json").read_text())
    assert summary["current"]["feedback"] == feedback
    assert summary["current"]["shadow"] == shadow
    assert summary["current"]["malformed"] == 0 and summary["current"]["valid"] == 300
    assert f"0 malformed, {feedback} feedback, {shadow} shadow" in result.output
