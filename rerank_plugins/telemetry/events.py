"""The feature/score event: one record per rerank request (input of ``rerank-ops drift``).

No raw text by default: the query is represented by its keyed fingerprint and
length. ``include_text=True`` (an explicit operator opt-in) adds the query text.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1

#: Numeric columns drift detection monitors, in a stable order.
NUMERIC_FEATURES = (
    "n_candidates", "n_kept", "n_truncated", "query_length_tokens",
    "doc_length_mean", "doc_length_max", "retrieval_score_mean", "retrieval_score_std",
    "score_top1", "score_mean", "score_std", "score_gap12", "cache_hit_ratio",
    "latency_total_ms", "latency_score_ms",
)
#: Categorical columns.
CATEGORICAL_FEATURES = ("status", "fallback_reason", "model_id")

#: Every field of schema version 1 and its JSON type.
FIELDS: dict[str, str] = {
    "schema_version": "int", "event_id": "str", "timestamp": "str", "ts": "float",
    "model_id": "str", "model_revision": "str", "status": "str", "fallback_reason": "str",
    "latency_total_ms": "float", "latency_validate_ms": "float", "latency_cache_ms": "float",
    "latency_score_ms": "float", "latency_select_ms": "float",
    "n_candidates": "int", "n_kept": "int", "n_truncated": "int",
    "cache_hits": "int", "cache_misses": "int", "cache_hit_ratio": "float",
    "query_fp": "str", "query_length_tokens": "int",
    "doc_length_mean": "float", "doc_length_p50": "float", "doc_length_max": "float",
    "retrieval_score_mean": "float", "retrieval_score_min": "float",
    "retrieval_score_max": "float", "retrieval_score_std": "float",
    "score_top1": "float", "score_mean": "float", "score_std": "float", "score_gap12": "float",
    "n_kept_after_threshold": "int", "query_text": "str",
    # rollout (absent in events written before variants existed)
    "event": "str", "variant": "str", "model_version": "str", "served": "bool",
    # feedback events (event == "feedback"): which result of which request
    "request_id": "str", "doc_fp": "str", "label": "float", "position": "int",
    # optional components (null when not in use)
    "semantic_hits": "int", "semantic_similarity": "float",
    "context_tokens_kept": "int", "n_cut_by_budget": "int",
}

#: ``event`` of a request record (also assumed when the field is absent) and of a
#: feedback record (``Reranker.feedback``).
REQUEST_EVENT = "rerank"
FEEDBACK_EVENT = "feedback"


def word_count(text: str) -> int:
    """Whitespace-separated words in ``text``: the event's length unit.

    Tokenizer-independent, and ``str.split`` runs several times faster than a regex
    on the request path (it counts "lift," as one word, which drift does not mind).
    """
    return len(text.split())


def event_files(path: str | os.PathLike) -> list[Path]:
    """The event files at ``path`` (a file, or a directory of JSONL/Parquet parts).

    Torn (``*.torn``) and temporary (``.*.tmp``) files are never listed.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob("events-*") if p.suffix in (".jsonl", ".parquet"))


def read_events(path: str | os.PathLike, *, since: float | None = None,
                until: float | None = None, kind: str | None = REQUEST_EVENT
                ) -> Iterator[dict]:
    """Yield the events stored at ``path``, optionally within ``[since, until)`` (unix s).

    ``kind``: request records (``"rerank"``, the default: what drift reads),
    ``"feedback"`` records, or ``None`` for both. A JSONL line without its newline
    (a file still being written) is skipped, as are records of a schema version this
    code does not know.
    """
    for file in event_files(path):
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(file).to_pylist()
        else:
            rows = _jsonl_rows(file)
        for row in rows:
            if row.get("schema_version") != SCHEMA_VERSION:
                continue
            if kind is not None and (row.get("event") or REQUEST_EVENT) != kind:
                continue
            ts = row.get("ts")
            if since is not None and (ts is None or ts < since):
                continue
            if until is not None and (ts is None or ts >= until):
                continue
            yield row


