"""Grafana dashboards (JSON model) built from the contract and the config.

Three dashboards, one audience each:

- **Executive** — is reranking healthy and worth its cost?
- **On-call** — what is failing right now, and which runbook applies?
- **Debug** — why: stages, distributions, model versions, drift per feature.

Every panel has a unit, every rate uses ``$__rate_interval``, every query goes to
the ``$datasource`` variable, and uids are fixed so links and provisioning stay
stable across regenerations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rerank_plugins.telemetry import contract as c

from . import promql, rules
from .config import MixinConfig
from .promql import matchers, series

RATE_WINDOW = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: Template variables a query may contain, with the value that selects everything
#: (used by tests that run the queries against a real Prometheus).
VARIABLES_ALL = {"$model": ".*"}


@dataclass
class Target:
    """One query of a panel."""

    expr: str
    legend: str = ""
    heatmap: bool = False


@dataclass
class Panel:
    """One panel; ``width`` is in Grafana's 24-column grid."""

    title: str
    description: str
    unit: str
    targets: list[Target]
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    extra: dict = field(default_factory=dict)


class _Queries:
    """Query builders over one config (reranker selector + the ``$model`` filter)."""

    def __init__(self, config: MixinConfig) -> None:
        self.config = config
        self.sel = config.reranker_selector
        self.drift = config.drift_selector

    def _sel(self, spec: c.MetricSpec) -> str:
        if c.L_MODEL in spec.labels:
            return f'{self.sel},{c.L_MODEL}=~"$model"' if self.sel else 'model=~"$model"'
        return self.sel

    def rate(self, spec: c.MetricSpec, by: tuple[str, ...] = (), suffix: str = "",
             **labels: str) -> str:
        return promql.rate(spec, self._sel(spec), RATE_WINDOW, by=by, suffix=suffix, **labels)

    def quantile(self, q: float, spec: c.MetricSpec, by: tuple[str, ...] = (),
                 **labels: str) -> str:
        return promql.quantile(q, spec, self._sel(spec), RATE_WINDOW, by=by, **labels)

    def heatmap(self, spec: c.MetricSpec) -> str:
        inner = series(spec, self._sel(spec), "_bucket")
        return f"sum by (le) (increase({inner}[{RATE_WINDOW}]))"

    def mean(self, spec: c.MetricSpec, by: tuple[str, ...] = ()) -> str:
        return (f"{self.rate(spec, by, suffix='_sum')} / "
                f"{self.rate(spec, by, suffix='_count')}")

    def gauge(self, spec: c.MetricSpec, how: str = "max", by: tuple[str, ...] = (),
              drift: bool = False) -> str:
        selector = self.drift if drift else self._sel(spec)
        by_clause = f" by ({', '.join(by)})" if by else ""
        return f"{how}{by_clause} ({series(spec, selector)})"



def _page_rule(config) -> str:
    """E.g. ``14.4 over 1h and 5m pages`` (the fastest paging burn-rate alert)."""
    pages = [b for b in config.burn_rate_alerts if b.severity == "critical"]
    if not pages:
        return "no burn-rate alert pages"
    fast = pages[0]
    return (f"{rules._number(fast.factor(config.slo_window))} over {fast.long_window} and "
            f"{fast.short_window} pages")

def _latency_targets(q: _Queries, by: tuple[str, ...], legend: str) -> list[Target]:
    return [Target(q.quantile(quant, c.REQUEST_DURATION, by), f"p{round(quant * 100)} {legend}")
            for quant in (0.5, 0.95, 0.99)]


