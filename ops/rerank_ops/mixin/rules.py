"""Prometheus recording and alert rules, built from the contract and the config.

Recording rules are named ``level:metric:operations`` (the Prometheus naming
convention): the labels kept, the contract metric, the operations applied.
Alerts page (``severity: critical``) when users are hurt now and open a ticket
(``severity: warning``) when something will hurt them if left alone. Every alert
gets ``summary``, ``description`` and a ``runbook_url`` from one pattern
(:func:`runbook_url`).

The error budget alerts follow the multi-window, multi-burn-rate recipe of the
Google SRE workbook, configured in ``config.yaml`` (``burn_rate_alerts``) relative
to ``slo_window``: e.g. 2% of a 30-day budget spent in 1h is a burn rate of 14.4,
which pages; each long window is paired with a short one so the alert also
resolves quickly once the fallbacks stop.
"""

from __future__ import annotations

import re

from rerank_plugins.telemetry import contract as c

from .config import MixinConfig, duration_seconds
from .promql import matchers, quantile, rate, series

LATENCY_QUANTILES = (0.5, 0.95, 0.99)
#: The Redis cache's own breaker: a cache outage costs latency, not answers, so it
#: does not page (the cache alerts and the on-call dashboard cover it).
CACHE_BREAKER = "cache"

# Recording rule names (level:metric:operations)
REQUESTS_RATE = "model_status:rerank_requests:rate5m"
LATENCY_QUANTILE = "model_quantile:rerank_request_duration_seconds:histogram_quantile"
CACHE_HIT_RATIO = "backend:rerank_cache_lookups_hit:ratio_rate{window}"
TRUNCATION_RATIO = "model:rerank_truncations:ratio_rate1h"
#: Blocked candidates per candidate received, per model and policy.
POLICY_BLOCK_RATIO = "model_policy:rerank_policy_actions_blocked:ratio_rate{window}"
POLICY_BLOCK_WINDOWS = ("10m", "1d")
#: Candidates missing a feature per candidate received, per model and feature.
MISSING_FEATURE_RATIO = "model_feature:rerank_candidate_features_missing:ratio_rate1h"
#: Per rollout variant, over the window the variant alerts compare on.
VARIANT_WINDOW = "30m"
VARIANT_FALLBACK_RATIO = "model_variant:rerank_requests_fallback:ratio_rate30m"
VARIANT_LATENCY_P99 = "model_variant:rerank_request_duration_seconds:p99_rate30m"


def fallback_ratio(window: str) -> str:
    """Name of the recorded share of fallback requests over ``window``."""
    return f"model:rerank_requests_fallback:ratio_rate{window}"




def per_candidate(numerator: str, by: tuple[str, ...], window: str, sel: str) -> str:
    """``numerator`` (summed by ``by``, which includes ``model``) per candidate the model
    received over ``window``: many series per model divided by the model's one."""
    candidates = rate(c.CANDIDATES, sel, window, by=(c.L_MODEL,), suffix="_sum")
    return f"{numerator} / on ({c.L_MODEL}) group_left() {candidates}"


