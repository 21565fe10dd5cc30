"""`rerank-ops drift` on event logs written by the real Reranker and bundled model.

Traffic: judged queries of a shared collection with their BM25 top-3 candidates,
each query asked several times in shuffled order through a memory cache (repeats
are served from the cache, as popular queries are in production, which also keeps
the fixture affordable: ~300 distinct requests are scored). Distinct queries, not
events, set how alike two halves of the same traffic look, so the reference uses
all 225 judged Cranfield queries (with 60 queries the halves already differ by
more than the 0.1 thresholds). Cranfield is the reference traffic; CISI queries
(another domain) are the shifted traffic.

The same command also runs on the project's own demo corpus, so a fresh clone
without the shared collections exercises it: its twelve queries asked twenty times
are the reference (split into halves query by query, so both halves ask the same
questions), and the corpus's own documents asked as queries (long, wordy requests)
are the shifted traffic. The Pushgateway is the real one from Debian.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, free_port, require_binary, require_collection

from rerank_plugins.telemetry import contract as c
from rerank_plugins.telemetry.events import CATEGORICAL_FEATURES, NUMERIC_FEATURES

# The traffic fixture takes ~30 s on an idle 2-core machine but many minutes when the
# machine is shared; give setup room beyond the suite's 600 s default.
pytestmark = pytest.mark.timeout(1800)

DEPTH = 3
DAY = 86_400.0
# Features whose distributions differ between Cranfield and CISI requests: query and
# document lengths and BM25 score levels.
CONTENT_FEATURES = {"query_length_tokens", "doc_length_mean", "retrieval_score_mean"}


def _serve(scorer, collection_path, out: Path, *, queries: int, passes: int,
           seed: int) -> int:
    from rerank_ops.collections import Collection, load_collection

    from rerank_plugins import Candidate, Reranker
    from rerank_plugins.telemetry.sinks import EventLog, JsonlSink

    collection = collection_path if isinstance(collection_path, Collection) else \
        load_collection(collection_path)
    query_ids = [q for q in sorted(collection.run) if q in collection.queries][:queries]
    traffic = query_ids * passes
    random.Random(seed).shuffle(traffic)
    # A generous deadline: on a busy shared CI box a timeout would turn requests into
    # fallbacks without model scores, which is a different (real) drift. Sixteen
    # concurrent callers and one inference thread let the engine merge requests into
    # large forward passes, as it does under production load.
    reranker = Reranker(scorer, cache="memory", timeout_s=300, top_n=3,
                        max_inference_threads=1, event_log=EventLog(JsonlSink(out)))

    def ask(qid: str) -> None:
        candidates = [Candidate(doc, collection.doc_text(doc), score)
                      for doc, score in collection.run[qid][:DEPTH]]
        reranker.rerank(collection.queries[qid], candidates)

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(ask, traffic))
    finally:
        reranker.close()
        reranker.event_log.close()  # ours, not the reranker's: we close it
    return len(traffic)


@pytest.fixture(scope="session")
def traffic(tmp_path_factory, bi_scorer) -> dict[str, Path]:
    """Event logs: cranfield (reference traffic) and cisi (shifted traffic)."""
    cranfield, cisi = require_collection("cranfield"), require_collection("cisi")
    root = tmp_path_factory.mktemp("traffic")
    _serve(bi_scorer, cranfield, root / "cranfield", queries=225, passes=3, seed=1)
    _serve(bi_scorer, cisi, root / "cisi", queries=76, passes=4, seed=2)
    return {"cranfield": root / "cranfield", "cisi": root / "cisi"}


@pytest.fixture(scope="session")
def demo_traffic(tmp_path_factory, bi_scorer, demo_collection) -> dict[str, Path]:
    """Event logs on the demo corpus: its queries (reference), split into two halves
    that ask the same questions, and its documents asked as queries (shifted)."""
    from rerank_ops.collections import Collection, load_collection
    from rerank_ops.commands.demo import bm25_rankings

    root = tmp_path_factory.mktemp("demo-traffic")
    _serve(bi_scorer, demo_collection, root / "demo", queries=12, passes=20, seed=3)
    demo = load_collection(demo_collection)
    asked = {f"doc-as-query-{d}": demo.doc_text(d) for d in demo.corpus}
    shifted = Collection("demo-docs-as-queries", demo.corpus, asked, {})
    shifted.run = bm25_rankings(shifted, sorted(asked), DEPTH).rankings
    _serve(bi_scorer, shifted, root / "shifted", queries=60, passes=4, seed=4)
    by_request: dict[tuple, list[str]] = {}
    for line in sorted(_lines(root / "demo"), key=_stable_key):
        by_request.setdefault(_stable_key(line), []).append(line)
    a, b = [], []
    for group in by_request.values():  # alternate within each (query, status) group
        a.extend(group[0::2])
        b.extend(group[1::2])
    return {"demo": root / "demo", "shifted": root / "shifted",
            "half_a": _write(root / "a" / "events-a.jsonl", a),
            "half_b": _write(root / "b" / "events-b.jsonl", b)}


def _lines(directory: Path) -> list[str]:
    return [line for f in sorted(directory.glob("events-*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def halves(traffic, tmp_path_factory) -> tuple[Path, Path]:
    """Two disjoint random halves of the cranfield traffic."""
    # concurrent callers log in scheduling order: sort first so the split is repeatable
    lines = sorted(_lines(traffic["cranfield"]), key=_stable_key)
    random.Random(7).shuffle(lines)
    root = tmp_path_factory.mktemp("halves")
    middle = len(lines) // 2
    return (_write(root / "a" / "events-a.jsonl", lines[:middle]),
            _write(root / "b" / "events-b.jsonl", lines[middle:]))


def _stable_key(line: str) -> tuple:
    event = json.loads(line)
    return (event["query_length_tokens"], event["doc_length_mean"],
            event["retrieval_score_mean"], event["status"])


def _shift_ts(line: str, seconds: float) -> str:
    event = json.loads(line)
    event["ts"] -= seconds
    return json.dumps(event)


def _rerank_ops(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed console script the way cron does (fresh process, no TTY)."""
    script = Path(sys.executable).with_name("rerank-ops")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "rerank_ops"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "ops"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def _cli(*args: str):
    from rerank_ops.cli import main

    return CliRunner().invoke(main, ["drift", *args], catch_exceptions=False)


