"""`rerank-ops finetune`: a short run on a tiny split lowers the training loss and
writes a folder that CrossEncoderScorer loads unchanged."""

from __future__ import annotations

import json

import pytest
from conftest import require_collection
from rerank_ops.collections import load_collection, split_queries
from rerank_ops.finetuning import (
    TrainingDataError,
    finetune,
    pairs_from_collection,
    pairs_from_feedback,
    write_model_card,
)

from rerank_plugins.scoring.base import ScoreRequest
from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer


@pytest.mark.slow  # training: 1-2 min idle, over 10 under heavy CPU contention
@pytest.mark.timeout(1500)
def test_short_finetune_lowers_loss_and_loads_in_the_scorer(ce_folder, tmp_path):
    collection = load_collection(require_collection("cranfield"))
    train, held = split_queries(sorted(collection.queries), dev_fraction=0.5)
    assert not set(train) & set(held)
    pairs = pairs_from_collection(collection, train[:12], negatives_per_positive=1)
    assert pairs.positives and pairs.positives < len(pairs)
    result = finetune(ce_folder, pairs, tmp_path / "model", epochs=3, batch_size=8,
                      learning_rate=1e-4, max_length=128, logging_steps=2, progress=False)
    assert len(result.losses) >= 3
    first = sum(result.losses[:2]) / 2
    last = sum(result.losses[-2:]) / 2
    print(f"\nfinetune {result.pairs} pairs, {result.steps} steps, {result.seconds:.1f}s, "
          f"bf16={result.bf16}: loss {first:.4f} -> {last:.4f}")
    assert last < first
    card = write_model_card(tmp_path / "model", start_model=ce_folder, data={"queries": 12},
                            settings={"epochs": 3}, result=result, metrics=None)
    assert "training loss" in card.read_text()
    scorer = CrossEncoderScorer(str(tmp_path / "model"), dtype="float32")
    [out] = scorer.score_many([ScoreRequest(collection.queries[train[0]], ["wing", "lift"])])
    assert len(out.scores) == 2


def test_feedback_log_is_read_with_labels_and_feedback_words(tmp_path):
    log = tmp_path / "feedback.jsonl"
    log.write_text("\n".join(json.dumps(row) for row in [
        {"query": "q", "document": "d1", "label": 1},
        {"query": "q", "document": "d2", "feedback": "thumbs_down"},
        {"query": "q", "document": "d3", "feedback": "click"},
    ]) + "\n")
    pairs = pairs_from_feedback(log)
    assert pairs.labels == [1.0, 0.0, 1.0]
    log.write_text('{"query": "q", "document": "d", "feedback": "meh"}\n')
    with pytest.raises(TrainingDataError, match=":1:"):
        pairs_from_feedback(log)


def test_too_little_or_one_sided_data_is_refused(ce_folder, tmp_path):
    from rerank_ops.finetuning import Pairs

    pairs = Pairs()
    for i in range(10):
        pairs.add("q", f"d{i}", 1.0)
    with pytest.raises(TrainingDataError, match="both relevant and non-relevant"):
        finetune(ce_folder, pairs, tmp_path / "m")


def test_training_pairs_mix_hard_and_random_negatives_never_judged_documents():
    collection = load_collection(require_collection("cranfield"))
    train, _ = split_queries(sorted(collection.queries), dev_fraction=0.5)
    pairs = pairs_from_collection(collection, train[:10], negatives_per_positive=2,
                                  random_negatives_per_positive=1, max_positives_per_query=3)
    by_query: dict[str, list[tuple[str, float]]] = {}
    for query, text, label in zip(pairs.queries, pairs.texts, pairs.labels, strict=True):
        by_query.setdefault(query, []).append((text, label))
    text_to_id = {collection.doc_text(d): d for d in collection.corpus}
    assert by_query, "no training queries with positives"
    for qid in train[:10]:
        rows = by_query.get(collection.queries[qid])
        if rows is None:
            continue
        judged = collection.qrels.get(qid, {})
        top100 = {d for d, _ in collection.run.get(qid, [])[:100]}
        positives = [text_to_id[t] for t, label in rows if label == 1.0]
        negatives = [text_to_id[t] for t, label in rows if label == 0.0]
        assert all(judged.get(d, 0) > 0 for d in positives)
        assert not set(negatives) & set(judged), "a judged document was used as a negative"
        assert len(set(negatives)) == len(negatives), "a negative was drawn twice"
        # 2 hard (from the run's top 100) + 1 random per positive; the pool is large here
        assert len(negatives) == 3 * len(positives)
        hard = [d for d in negatives if d in top100]
        assert len(hard) >= 2 * len(positives)


