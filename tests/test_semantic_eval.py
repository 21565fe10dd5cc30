"""The semantic-cache replay of `rerank-ops eval --semantic-cache` on the demo corpus
(every candidate for every query, real bundled model, real semantic layer)."""

from __future__ import annotations

import pytest
from rerank_ops.demo_corpus import load_demo_collection
from rerank_ops.quality import library_default, score_run
from rerank_ops.semantic_eval import VARIANT_KINDS, format_report, replay, variant

from rerank_plugins.cache.semantic import SemanticQueryCache


@pytest.fixture(scope="module")
def replayed(bi_scorer):
    collection = load_demo_collection()
    collection.run = {q: [(doc, 0.0) for doc in sorted(collection.corpus)]
                      for q in collection.queries}
    qids = sorted(collection.queries)
    scored = score_run(collection, bi_scorer, depth=100, query_ids=qids, progress=False)
    setting = library_default(bi_scorer)
    layer = SemanticQueryCache(threshold=0.95)
    strict = SemanticQueryCache(embedder=layer._embed, threshold=0.999)
    calls = []

    class Counting:
        activation = bi_scorer.activation

        def score_many(self, requests):
            calls.append(len(requests))
            return bi_scorer.score_many(requests)

    memo: dict = {}
    first = replay(collection, Counting(), scored, qids, setting, layer, variant_scores=memo)
    calls_first = len(calls)
    second = replay(collection, Counting(), scored, qids, setting, strict, variant_scores=memo)
    # the three variant kinds are scored once, then reused at the second threshold
    assert calls_first == 3 and len(calls) == 3
    return collection, first, second


def test_replaying_the_queries_themselves_is_all_exact_hits_with_no_change(replayed):
    collection, report, _ = replayed
    exact = report["kinds"]["exact"]
    assert report["queries"] == len(collection.queries) == exact["requests"]
    assert exact["exact"] == exact["requests"] and exact["near"] == exact["miss"] == 0
    assert exact["wrong_hits"] == 0 and exact["ndcg10_change"] == 0.0


def test_variants_hit_their_own_query_or_miss_and_every_request_is_counted(replayed):
    _, report, strict = replayed
    for kind in VARIANT_KINDS:
        row = report["kinds"][kind]
        assert row["exact"] + row["near"] + row["miss"] == row["requests"]
        assert 0.0 <= row["ndcg10_own"] <= 1.0 and 0.0 <= row["ndcg10_with_layer"] <= 1.0
    # on twelve distinct questions no variant lands on another question
    assert sum(row["wrong_hits"] for row in report["kinds"].values()) == 0
    # reversing word order moves most demo queries below 0.999; lower-casing is near
    assert strict["kinds"]["reordered"]["miss"] > report["kinds"]["reordered"]["miss"] or \
        strict["kinds"]["reordered"]["miss"] == strict["kinds"]["reordered"]["requests"]
    assert report["kinds"]["lower"]["hit_rate"] >= strict["kinds"]["lower"]["hit_rate"]
    # a miss is ranked with its own scores: with no hits there is no change
    none_hit = [row for row in strict["kinds"].values() if row["exact"] + row["near"] == 0]
    assert all(row["ndcg10_change"] == 0.0 for row in none_hit)


def test_the_report_prints_one_row_per_variant_kind(replayed):
    _, report, _ = replayed
    table = format_report(report)
    assert all(kind in table for kind in VARIANT_KINDS)
    assert "threshold 0.95" in table


@pytest.mark.parametrize(("kind", "expected"), [
    ("exact", "How Do Wings make lift?"), ("lower", "how do wings make lift?"),
    ("no_stop_words", "Wings make lift?"), ("reordered", "lift? make Wings Do How"),
])
def test_variants(kind, expected):
    assert variant("How Do Wings make lift?", kind) == expected


def test_an_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown"):
        variant("q", "shuffled")



def test_eval_semantic_cache_flag_reports_the_replay(tmp_path):
    import json

    from click.testing import CliRunner
    from conftest import require_collection
    from rerank_ops.cli import main

    path = require_collection("cranfield")
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, [
        "eval", "--collection", str(path), "--max-queries", "20", "--depth", "20",
        "--semantic-cache", "--semantic-threshold", "0.9", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["semantic_cache"]
    assert report["threshold"] == 0.9 and report["queries"] == 20
    assert set(report["kinds"]) == set(VARIANT_KINDS)
    assert report["kinds"]["exact"]["exact"] == 20
    assert "semantic cache replay: 20 queries, threshold 0.9" in result.output
