"""Safe rollout: canary split, shadow-compare, hot swap, feedback, and the SLIs
(feature availability, policy actions) counted on the request path."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cheap_scorers import CrcScorer
from conftest import counter_value

from rerank_plugins import Candidate, Reranker, Status, block_if, boost_if
from rerank_plugins.errors import ScorerError
from rerank_plugins.telemetry.events import read_events
from rerank_plugins.telemetry.sinks import EventLog

DOCS = ["Airfoils turn air downward and the wing is pushed up.",
        "Cats sleep for most of the day.",
        "Bernoulli: faster air over the wing means lower pressure.",
        "Sourdough needs a starter culture."]


class FailingScorer(CrcScorer):
    """Raises on every call: a variant whose model is broken (fault injected)."""

    model_id = "broken-candidate"

    def score_many(self, requests):
        raise RuntimeError("candidate model crashed")


def test_the_split_is_deterministic_and_within_one_point_of_its_share():
    reranker = Reranker(CrcScorer(), variants={"candidate": CrcScorer("crc-v2")},
                        split={"candidate": 0.05}, secret="rollout-test", cache=None)
    rollout = reranker._rollout
    picks = [rollout.route(f"user-{i}")[0] for i in range(10_000)]
    share = picks.count("candidate") / len(picks)
    assert abs(share - 0.05) <= 0.01, share
    assert picks == [rollout.route(f"user-{i}")[0] for i in range(10_000)]  # stable
    # the served result says which arm answered, and a key keeps its arm
    key = next(f"user-{i}" for i, p in enumerate(picks) if p == "candidate")
    result = reranker.rerank("wing lift", DOCS, key=key)
    assert (result.variant, result.model_version) == ("candidate", "1")
    assert reranker.rerank("wing lift", DOCS, key="user-0").variant == picks[0]
    reranker.close()


def test_a_failing_variant_falls_back_and_never_touches_the_control_breaker(tmp_path):
    log = EventLog(tmp_path / "events")
    reranker = Reranker(CrcScorer(), variants={"candidate": FailingScorer()},
                        split={"candidate": 0.5}, cache=None, event_log=log)
    results = [reranker.rerank("wing", DOCS, key=f"k{i}") for i in range(60)]
    reranker.close()
    log.close()
    by_arm = {r.variant for r in results}
    assert by_arm == {"control", "candidate"}
    for result in results:
        expected = Status.FALLBACK if result.variant == "candidate" else Status.OK
        assert result.status is expected
        assert len(result) == len(DOCS)  # a fallback still answers, in retrieval order
    assert reranker.breaker.state == "closed"
    assert reranker._rollout.arms["candidate"].breaker.state == "open"
    events = list(read_events(tmp_path / "events"))
    assert {(e["variant"], e["status"]) for e in events} == {
        ("control", "ok"), ("candidate", "fallback")}


def test_shadow_compare_serves_the_control_and_logs_both(tmp_path):
    log = EventLog(tmp_path / "events")
    reranker = Reranker(CrcScorer(), variants={"candidate": CrcScorer("crc-v2")},
                        split={"candidate": 1.0}, variant_mode="shadow_compare",
                        cache=None, event_log=log)
    served = [reranker.rerank("wing lift", DOCS, key=f"k{i}") for i in range(5)]
    reranker.close()  # waits for the background arm
    log.close()
    assert {r.variant for r in served} == {"control"}
    events = list(read_events(tmp_path / "events"))
    assert sorted((e["variant"], e["served"]) for e in events) == (
        [("candidate", False)] * 5 + [("control", True)] * 5)


def test_feedback_is_logged_with_fingerprinted_ids_and_the_serving_variant(tmp_path):
    log = EventLog(tmp_path / "events")
    reranker = Reranker(CrcScorer(), variants={"candidate": CrcScorer("crc-v2")},
                        split={"candidate": 1.0}, cache=None, event_log=log)
    result = reranker.rerank("wing lift", [Candidate("doc-secret-42", DOCS[0]),
                                           Candidate("doc-b", DOCS[1])])
    before = counter_value("rerank_feedback", variant="candidate", kind="click")
    assert reranker.feedback(result.request_id, "doc-secret-42", 1.0, position=0)
    assert reranker.feedback(result.request_id, "doc-b", 0.0)
    reranker.close()
    log.close()
    [click, judged] = list(read_events(tmp_path / "events", kind="feedback"))
    assert (click["request_id"], click["variant"], click["label"], click["position"]) == (
        result.request_id, "candidate", 1.0, 0)
    assert judged["position"] is None and judged["label"] == 0.0
    raw = "".join(p.read_text() for p in (tmp_path / "events").glob("*.jsonl"))
    assert "doc-secret-42" not in raw  # ids are fingerprinted
    assert counter_value("rerank_feedback", variant="candidate", kind="click") == before + 1
    assert len(list(read_events(tmp_path / "events"))) == 1  # drift sees requests only
    with pytest.raises(TypeError):
        reranker.feedback(result.request_id, 42)  # type: ignore[arg-type]


def test_missing_features_and_policy_actions_are_counted():
    policies = (block_if(lambda m: m.get("tier") == "blocked", name="tier_block",
                         needs=("tier",)),
                boost_if(lambda m: m.get("fresh", False), 0.2, name="freshness"))
    reranker = Reranker(CrcScorer(), policies=policies, cache=None)
    model = reranker.model_id
    before = {f: counter_value("rerank_candidate_features_missing", model=model, feature=f)
              for f in ("text", "retrieval_score", "policy_metadata")}
    blocked_before = counter_value("rerank_policy_actions", policy="tier_block",
                                   action="blocked")
    boosted_before = counter_value("rerank_policy_actions", policy="freshness",
                                   action="boosted")
    reranker.rerank("wing", [
        Candidate("a", DOCS[0], 3.0, {"tier": "blocked"}),
        Candidate("b", "   ", None, {"tier": "free", "fresh": True}),
        Candidate("c", DOCS[2], None, {}),
    ])
    reranker.close()
    after = {f: counter_value("rerank_candidate_features_missing", model=model, feature=f)
             for f in before}
    assert {f: after[f] - before[f] for f in before} == {
        "text": 1, "retrieval_score": 2, "policy_metadata": 1}
    assert counter_value("rerank_policy_actions", policy="tier_block",
                         action="blocked") == blocked_before + 1
    assert counter_value("rerank_policy_actions", policy="freshness",
                         action="boosted") == boosted_before + 1


def test_hot_swap_under_16_callers_fails_no_request(bi_scorer, ce_scorer):
    """Real models on both sides: the embedded bi-encoder is swapped for the
    cross-encoder built from the same weights while 16 threads keep asking."""
    reranker = Reranker(bi_scorer, timeout_s=120.0, cache="memory")
    results, stop = [], threading.Event()
    lock = threading.Lock()

    def caller(index: int) -> None:
        while not stop.is_set():
            result = reranker.rerank(f"wing lift {index % 4}", DOCS)
            with lock:
                results.append(result)

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(caller, i) for i in range(16)]
        time.sleep(1.0)
        old_engine = reranker.engine
        reranker.swap_scorer(ce_scorer, warmup=[("warm up", DOCS)])
        swapped_at = len(results)
        deadline = time.monotonic() + 120
        while len(results) < swapped_at + 32 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for future in futures:
            future.result()
    reranker.close()
    assert {r.status for r in results} <= {Status.OK, Status.CACHE}, \
        [(r.status, r.fallback_reason) for r in results if r.status is Status.FALLBACK][:3]
    models = [r.model_id for r in results]
    assert bi_scorer.model_id in models and ce_scorer.model_id in models
    assert models[-1] == ce_scorer.model_id
    assert old_engine._closed  # the old model's engine was closed after its requests


def test_a_swap_whose_warmup_fails_is_refused_and_the_old_model_keeps_serving():
    class Broken(CrcScorer):
        model_id = "broken"

        def score_many(self, requests):
            raise RuntimeError("weights corrupt")

    reranker = Reranker(CrcScorer(), cache=None)
    with pytest.raises(ScorerError):
        reranker.swap_scorer(Broken(), warmup=[("q", ["a"])])
    assert reranker.model_id == "crc"
    assert reranker.rerank("q", ["a", "b"]).status is Status.OK
    reranker.close()


def test_drop_ins_carry_the_request_id_and_forward_feedback(tmp_path):
    from langchain_core.documents import Document

    from rerank_plugins.langchain import CrossEncoderRerank

    log = EventLog(tmp_path / "events")
    compressor = CrossEncoderRerank(scorer=CrcScorer(), event_log=log, top_n=2)
    out = compressor.compress_documents([Document(page_content=t) for t in DOCS], "wing")
    request_id = out[0].metadata["rerank_request_id"]
    assert compressor.feedback(request_id, "doc-1", position=0)
    compressor.close()
    log.close()
    [event] = read_events(tmp_path / "events", kind="feedback")
    assert event["request_id"] == request_id
    assert json.dumps(event)  # plain JSON



def _reported_circuits() -> dict[str, list[float]]:
    """What ``rerank_circuit_state`` reports right now: breaker name -> values."""
    from rerank_plugins.telemetry import instruments

    reported: dict[str, list[float]] = {}
    for observation in instruments._observe_circuits(None):
        reported.setdefault(observation.attributes["breaker"], []).append(observation.value)
    return reported


def test_a_swap_keeps_the_configured_breaker_name_and_settings_with_a_fresh_state():
    """A hot swap used to give the new scorer a default ``CircuitBreaker("scorer")``
    (30 s reset, 5 failures) whatever breaker the arm was built with: the canary's
    breaker lost its name, and two breakers named "scorer" reported conflicting
    states, so the live example's circuit-open alert never saw the control arm open.
    Crc and a raising scorer stand in for models: the breaker bookkeeping is what is
    tested, and the outage is a fault a real model cannot produce on demand."""
    from rerank_plugins.resilience import CircuitBreaker

    class Broken(CrcScorer):
        model_id = "broken"

        def score_many(self, requests):
            raise RuntimeError("injected outage")

    configured = CircuitBreaker("arm-swap-test", failure_threshold=2, reset_timeout_s=3)
    reranker = Reranker(Broken(), cache=None, breaker=configured)
    for _ in range(2):
        assert reranker.rerank("q", ["a", "b"]).status is Status.FALLBACK
    assert configured.state == "open"
    reranker.swap_scorer(CrcScorer(), warmup=[("q", ["a"])])
    after = reranker._primary.breaker
    assert after is not configured  # the new model starts closed
    assert (after.name, after.failure_threshold, after.reset_timeout_s) == (
        "arm-swap-test", 2, 3)
    assert after.state == "closed"
    assert reranker.rerank("q", ["a", "b"]).status is Status.OK
    # one series per breaker name: the retired slot's breaker no longer reports
    assert _reported_circuits()["arm-swap-test"] == [0]
    reranker.swap_scorer(Broken())
    for _ in range(2):
        assert reranker.rerank("q", ["a", "b"]).status is Status.FALLBACK
    assert _reported_circuits()["arm-swap-test"] == [2]  # open, after 2 failures
    reranker.close()


def test_an_arm_built_from_a_scorer_reports_its_breaker_under_its_own_name():
    """An arm given as a scorer (not a Reranker) used to get a breaker named like the
    control arm's, so ``rerank_circuit_state`` carried two series with one label set."""
    reranker = Reranker(CrcScorer(), cache=None, variants={"canary": CrcScorer()},
                        split={"canary": 0.5})
    arm = reranker._rollout.arms["canary"]
    assert arm._primary.breaker.name == "scorer:canary"
    assert arm._primary.breaker is not reranker._primary.breaker
    reported = _reported_circuits()
    assert reported["scorer:canary"] == [0]
    reranker.close()
