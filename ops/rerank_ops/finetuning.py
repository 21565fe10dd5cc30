"""Domain adaptation of a cross-encoder with sentence-transformers' training API.

Training pairs come from a BEIR collection (qrels positives plus hard negatives
from the first-stage run: highly ranked but unjudged documents) or from a feedback
log recorded by the application (JSONL, one judgment per line). Only queries of
the training split are used; the held-out split measures before/after.

A model without a trained ranking head (the embedded MiniLM) learns next to
nothing from hard 0/1 labels on a few dozen queries. With a *teacher* every
unjudged first-stage candidate of a training query gets the teacher's score as a
soft label (the library default ranking: the embedded bi-encoder fused with the
first-stage score), judged positives keep 1.0, random corpus documents 0.0, so
relevant-but-unjudged documents are no longer taught as negatives. Measured on the
development collections it learns more (mean held-out nDCG@10 0.226 vs 0.136) but
still not enough to beat BM25 (docs/quality.md); the gate in ``rerank-ops
finetune`` refuses such a model.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .collections import Collection

#: A teacher's soft labels: query id -> document id -> score in [0, 1].
TeacherScores = Mapping[str, Mapping[str, float]]

#: feedback values a log line may carry instead of a numeric label
FEEDBACK_LABELS = {"click": 1.0, "thumbs_up": 1.0, "up": 1.0, "relevant": 1.0,
                   "thumbs_down": 0.0, "down": 0.0, "skip": 0.0, "irrelevant": 0.0}


class TrainingDataError(ValueError):
    """The training input is missing, malformed or too small to train on."""


@dataclass
class Pairs:
    queries: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)

    def add(self, query: str, text: str, label: float) -> None:
        self.queries.append(query)
        self.texts.append(text)
        self.labels.append(float(label))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def positives(self) -> int:
        return sum(1 for label in self.labels if label >= 0.5)

    @property
    def hard_labels(self) -> bool:
        """True when every label is 0 or 1 (no teacher soft labels)."""
        return all(label in (0.0, 1.0) for label in self.labels)

    def summary(self) -> str:
        """``"3235 pairs (653 positive)"``; soft labels count those >= 0.5."""
        kind = "positive" if self.hard_labels else "with label >= 0.5"
        return f"{len(self)} pairs ({self.positives} {kind})"


def pairs_from_collection(collection: Collection, query_ids: Sequence[str], *,
                          negatives_per_positive: int = 2, random_negatives_per_positive: int = 1,
                          max_positives_per_query: int = 8, hard_negative_depth: int = 100,
                          seed: int = 13, teacher: TeacherScores | None = None) -> Pairs:
    """Positives from qrels; negatives from the first-stage run and from the corpus.

    Hard negatives are unjudged documents the first stage ranked in its top
    ``hard_negative_depth`` (what the reranker must learn to push down); random
    negatives are any other unjudged documents of the corpus. Hard negatives alone
    are a poor teacher for a freshly initialised head: they look like positives and
    some are relevant but unjudged, so the model falls back to predicting the class
    prior. A share of random negatives gives it an easy signal to learn first.

    With ``teacher`` (see :func:`teacher_scores`), every judged positive is taken
    (label 1.0) and every other candidate the teacher scored is taken with the
    teacher's score as a soft label, instead of sampling hard negatives;
    ``negatives_per_positive`` and ``max_positives_per_query`` then do not apply.
    """
    rng = random.Random(seed)
    pairs = Pairs()
    corpus_ids = sorted(collection.corpus)
    for qid in query_ids:
        judged = collection.qrels.get(qid, {})
        positives = [d for d, grade in sorted(judged.items()) if grade > 0
                     and d in collection.corpus][:max_positives_per_query]
        if not positives:
            continue
        pool = [d for d, _ in collection.run.get(qid, [])[:hard_negative_depth]
                if d not in judged and d in collection.corpus]
        query = collection.queries[qid]
        if teacher is not None:
            positives = [d for d, grade in sorted(judged.items()) if grade > 0
                         and d in collection.corpus]
            soft = teacher.get(qid, {})
            hard = [d for d in pool if d in soft]
        else:
            soft = {}
            hard = rng.sample(pool, min(len(pool), negatives_per_positive * len(positives)))
        for doc in positives:
            pairs.add(query, collection.doc_text(doc), 1.0)
        for doc in hard:
            pairs.add(query, collection.doc_text(doc), soft.get(doc, 0.0))
        taken = set(hard) | set(judged)
        wanted = random_negatives_per_positive * len(positives)
        for _ in range(wanted * 20):  # bounded: tiny corpora may not have enough
            if wanted == 0 or len(taken) >= len(corpus_ids):
                break
            doc = corpus_ids[rng.randrange(len(corpus_ids))]
            if doc in taken:
                continue
            taken.add(doc)
            pairs.add(query, collection.doc_text(doc), 0.0)
            wanted -= 1
    return pairs


def teacher_scores(collection: Collection, query_ids: Sequence[str], scorer=None, *,
                   depth: int = 100) -> dict[str, dict[str, float]]:
    """Soft labels from the library default ranking, in [0, 1] per query.

    ``scorer`` defaults to the embedded bi-encoder; its score is fused with the
    first-stage score by the selection step's linear fusion with its default alpha
    and normalization, which is what a default ``Reranker()`` ranks by.
    """
    from rerank_plugins.selection import fuse, normalize
    from rerank_plugins.settings import RerankerSettings

    from .quality import score_run

    scorer = scorer or embedded_bi_encoder()
    run = score_run(collection, scorer, depth=depth, query_ids=query_ids, progress=False)
    settings = RerankerSettings(fusion="linear")
    labels: dict[str, dict[str, float]] = {}
    for qid, candidates in run.candidates.items():
        model = normalize(run.raw[qid], run.activation)
        fused = fuse(model, candidates, settings)
        labels[qid] = {c.id: min(1.0, max(0.0, float(f)))
                       for c, f in zip(candidates, fused, strict=True)}
    return labels


def embedded_bi_encoder():
    """The library's default scorer (the teacher, and the baseline of the gate)."""
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    return BiEncoderScorer()


