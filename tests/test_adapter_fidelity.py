"""The drop-ins accept what the peers accept, with the same meaning and defaults.

LangChain: ``CrossEncoderReranker(model=<any BaseCrossEncoder>)`` -- LangChain's own
unit tests for it, written again by us with only the class name changed (their
``FakeCrossEncoder`` lives in the sunset langchain-community, so
``SimilarityCrossEncoder`` below scores the same way: difflib's ratio).
LlamaIndex: every ``SentenceTransformerRerank`` constructor argument and default.
"""

from __future__ import annotations

import inspect
import logging
from difflib import SequenceMatcher

import pytest
from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import Document
from llama_index.core.postprocessor import SentenceTransformerRerank

from rerank_plugins import Status
from rerank_plugins.errors import ConfigurationError
from rerank_plugins.langchain import CrossEncoderRerank as LangChainRerank
from rerank_plugins.langchain import LangChainCrossEncoderScorer
from rerank_plugins.llama_index import CrossEncoderRerank as LlamaIndexRerank


class SimilarityCrossEncoder(BaseCrossEncoder):
    """A real (tiny) BaseCrossEncoder: string similarity of query and text."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, text_pairs):
        self.calls += 1
        return [SequenceMatcher(None, query, text).ratio() for query, text in text_pairs]


class BrokenCrossEncoder(BaseCrossEncoder):
    """Raises like a remote endpoint that is down (a fault injected on purpose)."""

    def score(self, text_pairs):
        raise ConnectionError("endpoint unreachable")


TEXTS = ["aaa1", "bbb1", "aaa2", "bbb2", "aaa3", "bbb3"]


def test_rerank_with_a_langchain_cross_encoder_as_the_peer_does():
    docs = [Document(page_content=text) for text in TEXTS]
    compressor = LangChainRerank(model=SimilarityCrossEncoder())
    actual = [d.page_content for d in compressor.compress_documents(docs, "bbb2")]
    assert set(actual) == {"bbb2", "bbb1", "bbb3"}  # top_n=3, as CrossEncoderReranker
    assert not {"aaa1", "aaa2", "aaa3"} & set(actual)
    assert actual[0] == "bbb2"
    compressor.close()


def test_rerank_empty_with_a_langchain_cross_encoder():
    compressor = LangChainRerank(model=SimilarityCrossEncoder())
    assert len(compressor.compress_documents([], "query")) == 0
    compressor.close()


def test_a_langchain_cross_encoder_runs_behind_our_guards():
    encoder = SimilarityCrossEncoder()
    compressor = LangChainRerank(model=encoder, top_n=2)
    docs = [Document(page_content=text) for text in TEXTS]
    first = compressor.compress_documents(docs, "bbb2")
    again = compressor.compress_documents(docs, "bbb2")
    assert encoder.calls == 1  # the second call came from the pair cache
    assert [d.metadata["rerank_status"] for d in again] == [Status.CACHE.value] * 2
    assert [d.page_content for d in again] == [d.page_content for d in first]
    # the scores are the encoder's, in [0, 1], used as is
    expected = SequenceMatcher(None, "bbb2", "bbb2").ratio()
    assert first[0].metadata["relevance_score"] == pytest.approx(expected)
    compressor.close()
    broken = LangChainRerank(model=BrokenCrossEncoder(), top_n=2)
    out = broken.compress_documents(docs, "bbb2")  # never an exception to the app
    assert [d.page_content for d in out] == TEXTS[:2]
    assert {d.metadata["rerank_fallback_reason"] for d in out} == {"error"}
    broken.close()


def test_the_cache_keeps_langchain_encoders_apart():
    one = LangChainCrossEncoderScorer(SimilarityCrossEncoder())
    other = LangChainCrossEncoderScorer(BrokenCrossEncoder())
    assert one.cache_namespace != other.cache_namespace
    with pytest.raises(ConfigurationError, match="not both"):
        LangChainRerank(model=SimilarityCrossEncoder(), scorer=one)


def test_every_sentence_transformer_rerank_argument_means_the_same_here():
    peer = inspect.signature(SentenceTransformerRerank.__init__).parameters
    ours = LlamaIndexRerank.model_fields
    for name, param in peer.items():
        if name == "self":
            continue
        assert name in ours, f"SentenceTransformerRerank takes {name}; we must too"
        if name == "model":
            # the peer downloads a hub model; ours defaults to the embedded one (offline)
            assert ours[name].default is None
            continue
        assert ours[name].default == param.default, name


@pytest.mark.parametrize("adapter", [LlamaIndexRerank, LangChainRerank],
                         ids=["llama_index", "langchain"])
def test_the_default_model_is_visible(adapter, bi_scorer, caplog):
    with caplog.at_level(logging.INFO, logger="rerank_plugins.reranker"):
        rerank = adapter(scorer=bi_scorer)
    info = rerank.describe()
    assert info["kind"] == "bi-encoder" and info["fusion"] == "linear"
    assert info["model"] == bi_scorer.model_id
    assert f"reranking with {bi_scorer.model_id} (bi-encoder)" in caplog.text
    assert "*bi-encoder*" in adapter.__doc__ and "all-MiniLM-L6-v2" in adapter.__doc__
    rerank.close()