def test_learning_rate_default_depends_on_whether_the_start_has_a_ranking_head(ce_folder):
    from rerank_ops.finetuning import default_learning_rate, has_ranking_head

    from rerank_plugins.scoring.default_model import bundled_model_path

    assert not has_ranking_head(bundled_model_path())
    assert default_learning_rate(bundled_model_path()) == 2e-4
    assert has_ranking_head(ce_folder)
    assert default_learning_rate(ce_folder) == 3e-5
    assert not has_ranking_head("/nonexistent/folder")


@pytest.mark.slow  # training: 1-2 min idle, over 10 under heavy CPU contention
@pytest.mark.timeout(1500)
def test_finetune_command_end_to_end_writes_model_card_and_held_out_metrics(tmp_path):
    """The CLI the way a user runs it (a subprocess), on a tiny split so it stays short."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    path = require_collection("cranfield")
    out = tmp_path / "model"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "ops"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "finetune", "--collection", str(path),
         "--out", str(out), "--max-train-queries", "2", "--max-eval-queries", "3",
         "--epochs", "1", "--max-length", "64", "--eval-depth", "10",
         "--min-ndcg-gain", "-1"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    # a bar of -1 nDCG cannot be missed: the gate passes and the command exits 0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training pairs:" in proc.stderr
    assert "{'loss'" not in proc.stdout  # no trainer log dicts without a terminal
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert summary["pairs"] >= 8 and summary["loss_first"] is not None
    assert set(summary["held_out"]) == {"first stage", "start model", "fine-tuned",
                                        "fine-tuned + fusion", "library default"}
    # the exit code, the summary and the card tell the same verdict
    gate = summary["gate"]
    best = max(summary["held_out"][name]["nDCG@10"]
               for name in ("first stage", "start model", "library default"))
    assert gate["gain"] == pytest.approx(summary["held_out"]["fine-tuned"]["nDCG@10"] - best)
    assert gate["passed"] is True and gate["gain"] >= -1.0
    card = (out / "README.md").read_text()
    assert ("verdict: PASSED" in card) == gate["passed"]
    assert "random_negatives_per_positive: 1" in card and "Held-out queries" in card
    assert "learning_rate: 0.0002" in card  # the fresh-head default
    assert "teacher: library default" in card  # a start without a ranking head
    scorer = CrossEncoderScorer(str(out), dtype="float32")
    [scored] = scorer.score_many([ScoreRequest("wing flutter", ["a wing", "a cat"])])
    assert len(scored.scores) == 2 and scored.scores[0] != scored.scores[1]
    # the same run against a bar no model can reach: the gate fails, exit 3, and the
    # summary and the card say so (what CI relies on to stop a bad model)
    failed_out = tmp_path / "model-failed"
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "finetune", "--collection", str(path),
         "--out", str(failed_out), "--max-train-queries", "1", "--max-eval-queries", "1",
         "--negatives", "1", "--epochs", "1", "--max-length", "64", "--eval-depth", "5",
         "--min-ndcg-gain", "1.0"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 3, proc.stderr[-2000:]
    failed = json.loads((failed_out / "finetune_summary.json").read_text())["gate"]
    assert failed["passed"] is False
    assert "verdict: PASSED" not in (failed_out / "README.md").read_text()
    # the other split was not trained on: refusing the evaluation-only collections too
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_ops", "finetune", "--collection",
         str(path.parent / "scifact"), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    if (path.parent / "scifact").is_dir():
        assert proc.returncode != 0 and "independent evaluation" in proc.stderr


def test_teacher_soft_labels_replace_hard_negatives_and_keep_judged_positives():
    import math

    from cheap_scorers import CrcScorer, crc_score
    from rerank_ops.finetuning import teacher_scores

    collection = load_collection(require_collection("cranfield"))
    train, _ = split_queries(sorted(collection.queries), dev_fraction=0.5)
    queries = train[:3]
    teacher = teacher_scores(collection, queries, CrcScorer(), depth=20)
    assert set(teacher) == set(queries)
    for qid in queries:
        run = collection.run[qid][:20]
        assert set(teacher[qid]) == {doc for doc, _ in run}
        # the library default's fusion, recomputed by hand: 0.5 * minmax(model) +
        # 0.5 * minmax(first stage), the model score being the sigmoid of the crc score
        model = [1 / (1 + math.exp(-crc_score(collection.doc_text(doc)))) for doc, _ in run]
        first = [score for _, score in run]

        def minmax(values):
            return [(v - min(values)) / (max(values) - min(values)) for v in values]

        for (doc, _), m, f in zip(run, minmax(model), minmax(first), strict=True):
            assert teacher[qid][doc] == pytest.approx(0.5 * m + 0.5 * f)
    pairs = pairs_from_collection(collection, queries, random_negatives_per_positive=1,
                                  teacher=teacher, hard_negative_depth=20)
    assert not pairs.hard_labels
    text_to_id = {collection.doc_text(d): d for d in collection.corpus}
    for qid in queries:
        query, judged = collection.queries[qid], collection.qrels[qid]
        rows = [(text_to_id[t], label) for q, t, label in
                zip(pairs.queries, pairs.texts, pairs.labels, strict=True) if q == query]
        labels = dict(rows)
        # every judged positive, at 1.0, however many there are
        assert {d for d, g in judged.items() if g > 0} <= {d for d, lab in rows if lab == 1.0}
        unjudged_run = [d for d in teacher[qid] if d not in judged]
        for doc in unjudged_run:
            assert labels[doc] == pytest.approx(teacher[qid][doc])
        randoms = [d for d, _ in rows if d not in judged and d not in teacher[qid]]
        positives = sum(1 for g in judged.values() if g > 0)
        assert len(randoms) == positives and all(labels[d] == 0.0 for d in randoms)


def test_class_weights_apply_to_hard_labels_only():
    from rerank_ops.finetuning import Pairs, positive_weight

    hard, soft = Pairs(), Pairs()
    for i in range(12):
        hard.add("q", f"doc {i}", 1.0 if i < 3 else 0.0)
        soft.add("q", f"doc {i}", 1.0 if i < 3 else 0.3)
    assert positive_weight(hard) == pytest.approx(3.0)
    assert positive_weight(hard, balance_classes=False) is None
    assert positive_weight(soft) is None


def test_gate_compares_against_the_best_baseline():
    from rerank_ops.finetuning import gate_verdict

    metrics = {"first stage": {"nDCG@10": 0.37}, "start model": {"nDCG@10": 0.05},
               "library default": {"nDCG@10": 0.41}, "fine-tuned": {"nDCG@10": 0.40}}
    verdict = gate_verdict(metrics, 0.0)
    assert verdict["best_baseline"] == "library default" and not verdict["passed"]
    assert verdict["gain"] == pytest.approx(-0.01)
    assert gate_verdict(metrics, -0.02)["passed"]
    metrics["fine-tuned"]["nDCG@10"] = 0.45
    assert gate_verdict(metrics, 0.03)["passed"] and not gate_verdict(metrics, 0.05)["passed"]


def test_library_default_baseline_is_what_a_default_reranker_uses(bi_scorer):
    from cheap_scorers import CrcScorer
    from rerank_ops.quality import library_default

    from rerank_plugins import Reranker

    default = Reranker(bi_scorer, cache=None)
    try:
        resolved = default._primary.selection  # what a default Reranker selects with
    finally:
        default.close()
    baseline = library_default(bi_scorer, 50)
    assert (baseline.fusion, baseline.alpha, baseline.normalization, baseline.rerank_depth) == (
        resolved.fusion, resolved.alpha, resolved.normalization, 50)
    assert library_default(CrcScorer()).fusion == "none"  # not a bi-encoder: model alone