def alert_slug(alert: str) -> str:
    """``RerankLatencyP99AboveSLO`` -> ``rerank-latency-p99-above-slo``."""
    words = re.split(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", alert)
    return "-".join(word.lower() for word in words)


def runbook_url(config: MixinConfig, alert: str) -> str:
    """The one runbook link pattern: ``<base>/<alert-slug>.md``."""
    return f"{config.runbook_base_url}/{alert_slug(alert)}.md"


def share(numerator: str, denominator: str) -> str:
    """``numerator / denominator`` that is 0, not empty, when the numerator has no series.

    A counter labelled ``status="fallback"`` only exists after the first fallback,
    so a plain division would show "no data" on a healthy service.
    """
    return f"({numerator} or {denominator} * 0) / {denominator}"


def _number(value: float) -> str:
    return repr(round(value, 10))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def recording_rules(config: MixinConfig) -> list[dict]:
    """The recording rules (one group)."""
    sel = config.reranker_selector
    rules = [{
        "record": REQUESTS_RATE,
        "expr": rate(c.REQUESTS, sel, "5m", by=(c.L_MODEL, c.L_STATUS)),
    }]
    for window in config.fallback_ratio_windows:
        rules.append({
            "record": fallback_ratio(window),
            "expr": share(
                rate(c.REQUESTS, sel, window, by=(c.L_MODEL,), status="fallback"),
                rate(c.REQUESTS, sel, window, by=(c.L_MODEL,))),
        })
    for q in LATENCY_QUANTILES:
        rules.append({
            "record": LATENCY_QUANTILE,
            "expr": quantile(q, c.REQUEST_DURATION, sel, "5m", by=(c.L_MODEL,)),
            "labels": {"quantile": str(q)},
        })
    for window in ("30m", "6h"):
        rules.append({
            "record": CACHE_HIT_RATIO.format(window=window),
            "expr": share(
                rate(c.CACHE_LOOKUPS, sel, window, by=(c.L_BACKEND,), result="hit"),
                rate(c.CACHE_LOOKUPS, sel, window, by=(c.L_BACKEND,))),
        })
    rules.append({
        "record": TRUNCATION_RATIO,
        "expr": share(rate(c.TRUNCATIONS, sel, "1h", by=(c.L_MODEL,)),
                      rate(c.MODEL_PAIRS, sel, "1h", by=(c.L_MODEL,))),
    })
    for window in POLICY_BLOCK_WINDOWS:
        rules.append({
            "record": POLICY_BLOCK_RATIO.format(window=window),
            "expr": per_candidate(rate(c.POLICY_ACTIONS, sel, window,
                                       by=(c.L_MODEL, c.L_POLICY), action="blocked"),
                                  (c.L_MODEL, c.L_POLICY), window, sel),
        })
    rules.append({
        "record": MISSING_FEATURE_RATIO,
        "expr": per_candidate(rate(c.FEATURES_MISSING, sel, "1h",
                                   by=(c.L_MODEL, c.L_FEATURE)),
                              (c.L_MODEL, c.L_FEATURE), "1h", sel),
    })
    by_variant = (c.L_MODEL, c.L_VARIANT)
    rules.append({
        "record": VARIANT_FALLBACK_RATIO,
        "expr": share(rate(c.REQUESTS, sel, VARIANT_WINDOW, by=by_variant, status="fallback"),
                      rate(c.REQUESTS, sel, VARIANT_WINDOW, by=by_variant)),
    })
    rules.append({
        "record": VARIANT_LATENCY_P99,
        "expr": quantile(0.99, c.REQUEST_DURATION, sel, VARIANT_WINDOW, by=by_variant),
    })
    return rules


def _alert(config: MixinConfig, name: str, expr: str, severity: str, summary: str,
           description: str, for_: str | None = None, labels: dict | None = None) -> dict:
    rule: dict = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, **(labels or {})}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": runbook_url(config, name),
    }
    return rule


