"""The telemetry contract: every metric, label and span name, defined once.

Dashboards, recording rules and alert rules are generated from this module
(``rerank_ops.mixin``), and tests fail when a committed file names a metric that
is not listed here. Change a name here and regenerate; never edit the outputs.

Names follow OpenTelemetry semantics (unit carried separately). The Prometheus
exporter appends the unit (``_seconds``) and ``_total`` for counters; ``prom_name``
gives the name as it appears after that translation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

METER_NAME = "rerank_plugins"
TRACER_NAME = "rerank_plugins"


class Kind(str, Enum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"


# Bucket boundaries in seconds: a rerank is milliseconds on a GPU and up to a few
# seconds for 100 long candidates on a small CPU.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
)
COUNT_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the contract."""

    name: str  #: OpenTelemetry instrument name
    kind: Kind
    unit: str  #: UCUM unit; "s" becomes the ``_seconds`` suffix, "{...}" is dropped
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def prom_name(self) -> str:
        """The Prometheus series name (without ``_bucket``/``_sum``/``_count``).

        Mirrors what opentelemetry-exporter-prometheus emits: invalid characters
        become ``_``, ``{...}`` unit annotations are dropped, ``"1"`` adds nothing,
        other units add their Prometheus word (``s`` -> ``_seconds``), and counters
        end in ``_total``. ``tests/test_metrics_endpoint.py`` checks this against
        the exporter itself.
        """
        base = _PROM_INVALID.sub("_", self.name)
        suffix = _prom_unit(self.unit)
        if suffix and not base.endswith("_" + suffix):
            base += "_" + suffix
        if self.kind is Kind.COUNTER and not base.endswith("_total"):
            base += "_total"
        return base


_PROM_INVALID = re.compile(r"[^a-zA-Z0-9:]+")
_UNIT_ANNOTATION = re.compile(r"\{.*\}")
# The units this contract uses (plus near neighbours), as the exporter spells them.
_PROM_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "", "%": "percent"}


def _prom_unit(unit: str) -> str:
    unit = _UNIT_ANNOTATION.sub("", unit)
    if unit in _PROM_UNITS:
        return _PROM_UNITS[unit]
    return _PROM_INVALID.sub("_", unit).strip("_")


# Label names (one place, so dashboards and code agree)
L_MODEL = "model"
L_STATUS = "status"
L_REASON = "reason"
L_STAGE = "stage"
L_BACKEND = "backend"
L_RESULT = "result"
L_OPERATION = "operation"
L_BREAKER = "breaker"
L_CAUSE = "cause"
L_REVISION = "revision"
L_DEVICE = "device"
L_DTYPE = "dtype"
L_FEATURE = "feature"
L_VARIANT = "variant"  #: "control" or a rollout variant's name (canary / A-B split)
L_POLICY = "policy"
L_ACTION = "action"
L_KIND = "kind"

#: Why a candidate counts as missing a feature (``rerank_candidate_features_missing``).
MISSING_FEATURES = ("text", "retrieval_score", "policy_metadata")
#: What a policy did to a candidate (``rerank_policy_actions``).
POLICY_ACTIONS = ("blocked", "boosted", "lowered")
CONTROL_VARIANT = "control"
L_TOKEN_TYPE = "token_type"

STAGES = ("validate", "cache", "score", "select")
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}

