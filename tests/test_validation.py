"""Bad input: each case gets a clear error (before any work starts) or the documented
safe result. The table in docs/core.md lists the same outcomes; keep them in step."""

from __future__ import annotations

import json
import math
import threading

import pytest

from rerank_plugins import (
    Candidate,
    ConfigurationError,
    InvalidInputError,
    Reranker,
    Status,
)
from rerank_plugins.privacy import safe_text
from rerank_plugins.scoring.base import ScoreRequest
from rerank_plugins.telemetry.sinks import EventLog

WING = "An aircraft wing is an airfoil whose shape makes the air push it upward."
CAT = "Cats sleep most of the day."
QUERY = "how do wings lift a plane"


class RecordingScorer:
    """The real scorer plus a count of model calls, to prove errors come before work."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0
        self._lock = threading.Lock()

    model_id = property(lambda self: self.inner.model_id)
    revision = property(lambda self: self.inner.revision)
    cache_namespace = property(lambda self: self.inner.cache_namespace)
    activation = property(lambda self: self.inner.activation)

    def describe(self):
        return self.inner.describe()

    def score_many(self, requests):
        with self._lock:
            self.calls += 1
        return self.inner.score_many(requests)


@pytest.fixture
def scorer(bi_scorer):
    return RecordingScorer(bi_scorer)


@pytest.fixture
def reranker(scorer, tmp_path):
    log = EventLog(tmp_path / "events")
    reranker = Reranker(scorer, fusion="none", timeout_s=60.0, event_log=log)
    yield reranker
    reranker.close()
    log.close()


def assert_no_work_done(reranker, scorer) -> None:
    assert scorer.calls == 0
    reranker.event_log.flush()
    assert reranker.event_log.written == 0


# -- clear errors -------------------------------------------------------------------
@pytest.mark.parametrize("query", ["", "   ", "\n\t ", "\u3000"])
def test_empty_or_whitespace_query_is_an_invalid_input_error(reranker, scorer, query):
    with pytest.raises(InvalidInputError, match="query is empty or whitespace"):
        reranker.rerank(query, [WING])
    with pytest.raises(ValueError):  # InvalidInputError is a ValueError
        reranker.rerank(query, [WING])
    assert_no_work_done(reranker, scorer)


@pytest.mark.parametrize("query", [None, b"wings", 42, ["wings"]])
def test_non_string_query_is_a_type_error(reranker, scorer, query):
    with pytest.raises(TypeError, match="query must be a str"):
        reranker.rerank(query, [WING])
    assert_no_work_done(reranker, scorer)


@pytest.mark.parametrize("candidates", [None, "a single string", b"bytes", {"text": WING}])
def test_candidates_that_are_not_a_sequence_are_a_type_error(reranker, scorer, candidates):
    with pytest.raises(TypeError, match="candidates must be a sequence of Candidate, str or dict"):
        reranker.rerank(QUERY, candidates)
    assert_no_work_done(reranker, scorer)


@pytest.mark.parametrize(("bad", "message"), [
    (None, "candidate 1 is a NoneType; expected Candidate, str or dict"),
    (3.5, "candidate 1 is a float"),
    ({"id": "x"}, "candidate 1 is a dict without a 'text' key"),
    ({"id": "x", "text": None}, r"Candidate.text must be a str, got NoneType \(id='x'\)"),
    ({"id": "x", "text": 17}, "Candidate.text must be a str, got int"),
    ({"id": "x", "text": "t", "retrieval_score": "high"},
     "Candidate.retrieval_score must be a number or None, got str"),
])
def test_none_or_non_string_text_is_a_type_error_naming_the_candidate(reranker, scorer, bad,
                                                                      message):
    with pytest.raises(TypeError, match=message):
        reranker.rerank(QUERY, [WING, bad])
    assert_no_work_done(reranker, scorer)


def test_candidate_objects_check_their_own_fields():
    with pytest.raises(TypeError, match="convert or drop it before reranking"):
        Candidate(id="a", text=None)
    with pytest.raises(TypeError, match="Candidate.id must be a str"):
        Candidate(id=7, text="t")
    with pytest.raises(TypeError, match="retrieval_score must be a number"):
        Candidate(id="a", text="t", retrieval_score=True)


@pytest.mark.parametrize("candidates", [
    [Candidate("a", WING), Candidate("b", CAT), Candidate("a", CAT)],
    [{"id": "7", "text": WING}, {"id": 7, "text": CAT}],  # ids are compared as strings
    [{"id": "1", "text": WING}, CAT],  # a plain string's id is its position
])
def test_duplicate_ids_are_an_invalid_input_error(reranker, scorer, candidates):
    with pytest.raises(InvalidInputError, match=r"duplicate candidate ids .*\(deduplicate"):
        reranker.rerank(QUERY, candidates)
    assert_no_work_done(reranker, scorer)


@pytest.mark.parametrize(("top_n", "error", "message"), [
    (0, InvalidInputError, "top_n=0 must be >= 1"),
    (-3, InvalidInputError, "top_n=-3 must be >= 1"),
    (2.0, InvalidInputError, "top_n must be an int or None, got float"),
    (True, InvalidInputError, "top_n must be an int or None, got bool"),
    ("5", InvalidInputError, "top_n must be an int or None, got str"),
])
def test_bad_top_n_per_call_is_an_invalid_input_error(reranker, scorer, top_n, error, message):
    with pytest.raises(error, match=message):
        reranker.rerank(QUERY, [WING, CAT], top_n=top_n)
    assert_no_work_done(reranker, scorer)


def test_too_many_candidates_is_an_invalid_input_error(scorer):
    reranker = Reranker(scorer, fusion="none", max_candidates=3)
    try:
        with pytest.raises(InvalidInputError, match="4 candidates exceed max_candidates=3"):
            reranker.rerank(QUERY, [WING, CAT, "a", "b"])
        assert scorer.calls == 0
    finally:
        reranker.close()


@pytest.mark.parametrize(("options", "message"), [
    ({"threshold": 1.5}, r"threshold=1.5 must be in \[0, 1\]"),
    ({"threshold": -0.01}, r"threshold=-0.01 must be in \[0, 1\]"),
    ({"threshold": math.nan}, r"threshold=nan must be in \[0, 1\]"),
    ({"threshold": math.inf}, r"threshold=inf must be in \[0, 1\]"),
    ({"threshold": True}, r"threshold=True must be in \[0, 1\]"),
    ({"threshold": "0.5"}, r"threshold='0.5' must be in \[0, 1\]"),
    ({"min_keep": -1}, "min_keep must be an int >= 0"),
    ({"relative_cutoff": 1.5}, r"relative_cutoff must be in \[0, 1\]"),
    ({"relative_cutoff": math.nan}, r"relative_cutoff must be in \[0, 1\]"),
    ({"top_n": 0}, "top_n=0 must be >= 1"),
    ({"timeout_s": 0}, "timeout_s must be a number of seconds > 0"),
    ({"timeout_ms": 0}, "timeout_s must be a number of seconds > 0"),  # deprecated name
    ({"fusion": "max"}, "fusion must be one of"),
    ({"alpha": 2}, r"alpha \(weight of the model score\) must be in \[0, 1\]"),
    ({"max_candidates": 0}, "max_candidates must be an int >= 1"),
    ({"cache": "disk"}, "cache must be 'memory', a redis:// URL, None, or a PairCache"),
])
def test_bad_settings_are_refused_when_the_reranker_is_built(bi_scorer, options, message):
    with pytest.raises(ValueError, match=message):
        Reranker(bi_scorer, **options)


def test_a_scorer_without_the_protocol_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="does not implement Scorer"):
        Reranker(object())


# -- documented safe results ---------------------------------------------------------------
def test_empty_candidate_list_returns_an_empty_ok_result(reranker, scorer):
    result = reranker.rerank(QUERY, [])
    assert (result.status, result.ids, result.dropped) == (Status.OK, [], ())
    assert reranker.rerank(QUERY, iter(())).ids == []
    assert_no_work_done(reranker, scorer)  # nothing to score, nothing to log


def test_top_n_larger_than_the_list_returns_every_candidate(reranker):
    result = reranker.rerank(QUERY, [CAT, WING], top_n=50)
    assert result.ids == ["1", "0"]
    assert result.dropped == ()


def test_empty_and_blank_documents_are_scored_like_any_text(reranker):
    result = reranker.rerank(QUERY, ["", WING, "   ", "\n"])
    assert result.status is Status.OK
    assert sorted(result.ids) == ["0", "1", "2", "3"]
    assert result.ids[0] == "1"
    assert all(0.0 <= item.model_score <= 1.0 for item in result)


def test_nan_and_infinite_retrieval_scores_become_unknown(bi_scorer):
    items = [{"id": "nan", "text": CAT, "retrieval_score": math.nan},
             {"id": "inf", "text": WING, "retrieval_score": math.inf},
             {"id": "-inf", "text": "Bread dough rises", "retrieval_score": -math.inf},
             {"id": "ok", "text": "Dogs bark", "retrieval_score": 3.0}]
    assert Candidate("x", "t", math.nan).retrieval_score is None
    for fusion in ("none", "linear", "rrf"):
        reranker = Reranker(bi_scorer, fusion=fusion, timeout_s=60)
        try:
            result = reranker.rerank(QUERY, items)
        finally:
            reranker.close()
        assert sorted(result.ids) == ["-inf", "inf", "nan", "ok"]
        by_id = {item.id: item for item in result}
        assert [by_id[i].retrieval_score for i in ("nan", "inf", "-inf", "ok")] == \
            [None, None, None, 3.0]
        assert all(math.isfinite(item.relevance_score) for item in result)
        if fusion == "none":
            assert result.ids[0] == "inf"  # the wing text wins on the model score alone


def test_one_megabyte_documents_are_truncated_and_counted(reranker):
    huge = "the wing of the aircraft " * 42_000  # about 1 MB
    assert len(huge.encode()) > 1_000_000
    other = "ice cream " * 110_000
    result = reranker.rerank(QUERY, [huge, CAT, other, huge + "!"])
    assert result.status is Status.OK
    assert result.truncated == 3
    assert sorted(result.ids) == ["0", "1", "2", "3"]
    assert set(result.ids[:2]) == {"0", "3"}


def test_one_megabyte_query_is_answered(reranker):
    result = reranker.rerank("how do wings lift " * 60_000, [CAT, WING])
    assert result.status is Status.OK
    assert result.ids == ["1", "0"]


@pytest.mark.parametrize(("query", "texts"), [
    ("wings \ud800 lift", [WING, CAT]),
    (QUERY, [WING + " \udfff", "\ud83d" + CAT]),
    ("\udc00", ["\ud800", WING]),
])
def test_lone_surrogates_are_replaced_for_the_model_and_kept_for_the_caller(
        scorer, tmp_path, query, texts):
    log = EventLog(tmp_path / "events", include_text=True)
    reranker = Reranker(scorer, fusion="none", timeout_s=60.0, event_log=log)
    try:
        result = reranker.rerank(query, texts)
        again = reranker.rerank(query, texts)
    finally:
        reranker.close()
        log.close()
    assert result.status is Status.OK
    assert again.status is Status.CACHE  # fingerprints of such text are stable
    assert sorted(result.ids) == ["0", "1"]
    assert {item.text for item in result} == set(texts)  # the caller's text, untouched
    lines = b"".join(p.read_bytes() for p in (tmp_path / "events").glob("*.jsonl"))
    events = [json.loads(line) for line in lines.decode("utf-8").splitlines()]
    assert len(events) == 2
    assert events[0]["query_text"] == safe_text(query)  # logged as valid UTF-8


def test_lone_surrogates_reach_the_scorer_only_as_replacement_characters(bi_scorer):
    seen: list[ScoreRequest] = []

    class Spy(RecordingScorer):
        def score_many(self, requests):
            seen.extend(requests)
            return super().score_many(requests)

    reranker = Reranker(Spy(bi_scorer), fusion="none", cache=None, timeout_s=60)
    try:
        reranker.rerank("a\ud800b", ["c\udfffd"])
    finally:
        reranker.close()
    assert [(r.query, list(r.texts)) for r in seen] == [("a\ufffdb", ["c\ufffdd"])]


def test_arerank_validates_the_same_way(reranker, scorer):
    import asyncio

    async def run():
        with pytest.raises(InvalidInputError, match="query is empty"):
            await reranker.arerank(" ", [WING])
        with pytest.raises(TypeError, match="candidate 0 is a NoneType"):
            await reranker.arerank(QUERY, [None])
        with pytest.raises(InvalidInputError, match="duplicate candidate ids"):
            await reranker.arerank(QUERY, [Candidate("a", WING), Candidate("a", CAT)])
        return await reranker.arerank(QUERY, [])

    assert asyncio.run(run()).ids == []
    assert_no_work_done(reranker, scorer)