def executive(config: MixinConfig) -> list[Panel]:
    """Panels of the Executive dashboard."""
    q = _Queries(config)
    requests = q.rate(c.REQUESTS)
    fallbacks = q.rate(c.REQUESTS, status="fallback")
    budget = config.error_budget
    fallbacks_30d = (f"sum(increase({series(c.REQUESTS, q._sel(c.REQUESTS), status='fallback')}"
                     f"[{config.slo_window}]))")
    requests_30d = f"sum(increase({series(c.REQUESTS, q._sel(c.REQUESTS))}[{config.slo_window}]))"
    return [
        Panel("Requests per second", "Rerank requests answered, by the path that served "
              "them (ok = model, cache = all pairs cached, fallback = retrieval order).",
              "reqps", [Target(requests, "all"), Target(q.rate(c.REQUESTS, (c.L_STATUS,)),
                                                         "{{status}}")], width=8),
        Panel("p95 latency", "95th percentile of rerank request wall time. The red line "
              f"is the p99 latency SLO ({config.latency_p99_slo_seconds:g}s).", "s",
              [Target(q.quantile(0.95, c.REQUEST_DURATION, (c.L_MODEL,)), "{{model}}")],
              width=8, extra=_threshold(config.latency_p99_slo_seconds)),
        Panel("Fallback and error rate", "Share of requests served by the fallback chain "
              "(the availability SLI) and pipeline errors per request (model, cache, "
              f"event log). The error budget is {budget:.2%}.", "percentunit",
              [Target(rules.share(fallbacks, requests), "fallback share"),
               Target(rules.share(q.rate(c.ERRORS), requests), "errors per request")],
              width=8, extra=_threshold(budget)),
        Panel(f"Error budget left ({config.slo_window})", "Share of the fallback budget "
              f"of a {config.availability_slo:.2%} availability SLO not yet spent over the "
              "SLO window.", "percentunit",
              [Target(f"1 - {rules.share(fallbacks_30d, requests_30d)} / {budget!r}",
                      "budget left")], kind="stat", width=6),
        Panel("Top-1 relevance score", "Relevance score of the first result of model-scored"
              " requests: a falling trend means worse matches (or a model change).", "none",
              [Target(q.quantile(0.5, c.TOP1_SCORE), "median"),
               Target(q.mean(c.TOP1_SCORE), "mean")], width=6,
              extra={"min": 0, "max": 1}),
        Panel("Drift share", "Share of monitored request features that drifted in the "
              "last `rerank-ops drift` run; 'detected' is 1 when the run flagged drift.",
              "percentunit",
              [Target(q.gauge(c.DRIFT_SHARE, drift=True), "drift share"),
               Target(q.gauge(c.DRIFT_DETECTED, drift=True), "detected")], width=6),
        Panel("Model-seconds per 1k requests", "Seconds of model inference spent per "
              "thousand requests: the cost driver (cache hits and fallbacks cost none).",
              "s", [Target(f"1000 * {q.rate(c.MODEL_DURATION)} / {requests}",
                           "model-seconds / 1k requests")], width=6),
    ]


