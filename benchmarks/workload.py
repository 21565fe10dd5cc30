"""The benchmark workload: real queries with 50 first-stage candidates of 80-250 words.

Candidates come from the collection's BM25 top-100 run (in retrieval order), keeping
documents whose length is in the word range; when a query's run holds too few, it is
skipped rather than padded with unrelated text. Text never leaves the shared data
folder: nothing here is written into the repository.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: where the shared collections live: $RERANK_DATA_DIR, else ../shared/data
DEFAULT_DATA = Path(os.environ.get("RERANK_DATA_DIR", ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class BenchRequest:
    """One rerank call: a query, candidate ids and texts, and their BM25 scores."""

    collection: str
    query_id: str
    query: str
    doc_ids: tuple[str, ...]
    texts: tuple[str, ...]
    retrieval_scores: tuple[float, ...]


def _doc_text(row: dict) -> str:
    title, text = row.get("title") or "", row.get("text") or ""
    if title and not text.startswith(title):
        return f"{title}. {text}" if text else title
    return text or title


def load_requests(
    folder: Path,
    *,
    limit: int,
    candidates: int = 50,
    min_words: int = 80,
    max_words: int = 250,
) -> list[BenchRequest]:
    """Up to ``limit`` requests from a BEIR folder with a ``bm25_top100.trec`` run.

    Args:
        folder: Collection folder (``corpus.jsonl``, ``queries.jsonl``, run file).
        limit: Requests wanted.
        candidates: Candidates per request. Defaults to 50.
        min_words: Shortest candidate kept, in words. Defaults to 80.
        max_words: Longest candidate kept, in words. Defaults to 250.

    Returns:
        Requests in query-id order of the run file.
    """
    corpus: dict[str, str] = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                corpus[str(row["_id"])] = _doc_text(row)
    queries: dict[str, str] = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                queries[str(row["_id"])] = row["text"]
    run: dict[str, list[tuple[int, str, float]]] = {}
    with open(folder / "bm25_top100.trec", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 6:
                run.setdefault(parts[0], []).append((int(parts[3]), parts[2], float(parts[4])))
    requests: list[BenchRequest] = []
    for query_id, rows in run.items():
        if query_id not in queries:
            continue
        kept = [(doc_id, score) for _, doc_id, score in sorted(rows)
                if doc_id in corpus and min_words <= len(corpus[doc_id].split()) <= max_words]
        if len(kept) < candidates:
            continue
        kept = kept[:candidates]
        requests.append(BenchRequest(
            collection=folder.name, query_id=query_id, query=queries[query_id],
            doc_ids=tuple(d for d, _ in kept), texts=tuple(corpus[d] for d, _ in kept),
            retrieval_scores=tuple(s for _, s in kept)))
        if len(requests) >= limit:
            break
    return requests


def mixed_requests(data_dir: Path, names: tuple[str, ...], per_collection: int,
                   candidates: int = 50) -> list[BenchRequest]:
    """Requests from several collections, interleaved (a, b, a, b, ...)."""
    groups = [load_requests(data_dir / name, limit=per_collection, candidates=candidates)
              for name in names if (data_dir / name / "bm25_top100.trec").is_file()]
    mixed: list[BenchRequest] = []
    for position in range(max((len(g) for g in groups), default=0)):
        mixed.extend(g[position] for g in groups if position < len(g))
    return mixed
