"""Lookup latency of the semantic query layer at 10k remembered queries.

The layer holds ``--entries`` real texts (query-like first sentences of documents of
the development collections: npl, cacm, cisi, cranfield; the project's demo corpus
when they are absent), embedded once with the bundled all-MiniLM-L6-v2. Probes are
the collections' real queries, each looked up three ways:

* ``search``: ``nearest(query, vector=...)`` with the embedding computed beforehand
  -- the index search with the layer's bookkeeping (lock, TTL, LRU), no model;
* ``embed+search``: ``nearest(query)`` -- what a request pays on the near path;
* ``exact``: a remembered text looked up again (fingerprint only, no model).

for the usearch HNSW index and the exact numpy scan. It also reports how often
paraphrase-like variants of the queries (lower-cased, stop words dropped, word
order reversed) hit their own original, and how often a hit points at a different
query ("wrong hits"), at the default threshold 0.95.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/semantic_cache.py [--entries 10000] [--probes 300]

Writes ``benchmarks/results/semantic_cache.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import machine  # noqa: E402,F401 - sets the offline environment before model imports

RESULT = ROOT / "benchmarks" / "results" / "semantic_cache.json"
DEVELOPMENT = ("npl", "cacm", "cisi", "cranfield")
STOP_WORDS = frozenset(
    "a an and are as at be by do does for from how in is it of on or the to what when "
    "where which who why with".split())


def _data_dir() -> Path:
    return Path(os.environ.get("RERANK_DATA_DIR", ROOT.parent / "shared" / "data"))


def load_texts(entries: int) -> tuple[list[str], list[str], str]:
    """(texts to remember, probe queries, source description)."""
    texts: list[str] = []
    queries: list[str] = []
    used = []
    for name in DEVELOPMENT:
        folder = _data_dir() / name
        if not (folder / "corpus.jsonl").is_file():
            continue
        used.append(name)
        with open(folder / "queries.jsonl", encoding="utf-8") as fh:
            queries += [json.loads(line)["text"] for line in fh if line.strip()]
        with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
            for line in fh:
                if len(texts) >= entries:
                    break
                row = json.loads(line)
                words = (row.get("title") or row.get("text") or "").split()[:14]
                if len(words) >= 4:
                    texts.append(" ".join(words))
    if not used:
        from rerank_ops.demo_corpus import DOCUMENTS, QUERIES

        queries = list(QUERIES.values())
        texts = [f"{title} {text}"[:120] for title, text in DOCUMENTS.values()]
        used = ["demo corpus"]
    texts = list(dict.fromkeys(texts))[:entries]
    return texts, list(dict.fromkeys(queries)), "+".join(used)


def variants(query: str) -> dict[str, str]:
    words = query.split()
    kept = [w for w in words if w.lower() not in STOP_WORDS] or words
    return {"lower": query.lower(), "no_stop_words": " ".join(kept),
            "reordered": " ".join(reversed(words))}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - started) * 1000)
    return out


def summary(ms: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(ms), 4), "p99_ms": round(percentile(ms, 0.99), 4),
            "n": len(ms)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    from rerank_plugins.cache.semantic import SemanticQueryCache

    texts, queries, source = load_texts(args.entries)
    probes = queries[:args.probes]
    model_started = time.perf_counter()
    base = SemanticQueryCache(index="numpy")
    load_s = time.perf_counter() - model_started
    started = time.perf_counter()
    text_vectors = base.embed(texts)
    embed_s = time.perf_counter() - started
    probe_vectors = base.embed(probes)
    report: dict = {
        "entries": len(texts), "probes": len(probes), "source": source,
        "model_load_s": round(load_s, 1),
        "embed_entries_s": round(embed_s, 1),
        "embed_ms_per_entry": round(1000 * embed_s / max(1, len(texts)), 2),
        "load_average_before": os.getloadavg(),
        "indexes": {},
    }
    for index in ("usearch", "numpy"):
        layer = SemanticQueryCache(embedder=base._embed, index=index, max_entries=len(texts) + 1,
                                   max_bytes=1 << 30)
        started = time.perf_counter()
        for n, (text, vector) in enumerate(zip(texts, text_vectors, strict=True)):
            layer.remember(text, f"fp{n}", vector=vector)
        build_s = time.perf_counter() - started
        pairs = list(zip(probes, probe_vectors, strict=True))
        for q, v in pairs[:20]:  # warm up
            layer.nearest(q, vector=v)
        search = timed(lambda p, layer=layer: layer.nearest(p[0], vector=p[1]), pairs)
        with_embed = timed(layer.nearest, probes)
        exact = timed(layer.nearest, texts[:len(probes)])
        report["indexes"][index] = {
            "build_s": round(build_s, 2), "bytes_used": layer.bytes_used,
            "search": summary(search), "embed+search": summary(with_embed),
            "exact": summary(exact)}

    # variants against a layer holding the real queries
    layer = SemanticQueryCache(embedder=base._embed, index="usearch")
    query_vectors = base.embed(queries)
    for n, (query, vector) in enumerate(zip(queries, query_vectors, strict=True)):
        layer.remember(query, f"q{n}", vector=vector)
    by_kind: dict[str, dict] = {}
    for kind in ("lower", "no_stop_words", "reordered"):
        texts_k = [variants(q)[kind] for q in queries]
        vectors_k = base.embed(texts_k)
        hits = wrong = 0
        for n, (text, vector) in enumerate(zip(texts_k, vectors_k, strict=True)):
            hit = layer.nearest(text, vector=vector)
            if hit is not None:
                hits += 1
                wrong += hit.query_fingerprint != f"q{n}"
        by_kind[kind] = {"hit_rate": round(hits / len(queries), 3),
                         "wrong_hits": wrong}
    report["variants_at_threshold_0.95"] = {"queries": len(queries), **by_kind}
    report["load_average_after"] = os.getloadavg()
    report["machine"] = machine.hardware() if hasattr(machine, "hardware") else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    return report


if __name__ == "__main__":
    main()