def pairs_from_feedback(path: str | Path) -> Pairs:
    """Read ``{"query", "document", "label"|"feedback"}`` JSONL lines.

    ``label`` is 0..1; ``feedback`` is one of ``FEEDBACK_LABELS``. Malformed lines
    raise with their line number (training on silently skipped data hides bugs).
    """
    pairs = Pairs()
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                query, text = row["query"], row["document"]
                if "label" in row:
                    label = float(row["label"])
                else:
                    label = FEEDBACK_LABELS[str(row["feedback"]).lower()]
            except (ValueError, KeyError, TypeError) as exc:
                raise TrainingDataError(
                    f"{path}:{number}: expected JSON with query, document and label (0..1) "
                    f"or feedback in {sorted(FEEDBACK_LABELS)} ({exc!r})") from exc
            if not isinstance(query, str) or not isinstance(text, str) or not 0 <= label <= 1:
                raise TrainingDataError(f"{path}:{number}: query/document must be text and "
                                        "label within 0..1")
            pairs.add(query, text, label)
    return pairs


def has_ranking_head(model_folder: str | Path) -> bool:
    """True when the folder already is a sequence-classification (cross-encoder) model."""
    config = Path(model_folder) / "config.json"
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def default_learning_rate(start_model: str | Path) -> float:
    """2e-4 for a fresh head (measured: 5e-5 leaves the loss near the class prior after a
    few hundred steps), 3e-5 to adapt a trained cross-encoder without erasing it."""
    return 3e-5 if has_ranking_head(start_model) else 2e-4


@dataclass
class FinetuneResult:
    output_dir: str
    pairs: int
    positives: int
    seconds: float
    loss_first: float | None
    loss_last: float | None
    losses: list[float]
    bf16: bool
    steps: int
    pairs_summary: str

    def loss_summary(self) -> str:
        """``"0.6876 -> 0.6553"`` (first and last logged training loss), or ``"n/a"``."""
        if self.loss_first is None or self.loss_last is None:
            return "n/a"
        return f"{self.loss_first:.4f} -> {self.loss_last:.4f}"


