"""The document-embedding store: a bi-encoder request embeds only its query and the
documents the store has not seen, warm scores equal cold ones, keys hold no text,
values are raw vectors (never pickled) and, in Redis, signed."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from rerank_plugins.cache.embeddings import (
    MemoryEmbeddingStore,
    RedisEmbeddingStore,
    decode_vector,
    encode_vector,
)
from rerank_plugins.errors import CacheError, ConfigurationError
from rerank_plugins.scoring.base import ScoreRequest

TEXTS = [
    "swept wings delay the drag rise at transonic mach numbers.",
    "the boundary layer on a flat plate with heat transfer.",
    "buckling of thin cylindrical shells under axial compression.",
]
SECRET = "test-embedding-secret"


class CountingEmbedder:
    """Wraps the real scorer's ``embed`` to record which texts reach the model."""

    def __init__(self, scorer) -> None:
        self.scorer, self.inner, self.seen = scorer, scorer.embed, []
        scorer.embed = self

    def __call__(self, texts):
        self.seen.append(list(texts))
        return self.inner(texts)


@pytest.fixture
def stored_scorer():
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    scorer = BiEncoderScorer(dtype="float32",
                             embedding_store=MemoryEmbeddingStore(secret=SECRET))
    return scorer, CountingEmbedder(scorer)


def test_vectors_round_trip_as_raw_bytes_not_pickles():
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    raw = encode_vector(vector)
    assert len(raw) == 9 + 384 * 4 and b"numpy" not in raw
    assert np.array_equal(decode_vector(raw), vector)
    half = encode_vector(vector, "float16")
    assert len(half) == 9 + 384 * 2
    assert decode_vector(half) == pytest.approx(vector, abs=1e-3)
    for hostile in (pickle.dumps(vector), raw[:-4], b"RPE1" + b"\x07" + struct.pack("<I", 1),
                    raw[:9] + b"\x00\x00\xc0\x7f" * 384, b""):
        assert decode_vector(hostile) is None


def test_a_request_embeds_only_the_query_and_unseen_documents(stored_scorer, bi_scorer):
    scorer, embedded = stored_scorer
    [cold] = scorer.score_many([ScoreRequest("transonic wing", TEXTS)])
    assert embedded.seen == [["transonic wing"], TEXTS]
    assert cold.extra["embeddings_from_store"] == 0
    [warm] = scorer.score_many([ScoreRequest("shell buckling", TEXTS + ["a new document."])])
    assert embedded.seen[2:] == [["shell buckling"], ["a new document."]]
    assert warm.extra["embeddings_from_store"] == 3
    [again] = scorer.score_many([ScoreRequest("transonic wing", TEXTS)])
    assert again.scores == cold.scores  # float32 vectors: warm equals cold exactly
    assert cold.scores == pytest.approx(
        bi_scorer.score_many([ScoreRequest("transonic wing", TEXTS)])[0].scores, abs=1e-6)
    assert scorer.embedding_store.stats()["hits"] == 6


def test_keys_hold_no_text_and_separate_models():
    store = MemoryEmbeddingStore(secret=SECRET)
    key = store.key("bi|model-a|rev1", TEXTS[0])
    assert "swept" not in key and len(key) == 64
    assert key != store.key("bi|model-b|rev1", TEXTS[0])
    assert key == MemoryEmbeddingStore(secret=SECRET).key("bi|model-a|rev1", TEXTS[0])
    assert key != MemoryEmbeddingStore(secret="other").key("bi|model-a|rev1", TEXTS[0])


def test_memory_store_honours_its_byte_cap():
    store = MemoryEmbeddingStore(max_bytes=64 * 1024, secret=SECRET)
    for start in range(0, 200, 20):
        store.set_many({f"{i:064x}": np.ones(384, np.float32) for i in range(start, start + 20)})
    assert store.bytes_used <= 64 * 1024 and 0 < len(store) < 200
    assert f"{199:064x}" in store.get_many([f"{199:064x}"])  # newest kept, oldest evicted
    assert store.get_many([f"{0:064x}"]) == {}
    with pytest.raises(ConfigurationError):
        MemoryEmbeddingStore(vector_dtype="int8")


def test_redis_store_round_trips_signed_vectors(redis_db):
    store = RedisEmbeddingStore(redis_db.url, secret=SECRET)
    try:
        vectors = {store.key("ns", t): np.full(384, i, np.float32) for i, t in enumerate(TEXTS)}
        store.set_many(vectors)
        store.flush()
        found = store.get_many(list(vectors))
        assert set(found) == set(vectors)
        for key, vector in vectors.items():
            assert np.array_equal(found[key], vector)
        raw = redis_db.client().get("rrp:emb:" + next(iter(vectors)))
        assert raw.startswith(b"RPE1") and b"swept" not in raw
    finally:
        store.close()


def test_redis_store_rejects_planted_and_copied_values(redis_db):
    store = RedisEmbeddingStore(redis_db.url, secret=SECRET)
    client = redis_db.client()
    try:
        good, other = store.key("ns", TEXTS[0]), store.key("ns", TEXTS[1])
        store.set_many({good: np.ones(384, np.float32)})
        store.flush()
        signed = client.get("rrp:emb:" + good)
        client.set("rrp:emb:" + other, signed)  # a valid value copied to another key
        planted = store.key("ns", TEXTS[2])
        client.set("rrp:emb:" + planted, pickle.dumps(np.ones(384)))  # hostile payload
        tampered = store.key("ns", "tampered")
        client.set("rrp:emb:" + tampered, signed[:20] + b"\x00" + signed[21:])
        assert set(store.get_many([good, other, planted, tampered])) == {good}
    finally:
        store.close()


def test_scorer_survives_a_redis_outage(bi_scorer):
    from conftest import free_port

    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    # fault: a Redis that is not there (a closed loopback port)
    store = RedisEmbeddingStore(f"redis://127.0.0.1:{free_port()}/0", secret=SECRET)
    scorer = BiEncoderScorer(dtype="float32", embedding_store=store)
    try:
        with pytest.raises(CacheError):
            store.get_many(["k"])
        [out] = scorer.score_many([ScoreRequest("transonic wing", TEXTS)])
        assert out.scores == pytest.approx(
            bi_scorer.score_many([ScoreRequest("transonic wing", TEXTS)])[0].scores, abs=1e-6)
    finally:
        store.close()


def test_load_scorer_hands_the_store_to_the_bi_encoder_only(ce_folder):
    from rerank_plugins.scoring import load_scorer

    store = MemoryEmbeddingStore(secret=SECRET)
    assert load_scorer(None, embedding_store=store).embedding_store is store
    with pytest.raises(ConfigurationError, match="bi-encoder"):
        load_scorer(ce_folder, embedding_store=store)