REQUEST_DURATION = MetricSpec(
    "rerank_request_duration", Kind.HISTOGRAM, "s",
    "Wall time of one rerank request, by the path that served it.",
    (L_MODEL, L_STATUS, L_VARIANT), LATENCY_BUCKETS_S,
)
STAGE_DURATION = MetricSpec(
    "rerank_stage_duration", Kind.HISTOGRAM, "s",
    "Wall time of one pipeline stage (validate, cache, score, select).",
    (L_MODEL, L_STAGE), LATENCY_BUCKETS_S,
)
REQUESTS = MetricSpec(
    "rerank_requests", Kind.COUNTER, "{request}",
    "Rerank requests answered, by status and fallback reason ('' when none).",
    (L_MODEL, L_STATUS, L_REASON, L_VARIANT),
)
FALLBACKS = MetricSpec(
    "rerank_fallbacks", Kind.COUNTER, "{request}",
    "Requests the primary model did not serve, by reason.",
    (L_MODEL, L_REASON, L_VARIANT),
)
ERRORS = MetricSpec(
    "rerank_errors", Kind.COUNTER, "{error}",
    "Failures inside the pipeline (model, cache, event log), by stage and cause.",
    (L_STAGE, L_CAUSE),
)
CANDIDATES = MetricSpec(
    "rerank_candidates_per_request", Kind.HISTOGRAM, "{candidate}",
    "Candidates received per request.", (L_MODEL,), COUNT_BUCKETS,
)
KEPT = MetricSpec(
    "rerank_kept_per_request", Kind.HISTOGRAM, "{candidate}",
    "Candidates returned per request after threshold/top_n.", (L_MODEL,), COUNT_BUCKETS,
)
CACHE_LOOKUPS = MetricSpec(
    "rerank_cache_lookups", Kind.COUNTER, "{pair}",
    "Pair-score cache lookups by backend and result (hit, miss).",
    (L_BACKEND, L_RESULT),
)
CACHE_ERRORS = MetricSpec(
    "rerank_cache_errors", Kind.COUNTER, "{error}",
    "Cache backend failures (timeouts, refused connections, bad values) by operation.",
    (L_BACKEND, L_OPERATION, L_CAUSE),
)
CIRCUIT_STATE = MetricSpec(
    "rerank_circuit_state", Kind.GAUGE, "{state}",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open.", (L_BREAKER,),
)
TRUNCATIONS = MetricSpec(
    "rerank_truncations", Kind.COUNTER, "{pair}",
    "Query/document pairs cut to the model's max_length.", (L_MODEL,),
)
MODEL_INFO = MetricSpec(
    "rerank_model_info", Kind.GAUGE, "{info}",
    "Always 1; labels describe the loaded model.",
    (L_MODEL, L_REVISION, L_DEVICE, L_DTYPE),
)
TOP1_SCORE = MetricSpec(
    "rerank_top1_score", Kind.HISTOGRAM, "1",
    "Relevance score of the first result of each model-scored request.",
    (L_MODEL, L_VARIANT), SCORE_BUCKETS,
)
FEATURES_MISSING = MetricSpec(
    "rerank_candidate_features_missing", Kind.COUNTER, "{candidate}",
    "Candidates arriving without a feature the stage uses: 'text' (empty), "
    "'retrieval_score' (none or not finite) or 'policy_metadata' (a key a policy "
    "declared it needs).",
    (L_MODEL, L_FEATURE),
)
POLICY_ACTIONS = MetricSpec(
    "rerank_policy_actions", Kind.COUNTER, "{candidate}",
    "Candidates a policy blocked, boosted or lowered, by policy name.",
    (L_MODEL, L_POLICY, L_ACTION),
)
FEEDBACK = MetricSpec(
    "rerank_feedback", Kind.COUNTER, "{event}",
    "User feedback recorded with Reranker.feedback: 'click' (label 1 at a position) "
    "or 'label' (a graded judgment), by variant.",
    (L_MODEL, L_VARIANT, L_KIND),
)
MODEL_PAIRS = MetricSpec(
    "rerank_model_pairs", Kind.COUNTER, "{pair}",
    "Pairs sent to the model (cache misses actually scored).", (L_MODEL,),
)
MODEL_DURATION = MetricSpec(
    "rerank_model_duration", Kind.COUNTER, "s",
    "Seconds of model inference (for model-seconds per 1k requests).", (L_MODEL,),
)
EVENTS_WRITTEN = MetricSpec(
    "rerank_event_log_written", Kind.COUNTER, "{event}",
    "Feature/score events written to the event log sink.", (L_BACKEND,),
)
EVENTS_DROPPED = MetricSpec(
    "rerank_event_log_dropped", Kind.COUNTER, "{event}",
    "Events lost: queue full or sink failure (disk full, permission denied).",
    (L_BACKEND, L_REASON),
)
INFLIGHT_ABANDONED = MetricSpec(
    "rerank_abandoned_inference_threads", Kind.GAUGE, "{thread}",
    "Inference threads still running a call whose caller gave up (hung model).",
    (L_MODEL,),
)

# -- the semantic query layer, the LLM scorer and the context budget ----------------
SEMANTIC_KINDS = ("exact", "near", "miss")
SIMILARITY_BUCKETS = (0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 1.0)
TOKEN_BUCKETS = (0, 64, 128, 256, 512, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 16000)
LLM_TOKEN_TYPES = ("prompt", "completion")
LLM_ANSWER_RESULTS = ("ok", "incomplete", "invalid")

