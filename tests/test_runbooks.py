"""Runbooks: every alert links to an existing runbook, every runbook is complete, and
the PromQL and ``rerank-ops`` commands they tell on-call to run are real."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, require_binary
from rerank_ops.cli import main
from rerank_ops.mixin import ALERT_RULES, RECORDING_RULES, load_config
from rerank_ops.mixin.promql import PROMETHEUS_SERIES, contract_series, referenced_metrics
from rerank_ops.runbooks_index import REQUIRED_SECTIONS, find_runbook, list_runbooks
from runbook_blocks import (
    check_cli_line,
    code_blocks,
    fence_lines,
    runbook_promql,
    shell_commands,
)

RUNBOOKS = ROOT / "runbooks"
BOOKS = list_runbooks(RUNBOOKS)
PATHS = [book.path for book in BOOKS]
TOPICS = ("latency spikes", "quality drops", "missing features", "version mismatch",
          "cache staleness", "data leakage in logs", "model regression", "drift")


def alert_rules() -> list[dict]:
    document = yaml.safe_load((ROOT / ALERT_RULES).read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_runbook_url_resolves_to_a_runbook_of_that_alert():
    base = load_config().runbook_base_url + "/"
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(base), url
        path = RUNBOOKS / url[len(base):]
        assert path.is_file(), f"{rule['alert']}: {url} has no file {path}"
        assert path.read_text().startswith(f"# {rule['alert']}\n"), path


def test_every_alert_runbook_belongs_to_an_alert():
    alerts = {rule["alert"] for rule in alert_rules()}
    orphans = [book.name for book in BOOKS if book.kind == "alert" and book.title not in alerts]
    assert not orphans


def test_the_topics_on_call_asked_for_have_runbooks():
    missing = [topic for topic in TOPICS if find_runbook(topic, RUNBOOKS) is None]
    assert not missing


@pytest.mark.parametrize("book", BOOKS, ids=lambda book: book.name)
def test_runbook_has_every_section_with_content(book):
    assert book.missing_sections() == []
    text = book.text()
    for section in REQUIRED_SECTIONS:
        body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
        assert len(body.strip()) > 20, f"{book.name}: {section} is empty"
    diagnosis = text.split("## Diagnosis\n", 1)[1].split("\n## ", 1)[0]
    has_promql = any(block.language == "promql"
                     for block in code_blocks(book.path, diagnosis))
    assert has_promql or book.name == "data-leakage-in-logs", \
        f"{book.name}: Diagnosis gives no PromQL to run"


def test_links_between_runbooks_resolve():
    for book in BOOKS:
        for target in re.findall(r"\]\(([^)#]+\.md)\)", book.text()):
            assert (RUNBOOKS / target).is_file(), f"{book.name} links to missing {target}"


def known_series() -> set[str]:
    recorded = {rule["record"] for group in yaml.safe_load(
        (ROOT / RECORDING_RULES).read_text())["groups"] for rule in group["rules"]}
    return contract_series() | recorded | PROMETHEUS_SERIES


def unknown_metric_problems(paths) -> list[str]:
    known = known_series()
    return [f"{block.where()}: {expr} names {sorted(unknown)}"
            for block, expr in runbook_promql(paths)
            if (unknown := referenced_metrics(expr) - known)]


def test_the_parser_sees_every_code_block_including_indented_ones():
    """Every fence line a plain scan sees belongs to a block the parser returns, and
    every block says its language (the checks below select blocks by it)."""
    totals = {"promql": 0, "sh": 0}
    for book in BOOKS:
        blocks = code_blocks(book.path)
        assert 2 * len(blocks) == fence_lines(book.text()), book.name
        assert all(block.language for block in blocks), book.name
        for block in blocks:
            totals[block.language] = totals.get(block.language, 0) + 1
    assert set(totals) == {"promql", "sh"}, totals
    # the counts when this check was written (34 and 19); more is fine, fewer means lost
    assert totals["promql"] >= 34 and totals["sh"] >= 19, totals


def test_runbook_promql_names_only_emitted_metrics():
    assert len(runbook_promql(PATHS)) >= 34
    assert unknown_metric_problems(PATHS) == []


def test_the_metric_check_catches_a_metric_that_does_not_exist(tmp_path):
    """A name the contract does not emit, in an indented block under a list item (where
    most runbook blocks are), is reported with its file and line."""
    original = (RUNBOOKS / "latency-spikes.md").read_text()
    needle = 'sum(rate(rerank_requests_total{job="rerank"}[1m]))'
    assert needle in original
    broken = tmp_path / "latency-spikes.md"
    broken.write_text(original.replace(
        needle, 'sum(rate(rerank_requests_totl{job="rerank"}[1m]))', 1))
    [problem] = unknown_metric_problems([broken])
    assert problem.startswith("latency-spikes.md:") and "rerank_requests_totl" in problem


def test_runbook_promql_parses_in_promtool(tmp_path):
    promtool = require_binary("promtool")
    exprs = [expr for _, expr in runbook_promql(PATHS)]
    rules = [{"record": f"runbook:check:expr{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "runbook-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbooks", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", "--lint=none", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout, done.stdout


def runbook_cli_lines() -> list[tuple[str, str]]:
    return [(block.where(), command) for book in BOOKS for block in code_blocks(book.path)
            if block.language == "sh" for command in shell_commands(block)
            if command.startswith("rerank-ops")]


def test_runbook_commands_parse_with_the_real_cli():
    lines = runbook_cli_lines()
    assert len(lines) >= 19
    problems = [f"{where}: {problem}" for where, line in lines
                for problem in check_cli_line(main, line)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("line", "expected"), [
    ("rerank-ops driftt --log-dir /x", "No such command 'driftt'"),
    ("rerank-ops drift --log-dirr /x", "No such option"),
    ("rerank-ops drift --reference-days", "requires an argument"),
    ("rerank-ops bench --dtypes float32 --concurrency x", ""),  # checked by the command
    ("rerank-ops drift --log-dir /x --num-method median", "median"),
    ("rerank-ops drift --log-dir /x --reference-days -1", "reference-days"),
    ("rerank-ops runbooks shw drift", "No such command 'shw'"),
    ("rerank-ops runbooks show drift", None),
    ("rerank-ops --version", None),
    ("rerank-ops eval --collection <beir-folder> --json /tmp/x.json", None),
])
def test_the_cli_check_catches_wrong_commands_options_and_values(line, expected):
    problems = check_cli_line(main, line)
    if expected is None:
        assert problems == []
    elif expected:
        assert problems and expected in problems[0], problems


# -- CLI --------------------------------------------------------------------------
def test_runbooks_list_shows_every_runbook():
    result = CliRunner().invoke(main, ["runbooks", "list", "--dir", str(RUNBOOKS)])
    assert result.exit_code == 0
    for book in BOOKS:
        assert book.name in result.output


def test_runbooks_show_accepts_an_alert_name_or_a_file_name():
    runner = CliRunner()
    by_alert = runner.invoke(main, ["runbooks", "show", "RerankCircuitOpen"])
    by_file = runner.invoke(main, ["runbooks", "show", "rerank-circuit-open.md"])
    assert by_alert.exit_code == 0 and by_alert.output.startswith("# RerankCircuitOpen\n")
    assert by_file.output == by_alert.output


def test_runbooks_show_unknown_name_exits_2_with_the_list():
    result = CliRunner().invoke(main, ["runbooks", "show", "RerankEverythingIsFine"])
    assert result.exit_code == 2
    assert "rerank-circuit-open" in result.output and "latency-spikes" in result.output


def test_runbooks_show_runs_as_a_real_command():
    done = subprocess.run([sys.executable, "-m", "rerank_ops", "runbooks", "show", "drift"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT / "ops"), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Drift\n")