def alert_rules(config: MixinConfig) -> list[dict]:
    """The alert rules (one group), pages first."""
    sel, drift = config.reranker_selector, config.drift_selector
    budget = _number(config.error_budget)
    slo_pct = f"{config.availability_slo * 100:g}%"
    p99 = _number(config.latency_p99_slo_seconds)
    not_cache_breaker = f'{c.L_BREAKER}!="{CACHE_BREAKER}"'
    alerts = [_alert(
        config, "RerankLatencyP99AboveSLO",
        f'{LATENCY_QUANTILE}{{quantile="0.99"}} > {p99}',
        "critical", "Rerank p99 latency is above its SLO.",
        "p99 latency of model {{ $labels.model }} is {{ $value | humanizeDuration }} "
        f"over the last 5 minutes; the SLO is {p99}s.",
        config.latency_alert_for)]
    for burn in config.burn_rate_alerts:
        name = ("RerankFallbackBudgetBurnFast" if burn.severity == "critical"
                else "RerankFallbackBudgetBurnSlow")
        factor = burn.factor(config.slo_window)
        threshold = f"({_number(factor)} * {budget})"
        alerts.append(_alert(
            config, name,
            f"{fallback_ratio(burn.long_window)} > {threshold} and "
            f"{fallback_ratio(burn.short_window)} > {threshold}",
            burn.severity,
            "Rerank requests fall back to retrieval order fast enough to spend the "
            "error budget." if burn.severity == "critical" else
            "Rerank fallbacks are slowly eating the error budget.",
            "{{ $value | humanizePercentage }} of requests to model {{ $labels.model }} "
            f"were served by the fallback chain over the last {burn.long_window} (and "
            f"still over the last {burn.short_window}): {_number(factor)}x the "
            f"budget of a {slo_pct} availability SLO over {config.slo_window}.",
            burn.for_,
            {"long_window": burn.long_window, "short_window": burn.short_window}))
    alerts += [
        _alert(
            config, "RerankCircuitOpen",
            f"max by (breaker) (max_over_time({c.CIRCUIT_STATE.prom_name}"
            f"{matchers(sel, not_cache_breaker)}[1m])) "
            f"== {c.CIRCUIT_STATES['open']}",
            "critical", "A rerank model circuit breaker is open.",
            "Circuit breaker {{ $labels.breaker }} has been open (re-opening after every "
            "probe) for 2 minutes: requests skip the model and get the fallback order.",
            "2m"),
        _alert(
            config, "RerankPolicyBlockSpike",
            f"{POLICY_BLOCK_RATIO.format(window='10m')} > "
            f"{_number(config.policy_block_share_threshold)} or "
            f"({POLICY_BLOCK_RATIO.format(window='10m')} > "
            f"{config.policy_block_spike_factor:g} * "
            f"{POLICY_BLOCK_RATIO.format(window='1d')} and "
            f"{POLICY_BLOCK_RATIO.format(window='10m')} > "
            f"{_number(config.policy_block_spike_min_share)})",
            "critical", "A rerank policy suddenly blocks many candidates.",
            "Policy {{ $labels.policy }} blocked {{ $value | humanizePercentage }} of the "
            "candidates model {{ $labels.model }} received over the last 10 minutes (page "
            f"above {config.policy_block_share_threshold:.0%}, or above "
            f"{config.policy_block_spike_factor:g}x its 1-day share once over "
            f"{config.policy_block_spike_min_share:.0%}): answers lose results, or unsafe "
            "content is arriving.",
            config.policy_block_alert_for),
        _alert(
            config, "RerankTargetAbsent",
            f"absent(up{matchers(sel)} == 1)",
            "critical", "No reranker target is up.",
            f"Prometheus has not scraped any target matching {{{sel}}} successfully "
            "for 5 minutes: the reranker is down or invisible to monitoring.",
            "5m"),
        _alert(
            config, "RerankCacheHitRateCollapse",
            f"{CACHE_HIT_RATIO.format(window='30m')} < "
            f"{_number(config.cache_hit_ratio_collapse_factor)} * "
            f"{CACHE_HIT_RATIO.format(window='6h')}",
            "warning", "The rerank cache hit ratio collapsed.",
            "The {{ $labels.backend }} cache hit ratio over 30 minutes is "
            "{{ $value | humanizePercentage }}, below "
            f"{_number(config.cache_hit_ratio_collapse_factor)} of its 6-hour ratio.",
            "30m"),
        _alert(
            config, "RerankEventLogDropping",
            f"{rate(c.EVENTS_DROPPED, sel, '15m', by=(c.L_BACKEND, c.L_REASON))} > 0",
            "warning", "The rerank event log is dropping events.",
            "The {{ $labels.backend }} event log drops {{ $value | printf \"%.2f\" }} events/s "
            "({{ $labels.reason }}): drift reports will miss this traffic.",
            "10m"),
        _alert(
            config, "RerankTruncationRateRising",
            f"{TRUNCATION_RATIO} > {_number(config.truncation_ratio_threshold)}",
            "warning", "More rerank inputs are cut to the model's max length.",
            "{{ $value | humanizePercentage }} of pairs scored by model {{ $labels.model }}"
            " over the last hour were truncated (threshold "
            f"{config.truncation_ratio_threshold:.0%}): rankings ignore document tails.",
            "30m"),
        _alert(
            config, "RerankCandidateFeaturesMissing",
            f"{MISSING_FEATURE_RATIO} > {_number(config.missing_feature_share_threshold)}",
            "warning", "Many rerank candidates arrive without a feature the stage uses.",
            "{{ $value | humanizePercentage }} of the candidates model {{ $labels.model }} "
            "received over the last hour had no {{ $labels.feature }} (threshold "
            f"{config.missing_feature_share_threshold:.0%}): fusion, policies or scoring "
            "work on less than they were built for.",
            config.missing_feature_alert_for),
        _alert(
            config, "RerankCanaryWorseThanControl",
            f'{VARIANT_FALLBACK_RATIO}{{{c.L_VARIANT}!="{c.CONTROL_VARIANT}"}} > on '
            f"({c.L_MODEL}) group_left() ({config.variant_fallback_factor:g} * "
            f'{VARIANT_FALLBACK_RATIO}{{{c.L_VARIANT}="{c.CONTROL_VARIANT}"}}) and '
            f'{VARIANT_FALLBACK_RATIO}{{{c.L_VARIANT}!="{c.CONTROL_VARIANT}"}} > {budget}',
            "warning", "A rollout variant falls back far more often than control.",
            "Variant {{ $labels.variant }} of model {{ $labels.model }} fell back on "
            "{{ $value | humanizePercentage }} of its requests over the last "
            f"{VARIANT_WINDOW}, more than {config.variant_fallback_factor:g}x "
            "control's share and above the error budget.",
            config.variant_alert_for, {"signal": "fallbacks"}),
        _alert(
            config, "RerankCanaryWorseThanControl",
            f'{VARIANT_LATENCY_P99}{{{c.L_VARIANT}!="{c.CONTROL_VARIANT}"}} > on '
            f"({c.L_MODEL}) group_left() ({config.variant_latency_p99_factor:g} * "
            f'{VARIANT_LATENCY_P99}{{{c.L_VARIANT}="{c.CONTROL_VARIANT}"}}) and '
            f'{VARIANT_LATENCY_P99}{{{c.L_VARIANT}!="{c.CONTROL_VARIANT}"}} > '
            f"{_number(config.variant_latency_floor_seconds)}",
            "warning", "A rollout variant is far slower than control.",
            "p99 latency of variant {{ $labels.variant }} of model {{ $labels.model }} is "
            "{{ $value | humanizeDuration }} over the last "
            f"{VARIANT_WINDOW}, more than {config.variant_latency_p99_factor:g}x "
            "control's p99.",
            config.variant_alert_for, {"signal": "latency"}),
        _alert(
            config, "RerankDriftDetected",
            f"max({series(c.DRIFT_SHARE, drift)}) > "
            f"{_number(config.drift_share_threshold)} or (max({series(c.DRIFT_SHARE, drift)})"
            f" and max({series(c.DRIFT_DETECTED, drift)}) == 1)",
            "warning", "The last drift run found drift in the rerank features.",
            "{{ $value | humanizePercentage }} of the monitored request features drifted "
            "from the reference window in the last drift run.",
        ),
        _alert(
            config, "RerankDriftJobStale",
            f"time() - max({series(c.DRIFT_LAST_SUCCESS, drift)}) > "
            f"{_number(2 * duration_seconds(config.drift_interval))}",
            "warning", "The drift job has not succeeded for two intervals.",
            "The last successful drift run was {{ $value | humanizeDuration }} ago "
            f"(it should run every {config.drift_interval}).",
            "15m", {"cause": "late"}),
        _alert(
            config, "RerankDriftJobStale",
            f"absent({series(c.DRIFT_LAST_SUCCESS, drift)})",
            "warning", "The drift job has not succeeded for two intervals.",
            f"No drift job has reported a success (no {c.DRIFT_LAST_SUCCESS.prom_name} "
            f"matching {{{drift}}}) for two intervals of {config.drift_interval}.",
            _duration(2 * duration_seconds(config.drift_interval)), {"cause": "absent"}),
        _alert(
            config, "RerankModelVersionMismatch",
            f"count by (model) (count by (model, revision) "
            f"({series(c.MODEL_INFO, sel)})) > 1",
            "warning", "Replicas serve different revisions of the same model.",
            "{{ $value }} revisions of model {{ $labels.model }} have been serving for 30 "
            "minutes: cached scores and rankings differ between replicas.",
            "30m"),
    ]
    alerts += component_alerts(config)
    return alerts


