"""``rerank-ops runbooks``: list or show the on-call runbooks."""

from __future__ import annotations

from pathlib import Path

import click

from rerank_ops.runbooks_index import find_runbook, list_runbooks

_DIR_OPTION = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Runbooks folder. Defaults to $RERANK_RUNBOOKS_DIR or the checkout's runbooks/.")


def _books(directory: Path | None):
    try:
        return list_runbooks(directory)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc


def _listing(books) -> str:
    width = max(len(book.name) for book in books)
    return "\n".join(f"{book.name:<{width}}  {book.kind:<5}  {book.title}" for book in books)


@click.group("runbooks")
def runbooks() -> None:
    """List or show the on-call runbooks (one per alert, plus topics).

    \b
    Example:
      rerank-ops runbooks list
      rerank-ops runbooks show RerankCircuitOpen
    """


@runbooks.command("list")
@_DIR_OPTION
def list_cmd(directory: Path | None) -> None:
    """Every runbook: file name, kind (alert or topic) and title."""
    click.echo(_listing(_books(directory)))


@runbooks.command("show")
@click.argument("name")
@_DIR_OPTION
def show_cmd(name: str, directory: Path | None) -> None:
    """Print runbook NAME (a file name, an alert name or a topic)."""
    books = _books(directory)
    try:
        book = find_runbook(name, directory)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    if book is None:
        raise click.UsageError(f"no runbook named {name!r}; known runbooks:\n{_listing(books)}")
    click.echo(book.text(), nl=False)
