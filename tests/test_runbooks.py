"""Runbooks: every alert links to an existing runbook, every runbook is complete, and
the PromQL and ``rerank-ops`` commands they tell on-call to run are real."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT
from rerank_ops.cli import COMMANDS, main
from rerank_ops.mixin import ALERT_RULES, RECORDING_RULES, load_config
from rerank_ops.mixin.promql import PROMETHEUS_SERIES, contract_series, referenced_metrics
from rerank_ops.runbooks_index import REQUIRED_SECTIONS, find_runbook, list_runbooks

RUNBOOKS = ROOT / "runbooks"
BOOKS = list_runbooks(RUNBOOKS)
TOPICS = ("latency spikes", "quality drops", "missing features", "version mismatch",
          "cache staleness", "data leakage in logs", "model regression", "drift")


def alert_rules() -> list[dict]:
    document = yaml.safe_load((ROOT / ALERT_RULES).read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def code_blocks(text: str, language: str) -> list[str]:
    """Fenced blocks of ``language``, also those indented under a list item (dedented)."""
    blocks = re.findall(rf"^([ \t]*)```{language}\n(.*?)^\1```", text,
                        flags=re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(body) for _indent, body in blocks]


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
    assert "```promql" in text or book.name == "data-leakage-in-logs", \
        f"{book.name}: Diagnosis gives no PromQL to run"


def test_links_between_runbooks_resolve():
    for book in BOOKS:
        for target in re.findall(r"\]\(([^)#]+\.md)\)", book.text()):
            assert (RUNBOOKS / target).is_file(), f"{book.name} links to missing {target}"


def test_runbook_promql_names_only_emitted_metrics():
    recorded = {rule["record"] for group in yaml.safe_load(
        (ROOT / RECORDING_RULES).read_text())["groups"] for rule in group["rules"]}
    known = contract_series() | recorded | PROMETHEUS_SERIES
    for book in BOOKS:
        for block in code_blocks(book.text(), "promql"):
            for expr in _expressions(block):
                unknown = referenced_metrics(expr) - known
                assert not unknown, f"{book.name}: {expr} names {unknown}"


def _expressions(block: str) -> list[str]:
    """Split a promql block into expressions (continuation lines are indented)."""
    exprs: list[str] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        if line.startswith((" ", "\t")) and exprs:
            exprs[-1] += " " + line.strip()
        else:
            exprs.append(line.strip())
    return exprs


def test_runbook_promql_parses_in_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: `make system-deps`")
    exprs = [expr for book in BOOKS for block in code_blocks(book.text(), "promql")
             for expr in _expressions(block)]
    rules = [{"record": f"runbook:check:expr{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "runbook-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbooks", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", "--lint=none", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_runbook_commands_use_real_rerank_ops_commands_and_options():
    group = main
    for book in BOOKS:
        for block in code_blocks(book.text(), "sh"):
            for line in block.replace("\\\n", " ").splitlines():
                if not line.strip().startswith("rerank-ops"):
                    continue
                words = shlex.split(line.split(";")[0])
                if words[1].startswith("--"):
                    assert words[1] == "--version", line
                    continue
                assert words[1] in COMMANDS, f"{book.name}: unknown command {line}"
                command = group.get_command(None, words[1])
                known = {opt for param in command.params for opt in param.opts}
                options = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
                assert options <= known, f"{book.name}: {line}: {options - known}"


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