# -- the cron path ---------------------------------------------------------------
def test_cron_run_over_time_windows_exits_3_on_a_domain_shift(traffic, tmp_path):
    # last week's traffic was cranfield, today's is cisi: one log directory, windows by ts
    log_dir = tmp_path / "log"
    _write(log_dir / "events-older.jsonl",
           [_shift_ts(line, 2 * DAY) for line in _lines(traffic["cranfield"])])
    _write(log_dir / "events-today.jsonl", _lines(traffic["cisi"]))
    out, prom = tmp_path / "report", tmp_path / "textfile" / "rerank_drift.prom"
    proc = _rerank_ops("drift", "--log-dir", str(log_dir), "--reference-days", "7",
                       "--current-days", "1", "--out", str(out), "--textfile", str(prom))
    assert proc.returncode == 3, proc.stderr
    assert "DRIFT DETECTED" in proc.stdout
    summary = json.loads((out / "drift-summary.json").read_text())
    assert summary["drift_detected"] is True
    assert summary["reference"]["valid"] == len(_lines(traffic["cranfield"]))
    assert summary["current"]["valid"] == len(_lines(traffic["cisi"]))
    assert CONTENT_FEATURES <= set(summary["drifted_features"])
    assert set(summary["windows"]) == {"reference", "current"}
    assert (out / "drift-report.html").read_text().lstrip().lower().startswith("<!doctype")
    assert json.loads((out / "drift-report.json").read_text())["metrics"]
    _assert_textfile(prom, detected=1)