def oncall(config: MixinConfig) -> list[Panel]:
    """Panels of the On-call dashboard."""
    q = _Queries(config)
    states = {str(v): {"text": k} for k, v in c.CIRCUIT_STATES.items()}
    lookups = q.rate(c.CACHE_LOOKUPS, (c.L_BACKEND,))
    return [
        Panel("Latency p50 / p95 / p99 by status", "Request wall time quantiles per "
              "serving path; fallbacks by timeout sit at the deadline.", "s",
              _latency_targets(q, (c.L_STATUS,), "{{status}}"), width=12,
              extra=_threshold(config.latency_p99_slo_seconds)),
        Panel("Fallbacks by reason", "Requests the primary model did not serve: timeout, "
              "error, circuit_open or overloaded.", "reqps",
              [Target(q.rate(c.FALLBACKS, (c.L_REASON,)), "{{reason}}")], width=12),
        Panel("Error budget burn rate", "Fallback share divided by the error budget, over "
              f"the alert windows; {_page_rule(config)}.", "short",
              [Target(f"{rules.fallback_ratio(w)} / {config.error_budget!r}",
                      f"{w} {{{{model}}}}") for w in ("5m", "1h", "6h")], width=8),
        Panel("Circuit state", "Circuit breakers: 0 closed, 1 half-open, 2 open. 'scorer' "
              "open means every request falls back.", "none",
              [Target(q.gauge(c.CIRCUIT_STATE, by=("instance", c.L_BREAKER)),
                      "{{breaker}} {{instance}}")], kind="state-timeline", width=8,
              extra={"mappings": [{"type": "value", "options": states}]}),
        Panel("Cache hit rate", "Share of (query, document) pairs answered from the cache, "
              "by backend.", "percentunit",
              [Target(rules.share(q.rate(c.CACHE_LOOKUPS, (c.L_BACKEND,), result="hit"),
                                  lookups), "{{backend}}")], width=8),
        Panel("Cache and Redis errors", "Cache backend failures by operation and cause "
              "(timeouts, refused connections, bad values, circuit open).", "cps",
              [Target(q.rate(c.CACHE_ERRORS, (c.L_BACKEND, c.L_OPERATION, c.L_CAUSE)),
                      "{{backend}} {{operation}} {{cause}}")], width=8),
        Panel("Event-log drops", "Events lost (queue full or sink failure) next to events "
              "written: drops mean drift reports miss traffic.", "cps",
              [Target(q.rate(c.EVENTS_DROPPED, (c.L_BACKEND, c.L_REASON)),
                      "dropped {{backend}} {{reason}}"),
               Target(q.rate(c.EVENTS_WRITTEN, (c.L_BACKEND,)), "written {{backend}}")],
              width=8),
        Panel("Truncations", "Pairs cut to the model's max length, as a share of pairs "
              "scored.", "percentunit",
              [Target(rules.share(q.rate(c.TRUNCATIONS, (c.L_MODEL,)),
                                  q.rate(c.MODEL_PAIRS, (c.L_MODEL,))), "{{model}}")],
              width=8),
        Panel("Policy blocks (share of candidates)", "Candidates each policy blocked, per "
              "candidate received (rerank_policy_actions, action=blocked). A sudden rise "
              f"pages (RerankPolicyBlockSpike, above {config.policy_block_share_threshold:.0%}"
              f" or {config.policy_block_spike_factor:g}x the 1-day share).", "percentunit",
              [Target(_per_candidate(q, q.rate(c.POLICY_ACTIONS, (c.L_MODEL, c.L_POLICY),
                                                action="blocked")),
                      "{{policy}} {{model}}")], width=8,
              extra=_threshold(config.policy_block_share_threshold)),
        Panel("Candidates missing a feature", "Share of candidates that arrived without "
              "text, a retrieval score, or the metadata a policy needs; above "
              f"{config.missing_feature_share_threshold:.0%} over 1h opens a ticket.",
              "percentunit",
              [Target(_per_candidate(q, q.rate(c.FEATURES_MISSING, (c.L_MODEL, c.L_FEATURE))),
                      "{{feature}} {{model}}")], width=8,
              extra=_threshold(config.missing_feature_share_threshold)),
        Panel("Canary vs control: fallback share and p99", "Per rollout variant: share of "
              "requests served by the fallback chain, and p99 latency (right axis). A "
              "variant far above control opens RerankCanaryWorseThanControl.", "percentunit",
              [Target(rules.share(q.rate(c.REQUESTS, (c.L_VARIANT,), status="fallback"),
                                  q.rate(c.REQUESTS, (c.L_VARIANT,))),
                      "fallback share {{variant}}"),
               Target(q.quantile(0.99, c.REQUEST_DURATION, (c.L_VARIANT,)),
                      "p99 {{variant}}")], width=8,
              extra={"overrides": [_right_axis("/^p99 /", "s")]}),
        Panel("Pipeline errors", "Failures inside the pipeline by stage and cause.", "cps",
              [Target(q.rate(c.ERRORS, (c.L_STAGE, c.L_CAUSE)), "{{stage}} {{cause}}")],
              width=12),
        Panel("Abandoned inference threads", "Model calls still running after their caller"
              " gave up: a hung model holds these until it returns.", "short",
              [Target(q.gauge(c.INFLIGHT_ABANDONED, by=("instance", c.L_MODEL)),
                      "{{model}} {{instance}}")], width=12),
    ]


