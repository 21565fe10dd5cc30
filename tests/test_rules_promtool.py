"""The shipped Prometheus rules through the real promtool: they load, lint clean,
and their unit tests show every alert firing on its failure and quiet otherwise."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from conftest import ROOT, require_binary
from rerank_ops.mixin import ALERT_RULES, RECORDING_RULES, generate, load_config
from rerank_ops.mixin.config import DEFAULT_CONFIG, config_from_mapping

TESTS_DIR = ROOT / "ops/prometheus/tests"
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def test_promtool_check_rules_accepts_the_shipped_rules(promtool):
    done = run(promtool, "check", "rules", str(ROOT / RECORDING_RULES), str(ROOT / ALERT_RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_pass_on_the_shipped_rules(promtool):
    assert TEST_FILES, "no promtool tests found"
    done = run(promtool, "test", "rules", *map(str, TEST_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(TEST_FILES)


def test_every_alert_has_a_firing_and_a_quiet_promtool_case():
    alerts = {rule["alert"] for group in yaml.safe_load((ROOT / ALERT_RULES).read_text())[
        "groups"] for rule in group["rules"]}
    firing, quiet = set(), set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"


def test_the_unit_tests_catch_a_changed_threshold(promtool, tmp_path):
    # The same tests against rules generated with a looser SLO must fail: the
    # tests check the generated thresholds, they do not just replay them.
    settings = yaml.safe_load(DEFAULT_CONFIG.read_text())
    settings.update(latency_p99_slo_seconds=5.0, availability_slo=0.9)
    files = generate(config_from_mapping(settings))
    for relative in (RECORDING_RULES, ALERT_RULES):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(files[relative])
    shutil.copytree(TESTS_DIR, tmp_path / "ops/prometheus/tests")
    done = run(promtool, "test", "rules",
               str(tmp_path / "ops/prometheus/tests/alerts.test.yml"))
    assert done.returncode != 0
    assert "RerankLatencyP99AboveSLO" in done.stdout + done.stderr
    assert "RerankFallbackBudgetBurnFast" in done.stdout + done.stderr


def test_the_shipped_rules_are_the_generated_ones():
    files = generate(load_config())
    for relative in (RECORDING_RULES, ALERT_RULES):
        assert (ROOT / relative).read_text() == files[relative], relative


def test_local_stack_config_is_valid_and_loads_the_shipped_rules(promtool):
    config_path = ROOT / "ops/deploy/prometheus/prometheus.yml"
    done = run(promtool, "check", "config", str(config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(config_path.read_text())
    rule_files = {(config_path.parent / path).resolve() for path in config["rule_files"]}
    assert rule_files == {(ROOT / RECORDING_RULES).resolve(), (ROOT / ALERT_RULES).resolve()}
    # the scrape jobs are the ones the generated selectors look for
    mixin = load_config()
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {f'job="{job}"' for job in jobs} == {mixin.reranker_selector, mixin.drift_selector}


def test_grafana_provisioning_uses_the_generated_dashboard_provider():
    provider = ROOT / "ops/deploy/grafana/provisioning/dashboards/rerank.yaml"
    assert provider.resolve() == (ROOT / "dashboards/provisioning.yaml").resolve()
    datasource = yaml.safe_load(
        (ROOT / "ops/deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    [entry] = datasource["datasources"]
    assert entry["type"] == "prometheus" and entry["url"].startswith("http://127.0.0.1:")


def test_the_rollout_tests_catch_changed_thresholds(promtool, tmp_path):
    # rules generated with looser rollout/safety thresholds must fail rollout.test.yml
    settings = yaml.safe_load(DEFAULT_CONFIG.read_text())
    settings.update(policy_block_share_threshold=0.5, policy_block_spike_factor=10,
                    missing_feature_share_threshold=0.3, variant_fallback_factor=20,
                    variant_latency_p99_factor=50)
    files = generate(config_from_mapping(settings))
    for relative in (RECORDING_RULES, ALERT_RULES):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(files[relative])
    shutil.copytree(TESTS_DIR, tmp_path / "ops/prometheus/tests")
    done = run(promtool, "test", "rules",
               str(tmp_path / "ops/prometheus/tests/rollout.test.yml"))
    assert done.returncode != 0
    for alert in ("RerankPolicyBlockSpike", "RerankCandidateFeaturesMissing",
                  "RerankCanaryWorseThanControl"):
        assert alert in done.stdout + done.stderr, alert
