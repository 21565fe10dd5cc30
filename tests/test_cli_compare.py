"""`rerank-ops compare`: per-arm figures from the event log and its feedback, and the
promotion gate (exit 3) that fires on a worse canary and stays quiet on equal arms."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT
from rerank_ops.cli import main
from rerank_ops.compare import CompareInputError, collect, compare

from rerank_plugins.telemetry.events import (
    FIELDS,
    REQUEST_EVENT,
    SCHEMA_VERSION,
    build_feedback_event,
)
from rerank_plugins.telemetry.sinks import JsonlSink

#: Where users click, given they click: position bias (top-heavy), 8 results shown.
POSITION_WEIGHTS = (0.5, 0.2, 0.1, 0.08, 0.05, 0.04, 0.02, 0.01)
START_TS = 1_764_633_600.0  # 2025-12-02T00:00:00Z
_EMPTY_RECORD = dict.fromkeys(FIELDS)


def request_event(rng: random.Random, ts: float, *, variant: str, model_version: str,
                  fallback: float, latency_ms: float, served: bool = True) -> dict:
    """A request record with every schema field, as ``build_event`` writes it."""
    request_id = f"{rng.getrandbits(128):032x}"
    fell_back = rng.random() < fallback
    return {
        **_EMPTY_RECORD, "schema_version": SCHEMA_VERSION, "event": REQUEST_EVENT,
        "event_id": request_id, "request_id": request_id, "ts": ts,
        "model_id": "minilm", "model_revision": "r1", "variant": variant,
        "model_version": model_version, "served": served,
        "status": "fallback" if fell_back else "ok",
        "fallback_reason": "timeout" if fell_back else "",
        "latency_total_ms": rng.lognormvariate(0, 0.4) * latency_ms,
        "score_top1": None if fell_back else 0.4 + 0.6 * rng.random() ** 0.7,
        "n_candidates": 8, "n_kept": 8,
    }


def traffic(seed: int, arms: dict[str, dict], *, with_feedback: bool = True) -> list[dict]:
    """Request and feedback records of every arm. ``arms`` maps variant -> n (served
    requests), click (share of requests with a click), fallback, latency_ms, and
    optionally model_version and shadow (another variant's name: log a non-served
    record for each of its requests, as a shadow-compare does)."""
    rng = random.Random(seed)
    events = []
    ts = START_TS
    for variant, arm in arms.items():
        for _ in range(arm["n"]):
            ts += 0.5
            record = request_event(rng, ts, variant=variant,
                                   model_version=arm.get("model_version", variant),
                                   fallback=arm.get("fallback", 0.01),
                                   latency_ms=arm.get("latency_ms", 40.0))
            events.append(record)
            if not with_feedback or rng.random() >= arm["click"]:
                continue
            for position in sorted(set(rng.choices(range(8), POSITION_WEIGHTS,
                                                   k=rng.choice((1, 1, 1, 2))))):
                feedback = build_feedback_event(
                    request_id=record["request_id"], doc_fp=f"fp{rng.getrandbits(32):x}",
                    label=1.0, position=position, variant=variant, model_id="minilm",
                    model_version=record["model_version"])
                feedback["ts"] = ts + 5.0
                events.append(feedback)
    rng.shuffle(events)  # feedback may be written before its request's record
    return events


def equal_arms(n: int) -> dict[str, dict]:
    return {"control": {"n": n, "click": 0.35}, "candidate": {"n": n, "click": 0.35}}


def planted_ctr_drop(n: int) -> dict[str, dict]:
    """The candidate gets 10% (relative) fewer clicks; nothing else differs."""
    return {"control": {"n": n, "click": 0.35}, "candidate": {"n": n, "click": 0.315}}


def write_log(directory, events: list[dict]) -> None:
    """Through the library's own JSONL sink, as a served app writes them."""
    sink = JsonlSink(directory)
    sink.write(sorted(events, key=lambda e: e["ts"]))
    sink.close()


def by_metric(report, candidate="candidate") -> dict:
    return {t.metric: t for t in report.tests[candidate]}


# -- the gate -----------------------------------------------------------------------
def test_a_planted_ten_percent_ctr_drop_is_significantly_worse():
    report = compare(collect(traffic(1, planted_ctr_drop(10_000)), by="variant"))
    ctr = by_metric(report)["ctr"]
    assert report.worse and ctr.worse
    assert ctr.relative_change == pytest.approx(-0.10, abs=0.04)
    assert ctr.p_value < report.level
    assert not by_metric(report)["fallback_rate"].worse


def test_equal_variants_pass_the_gate_in_at_least_95_of_100_seeded_runs():
    worse = [seed for seed in range(100)
             if compare(collect(traffic(seed, equal_arms(2_000)), by="variant")).worse]
    assert len(worse) <= 5, f"false alarms on seeds {worse}"


def test_a_better_candidate_is_not_worse():
    arms = {"control": {"n": 10_000, "click": 0.315}, "candidate": {"n": 10_000, "click": 0.35}}
    report = compare(collect(traffic(2, arms), by="variant"))
    assert by_metric(report)["ctr"].better and not report.worse


def test_a_candidate_that_falls_back_more_is_worse_without_any_feedback():
    arms = {"control": {"n": 5_000, "click": 0.3, "fallback": 0.005},
            "candidate": {"n": 5_000, "click": 0.3, "fallback": 0.03}}
    report = compare(collect(traffic(3, arms, with_feedback=False), by="variant"))
    assert by_metric(report)["fallback_rate"].worse and report.worse
    assert by_metric(report)["ctr"].p_value is None  # nothing to test, said as such
    assert any("no positive feedback" in note for note in report.notes)


