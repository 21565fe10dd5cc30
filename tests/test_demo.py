"""The quickstart main job, ``rerank-ops demo``: one real subprocess run on the
built-in corpus, plus in-process runs on BEIR folders and usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rerank_ops.cli import main
from rerank_ops.collections import read_trec_run
from rerank_ops.demo_corpus import DOCUMENTS, QRELS, QUERIES

ROOT = Path(__file__).resolve().parents[1]


def test_built_in_corpus_is_consistent():
    assert 40 <= len(DOCUMENTS) <= 80 and 10 <= len(QUERIES) <= 15
    assert set(QRELS) == set(QUERIES)
    for judged in QRELS.values():
        assert set(judged) <= set(DOCUMENTS)
        assert set(judged.values()) <= {1, 2} and 2 in judged.values()
    assert len({text for _title, text in DOCUMENTS.values()}) == len(DOCUMENTS)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``python -m rerank_ops demo`` as a user runs it: a fresh process, offline."""
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "ops"), str(ROOT)])}
    env.pop("RERANK_PLUGINS_SECRET", None)
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "demo", "--out", str(out),
         "--timeout-s", "60"],  # a busy CI box must not turn this into a fallback run
        capture_output=True, text=True, env=env, cwd=out.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, out


def test_demo_prints_a_before_after_table_where_reranking_wins(demo_run):
    stdout, out = demo_run
    print(stdout)
    rows = {}
    for line in stdout.splitlines():
        parts = line.rsplit(None, 4)
        if line.startswith(("BM25 (first stage)", "+ rerank (all-MiniLM-L6-v2)")):
            rows[line[:20]] = [float(p) for p in parts[1:]]
    bm25, reranked = rows["BM25 (first stage)  "], rows["+ rerank (all-MiniLM"]
    assert reranked[0] > bm25[0]  # nDCG@10
    assert reranked[1] >= bm25[1]  # MRR@10
    assert all(value > 0 for value in bm25[2:] + reranked[2:])  # p50 and p95 latency
    assert "nDCG@10" in stdout and "MRR@10" in stdout and "p95 ms" in stdout
    assert "change (rerank - first stage)" in stdout
    summary = json.loads((out / "summary.json").read_text())
    metrics = summary["metrics"]
    assert metrics["+ rerank (all-MiniLM-L6-v2)"]["nDCG@10"] == pytest.approx(reranked[0],
                                                                           abs=5e-4)
    assert summary["queries"] == len(QUERIES)
    assert summary["statuses"]["+ rerank (all-MiniLM-L6-v2)"] == {"ok": len(QUERIES)}
    assert summary["statuses"]["+ rerank again (cache)"] == {"cache": len(QUERIES)}
    runs = read_trec_run(out / "run-reranked.trec")
    assert set(runs) == set(QUERIES)


def test_demo_event_log_has_one_private_event_per_request(demo_run):
    stdout, out = demo_run
    line = next(x for x in stdout.splitlines() if x.startswith("event log: "))
    path = Path(line.removeprefix("event log: ").split(" (")[0])
    assert path.is_file() and path.parent == (out / "events").resolve()
    raw = path.read_text(encoding="utf-8")
    events = [json.loads(x) for x in raw.splitlines()]
    assert len(events) == 2 * len(QUERIES)
    assert f"({len(events)} events written, 0 dropped)" in line
    assert [e["status"] for e in events].count("cache") == len(QUERIES)
    assert all(e["schema_version"] == 1 and e["query_text"] is None for e in events)
    for query in QUERIES.values():
        assert query not in raw  # no raw text by default
    for _title, text in list(DOCUMENTS.values())[:10]:
        assert text[:40] not in raw


def write_beir(folder: Path, with_run: bool) -> None:
    folder.mkdir()
    docs = list(DOCUMENTS.items())[:30]
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, (title, text) in docs:
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    chosen = ["q01", "q03", "q05"]
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid in chosen:
            fh.write(json.dumps({"_id": qid, "text": QUERIES[qid]}) + "\n")
    with open(folder / "qrels.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid in chosen:
            for doc_id, grade in QRELS[qid].items():
                fh.write(f"{qid}\t{doc_id}\t{grade}\n")
    if with_run:  # a first stage that lists every document in corpus order
        with open(folder / "bm25_top100.trec", "w", encoding="utf-8") as fh:
            for qid in chosen:
                for rank, (doc_id, _) in enumerate(docs, 1):
                    fh.write(f"{qid} Q0 {doc_id} {rank} {100 - rank} bm25\n")


@pytest.mark.parametrize("with_run", [False, True])
def test_demo_reads_any_beir_folder(tmp_path, with_run):
    write_beir(tmp_path / "mini", with_run)
    result = CliRunner().invoke(main, [
        "demo", "--collection", str(tmp_path / "mini"), "--out", str(tmp_path / "out"),
        "--max-queries", "2", "--top-k", "10", "--timeout-s", "60"])
    assert result.exit_code == 0, result.output
    assert "collection: mini  queries: 2" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["queries"] == 2
    first = read_trec_run(tmp_path / "out" / "run-first-stage.trec")
    assert sorted(first) == ["q01", "q03"]
    assert all(len(ranked) <= 10 for ranked in first.values())
    if with_run:  # the folder's own run is used, cut to --top-k
        assert [d for d, _ in first["q01"]] == list(DOCUMENTS)[:10]
        assert "first stage (bm25_top100.trec)" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--max-queries", "0"], "--max-queries"),
    (["--top-k", "0"], "--top-k"),
    (["--fusion", "max"], "--fusion"),
    (["--collection", "/nonexistent/beir"], "neither a folder nor a collection"),
])
def test_demo_usage_errors_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_demo_on_a_folder_that_is_not_beir_exits_1(tmp_path):
    (tmp_path / "notbeir").mkdir()
    result = CliRunner().invoke(main, ["demo", "--collection", str(tmp_path / "notbeir"),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "has no corpus.jsonl: not a BEIR-format collection" in result.output