SEMANTIC_LOOKUPS = MetricSpec(
    "rerank_semantic_cache_lookups", Kind.COUNTER, "{request}",
    "Semantic query-layer lookups by kind: exact (same query text), near (an earlier "
    "query above the cosine threshold), miss.",
    (L_KIND,),
)
SEMANTIC_SIMILARITY = MetricSpec(
    "rerank_semantic_cache_similarity", Kind.HISTOGRAM, "1",
    "Cosine similarity between a query and the earlier query whose scores it reused "
    "(near hits only).",
    (), SIMILARITY_BUCKETS,
)
LLM_TOKENS = MetricSpec(
    "rerank_llm_tokens", Kind.COUNTER, "{token}",
    "Tokens an LLM scorer's endpoint reported (usage), by type: prompt, completion.",
    (L_MODEL, L_TOKEN_TYPE),
)
LLM_ANSWERS = MetricSpec(
    "rerank_llm_answers", Kind.COUNTER, "{answer}",
    "LLM scorer answers by result: ok, incomplete (a listwise ranking that left ids out; "
    "kept in input order), invalid (refused by the strict parser: a fallback).",
    (L_MODEL, L_RESULT),
)
BUDGET_TOKENS_KEPT = MetricSpec(
    "rerank_context_budget_tokens_kept", Kind.HISTOGRAM, "{token}",
    "Tokens of the documents the context budget kept per request.",
    (), TOKEN_BUCKETS,
)
BUDGET_DOCUMENTS_CUT = MetricSpec(
    "rerank_context_budget_documents_cut", Kind.COUNTER, "{document}",
    "Ranked documents left out because the context token budget was full.",
)

LIBRARY_METRICS: tuple[MetricSpec, ...] = (
    REQUEST_DURATION, STAGE_DURATION, REQUESTS, FALLBACKS, ERRORS, CANDIDATES, KEPT,
    CACHE_LOOKUPS, CACHE_ERRORS, CIRCUIT_STATE, TRUNCATIONS, MODEL_INFO, TOP1_SCORE,
    MODEL_PAIRS, MODEL_DURATION, EVENTS_WRITTEN, EVENTS_DROPPED, INFLIGHT_ABANDONED,
    FEATURES_MISSING, POLICY_ACTIONS, FEEDBACK,
)
# Emitted by opt-in components (the semantic query layer, the LLM scorer, the context
# budget) only when an application uses them, so a plain Reranker's traffic does not
# produce them; instruments are created for them like for the library metrics.
COMPONENT_METRICS: tuple[MetricSpec, ...] = (
    SEMANTIC_LOOKUPS, SEMANTIC_SIMILARITY, LLM_TOKENS, LLM_ANSWERS, BUDGET_TOKENS_KEPT,
    BUDGET_DOCUMENTS_CUT,
)

# Published by `rerank-ops drift` (Prometheus textfile collector / Pushgateway).
DRIFT_SHARE = MetricSpec(
    "rerank_drift_share", Kind.GAUGE, "1",
    "Share of monitored features whose drift test rejected (0..1).",
)
DRIFT_DETECTED = MetricSpec(
    "rerank_drift_detected", Kind.GAUGE, "{bool}",
    "1 when the last drift run found dataset drift.",
)
DRIFT_FEATURE_SCORE = MetricSpec(
    "rerank_drift_feature_score", Kind.GAUGE, "1",
    "Per-feature drift statistic of the last run.", (L_FEATURE,),
)
DRIFT_LAST_SUCCESS = MetricSpec(
    "rerank_drift_last_success_timestamp_seconds", Kind.GAUGE, "{timestamp}",
    "Unix time of the last drift run that completed.",
)
DRIFT_DURATION = MetricSpec(
    "rerank_drift_duration_seconds", Kind.GAUGE, "{seconds}",
    "Wall time of the last drift run.",
)
DRIFT_METRICS: tuple[MetricSpec, ...] = (
    DRIFT_SHARE, DRIFT_DETECTED, DRIFT_FEATURE_SCORE, DRIFT_LAST_SUCCESS, DRIFT_DURATION,
)

ALL_METRICS: tuple[MetricSpec, ...] = LIBRARY_METRICS + COMPONENT_METRICS + DRIFT_METRICS

# Span names and attributes
SPAN_RERANK = "rerank"
SPAN_STAGE_PREFIX = "rerank."  # rerank.validate, rerank.cache, rerank.score, rerank.select
ATTR_MODEL = "rerank.model.id"
ATTR_REVISION = "rerank.model.revision"
ATTR_CANDIDATES = "rerank.candidates"
ATTR_KEPT = "rerank.kept"
ATTR_CACHE_HITS = "rerank.cache.hits"
ATTR_STATUS = "rerank.status"
ATTR_VARIANT = "rerank.variant"
ATTR_FALLBACK_REASON = "rerank.fallback_reason"
ATTR_TRUNCATIONS = "rerank.truncations"
ATTR_GENAI_MODEL = "gen_ai.request.model"
ATTR_GENAI_OPERATION = "gen_ai.operation.name"
GENAI_OPERATION = "rerank"