def test_latency_is_reported_but_gates_only_when_asked():
    arms = {"control": {"n": 3_000, "click": 0.3, "latency_ms": 40.0},
            "candidate": {"n": 3_000, "click": 0.3, "latency_ms": 60.0}}
    arms_seen = collect(traffic(4, arms), by="variant")
    assert by_metric(compare(arms_seen))["latency"].worse
    assert not compare(arms_seen).worse
    assert compare(arms_seen, gate=("latency",)).worse


def test_ctr_counts_only_clicks_above_k_and_mrr_uses_the_first_click():
    rng = random.Random(0)
    control = [request_event(rng, START_TS + i, variant="control", model_version="a",
                             fallback=0, latency_ms=10) for i in range(4)]
    clicks = [(0, 0), (1, 4), (1, 1), (2, 2)]  # (request index, position); request 3: none
    feedback = [build_feedback_event(request_id=control[i]["request_id"], doc_fp="x",
                                     label=1.0, position=p, variant="control",
                                     model_id="m", model_version="a") for i, p in clicks]
    feedback.append(build_feedback_event(request_id="elsewhere", doc_fp="y", label=1.0,
                                         position=0, variant="control", model_id="m",
                                         model_version="a"))
    arms = collect(control + feedback, by="variant", k=2)
    arm = arms.arms["control"]
    assert arm.served == 4 and arm.feedback == 4 and arms.feedback_unmatched == 1
    assert list(arm.clicked_at(2)) == [True, True, False, False]
    assert sorted(arm.reciprocal_ranks()) == pytest.approx([1 / 3, 1 / 2, 1.0])


def test_shadow_records_count_for_latency_and_scores_but_not_for_ctr():
    arms = {"control": {"n": 500, "click": 0.3}}
    events = traffic(5, arms)
    rng = random.Random(5)
    shadows = [request_event(rng, START_TS + i, variant="candidate", model_version="b",
                             fallback=0.0, latency_ms=30, served=False) for i in range(500)]
    report = compare(collect(events + shadows, by="variant"))
    summary = report.summaries["candidate"]
    assert summary["requests"] == 500 and summary["served"] == 0 and summary["shadow"] == 500
    assert summary["ctr_at_k"] is None and summary["latency_ms"]["p50"] is not None


def test_by_model_version_defaults_control_to_the_most_served_version():
    arms = {"control": {"n": 4_000, "click": 0.35, "model_version": "minilm@r1"},
            "canary": {"n": 4_000, "click": 0.2, "model_version": "minilm@r2"},
            "stable": {"n": 6_000, "click": 0.35, "model_version": "minilm@r1"}}
    report = compare(collect(traffic(6, arms), by="model_version"))
    assert report.control == "minilm@r1"
    assert set(report.tests) == {"minilm@r2"} and report.worse


def test_missing_control_and_single_arm_are_input_errors():
    with pytest.raises(CompareInputError, match="control"):
        compare(collect(traffic(7, {"canary": {"n": 200, "click": 0.3}}), by="variant"))
    with pytest.raises(CompareInputError, match="only the control"):
        compare(collect(traffic(7, {"control": {"n": 200, "click": 0.3}}), by="variant"))


def test_a_candidate_with_too_little_traffic_is_reported_not_tested():
    arms = {"control": {"n": 2_000, "click": 0.35}, "candidate": {"n": 50, "click": 0.0}}
    report = compare(collect(traffic(8, arms), by="variant"))
    assert report.tests == {} and not report.worse
    assert any("only 50 request" in note for note in report.notes)


# -- the command --------------------------------------------------------------------
def test_compare_command_exits_3_on_a_worse_canary_and_writes_json(tmp_path):
    write_log(tmp_path / "log", traffic(9, planted_ctr_drop(8_000)))
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(main, ["compare", "--log-dir", str(tmp_path / "log"),
                                       "--json", str(out)])
    assert result.exit_code == 3, result.output
    assert "WORSE" in result.output and "position bias" in result.output
    document = json.loads(out.read_text())
    assert document["worse"] is True
    assert document["arms"]["candidate"]["ctr_at_k"] < document["arms"]["control"]["ctr_at_k"]


def test_compare_command_exits_0_on_equal_arms_and_honours_the_window(tmp_path):
    events = traffic(10, equal_arms(2_000))
    write_log(tmp_path / "log", events)
    runner = CliRunner()
    result = runner.invoke(main, ["compare", "--log-dir", str(tmp_path / "log")])
    assert result.exit_code == 0, result.output
    # a window that holds no events at all is an error, not a pass
    empty = runner.invoke(main, ["compare", "--log-dir", str(tmp_path / "log"),
                                 "--until", "2020-01-01T00:00:00Z", "--days", "1"])
    assert empty.exit_code == 1 and "no rerank request records" in empty.output


@pytest.mark.parametrize("args", [
    ["--by", "colour"], ["--since", "yesterday"], ["--since", "0", "--days", "1"],
    ["--gate", "vibes"], ["--alpha", "1.5"],
])
def test_compare_usage_errors_exit_2(tmp_path, args):
    write_log(tmp_path, traffic(11, equal_arms(10)))
    result = CliRunner().invoke(main, ["compare", "--log-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output


def test_compare_runs_as_a_real_command(tmp_path):
    write_log(tmp_path / "log", traffic(12, planted_ctr_drop(8_000)))
    done = subprocess.run([sys.executable, "-m", "rerank_ops", "compare", "--log-dir",
                           str(tmp_path / "log"), "--by", "model_version",
                           "--control", "control"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={"PYTHONPATH": f"{ROOT}:{ROOT / 'ops'}", "PATH": ""})
    assert done.returncode == 3, done.stdout + done.stderr
    assert "arms by model_version (control: control)" in done.stdout