def test_cron_run_on_two_halves_of_the_same_traffic_exits_0(halves, tmp_path):
    first, second = halves
    proc = _rerank_ops("drift", "--reference", str(first), "--current", str(second.parent),
                       "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no drift" in proc.stdout
    summary = json.loads((tmp_path / "drift-summary.json").read_text())
    assert summary["drift_detected"] is False
    assert summary["drift_share"] < summary["drift_share_threshold"]


def test_demo_corpus_domain_shift_exits_3(demo_traffic, tmp_path):
    proc = _rerank_ops("drift", "--reference", str(demo_traffic["demo"]), "--current",
                       str(demo_traffic["shifted"]), "--out", str(tmp_path),
                       "--textfile", str(tmp_path / "rerank_drift.prom"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "drift-summary.json").read_text())
    assert summary["drift_detected"] is True
    assert summary["reference"]["valid"] == 12 * 20
    assert summary["current"]["valid"] == 60 * 4
    assert {"query_length_tokens", "retrieval_score_mean"} <= set(summary["drifted_features"])
    _assert_textfile(tmp_path / "rerank_drift.prom", detected=1,
                     features={"query_length_tokens"})


def test_demo_corpus_halves_asking_the_same_questions_exit_0(demo_traffic, tmp_path):
    proc = _rerank_ops("drift", "--reference", str(demo_traffic["half_a"]), "--current",
                       str(demo_traffic["half_b"]), "--out", str(tmp_path), "--min-rows", "100")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "drift-summary.json").read_text())
    assert summary["drift_detected"] is False
    assert not CONTENT_FEATURES & set(summary["drifted_features"])


def _assert_textfile(path: Path, *, detected: int, features=CONTENT_FEATURES) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert {spec.prom_name for spec in c.DRIFT_METRICS} == set(families)
    assert families[c.DRIFT_DETECTED.prom_name].samples[0].value == detected
    scored = {s.labels[c.L_FEATURE] for s in families[c.DRIFT_FEATURE_SCORE.prom_name].samples}
    assert features <= scored
    last = families[c.DRIFT_LAST_SUCCESS.prom_name].samples[0].value
    assert abs(last - time.time()) < 600
    assert not list(path.parent.glob("*.prom.*")), "temporary file left behind"


# -- stat tests and publication ------------------------------------------------------
def test_every_feature_gets_the_stated_test_not_evidentlys_automatic_choice(halves, tmp_path):
    first, second = halves
    result = _cli("--reference", str(first), "--current", str(second), "--out", str(tmp_path),
                  "--num-method", "ks", "--num-threshold", "0.01", "--min-rows", "100")
    assert result.exit_code in (0, 3), result.output
    summary = json.loads((tmp_path / "drift-summary.json").read_text())
    tests = {f["feature"]: (f["method"], f["threshold"]) for f in summary["features"]}
    assert tests == {**{n: ("ks", 0.01) for n in NUMERIC_FEATURES},
                     **{n: ("jensenshannon", 0.1) for n in CATEGORICAL_FEATURES}}
    evidently = json.loads((tmp_path / "drift-report.json").read_text())
    methods = {m["config"]["column"]: m["config"]["method"] for m in evidently["metrics"]
               if m["config"]["type"].endswith("ValueDrift")}
    assert set(methods.values()) <= {"ks", "jensenshannon"} and len(methods) > 10