def _jsonl_rows(file: Path) -> Iterator[dict]:
    with open(file, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return
            yield json.loads(line)


def _stats(values: list[float]) -> tuple[float | None, float | None, float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None, None, None
    # float arithmetic (fsum keeps it exact enough): statistics.pstdev works in
    # fractions and cost more than the rest of a cache-served request's event
    # (huge values overflow the float sums; those take the exact path)
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) * (v - mean) for v in values) / len(values)) \
        if len(values) > 1 else 0.0
    if not (math.isfinite(mean) and math.isfinite(std)):
        mean, std = statistics.fmean(values), statistics.pstdev(values)
    return mean, min(values), max(values), std


def build_event(
    *,
    query: str,
    query_fp: str,
    texts: list[str],
    retrieval_scores: list[float | None],
    model_scores: list[float],
    result,
    model_revision: str,
    kept_after_threshold: int,
    include_text: bool = False,
    served: bool = True,
    lengths: list[int] | None = None,
) -> dict:
    """Assemble one schema-v1 event from a finished request (``lengths``: each
    text's :func:`word_count` when the caller already has them)."""
    now = time.time()
    timings = result.timings
    if lengths is None:
        lengths = [word_count(t) for t in texts]
    r_mean, r_min, r_max, r_std = _stats(retrieval_scores)
    ordered = sorted((s for s in model_scores if s is not None), reverse=True)
    s_mean, _, _, s_std = _stats(ordered)
    lookups = result.cache_hits + result.cache_misses
    event = {
        "schema_version": SCHEMA_VERSION,
        "event_id": result.request_id or uuid.uuid4().hex,
        "timestamp": datetime.fromtimestamp(now, tz=timezone.utc).isoformat(),
        "ts": now,
        "model_id": result.model_id,
        "model_revision": model_revision,
        "status": result.status.value,
        "fallback_reason": result.fallback_reason.value if result.fallback_reason else "",
        "latency_total_ms": timings.total * 1000.0,
        "latency_validate_ms": timings.validate * 1000.0,
        "latency_cache_ms": timings.cache * 1000.0,
        "latency_score_ms": timings.score * 1000.0,
        "latency_select_ms": timings.select * 1000.0,
        "n_candidates": len(texts),
        "n_kept": len(result.items),
        "n_truncated": result.truncated,
        "cache_hits": result.cache_hits,
        "cache_misses": result.cache_misses,
        "cache_hit_ratio": (result.cache_hits / lookups) if lookups else None,
        "query_fp": query_fp,
        "query_length_tokens": word_count(query),
        "doc_length_mean": statistics.fmean(lengths) if lengths else None,
        "doc_length_p50": statistics.median(lengths) if lengths else None,
        "doc_length_max": float(max(lengths)) if lengths else None,
        "retrieval_score_mean": r_mean,
        "retrieval_score_min": r_min,
        "retrieval_score_max": r_max,
        "retrieval_score_std": r_std,
        "score_top1": ordered[0] if ordered else None,
        "score_mean": s_mean,
        "score_std": s_std,
        "score_gap12": (ordered[0] - ordered[1]) if len(ordered) > 1 else None,
        "n_kept_after_threshold": kept_after_threshold,
        "query_text": query if include_text else None,
        "event": REQUEST_EVENT,
        "variant": getattr(result, "variant", "") or "",
        "model_version": getattr(result, "model_version", "") or "",
        "served": served,
        "request_id": result.request_id,
        "doc_fp": None, "label": None, "position": None,
        "semantic_hits": getattr(result, "semantic_hits", 0),
        "semantic_similarity": getattr(result, "semantic_similarity", None),
        "context_tokens_kept": getattr(result, "context_tokens", None),
        "n_cut_by_budget": getattr(result, "context_cut", 0),
    }
    return event


def build_feedback_event(*, request_id: str, doc_fp: str, label: float,
                         position: int | None, variant: str, model_id: str,
                         model_version: str) -> dict:
    """One feedback record: ``label`` for the result ``doc_fp`` (a keyed fingerprint of
    the caller's document id, never the id itself) of request ``request_id``."""
    now = time.time()
    return {
        **dict.fromkeys(FIELDS),
        "schema_version": SCHEMA_VERSION, "event": FEEDBACK_EVENT,
        "event_id": uuid.uuid4().hex,
        "timestamp": datetime.fromtimestamp(now, tz=timezone.utc).isoformat(), "ts": now,
        "request_id": request_id, "doc_fp": doc_fp, "label": float(label),
        "position": position, "variant": variant, "model_id": model_id,
        "model_version": model_version,
    }
