"""With defaults, query text reaches no log, metric, span or cache key, and the
fingerprints that do are useless to someone holding a dictionary of likely queries.

The dictionary is 10,000 generated "common" queries, and the queries we actually
send are drawn from it, so a plain hash (or an HMAC under any key but the
operator's) of the dictionary *would* find them if fingerprints were unkeyed. A
positive control (HMAC under the operator secret) must find every one, which
proves the scan looks at the right values and can fail.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging

import pytest
from cheap_scorers import CrcScorer
from conftest import METRIC_READER

from rerank_plugins import MemoryCache, Reranker, Status
from rerank_plugins.cache.base import pair_key
from rerank_plugins.cache.redis import RedisCache
from rerank_plugins.telemetry.sinks import EventLog, JsonlSink

SECRET = b"operator-secret-for-the-privacy-test"
WRONG_KEYS = [b"", b"secret", b"rerank-plugins", b"changeme", SECRET[:-1]]
DOCS = ["Lift comes from pressure differences over the wing.",
        "Salaries are set by the compensation committee.",
        "Our clinic opens at nine on weekdays.",
        "Refunds are processed within five business days.",
        "The router firmware update fixes the wifi drop."]


def common_queries(count: int = 10_000) -> list[str]:
    """A deterministic dictionary of plausible user queries."""
    subjects = ["salary", "password reset", "refund", "vpn", "wifi", "printer", "invoice",
                "holiday pay", "diabetes", "pregnancy test", "loan", "mortgage rate", "divorce",
                "visa", "tax return", "pension", "sick leave", "flight delay", "insulin",
                "credit card", "home loan", "parental leave", "overtime", "laptop",
                "email", "payslip", "contract", "bonus", "promotion", "therapy"]
    templates = ["how do i get a {s}", "what is the {s} policy", "{s} for alice smith",
                 "why was my {s} denied", "{s} near me", "when is the {s} deadline",
                 "can i cancel my {s}", "{s} for employee 4711", "is {s} confidential",
                 "who approves {s}", "how much {s} do i get", "{s} form download"]
    qualifiers = [""] + [f" {w}" for w in ("2024", "2025", "today", "urgent", "uk", "us",
                                             "berlin", "asap", "online", "help", "please",
                                             "again", "status", "faq", "number", "email",
                                             "phone", "login", "pdf", "error", "private",
                                             "manager", "hr", "it", "support", "quick",
                                             "free", "cost")]
    out: list[str] = []
    for template, subject, qualifier in itertools.product(templates, subjects, qualifiers):
        out.append(template.format(s=subject) + qualifier)
        if len(out) == count:
            break
    assert len(set(out)) == count
    return out





class LeakyFailingScorer(CrcScorer):
    """Raises an error whose message carries the query (as careless model code does)."""

    def score_many(self, requests):
        raise ValueError(f"cannot score query {requests[0].query!r}")


def hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def metric_attribute_values() -> list[str]:
    values = []
    data = METRIC_READER.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    values.extend(str(v) for v in point.attributes.values())
    return values


def span_strings(exporter) -> list[str]:
    out = []
    for span in exporter.get_finished_spans():
        out.append(span.name)
        out.extend(str(v) for v in span.attributes.values())
        for event in span.events:
            out.append(event.name)
            out.extend(str(v) for v in event.attributes.values())
    return out


SENSITIVE_PARTS = ("salary", "divorce", "therapy", "alice smith", "employee 4711")


def fragments(query: str) -> list[str]:
    """The query and its sensitive parts (a leak of part of the text counts too)."""
    return [query, *(part for part in SENSITIVE_PARTS if part in query)]


@pytest.fixture
def dictionary() -> list[str]:
    return common_queries()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_no_query_text_anywhere_and_fingerprints_resist_a_dictionary(
        backend, dictionary, redis_db, tmp_path, caplog, span_exporter):
    # queries unlikely to collide with metric/log vocabulary by accident
    sent = [q for q in dictionary if "salary" in q or "divorce" in q or "therapy" in q][:40]
    cache = (MemoryCache() if backend == "memory"
             else RedisCache(url=redis_db.url, secret=SECRET))
    log = EventLog(JsonlSink(tmp_path / "events"))
    reranker = Reranker(CrcScorer("crc-privacy-v1"), cache=cache, secret=SECRET, event_log=log,
                        timeout_s=5, threshold=0.3)
    leaky = Reranker(LeakyFailingScorer(), cache=None, secret=SECRET, event_log=log,
                     timeout_s=5)
    caplog.set_level(logging.DEBUG)
    for query in sent:
        assert reranker.rerank(query, DOCS).status in (Status.OK, Status.CACHE)
        assert leaky.rerank(query, DOCS).status is Status.FALLBACK
    reranker.rerank(sent[0], DOCS)  # a cache hit too
    if backend == "redis":
        cache.flush(5)
    log.flush(10)
    log.close()

    event_lines = [line for path in sorted((tmp_path / "events").glob("*.jsonl"))
                   for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(event_lines) == 2 * len(sent) + 1
    if backend == "memory":
        keys = list(cache.keys())
    else:
        keys = [k.decode() for k in redis_db.client().keys("*")]
    assert keys, "the cache holds entries to inspect"
    haystacks = {
        "logs": [record.getMessage() for record in caplog.records]
        + [str(record.args) for record in caplog.records],
        "events": event_lines,
        "metric attributes": metric_attribute_values(),
        "spans": span_strings(span_exporter),
        "cache keys": keys,
    }
    for where, texts in haystacks.items():
        blob = "\n".join(texts).lower()
        for query in sent:
            for fragment in fragments(query):
                assert fragment.lower() not in blob, f"{fragment!r} found in {where}"

    logged_fps = {json.loads(line)["query_fp"] for line in event_lines}
    assert all(json.loads(line)["query_text"] is None for line in event_lines)
    # positive control: the operator's key reproduces every logged fingerprint
    assert logged_fps == {hmac_hex(SECRET, q) for q in sent}
    # the attacker's dictionary, hashed without the secret, matches none of them
    plain = {hashlib.sha256(q.encode()).hexdigest() for q in dictionary}
    assert not plain & logged_fps
    for wrong in WRONG_KEYS:
        assert not {hmac_hex(wrong, q) for q in dictionary} & logged_fps

    # cache keys: the attacker also knows the documents and the key layout
    namespace = CrcScorer("crc-privacy-v1").cache_namespace
    prefix = "rrp:" if backend == "redis" else ""
    stored = set(keys)

    def keys_for(fingerprint) -> set[str]:
        doc_fps = [fingerprint(d) for d in DOCS]
        return {prefix + pair_key(namespace, fingerprint(q), d)
                for q in dictionary for d in doc_fps}

    assert {prefix + pair_key(namespace, hmac_hex(SECRET, q), hmac_hex(SECRET, d))
            for q in sent for d in DOCS} <= stored  # positive control
    assert not keys_for(lambda t: hashlib.sha256(t.encode()).hexdigest()) & stored
    assert not keys_for(lambda t: hmac_hex(b"changeme", t)) & stored
    reranker.close()
    leaky.close()
    if backend == "redis":
        cache.close()


def test_raw_text_is_one_explicit_opt_in(tmp_path):
    """The scan above can see text: with ``include_text=True`` it is in the events."""
    log = EventLog(JsonlSink(tmp_path), include_text=True)
    reranker = Reranker(CrcScorer("crc-privacy-v1"), cache=None, secret=SECRET, event_log=log)
    reranker.rerank("divorce lawyer for alice smith", DOCS)
    log.flush(10)
    reranker.close()
    text = "".join(p.read_text() for p in tmp_path.glob("*.jsonl"))
    assert "divorce lawyer for alice smith" in text


def test_without_a_secret_fingerprints_are_still_keyed(monkeypatch, tmp_path):
    monkeypatch.delenv("RERANK_PLUGINS_SECRET", raising=False)
    log = EventLog(JsonlSink(tmp_path))
    reranker = Reranker(CrcScorer("crc-privacy-v1"), cache=None, event_log=log)
    query = "salary for alice smith"
    reranker.rerank(query, DOCS)
    log.flush(10)
    reranker.close()
    [line] = [ln for p in tmp_path.glob("*.jsonl") for ln in p.read_text().splitlines()]
    fingerprint = json.loads(line)["query_fp"]
    assert fingerprint != hashlib.sha256(query.encode()).hexdigest()
    assert fingerprint not in {hmac_hex(k, query) for k in WRONG_KEYS}
