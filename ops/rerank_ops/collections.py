"""Reading BEIR-format collections and TREC runs (the ``--collection`` input).

A collection folder holds ``corpus.jsonl``, ``queries.jsonl``, ``qrels.tsv`` and
optionally a first-stage run ``bm25_top100.trec``. The shared development data
lives at ``$RERANK_DATA_DIR`` (default ``../shared/data`` from the project root).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR_ENV = "RERANK_DATA_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Collections kept for independent evaluation: never tune or choose defaults on them.
EVALUATION_ONLY = frozenset({"scifact", "med"})
DEVELOPMENT = ("cranfield", "cisi", "cacm", "npl")


def data_dir() -> Path:
    """Where shared collections live (``$RERANK_DATA_DIR`` or ``../shared/data``)."""
    return Path(os.environ.get(DATA_DIR_ENV, PROJECT_ROOT.parent / "shared" / "data"))


class CollectionError(ValueError):
    """A collection folder is missing files or holds malformed lines."""


@dataclass
class Collection:
    name: str
    corpus: dict[str, dict]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> grade
    run: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # qid -> ranked

    def doc_text(self, doc_id: str) -> str:
        doc = self.corpus[doc_id]
        title, text = doc.get("title") or "", doc.get("text") or ""
        if title and not text.startswith(title):
            return f"{title}. {text}" if text else title
        return text or title


def _lines(path: Path):
    """(number, line) pairs; undecodable bytes are a CollectionError, not a crash."""
    try:
        with open(path, encoding="utf-8") as fh:
            yield from enumerate(fh, 1)
    except UnicodeDecodeError as exc:
        raise CollectionError(f"{path}: not UTF-8 ({exc})") from exc


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in _lines(path):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise CollectionError(f"{path}:{number}: not JSON ({exc})") from exc
        if not isinstance(row, dict) or "_id" not in row:
            raise CollectionError(f"{path}:{number}: expected an object with an '_id'")
        rows.append(row)
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for number, line in _lines(path):
        parts = line.rstrip("\n").split("\t")
        if number == 1 and parts[0] == "query-id":
            continue
        if len(parts) != 3:
            raise CollectionError(f"{path}:{number}: expected 3 tab-separated fields")
        try:
            qrels[parts[0]][parts[1]] = int(float(parts[2]))
        except (ValueError, OverflowError) as exc:
            raise CollectionError(f"{path}:{number}: grade {parts[2]!r} is not a number") \
                from exc
    return dict(qrels)


def read_trec_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    """TREC run lines ``qid Q0 docid rank score tag`` -> qid -> [(docid, score)] by rank."""
    run: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
    for number, line in _lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 6:
            raise CollectionError(f"{path}:{number}: expected 'qid Q0 docid rank score tag'")
        try:
            run[parts[0]].append((int(parts[3]), parts[2], float(parts[4])))
        except ValueError as exc:
            raise CollectionError(f"{path}:{number}: rank or score is not a number") from exc
    return {qid: [(d, s) for _, d, s in sorted(rows)] for qid, rows in run.items()}


def load_collection(path: str | os.PathLike, *, run_file: str | None = "bm25_top100.trec",
                    judged_only: bool = True) -> Collection:
    """Load a BEIR-format folder; ``run_file`` relative to it (or absolute), or None."""
    folder = Path(path)
    for required in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        if not (folder / required).is_file():
            raise CollectionError(f"{folder} has no {required}: not a BEIR-format collection")
    corpus = {str(row["_id"]): {"title": row.get("title", ""), "text": row.get("text", "")}
              for row in _read_jsonl(folder / "corpus.jsonl")}
    query_rows = _read_jsonl(folder / "queries.jsonl")
    if any(not isinstance(row.get("text"), str) for row in query_rows):
        raise CollectionError(f"{folder / 'queries.jsonl'}: every query needs a 'text' string")
    queries = {str(row["_id"]): row["text"] for row in query_rows}
    qrels = read_qrels(folder / "qrels.tsv")
    if judged_only:
        queries = {qid: text for qid, text in queries.items() if qid in qrels}
    run = {}
    if run_file:
        run_path = Path(run_file) if os.path.isabs(run_file) else folder / run_file
        if run_path.is_file():
            run = read_trec_run(run_path)
    return Collection(folder.name, corpus, queries, qrels, run)


def split_queries(query_ids, *, dev_fraction: float = 0.5, seed: int = 13):
    """Deterministic query split: (dev, held_out). Same ids -> same split."""
    import hashlib

    dev, held = [], []
    for qid in sorted(query_ids):
        digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
        (dev if digest[0] / 256.0 < dev_fraction else held).append(qid)
    return dev, held