def debug(config: MixinConfig) -> list[Panel]:
    """Panels of the Debug dashboard."""
    q = _Queries(config)
    return [
        Panel("Stage latency p95", "95th percentile wall time per pipeline stage "
              "(validate, cache, score, select).", "s",
              [Target(q.quantile(0.95, c.STAGE_DURATION, (c.L_STAGE,)), "{{stage}}")]),
        Panel("Stage latency mean", "Mean wall time per pipeline stage.", "s",
              [Target(q.mean(c.STAGE_DURATION, (c.L_STAGE,)), "{{stage}}")]),
        Panel("Candidates per request", "Distribution of candidates received per request.",
              "short", [Target(q.heatmap(c.CANDIDATES), "{{le}}", heatmap=True)],
              kind="heatmap", width=8),
        Panel("Kept per request", "Distribution of candidates returned after threshold, "
              "top_n and min_keep.", "short",
              [Target(q.heatmap(c.KEPT), "{{le}}", heatmap=True)], kind="heatmap", width=8),
        Panel("Top-1 score distribution", "Distribution of the first result's relevance "
              "score.", "none", [Target(q.heatmap(c.TOP1_SCORE), "{{le}}", heatmap=True)],
              kind="heatmap", width=8),
        Panel("Candidates and kept (p50 / p95)", "Quantiles of the two distributions "
              "above.", "short",
              [Target(q.quantile(0.5, c.CANDIDATES), "candidates p50"),
               Target(q.quantile(0.95, c.CANDIDATES), "candidates p95"),
               Target(q.quantile(0.5, c.KEPT), "kept p50"),
               Target(q.quantile(0.95, c.KEPT), "kept p95")], width=8),
        Panel("Model pairs scored", "Pairs sent to each model (cache misses actually "
              "scored, secondary scorer included).", "cps",
              [Target(q.rate(c.MODEL_PAIRS, (c.L_MODEL,)), "{{model}}")], width=8),
        Panel("Model version mix", "Processes per loaded model revision, device and dtype"
              " (rerank_model_info): more than one revision per model is a mismatch.",
              "short",
              [Target(q.gauge(c.MODEL_INFO, "count",
                              (c.L_MODEL, c.L_REVISION, c.L_DEVICE, c.L_DTYPE)),
                      "{{model}}@{{revision}} {{device}}/{{dtype}}")], width=8),
        Panel("Latency by variant and model", "p50 / p95 / p99 of request wall time per "
              "rollout variant and model, side by side.", "s",
              _latency_targets(q, (c.L_VARIANT, c.L_MODEL), "{{variant}} {{model}}"),
              width=6),
        Panel("Fallback share by variant and model", "Share of each variant's requests "
              "served by the fallback chain.", "percentunit",
              [Target(rules.share(
                  q.rate(c.REQUESTS, (c.L_VARIANT, c.L_MODEL), status="fallback"),
                  q.rate(c.REQUESTS, (c.L_VARIANT, c.L_MODEL))), "{{variant}} {{model}}")],
              width=6),
        Panel("Top-1 score by variant and model", "Median and mean relevance score of the "
              "first result per variant: a candidate model's score scale can differ, so "
              "compare shapes, not only levels.", "none",
              [Target(q.quantile(0.5, c.TOP1_SCORE, (c.L_VARIANT, c.L_MODEL)),
                      "p50 {{variant}} {{model}}"),
               Target(q.mean(c.TOP1_SCORE, (c.L_VARIANT, c.L_MODEL)),
                      "mean {{variant}} {{model}}")], width=6, extra={"min": 0, "max": 1}),
        Panel("Online CTR by variant", "Clicks recorded with Reranker.feedback per request "
              "served, per variant (rerank_feedback kind=click / rerank_requests): an "
              "online proxy; `rerank-ops compare` gives CTR@k, MRR and the significance.",
              "percentunit",
              [Target(rules.share(q.rate(c.FEEDBACK, (c.L_VARIANT,), kind="click"),
                                  q.rate(c.REQUESTS, (c.L_VARIANT,))), "clicks/request "
                      "{{variant}}"),
               Target(q.rate(c.FEEDBACK, (c.L_VARIANT, c.L_KIND)), "{{kind}}/s {{variant}}")],
              width=6, extra={"overrides": [_right_axis("/\\/s /", "cps")]}),
        Panel("Policy actions", "Candidates each policy blocked, boosted or lowered, per "
              "second.", "cps",
              [Target(q.rate(c.POLICY_ACTIONS, (c.L_POLICY, c.L_ACTION)),
                      "{{policy}} {{action}}")], width=12),
        Panel("Missing features", "Candidates arriving without a feature, per second.",
              "cps", [Target(q.rate(c.FEATURES_MISSING, (c.L_FEATURE, c.L_MODEL)),
                             "{{feature}} {{model}}")], width=12),
        Panel("Drift per feature", "Per-feature drift statistic of the last drift run.",
              "none", [Target(q.gauge(c.DRIFT_FEATURE_SCORE, by=(c.L_FEATURE,), drift=True),
                              "{{feature}}")], width=12),
        Panel("Drift job", "Seconds since the last successful drift run, and how long the "
              "last run took.", "s",
              [Target(f"time() - {q.gauge(c.DRIFT_LAST_SUCCESS, drift=True)}",
                      "since last success"),
               Target(q.gauge(c.DRIFT_DURATION, drift=True), "last run duration")],
              width=12),
    ] + _component_panels(q)


def _component_panels(q: _Queries) -> list[Panel]:
    """Debug panels of the opt-in components (empty where they are not used)."""
    return [
        Panel("Semantic cache lookups", "Semantic query-layer lookups by kind: exact (same "
              "text), near (an earlier query above the cosine threshold), miss.", "reqps",
              [Target(q.rate(c.SEMANTIC_LOOKUPS, (c.L_KIND,)), "{{kind}}")], width=8),
        Panel("Semantic hit similarity", "Cosine similarity of near hits to the query whose "
              "scores they reused: mass close to the threshold means borderline reuse.",
              "none", [Target(q.heatmap(c.SEMANTIC_SIMILARITY), "{{le}}", heatmap=True)],
              kind="heatmap", width=8),
        Panel("LLM tokens", "Tokens the LLM scorer's endpoint reported, by model and type "
              "(prompt, completion): the cost of LLM reranking.", "short",
              [Target(q.rate(c.LLM_TOKENS, (c.L_MODEL, c.L_TOKEN_TYPE)),
                      "{{model}} {{token_type}}")], width=8),
        Panel("LLM answers", "LLM scorer answers by result: ok, incomplete (a listwise "
              "ranking that left ids out), invalid (refused by the parser: a fallback).",
              "cps", [Target(q.rate(c.LLM_ANSWERS, (c.L_MODEL, c.L_RESULT)),
                             "{{model}} {{result}}")], width=8),
        Panel("Context budget", "Tokens kept per request (p50, p95) by the context budget, "
              "and ranked documents it left out per second.", "short",
              [Target(q.quantile(0.5, c.BUDGET_TOKENS_KEPT), "tokens kept p50"),
               Target(q.quantile(0.95, c.BUDGET_TOKENS_KEPT), "tokens kept p95"),
               Target(q.rate(c.BUDGET_DOCUMENTS_CUT), "documents cut /s")], width=8),
    ]


