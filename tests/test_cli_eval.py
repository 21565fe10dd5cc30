"""`rerank-ops eval`: before/after metrics, the regression gate, and --tune output
that round-trips into the Reranker and the adapters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, require_collection
from rerank_ops.cli import main

from rerank_plugins import Reranker
from rerank_plugins.config import load_settings
from rerank_plugins.errors import ConfigurationError

RERANK_OPS = [sys.executable, "-m", "rerank_ops"]


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "ops"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*RERANK_OPS, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def cranfield_eval(tmp_path_factory):
    """One real subprocess run, the way CI would call the gate."""
    path = require_collection("cranfield")
    out = tmp_path_factory.mktemp("eval")
    proc = run_cli("eval", "--collection", str(path), "--max-queries", "60", "--depth", "50",
                   "--min-ndcg-gain", "0", "--json", str(out / "report.json"),
                   "--tune", str(out / "tuned.json"))
    return proc, out


def assert_report_is_right(report: dict, collection_path: Path, depth: int) -> None:
    """The numbers a user reads, recomputed here: the first stage's nDCG@10 from the run
    file with ir-measures, and the gain as the mean of the per-query deltas."""
    import ir_measures
    from ir_measures import nDCG
    from rerank_ops.collections import load_collection

    collection = load_collection(collection_path)
    qids = list(report["per_query_ndcg10_delta"])
    run = {qid: {doc: score for doc, score in collection.run[qid][:depth]} for qid in qids}
    qrels = {qid: collection.qrels[qid] for qid in qids}
    first = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    assert report["first_stage"]["nDCG@10"] == pytest.approx(first, abs=1e-6)
    deltas = report["per_query_ndcg10_delta"].values()
    assert report["gain"]["nDCG@10"] == pytest.approx(sum(deltas) / len(qids), abs=1e-6)
    assert report["gain"]["nDCG@10"] == pytest.approx(
        report["reranked"]["nDCG@10"] - report["first_stage"]["nDCG@10"], abs=1e-9)


def test_eval_on_cranfield_shows_a_gain_with_the_embedded_default(cranfield_eval):
    proc, out = cranfield_eval
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    print(f"\ncranfield (60 queries, top-50): first stage nDCG@10 "
          f"{report['first_stage']['nDCG@10']:.4f} -> reranked {report['reranked']['nDCG@10']:.4f}")
    assert report["gain"]["nDCG@10"] > 0
    assert "gate passed" in proc.stdout
    assert len(report["per_query_ndcg10_delta"]) == 60 and report["queries"] == 60
    assert_report_is_right(report, require_collection("cranfield"), 50)


def test_eval_on_the_demo_corpus_shows_a_gain(demo_collection, tmp_path):
    """The same command on the corpus the project ships: runs on a fresh clone."""
    proc = run_cli("eval", "--collection", str(demo_collection), "--depth", "20",
                   "--min-ndcg-gain", "0", "--json", str(tmp_path / "report.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["queries"] == 12 and report["gain"]["nDCG@10"] > 0
    assert_report_is_right(report, demo_collection, 20)
    proc = run_cli("eval", "--collection", str(demo_collection), "--depth", "20",
                   "--min-ndcg-gain", "0.9")
    assert proc.returncode == 3 and "GATE FAILED" in proc.stderr


def test_gate_fails_with_exit_3_when_the_gain_is_below_the_bar(tmp_path):
    path = require_collection("cranfield")
    proc = run_cli("eval", "--collection", str(path), "--max-queries", "10", "--depth", "20",
                   "--min-ndcg-gain", "0.9")
    assert proc.returncode == 3, proc.stdout + proc.stderr[-1000:]
    assert "GATE FAILED" in proc.stderr


def test_tuned_config_round_trips_into_the_reranker(cranfield_eval):
    _, out = cranfield_eval
    data = json.loads((out / "tuned.json").read_text())
    held = data["provenance"]["held_out"]
    assert set(held) == {"bm25", "default", "tuned"}
    assert set(data["reranker"]) == {"fusion", "alpha", "normalization", "rerank_depth",
                                     "threshold"}  # what --tune chose, nothing else
    assert load_settings(out / "tuned.json").fusion == data["reranker"]["fusion"]
    reranker = Reranker.from_config(out / "tuned.json", cache=None)
    assert reranker.settings.fusion == data["reranker"]["fusion"]
    assert reranker.settings.alpha == data["reranker"]["alpha"]
    assert reranker.settings.rerank_depth == data["reranker"]["rerank_depth"]
    result = reranker.rerank("how does a wing make lift",
                             ["a cat sleeps in the sun", "a wing makes lift"])
    assert [item.text for item in result] == ["a wing makes lift", "a cat sleeps in the sun"]
    reranker.close()


def test_config_file_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 99, "reranker": {}}))
    with pytest.raises(ConfigurationError, match="schema_version"):
        load_settings(bad)
    bad.write_text(json.dumps({"schema_version": 1, "reranker": {"colour": "red"}}))
    with pytest.raises(ConfigurationError, match="unknown settings"):
        load_settings(bad)


def test_tuning_on_an_evaluation_only_collection_is_refused(tmp_path):
    fake = tmp_path / "scifact"
    fake.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (fake / name).write_text('{"_id": "1", "text": "x"}\n')
    (fake / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t1\n")
    (fake / "bm25_top100.trec").write_text("1 Q0 1 1 1.0 t\n")
    result = CliRunner().invoke(main, ["eval", "--collection", str(fake), "--tune",
                                       str(tmp_path / "x.json")])
    assert result.exit_code == 2
    assert "independent evaluation" in result.output


def test_missing_run_is_an_actionable_error(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "wing"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "wing"}\n')
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    result = CliRunner().invoke(main, ["eval", "--collection", str(folder)])
    assert result.exit_code == 1
    assert "--run" in result.output
    assert Path(folder).exists()


def test_tuned_config_round_trips_into_both_adapters(cranfield_eval, bi_scorer):
    _, out = cranfield_eval
    data = json.loads((out / "tuned.json").read_text())["reranker"]
    from rerank_plugins.langchain import CrossEncoderRerank as LangChainRerank
    from rerank_plugins.llama_index import CrossEncoderRerank as LlamaRerank

    for adapter_cls in (LlamaRerank, LangChainRerank):
        adapter = adapter_cls(config=str(out / "tuned.json"), scorer=bi_scorer, cache=None)
        settings = adapter.reranker.settings
        assert (settings.fusion, settings.alpha, settings.normalization) == (
            data["fusion"], data["alpha"], data["normalization"])
        assert adapter.reranker.settings.rerank_depth == data["rerank_depth"]
        # an explicit setting wins over the file
        explicit = adapter_cls(config=str(out / "tuned.json"), scorer=bi_scorer, cache=None,
                               fusion="none")
        assert explicit.reranker.settings.fusion == "none"
        adapter.reranker.close()
        explicit.reranker.close()
