"""What the runbooks tell on-call to run, read with a real Markdown parser.

Most code blocks in the runbooks sit under numbered list items and are indented, so
a line regex anchored at column 0 misses them; markdown-it (CommonMark) finds every
fenced block wherever it is nested and hands back its language and its dedented
content. Used by ``test_runbooks.py`` (parsing, metric names, CLI lines) and
``test_live_prometheus.py`` (every expression against a live Prometheus).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
from markdown_it import MarkdownIt

_PARSER = MarkdownIt("commonmark")
_OPENING_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Block:
    source: str  #: runbook file name
    line: int  #: 1-based line of the opening fence
    language: str
    content: str

    def where(self) -> str:
        return f"{self.source}:{self.line}"


def code_blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced code block of a Markdown file, nested or not."""
    text = path.read_text(encoding="utf-8") if text is None else text
    return [Block(path.name, token.map[0] + 1, token.info.strip().split(" ")[0],
                  token.content)
            for token in _PARSER.parse(text) if token.type == "fence"]


def fence_lines(text: str) -> int:
    """How many fence lines (opening and closing) a plain line scan sees, to check that
    the parser did not lose a block."""
    return sum(1 for line in text.splitlines() if _OPENING_FENCE.match(line))


def promql_expressions(block: Block) -> list[str]:
    """Split a promql block into expressions (continuation lines are indented)."""
    exprs: list[str] = []
    for line in block.content.splitlines():
        if not line.strip():
            continue
        if line.startswith((" ", "\t")) and exprs:
            exprs[-1] += " " + line.strip()
        else:
            exprs.append(line.strip())
    return exprs


def runbook_promql(paths: list[Path]) -> list[tuple[Block, str]]:
    """(block, expression) for every PromQL expression in the runbooks."""
    return [(block, expr) for path in paths for block in code_blocks(path)
            if block.language == "promql" for expr in promql_expressions(block)]


def shell_commands(block: Block) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = block.content.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def check_cli_line(group: click.Group, line: str) -> list[str]:
    """Problems with one ``rerank-ops ...`` line, found by click's own option parser.

    The command (and sub-command) must exist, every option must be one it declares
    and get the number of values it takes, positional arguments must be ones the
    command accepts, and values of closed types (choices, numbers) must convert.
    Values written as placeholders (``<beir-folder>``) and paths (which need not
    exist on this machine) are not converted.
    """
    words = shlex.split(line.split(";")[0].split("|")[0])
    if words[:1] != ["rerank-ops"]:
        return [f"not a rerank-ops command: {line}"]
    root = click.Context(group, info_name="rerank-ops")
    try:
        return _check(group, root, words[1:], line)
    except click.UsageError as exc:
        return [f"{line}: {exc.format_message()}"]


def _check(command: click.Command, ctx: click.Context, args: list[str], line: str) -> list[str]:
    parser = command.make_parser(ctx)
    values, rest, order = parser.parse_args(list(args))
    problems = []
    for param in order:
        value = values.get(param.name)
        if value is None or isinstance(param.type, (click.Path, click.File)):
            continue
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item.startswith("<") and item.endswith(">"):
                continue
            try:
                param.type.convert(item, param, ctx)
            except click.BadParameter as exc:
                problems.append(f"{line}: {param.name}: {exc.format_message()}")
    if isinstance(command, click.Group):
        if not rest:
            if not any(p.is_eager for p in order):  # --version / --help end the line
                problems.append(f"{line}: no command given")
            return problems
        name, sub, sub_args = command.resolve_command(ctx, rest)
        return problems + _check(sub, click.Context(sub, info_name=name, parent=ctx),
                                 sub_args, line)
    if rest:
        problems.append(f"{line}: unexpected arguments {rest}")
    return problems
