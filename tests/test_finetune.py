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