def positive_weight(pairs: Pairs, balance_classes: bool = True) -> float | None:
    """The BCE weight of positives: negatives / positives for hard 0/1 labels.

    ``None`` for soft labels: a teacher's scores already say how relevant each pair
    is, and counting labels >= 0.5 as "positives" would be arbitrary.
    """
    negatives = len(pairs) - pairs.positives
    if not balance_classes or not negatives or not pairs.positives or not pairs.hard_labels:
        return None
    return negatives / pairs.positives


def finetune(start_model: str, pairs: Pairs, output_dir: str | Path, *, epochs: int = 2,
             batch_size: int = 16, learning_rate: float = 2e-4, max_length: int = 256,
             bf16: bool | None = None, seed: int = 13, logging_steps: int = 10,
             save_steps: int = 200, progress: bool = True,
             balance_classes: bool = True,
             attention_dropout: float | None = 0.0) -> FinetuneResult:
    """Train a cross-encoder on ``pairs`` starting from ``start_model``; save it.

    ``balance_classes`` weights positives by the negatives-to-positives ratio in the
    binary cross-entropy, so that predicting the class prior is no longer a cheap
    minimum for a model that has not yet learned to rank (hard labels only).
    ``attention_dropout`` overrides the model's dropout on attention probabilities
    (``None`` keeps it); 0 lets PyTorch use its fused attention kernel.
    """
    if len(pairs) < 8 or pairs.positives == 0 or pairs.positives == len(pairs):
        raise TrainingDataError(
            f"{len(pairs)} pairs with {pairs.positives} positives: need at least 8 pairs "
            "with both relevant and non-relevant examples")
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from rerank_plugins.device import cpu_has_fast_bf16, read_cpu_flags

    if bf16 is None:
        bf16 = (not torch.cuda.is_available()) and cpu_has_fast_bf16(read_cpu_flags())
    torch.manual_seed(seed)
    # dropout on the attention probabilities keeps PyTorch off its fused CPU attention
    # kernel (it falls back to explicit matmuls plus a B x H x L x L random mask):
    # turning it off cut the step time 2.3x here (benchmarks/finetune_step.py)
    config_kwargs = ({"attention_probs_dropout_prob": float(attention_dropout)}
                     if attention_dropout is not None else None)
    model = CrossEncoder(start_model, num_labels=1, max_length=max_length,
                         local_files_only=Path(start_model).is_dir(),
                         config_kwargs=config_kwargs,
                         model_kwargs={"attn_implementation": "sdpa"})
    dataset = Dataset.from_dict({"query": pairs.queries, "document": pairs.texts,
                                 "label": pairs.labels}).shuffle(seed=seed)
    weight = positive_weight(pairs, balance_classes)
    pos_weight = torch.tensor(weight) if weight is not None else None
    total_steps = -(-len(pairs) // batch_size) * epochs
    # short runs still log a loss curve (at least about five points)
    logging_steps = max(1, min(logging_steps, total_steps // 5))
    output_dir = Path(output_dir)
    checkpoints = output_dir / "checkpoints"
    args = CrossEncoderTrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=epochs,
        per_device_train_batch_size=batch_size, learning_rate=learning_rate,
        # a float warmup_steps below 1 is a share of the total steps
        warmup_steps=0.1, bf16=bf16, use_cpu=not torch.cuda.is_available(),
        logging_steps=logging_steps, save_strategy="steps", save_steps=save_steps,
        save_total_limit=1, seed=seed, report_to=[], disable_tqdm=not progress,
        dataloader_num_workers=0)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset,
                                  loss=BinaryCrossEntropyLoss(model, pos_weight=pos_weight))
    if not progress:
        # without a progress bar the trainer prints every log dict to stdout; the
        # losses are kept in its log history (and the model card) either way
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    model.save_pretrained(str(output_dir))
    return FinetuneResult(str(output_dir), len(pairs), pairs.positives, seconds,
                          losses[0] if losses else None, losses[-1] if losses else None,
                          losses, bool(bf16), int(trainer.state.global_step),
                          pairs.summary())


#: rankings every fine-tuned model is measured against on the held-out queries
BASELINES = ("first stage", "start model", "library default")


def held_out_metrics(collection: Collection, held: Sequence[str], *, start_model: str,
                     tuned_model: str | Path, max_length: int, depth: int = 100,
                     progress: bool = False,
                     default_scorer=None) -> dict[str, dict[str, float]]:
    """nDCG@10 / RR@10 / R@100 on queries never trained on, for the fine-tuned model
    (alone, as ``fusion="auto"`` uses a cross-encoder, and fused) and its baselines:
    the first stage, the start model, and the library default (embedded bi-encoder
    fused with the first stage), i.e. what the application runs without the model.
    ``default_scorer`` is that bi-encoder, when the caller has one loaded already."""
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    from .evaluation import evaluate
    from .quality import grid_point, library_default, rerank_rankings, score_run

    default_scorer = default_scorer or embedded_bi_encoder()
    default = library_default(default_scorer, depth)
    alone, fused = grid_point("none", depth=depth), grid_point("linear", depth=depth)
    rows: dict[str, dict[str, float]] = {}
    default_run = score_run(collection, default_scorer, depth=depth, query_ids=held,
                            progress=progress)
    rows["first stage"] = evaluate(collection.qrels, default_run.first_stage(held))
    for name, folder in (("start model", start_model), ("fine-tuned", str(tuned_model))):
        run = score_run(collection, CrossEncoderScorer(folder, max_length=max_length),
                        depth=depth, query_ids=held, progress=progress)
        rows[name] = evaluate(collection.qrels, rerank_rankings(run, held, alone))
        if name == "fine-tuned":
            rows["fine-tuned + fusion"] = evaluate(collection.qrels,
                                                   rerank_rankings(run, held, fused))
    rows["library default"] = evaluate(collection.qrels,
                                       rerank_rankings(default_run, held, default))
    return rows


def gate_verdict(metrics: Mapping[str, Mapping[str, float]], min_ndcg_gain: float) -> dict:
    """Does the fine-tuned model beat every baseline by ``min_ndcg_gain`` nDCG@10?"""
    present = [name for name in BASELINES if name in metrics]
    best = max(present, key=lambda name: metrics[name]["nDCG@10"])
    gain = metrics["fine-tuned"]["nDCG@10"] - metrics[best]["nDCG@10"]
    return {"min_ndcg_gain": float(min_ndcg_gain), "gain": gain,
            "passed": gain >= min_ndcg_gain, "best_baseline": best,
            "baseline": ", ".join(present)}


def write_model_card(output_dir: str | Path, *, start_model: str, data: dict, settings: dict,
                     result: FinetuneResult, metrics: dict | None,
                     gate: dict | None = None) -> Path:
    """Describe the data, settings, before/after metrics and the gate verdict."""
    lines = [
        "# Fine-tuned reranker (rerank-plugins)", "",
        f"Started from `{start_model}`; trained with `rerank-ops finetune` "
        "(sentence-transformers CrossEncoderTrainer, BinaryCrossEntropyLoss).", "",
        "## Data", "",
    ]
    lines += [f"- {key}: {value}" for key, value in data.items()]
    lines += ["", "## Settings", ""]
    lines += [f"- {key}: {value}" for key, value in settings.items()]
    lines += ["", "## Training", "",
              f"- pairs: {result.pairs_summary}",
              f"- steps: {result.steps}, seconds: {result.seconds:.1f}, bf16: {result.bf16}",
              f"- training loss (first -> last): {result.loss_summary()}", ""]
    if metrics:
        lines += ["## Held-out queries (never trained on)", "",
                  "| ranking | nDCG@10 | RR@10 | R@100 |", "|---|---|---|---|"]
        for name, values in metrics.items():
            lines.append(f"| {name} | {values.get('nDCG@10', 0):.4f} | "
                         f"{values.get('RR@10', 0):.4f} | {values.get('R@100', 0):.4f} |")
    if gate is not None:
        verdict = "PASSED" if gate["passed"] else "REJECTED: do not ship this model"
        lines += ["", "## Gate", "",
                  f"- verdict: {verdict}",
                  f"- held-out nDCG@10 gain over the best baseline ({gate['best_baseline']}; "
                  f"baselines: {gate['baseline']}): {gate['gain']:+.4f} "
                  f"(bar {gate['min_ndcg_gain']:+.4f})"]
    path = Path(output_dir) / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
