"""`rerank-ops bench`: measured latency/throughput through the real Reranker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, require_collection


def _cli(*args: str):
    from rerank_ops.cli import main

    return CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)


def test_small_grid_subprocess_writes_table_and_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "ops"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "bench", "--candidates", "4,8", "--concurrency",
         "1,2", "--requests", "3", "--warmup", "1", "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "p95 ms" in proc.stdout
    data = json.loads(out.read_text())
    cells = data["cells"]
    assert {(c["candidates"], c["concurrency"]) for c in cells} == {
        (4, 1), (4, 2), (8, 1), (8, 2)}
    for cell in cells:
        assert cell["error"] == "" and cell["requests"] == 3 and cell["fallbacks"] == 0
        assert 0 < cell["p50_ms"] <= cell["p95_ms"] <= cell["p99_ms"]
        assert cell["pairs_per_s"] == pytest.approx(cell["requests_per_s"] * cell["candidates"])
    assert data["machine"]["cpus"] >= 1 and data["model"]["kind"] == "bi-encoder"


def test_cross_encoder_token_budgets_and_dtypes_form_the_grid(ce_folder, tmp_path):
    out = tmp_path / "bench.json"
    result = _cli("--model", ce_folder, "--candidates", "4", "--concurrency", "1",
                  "--batch-tokens", "256,4096", "--dtypes", "float32,float16",
                  "--requests", "2", "--warmup", "0", "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    cells = data["cells"]
    assert data["model"]["kind"] == "cross-encoder"
    full = [c for c in cells if c["dtype"] == "float32"]
    assert sorted(c["batch_tokens"] for c in full) == [256, 4096]
    for cell in full:  # measured, not skipped
        assert cell["error"] == "" and cell["requests"] == 2 and cell["fallbacks"] == 0
        assert 0 < cell["p50_ms"] <= cell["p99_ms"]
    # float16 on a CPU is refused by the library; the grid records why and goes on
    half = [c for c in cells if c["dtype"] == "float16"]
    assert len(half) == 2 and all("float16" in c["error"] for c in half)
    rows = [line for line in result.output.splitlines() if line.lstrip().startswith("float")]
    assert len(rows) == 4
    assert all(("skipped" in row) == row.lstrip().startswith("float16") for row in rows), rows


def _bench_on_collection(path: Path, tmp_path: Path) -> None:
    from rerank_ops.collections import load_collection
    from rerank_ops.commands.bench import load_texts

    out = tmp_path / "bench.json"
    result = _cli("--collection", str(path), "--candidates", "3", "--concurrency", "1",
                  "--requests", "2", "--warmup", "0", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert f"texts: {path.name}" in result.output
    [cell] = json.loads(out.read_text())["cells"]
    assert cell["error"] == "" and cell["requests"] == 2
    # the texts really are the collection's: its queries and its documents
    collection = load_collection(path, run_file=None)
    queries, docs = load_texts(path, queries=64, docs=200, seed=13)
    assert set(queries) <= set(collection.queries.values())
    assert set(docs) <= {collection.doc_text(d) for d in collection.corpus}
    assert len(docs) == min(200, len(collection.corpus))


def test_collection_texts_demo_corpus(demo_collection, tmp_path):
    _bench_on_collection(demo_collection, tmp_path)


def test_collection_texts_cranfield(tmp_path):
    _bench_on_collection(require_collection("cranfield"), tmp_path)


def test_generated_texts_are_deterministic_and_varied():
    from rerank_ops.commands.bench import generated_texts

    first, again = generated_texts(20, seed=3), generated_texts(20, seed=3)
    assert first == again and len(set(first)) == 20
    assert all(60 <= len(t.split()) <= 160 for t in first)


@pytest.mark.parametrize("args", [
    ["--candidates", "ten"], ["--candidates", "0"], ["--concurrency", ""],
    ["--model", "x", "--bundled-cross-encoder"],
])
def test_usage_errors_exit_2(args):
    assert _cli(*args).exit_code == 2


def test_help_shows_an_example():
    result = _cli("--help")
    assert result.exit_code == 0 and "rerank-ops bench --collection" in result.output