# -- opt-in components (semantic query layer, LLM scorer) ----------------------------
# Their thresholds are constants here for now; they belong in MixinConfig once the
# config grows a section for components.
#: Share of semantic lookups answered by a NEAR hit above which the layer is
#: suspected of serving another question's scores (exact hits are always right).
SEMANTIC_NEAR_SHARE_MAX = 0.5
#: Tokens per LLM answer over the last hour vs the last day above which the LLM
#: scorer is over its cost budget (prompts grew: longer documents, a wider window).
LLM_TOKENS_PER_ANSWER_GROWTH = 1.5


def component_alerts(config: MixinConfig) -> list[dict]:
    """Alerts on the opt-in components; silent (no series) where they are not used."""
    sel = config.reranker_selector
    near_share = share(rate(c.SEMANTIC_LOOKUPS, sel, "1h", kind="near"),
                       rate(c.SEMANTIC_LOOKUPS, sel, "1h"))

    def per_answer(window: str) -> str:
        return (f"{rate(c.LLM_TOKENS, sel, window, by=(c.L_MODEL,))} / "
                f"{rate(c.LLM_ANSWERS, sel, window, by=(c.L_MODEL,))}")

    return [
        _alert(
            config, "RerankSemanticCacheNearHitsHigh",
            f"{near_share} > {_number(SEMANTIC_NEAR_SHARE_MAX)}",
            "warning", "Most semantic-cache lookups reuse another query's scores.",
            "{{ $value | humanizePercentage }} of semantic-cache lookups over the last hour "
            "were near hits (another query's scores reused; threshold "
            f"{SEMANTIC_NEAR_SHARE_MAX:.0%}): check that users are not getting rankings "
            "meant for a different question.",
            "30m"),
        _alert(
            config, "RerankLLMTokensPerAnswerHigh",
            f"({per_answer('1h')}) > {_number(LLM_TOKENS_PER_ANSWER_GROWTH)} * "
            f"({per_answer('1d')})",
            "warning", "The LLM reranker spends more tokens per answer than it used to.",
            "LLM model {{ $labels.model }} used {{ $value | humanize }} tokens per answer "
            f"over the last hour, more than {_number(LLM_TOKENS_PER_ANSWER_GROWTH)}x its "
            "daily average: the reranker is over its cost budget.",
            "30m"),
    ]


def recording_groups(config: MixinConfig) -> dict:
    """The recording rules file content."""
    return {"groups": [{"name": "rerank.rules", "rules": recording_rules(config)}]}


def alert_groups(config: MixinConfig) -> dict:
    """The alert rules file content."""
    return {"groups": [{"name": "rerank.alerts", "rules": alert_rules(config)}]}