class Pushgateway:
    """The real prometheus-pushgateway (Debian package) on a free loopback port."""

    def __init__(self) -> None:
        binary = require_binary("prometheus-pushgateway")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_http(f"{self.url}/-/ready")

    def metrics(self) -> str:
        return urllib.request.urlopen(f"{self.url}/metrics", timeout=5).read().decode()

    def put(self, group: str, body: str) -> None:
        request = urllib.request.Request(f"{self.url}/metrics/{group}", data=body.encode(),
                                         method="PUT")
        urllib.request.urlopen(request, timeout=5).read()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_pushgateway_push_add_replaces_our_series_and_keeps_the_rest(demo_traffic):
    """push-add (POST) against the real Pushgateway: the drift series replace the ones
    of the last run, and what other pushers put in the same group stays."""
    gateway = Pushgateway()
    try:
        gateway.put("job/rerank_drift", "# TYPE backup_last_success gauge\n"
                    "backup_last_success 42\n"
                    f"# TYPE {c.DRIFT_DETECTED.prom_name} gauge\n"
                    f"{c.DRIFT_DETECTED.prom_name} 0\n")
        result = _cli("--reference", str(demo_traffic["demo"]), "--current",
                      str(demo_traffic["shifted"]), "--pushgateway", gateway.url)
        assert result.exit_code == 3, result.output
        text = gateway.metrics()
    finally:
        gateway.stop()
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    group = {"instance": "", "job": "rerank_drift"}
    for spec in c.DRIFT_METRICS:
        assert families[spec.prom_name].type == "gauge", spec.prom_name
        assert all(s.labels["job"] == "rerank_drift" for s in families[spec.prom_name].samples)
    [detected] = families[c.DRIFT_DETECTED.prom_name].samples
    assert detected.labels == group and detected.value == 1  # replaced, not added
    [kept] = families["backup_last_success"].samples
    assert kept.labels == group and kept.value == 42  # push-add left it alone


