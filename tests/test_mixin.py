"""The monitoring mixin: committed files equal the generator, and every query and
rule speaks only about metrics the code emits."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, require_binary
from rerank_ops.cli import main
from rerank_ops.mixin import (
    ALERT_RULES,
    RECORDING_RULES,
    MixinConfigError,
    dashboards,
    differences,
    generate,
    load_config,
    rules,
)
from rerank_ops.mixin.config import DEFAULT_CONFIG, config_from_mapping
from rerank_ops.mixin.promql import (
    PROMETHEUS_SERIES,
    contract_series,
    referenced_metrics,
    series,
)

from rerank_plugins.telemetry import contract as c

CONFIG = load_config()


def committed_dashboards() -> dict[str, dict]:
    return {name: json.loads((ROOT / f"dashboards/rerank-{name}.json").read_text())
            for name in dashboards.DASHBOARDS}


def committed_rules(path: str) -> list[dict]:
    document = yaml.safe_load((ROOT / path).read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def all_expressions() -> list[str]:
    exprs = [expr for board in committed_dashboards().values()
             for expr in dashboards.queries(board)]
    exprs += [rule["expr"] for rule in committed_rules(RECORDING_RULES)]
    exprs += [rule["expr"] for rule in committed_rules(ALERT_RULES)]
    return exprs


# -- generated == committed -------------------------------------------------------
def test_committed_files_equal_what_the_generator_writes():
    assert differences(CONFIG, ROOT) == [], "run `rerank-ops mixin --write` and commit"


def test_check_exits_1_when_a_committed_file_is_edited_by_hand(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["mixin", "--write", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(main, ["mixin", "--check", "--out", str(tmp_path)]).exit_code == 0
    edited = tmp_path / ALERT_RULES
    edited.write_text(edited.read_text().replace("for: 2m", "for: 20m", 1))
    result = runner.invoke(main, ["mixin", "--check", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert ALERT_RULES in result.output


def test_mixin_without_mode_is_a_usage_error():
    assert CliRunner().invoke(main, ["mixin"]).exit_code == 2


def test_mixin_check_runs_as_a_real_command_on_this_checkout():
    done = subprocess.run([sys.executable, "-m", "rerank_ops", "mixin", "--check"],
                          capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT / "ops"), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert "match the generator" in done.stdout


# -- config: one source, loud when incomplete ---------------------------------------
def test_a_required_setting_without_a_value_stops_generation_loudly(tmp_path):
    settings = yaml.safe_load(DEFAULT_CONFIG.read_text())
    settings["runbook_base_url"] = ""
    del settings["latency_p99_slo_seconds"]
    path = tmp_path / "mixin.yaml"
    path.write_text(yaml.safe_dump(settings))
    result = CliRunner().invoke(main, ["mixin", "--write", "--config", str(path),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "latency_p99_slo_seconds" in result.output
    assert "runbook_base_url" in result.output
    assert not (tmp_path / "out").exists(), "nothing may be written from a broken config"


@pytest.mark.parametrize("key,value,message", [
    ("availability_slo", 1.5, "availability_slo"),
    ("slo_window", "a month", "duration"),
    ("runbook_base_url", "https://x/runbooks/", "must not end"),
    ("latency_p99_slo_seconds", "fast", "latency_p99_slo_seconds"),
])
def test_invalid_settings_are_rejected_with_their_name(key, value, message):
    settings = yaml.safe_load(DEFAULT_CONFIG.read_text())
    settings[key] = value
    with pytest.raises(MixinConfigError, match=message):
        config_from_mapping(settings)


def test_unknown_setting_is_rejected():
    settings = {**yaml.safe_load(DEFAULT_CONFIG.read_text()), "sl0_window": "30d"}
    with pytest.raises(MixinConfigError, match="sl0_window"):
        config_from_mapping(settings)


def test_config_values_reach_the_rules():
    settings = {**yaml.safe_load(DEFAULT_CONFIG.read_text()),
                "reranker_selector": 'job="search-api"', "latency_p99_slo_seconds": 0.25}
    config = config_from_mapping(settings)
    text = generate(config)[ALERT_RULES] + generate(config)[RECORDING_RULES]
    assert 'job="rerank"' not in text
    assert 'up{job="search-api"} == 1' in text
    assert '{quantile="0.99"} > 0.25' in text


# -- metric names -------------------------------------------------------------------
def test_referenced_metrics_finds_names_and_ignores_functions_labels_and_keywords():
    expr = ('histogram_quantile(0.99, sum by (le, model) (rate(a_bucket{job="x",le!="1"}'
            '[$__rate_interval]))) > on (model) group_left b:c:d offset 1d '
            'and absent(up{job="y"} == 1) or label_replace(vector(1), "dst", "$1", "src", "x")')
    assert referenced_metrics(expr) == {"a_bucket", "b:c:d", "up"}


def test_every_metric_a_query_or_rule_names_is_emitted_by_the_code():
    recorded = {rule["record"] for rule in committed_rules(RECORDING_RULES)}
    known = contract_series() | recorded | PROMETHEUS_SERIES
    unknown = {}
    for expr in all_expressions():
        for name in referenced_metrics(expr) - known:
            unknown.setdefault(name, expr)
    assert not unknown, f"names the code does not emit: {unknown}"


def test_every_contract_metric_is_on_a_dashboard():
    used = set()
    for board in committed_dashboards().values():
        for expr in dashboards.queries(board):
            used |= referenced_metrics(expr)
    missing = [spec.prom_name for spec in c.ALL_METRICS
               if not any(name.startswith(spec.prom_name) for name in used)]
    assert not missing


def test_series_refuses_labels_and_suffixes_the_metric_does_not_have():
    with pytest.raises(ValueError, match="no label"):
        series(c.CACHE_LOOKUPS, 'job="x"', model="m")
    with pytest.raises(ValueError, match="histogram"):
        series(c.REQUEST_DURATION, 'job="x"')
    with pytest.raises(ValueError, match="no _bucket"):
        series(c.REQUESTS, 'job="x"', "_bucket")


# -- dashboards ---------------------------------------------------------------------
def test_dashboards_have_stable_uids_a_datasource_variable_and_units_everywhere():
    boards = committed_dashboards()
    assert sorted(board["uid"] for board in boards.values()) == [
        "rerank-debug", "rerank-executive", "rerank-oncall"]
    for name, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            where = f"{name}/{panel['title']}"
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
            assert panel["datasource"]["uid"] == "${datasource}", where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", where


def test_dashboard_rates_use_rate_interval():
    # the only fixed windows allowed: the SLO window (budget left) and recorded series
    allowed = {f"[{CONFIG.slo_window}]"}
    for board in committed_dashboards().values():
        for panel in board["panels"]:
            for target in panel["targets"]:
                windows = set(re.findall(r"\[[^\]]+\]", target["expr"])) - allowed
                assert windows <= {"[$__rate_interval]"}, (panel["title"], target["expr"])


def test_dashboards_cover_the_panels_the_issue_asks_for():
    titles = {name: {p["title"] for p in board["panels"]}
              for name, board in committed_dashboards().items()}
    assert {"Requests per second", "p95 latency", "Fallback and error rate",
            "Top-1 relevance score", "Drift share",
            "Model-seconds per 1k requests"} <= titles["executive"]
    assert {"Latency p50 / p95 / p99 by status", "Fallbacks by reason", "Circuit state",
            "Cache hit rate", "Cache and Redis errors", "Event-log drops",
            "Truncations", "Policy blocks (share of candidates)",
            "Candidates missing a feature",
            "Canary vs control: fallback share and p99"} <= titles["oncall"]
    assert {"Stage latency p95", "Candidates per request", "Kept per request",
            "Top-1 score distribution", "Model version mix",
            "Drift per feature", "Latency by variant and model",
            "Fallback share by variant and model", "Top-1 score by variant and model",
            "Online CTR by variant"} <= titles["debug"]


def test_debug_dashboard_sets_rollout_arms_side_by_side():
    board = committed_dashboards()["debug"]
    for title in ("Latency by variant and model", "Fallback share by variant and model",
                  "Top-1 score by variant and model", "Online CTR by variant"):
        [panel] = [p for p in board["panels"] if p["title"] == title]
        assert all("variant" in t["legendFormat"] for t in panel["targets"]), title
        assert all(re.search(r"by \([^)]*variant", t["expr"]) for t in panel["targets"]), title
    rows = {}
    for panel in board["panels"]:
        if "variant" in panel["title"]:
            rows.setdefault(panel["gridPos"]["y"], []).append(panel["title"])
    assert max(len(titles) for titles in rows.values()) == 4, "the four arm panels share a row"


def test_provisioning_file_points_grafana_at_the_dashboards():
    provider = yaml.safe_load((ROOT / "dashboards/provisioning.yaml").read_text())
    [entry] = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"] == CONFIG.grafana_dashboards_path


# -- rules --------------------------------------------------------------------------
def test_recording_rules_are_named_level_metric_operations():
    for rule in committed_rules(RECORDING_RULES):
        level, metric, operations = rule["record"].split(":")
        assert re.fullmatch(r"[a-z_]+", level) and re.fullmatch(r"[a-z0-9_]+", operations)
        assert any(metric.startswith(spec.prom_name.removesuffix("_total"))
                   for spec in c.ALL_METRICS), rule["record"]


def test_alerts_page_or_ticket_as_specified_with_all_annotations():
    severities = {}
    for rule in committed_rules(ALERT_RULES):
        severities.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert rule["annotations"]["runbook_url"] == rules.runbook_url(CONFIG, rule["alert"])
    assert severities == {
        "RerankLatencyP99AboveSLO": {"critical"},
        "RerankFallbackBudgetBurnFast": {"critical"},
        "RerankCircuitOpen": {"critical"},
        "RerankTargetAbsent": {"critical"},
        "RerankPolicyBlockSpike": {"critical"},
        "RerankFallbackBudgetBurnSlow": {"warning"},
        "RerankCandidateFeaturesMissing": {"warning"},
        "RerankCanaryWorseThanControl": {"warning"},
        "RerankCacheHitRateCollapse": {"warning"},
        "RerankEventLogDropping": {"warning"},
        "RerankTruncationRateRising": {"warning"},
        "RerankDriftDetected": {"warning"},
        "RerankDriftJobStale": {"warning"},
        "RerankModelVersionMismatch": {"warning"},
        "RerankSemanticCacheNearHitsHigh": {"warning"},
        "RerankLLMTokensPerAnswerHigh": {"warning"},
    }


def test_budget_burn_alerts_use_the_sre_workbook_windows_and_factors():
    pairs = set()
    for rule in committed_rules(ALERT_RULES):
        if rule["alert"].startswith("RerankFallbackBudgetBurn"):
            long_w, short_w = rule["labels"]["long_window"], rule["labels"]["short_window"]
            factor = re.search(r"> \(([\d.]+) \* ", rule["expr"]).group(1)
            assert f"ratio_rate{long_w} >" in rule["expr"]
            assert f"ratio_rate{short_w} >" in rule["expr"]
            pairs.add((rule["alert"][len("RerankFallbackBudgetBurn"):], long_w, short_w,
                       float(factor)))
    assert pairs == {("Fast", "1h", "5m", 14.4), ("Fast", "6h", "30m", 6.0),
                     ("Slow", "1d", "2h", 3.0), ("Slow", "3d", "6h", 1.0)}
    assert f"* {CONFIG.error_budget!r})" in (ROOT / ALERT_RULES).read_text()


def test_alert_slug_is_kebab_case():
    assert rules.alert_slug("RerankLatencyP99AboveSLO") == "rerank-latency-p99-above-slo"
    assert rules.alert_slug("RerankCircuitOpen") == "rerank-circuit-open"


def test_generated_rules_load_in_promtool(tmp_path):
    promtool = require_binary("promtool")
    files = generate(CONFIG)
    for relative in (RECORDING_RULES, ALERT_RULES):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(files[relative])
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / RECORDING_RULES),
                           str(tmp_path / ALERT_RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