DASHBOARDS = {
    "executive": ("Rerank / Executive", executive),
    "oncall": ("Rerank / On-call", oncall),
    "debug": ("Rerank / Debug", debug),
}


def _per_candidate(q: _Queries, numerator: str) -> str:
    """``numerator`` (by model and more) per candidate its model received."""
    candidates = q.rate(c.CANDIDATES, (c.L_MODEL,), suffix="_sum")
    return f"{numerator} / on ({c.L_MODEL}) group_left() {candidates}"


def _right_axis(regex: str, unit: str) -> dict:
    """A field override: series whose name matches ``regex`` on a right axis in ``unit``."""
    return {"matcher": {"id": "byRegexp", "options": regex},
            "properties": [{"id": "unit", "value": unit},
                           {"id": "custom.axisPlacement", "value": "right"}]}


def _threshold(value: float) -> dict:
    return {"thresholds": {"mode": "absolute", "steps": [
        {"color": "green", "value": None}, {"color": "red", "value": value}]},
        "custom": {"thresholdsStyle": {"mode": "line"}}}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": panel.unit}
    custom = panel.extra.get("custom")
    for key in ("min", "max", "mappings", "thresholds"):
        if key in panel.extra:
            defaults[key] = panel.extra[key]
    if custom:
        defaults["custom"] = custom
    body = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": panel.extra.get("overrides", [])},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": target.expr,
                "legendFormat": target.legend,
                **({"format": "heatmap"} if target.heatmap else {}),
            }
            for index, target in enumerate(panel.targets)
        ],
    }
    if panel.kind == "heatmap":
        body["options"] = {"calculate": False, "yAxis": {"unit": panel.unit},
                           "cellValues": {"unit": "short"}}
    elif panel.kind == "timeseries":
        body["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                           "tooltip": {"mode": "multi"}}
    return body


def _variables(config: MixinConfig) -> list[dict]:
    model_query = f"label_values({_model_source(config)}, {c.L_MODEL})"
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": ""},
        {"name": "model", "label": "Model", "type": "query", "datasource": DATASOURCE,
         "query": {"query": model_query, "refId": "model"}, "definition": model_query,
         "includeAll": True, "multi": True, "allValue": ".*", "current": {},
         "refresh": 2, "sort": 1, "hide": 0},
    ]


def _model_source(config: MixinConfig) -> str:
    return c.REQUESTS.prom_name + matchers(config.reranker_selector)


def dashboard(config: MixinConfig, name: str) -> dict:
    """The Grafana JSON model of dashboard ``name`` (a key of :data:`DASHBOARDS`)."""
    title, build = DASHBOARDS[name]
    panels, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(build(config), start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": f"{config.dashboard_uid_prefix}-{name}",
        "title": title,
        "tags": [config.dashboard_tag],
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [{"title": "Rerank dashboards", "type": "dashboards", "asDropdown": True,
                   "tags": [config.dashboard_tag], "includeVars": True,
                   "keepTime": True}],
        "templating": {"list": _variables(config)},
        "panels": panels,
    }


def provisioning(config: MixinConfig) -> dict:
    """Grafana's dashboard provider file that loads ``dashboards/``."""
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "rerank-plugins",
            "folder": "Reranking",
            "type": "file",
            "disableDeletion": False,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 30,
            "options": {"path": config.grafana_dashboards_path,
                        "foldersFromFilesStructure": False},
        }],
    }


def queries(board: dict) -> list[str]:
    """Every PromQL expression of a dashboard JSON: panel targets, then the series
    selector inside each ``label_values(selector, label)`` variable query."""
    exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            definition = variable["definition"]
            inner = definition[len("label_values("):definition.rindex(",")]
            exprs.append(inner)
    return exprs