def test_unreachable_pushgateway_is_an_error_naming_the_verdict(halves):
    first, second = halves
    result = _cli("--reference", str(first), "--current", str(second),
                  "--pushgateway", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert "push to" in result.output and "the run itself completed" in result.output


def test_real_pushgateway_serves_what_the_cron_run_pushed(traffic, tmp_path):
    gateway = Pushgateway()
    try:
        proc = _rerank_ops("drift", "--reference", str(traffic["cranfield"]), "--current",
                           str(traffic["cisi"]), "--pushgateway", gateway.url)
        assert proc.returncode == 3, proc.stderr
        text = gateway.metrics()
    finally:
        gateway.stop()
    assert 'rerank_drift_detected{instance="",job="rerank_drift"} 1' in text
    assert 'rerank_drift_feature_score{feature="query_length_tokens"' in text


def _wait_http(url: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- bad input -----------------------------------------------------------------------
def test_missing_log_is_an_error_not_a_usage_error(tmp_path):
    result = _cli("--reference", str(tmp_path / "nope"), "--current", str(tmp_path))
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_empty_log_directory_names_what_it_expected(tmp_path):
    (tmp_path / "ref").mkdir()
    result = _cli("--log-dir", str(tmp_path / "ref"))
    assert result.exit_code == 1
    assert "events-*.jsonl" in result.output


def test_empty_time_window_says_so(halves, tmp_path):
    first, _ = halves
    result = _cli("--log-dir", str(first.parent), "--until", "2001-01-01T00:00:00Z")
    assert result.exit_code == 1
    assert "no events found" in result.output


def test_malformed_lines_are_skipped_and_counted(halves, tmp_path):
    first, second = halves
    good = _lines(first.parent)
    junk = ["{not json", "[1, 2]", json.dumps({**json.loads(good[0]), "n_kept": "five"}),
            json.dumps({k: v for k, v in json.loads(good[1]).items() if k != "status"}),
            "\x00\x01garbage"]
    mixed = good[:]
    for index, line in enumerate(junk):
        mixed.insert(index * 40, line)
    _write(tmp_path / "mixed.jsonl", mixed)
    out = tmp_path / "out"
    result = _cli("--reference", str(tmp_path / "mixed.jsonl"), "--current", str(second),
                  "--out", str(out))
    assert result.exit_code in (0, 3), result.output
    summary = json.loads((out / "drift-summary.json").read_text())
    assert summary["reference"]["malformed"] == len(junk)
    assert summary["reference"]["valid"] == len(good)
    assert f"{len(junk)} malformed" in result.output


def test_too_few_valid_rows_after_skipping_malformed_is_refused(halves, tmp_path):
    first, second = halves
    lines = _lines(first.parent)[:50] + ["{broken"] * 500
    _write(tmp_path / "bad.jsonl", lines)
    result = _cli("--reference", str(second), "--current", str(tmp_path / "bad.jsonl"))
    assert result.exit_code == 1
    assert "only 50 valid event(s) (500 malformed" in result.output


def test_schema_version_mismatch_is_explained(halves, tmp_path):
    first, second = halves
    newer = [json.dumps({**json.loads(line), "schema_version": 2})
             for line in _lines(second.parent)]
    _write(tmp_path / "v2.jsonl", newer)
    result = _cli("--reference", str(first), "--current", str(tmp_path / "v2.jsonl"))
    assert result.exit_code == 1
    assert "schema version mismatch" in result.output and "v2" in result.output


def test_samples_too_small_to_judge_are_refused(halves, tmp_path):
    first, second = halves
    _write(tmp_path / "few.jsonl", _lines(second.parent)[:30])
    result = _cli("--reference", str(first), "--current", str(tmp_path / "few.jsonl"))
    assert result.exit_code == 1
    assert "only 30 valid event(s)" in result.output and "--min-rows" in result.output


def test_large_logs_are_sampled_reproducibly(halves, tmp_path):
    first, second = halves
    runs = []
    for name in ("one", "two"):
        out = tmp_path / name
        result = _cli("--reference", str(first), "--current", str(second), "--max-rows",
                      "150", "--min-rows", "100", "--seed", "5", "--out", str(out))
        assert result.exit_code in (0, 3), result.output
        runs.append(json.loads((out / "drift-summary.json").read_text()))
    assert runs[0]["current"]["sampled"] is True
    assert runs[0]["current"]["valid"] == 150
    assert runs[0]["features"] == runs[1]["features"]


@pytest.mark.parametrize("args", [
    [],
    ["--reference", "x"],
    ["--log-dir", "x", "--reference", "y"],
    ["--log-dir", "x", "--exclude", "no_such_feature"],
    ["--log-dir", "x", "--until", "yesterday"],
    ["--log-dir", "x", "--drift-share", "0"],
])
def test_usage_errors_exit_2(args):
    assert _cli(*args).exit_code == 2


def test_help_shows_an_example():
    result = _cli("--help")
    assert result.exit_code == 0
    assert "rerank-ops drift --log-dir" in result.output


# -- deployment files ------------------------------------------------------------------
def _parses(args: list[str]) -> None:
    from rerank_ops.cli import main

    with main.make_context("rerank-ops", list(args)) as ctx:
        command = main.get_command(ctx, args[0])
        command.make_context(args[0], list(args[1:]), parent=ctx)  # raises on usage errors


def test_cron_entry_runs_drift_with_valid_options():
    import shlex

    lines = [line for line in (ROOT / "ops/deploy/cron/rerank-drift").read_text().splitlines()
             if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    [entry] = lines
    fields = entry.split(None, 6)
    assert len(fields[:5]) == 5 and fields[5] == "rerank"  # /etc/cron.d format has a user
    words = shlex.split(fields[6].split(">>")[0])
    assert words[0].endswith("rerank-ops")
    _parses(words[1:])


def test_kubernetes_cronjob_runs_drift_with_valid_options():
    import yaml

    job = yaml.safe_load((ROOT / "ops/deploy/kubernetes/drift-cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]["jobTemplate"]["spec"]
    assert spec["backoffLimit"] == 0  # exit 3 must stay a failure, not be retried
    [container] = spec["template"]["spec"]["containers"]
    assert container["args"][0] == "rerank-ops"
    _parses(container["args"][1:])


# -- sampling ------------------------------------------------------------------------
def test_reservoir_sample_is_uniform_over_the_whole_stream():
    from rerank_ops.drift.logs import _Reservoir

    for seed in range(3):
        reservoir = _Reservoir(1000, random.Random(seed))
        for value in range(100_000):
            reservoir.offer(value)
        sample = reservoir.items
        assert len(sample) == len(set(sample)) == 1000
        # the mean of 1000 uniform draws from 0..99999 has a standard deviation of ~913
        assert abs(sum(sample) / 1000 - 49_999.5) < 4_000
        assert sum(v >= 90_000 for v in sample) > 50  # the tail is reached, not just the head
