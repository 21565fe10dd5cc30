"""The semantic query layer on the real bundled all-MiniLM-L6-v2 (loaded once)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import counter_value, metric_points

from rerank_plugins import Reranker
from rerank_plugins.cache import MemoryCache, pair_key
from rerank_plugins.cache.semantic import SemanticHit, SemanticQueryCache
from rerank_plugins.errors import ConfigurationError
from rerank_plugins.privacy import Fingerprinter
from rerank_plugins.telemetry import contract as c

QUERY = "How do airplane wings produce lift?"
INDEXES = ["usearch", "numpy"]


@pytest.fixture(scope="module")
def layer_model():
    """The bundled model behind the first layer; later layers reuse its embedder."""
    return SemanticQueryCache()


def _layer(layer_model, **options) -> SemanticQueryCache:
    return SemanticQueryCache(embedder=layer_model._embed, **options)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("index", INDEXES)
def test_exact_near_and_miss_on_the_bundled_model(layer_model, index):
    layer = _layer(layer_model, index=index)
    layer.remember(QUERY, "fp-wings")
    layer.remember("what is the boiling point of water", "fp-boil")

    exact = layer.nearest(QUERY)
    near = layer.nearest("how do airplane wings produce lift")
    reordered = layer.nearest("how do wings of an airplane produce lift")

    assert layer.index_name == index
    assert exact == SemanticHit("fp-wings", 1.0, "exact")
    assert near.kind == "near" and near.query_fingerprint == "fp-wings"
    assert 0.95 <= near.similarity < 1.0
    assert reordered is not None and reordered.query_fingerprint == "fp-wings"
    # a different question that shares most words is not a hit
    assert layer.nearest("what is the freezing point of water") is None
    assert layer.nearest("how do helicopter rotors produce lift") is None


def test_the_threshold_decides_near_hits(layer_model):
    variant = "airplane wings produce lift"
    similarity = float(layer_model.embed([QUERY])[0] @ layer_model.embed([variant])[0])
    below = _layer(layer_model, threshold=similarity + 0.005)
    above = _layer(layer_model, threshold=similarity - 0.005)
    for layer in (below, above):
        layer.remember(QUERY, "fp")

    assert below.nearest(variant) is None
    hit = above.nearest(variant)
    assert hit is not None and hit.similarity == pytest.approx(similarity, abs=1e-4)


def test_the_exact_path_does_not_embed(layer_model):
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return layer_model._embed(texts)

    layer = SemanticQueryCache(embedder=counting)
    layer.remember(QUERY, "fp")
    calls.clear()
    assert layer.nearest(QUERY).kind == "exact"
    assert calls == []
    assert layer.nearest("how do airplane wings produce lift").kind == "near"
    assert len(calls) == 1


@pytest.mark.parametrize("index", INDEXES)
def test_entries_and_bytes_are_bounded_least_recently_used_first(layer_model, index):
    layer = _layer(layer_model, index=index, max_entries=3)
    for n, text in enumerate(["wings and lift", "boiling water", "tax returns in april"]):
        layer.remember(text, f"fp{n}")
    assert layer.nearest("wings and lift").query_fingerprint == "fp0"  # now most recent
    layer.remember("mountain bike tyres", "fp3")

    assert len(layer) == 3
    assert layer.nearest("boiling water") is None  # the least recently used went
    assert layer.nearest("wings and lift").query_fingerprint == "fp0"

    small = _layer(layer_model, index=index, max_bytes=3 * (4 * 384 + 400))
    for n in range(5):
        small.remember(f"question number {n} about rivers", f"fp{n}")
    assert len(small) == 3 and small.bytes_used <= small.max_bytes


@pytest.mark.parametrize("index", INDEXES)
def test_entries_expire_and_clear_forgets_everything(layer_model, index):
    clock = Clock()
    layer = _layer(layer_model, index=index, ttl_s=60, clock=clock)
    layer.remember(QUERY, "fp-old")
    clock.now += 30
    assert layer.nearest("how do airplane wings produce lift").query_fingerprint == "fp-old"
    clock.now += 31
    assert layer.nearest(QUERY) is None
    assert layer.nearest("how do airplane wings produce lift") is None
    assert len(layer) == 0

    layer.remember(QUERY, "fp-new")
    layer.remember("boiling water", "fp-boil")
    layer.clear()
    assert len(layer) == 0 and layer.nearest(QUERY) is None
    layer.remember(QUERY, "fp-again")  # usable after clear
    assert layer.nearest(QUERY).query_fingerprint == "fp-again"


def test_remembering_a_query_again_replaces_its_fingerprint(layer_model):
    layer = _layer(layer_model)
    layer.remember(QUERY, "fp-1")
    layer.remember(QUERY, "fp-2")
    assert len(layer) == 1
    assert layer.nearest(QUERY).query_fingerprint == "fp-2"
    assert layer.nearest("how do airplane wings produce lift").query_fingerprint == "fp-2"


def test_usearch_and_the_exact_scan_agree_on_the_nearest_query(layer_model):
    from rerank_ops.demo_corpus import DOCUMENTS, QUERIES

    texts = list(QUERIES.values()) + [title for title, _ in DOCUMENTS.values()]
    vectors = layer_model.embed(texts)
    hnsw, scan = _layer(layer_model, index="usearch", threshold=0.5), \
        _layer(layer_model, index="numpy", threshold=0.5)
    for n, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        hnsw.remember(text, f"fp{n}", vector=vector)
        scan.remember(text, f"fp{n}", vector=vector)
    probes = [t.upper() + "?" for t in texts]
    pairs = [(hnsw.nearest(p), scan.nearest(p)) for p in probes]
    assert len(texts) >= 30
    assert all(a is not None and b is not None for a, b in pairs)
    assert [a.query_fingerprint for a, _ in pairs] == [b.query_fingerprint for _, b in pairs]
    assert [a.similarity for a, _ in pairs] == pytest.approx(
        [b.similarity for _, b in pairs], abs=1e-5)


def test_a_hit_reads_the_pair_cache_under_the_earlier_querys_fingerprint(
        bi_scorer, layer_model):
    secret = "semantic-test-secret"
    docs = ["Airfoils deflect air downwards.", "Cats sleep all day.", "Flaps add lift."]
    cache = MemoryCache()
    reranker = Reranker(bi_scorer, cache=cache, secret=secret, timeout_s=None)
    try:
        reranker.rerank(QUERY, docs)
    finally:
        reranker.close()
    fp = Fingerprinter(secret)
    layer = _layer(layer_model)
    layer.remember(QUERY, fp.fingerprint(QUERY))

    hit = layer.nearest("how do airplane wings produce lift")
    keys = [pair_key(bi_scorer.cache_namespace, hit.query_fingerprint, fp.fingerprint(d))
            for d in docs]
    own_keys = [pair_key(bi_scorer.cache_namespace,
                         fp.fingerprint("how do airplane wings produce lift"),
                         fp.fingerprint(d)) for d in docs]

    assert len(cache.get_many(keys)) == 3  # the earlier query's scores serve this one
    assert cache.get_many(own_keys) == {}  # the exact pair cache alone misses


def test_lookups_are_counted_by_kind_with_the_similarity_of_near_hits(layer_model):
    layer = _layer(layer_model)
    layer.remember(QUERY, "fp")
    kinds = ("exact", "near", "miss")
    before = {k: counter_value(c.SEMANTIC_LOOKUPS.name, kind=k) for k in kinds}
    similarity_count = sum(p.count for p in metric_points(c.SEMANTIC_SIMILARITY.name))
    layer.nearest(QUERY)
    layer.nearest("how do airplane wings produce lift")
    layer.nearest("why do birds migrate")
    layer.nearest("")

    after = {k: counter_value(c.SEMANTIC_LOOKUPS.name, kind=k) for k in kinds}
    assert {k: after[k] - before[k] for k in kinds} == {"exact": 1, "near": 1, "miss": 2}
    assert sum(p.count for p in metric_points(c.SEMANTIC_SIMILARITY.name)) - \
        similarity_count == 1


def test_query_text_and_embeddings_are_not_kept_or_logged(layer_model, caplog):
    caplog.set_level(logging.DEBUG)
    layer = _layer(layer_model)
    secret_query = "salary of jane doe at acme corp"
    layer.remember(secret_query, "fp-secret")
    layer.nearest("salary of jane doe at acme corp.")
    vector = layer_model.embed([secret_query])[0]

    kept = repr(layer) + repr(vars(layer)) + repr(list(layer._entries.values()))
    assert secret_query not in kept and "jane" not in kept
    assert secret_query not in caplog.text
    assert f"{vector[0]:.4f}" not in caplog.text and f"{vector[0]:.4f}" not in repr(layer)


@pytest.mark.parametrize("query", [None, "", "   ", 42, "\ud800 lone surrogate"])
def test_bad_queries_are_misses_not_crashes(layer_model, query):
    layer = _layer(layer_model)
    layer.remember(QUERY, "fp")
    assert layer.nearest(query) is None
    layer.remember(query, "fp-bad")  # ignored, or remembered safely
    assert layer.nearest(QUERY).query_fingerprint == "fp"


@pytest.mark.parametrize(("options", "message"), [
    ({"threshold": 0}, "threshold"), ({"threshold": 1.5}, "threshold"),
    ({"max_entries": 0}, "max_entries"), ({"max_bytes": 0}, "max_bytes"),
    ({"ttl_s": 0}, "ttl_s"), ({"index": "faiss"}, "index"),
])
def test_invalid_settings_are_refused_with_their_name(layer_model, options, message):
    with pytest.raises(ConfigurationError, match=message):
        _layer(layer_model, **options)


def test_a_model_name_that_is_not_a_folder_is_refused_without_a_download():
    with pytest.raises(ConfigurationError, match="never downloads"):
        SemanticQueryCache("sentence-transformers/all-mpnet-base-v2")


def test_an_embedder_of_the_wrong_shape_is_a_clear_error():
    layer = SemanticQueryCache(embedder=lambda texts: np.zeros((len(texts) + 1, 4)))
    with pytest.raises(ConfigurationError, match="shape"):
        layer.remember(QUERY, "fp")
