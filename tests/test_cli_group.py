"""The ``rerank-ops`` group: help from the command table, commands imported lazily."""

from __future__ import annotations

import subprocess
import sys

from rerank_ops.cli import COMMANDS


def test_help_lists_every_command_without_importing_any():
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom rerank_ops.cli import main\n"
             "result = CliRunner().invoke(main, ['--help'])\nprint(result.output)\n"
             "print('IMPORTED', sorted(m for m in sys.modules "
             "if m.startswith('rerank_ops.commands.')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    for name, (_target, summary) in COMMANDS.items():
        assert f"{name}" in out and summary[:30] in out
    assert "IMPORTED []" in out


def test_a_collection_name_works_for_eval_as_for_the_other_commands(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from rerank_ops.cli import main

    monkeypatch.setenv("RERANK_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["eval", "--collection", "no-such-collection"])
    assert result.exit_code == 2
    assert "neither a folder nor a collection under" in result.output
