"""The on-call runbooks in ``runbooks/``: one markdown per alert plus topic runbooks.

An alert runbook's title is the alert name (``# RerankCircuitOpen``) and its file
is the alert's slug (``rerank-circuit-open.md``), the file every ``runbook_url``
points at. Each runbook has the sections in :data:`REQUIRED_SECTIONS`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

RUNBOOKS_ENV = "RERANK_RUNBOOKS_DIR"
REQUIRED_SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation", "Escalation")
_ALERT_TITLE = re.compile(r"^Rerank[A-Z][A-Za-z0-9]+$")


@dataclass(frozen=True)
class Runbook:
    """One runbook file."""

    name: str  #: file stem, e.g. ``rerank-circuit-open``
    title: str  #: first heading: the alert name, or the topic
    path: Path

    @property
    def kind(self) -> str:
        """``"alert"`` when the title is an alert name, else ``"topic"``."""
        return "alert" if _ALERT_TITLE.match(self.title) else "topic"

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def sections(self) -> list[str]:
        """The ``## `` headings, in order."""
        return re.findall(r"^## (.+?)\s*$", self.text(), flags=re.MULTILINE)

    def missing_sections(self) -> list[str]:
        present = set(self.sections())
        return [name for name in REQUIRED_SECTIONS if name not in present]


def runbooks_dir() -> Path:
    """``$RERANK_RUNBOOKS_DIR``, else ``runbooks/`` of the checkout this package is in."""
    configured = os.environ.get(RUNBOOKS_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "runbooks"


def list_runbooks(directory: str | Path | None = None) -> list[Runbook]:
    """Every runbook, alerts first, each group sorted by name.

    Args:
        directory: Where the markdown files are. Defaults to :func:`runbooks_dir`.

    Raises:
        FileNotFoundError: When the directory does not exist.
    """
    root = Path(directory) if directory is not None else runbooks_dir()
    if not root.is_dir():
        raise FileNotFoundError(
            f"no runbooks directory at {root}: set {RUNBOOKS_ENV} to the repository's "
            "runbooks/ folder")
    books = []
    for path in sorted(root.glob("*.md")):
        match = re.search(r"^# (.+?)\s*$", path.read_text(encoding="utf-8"), re.MULTILINE)
        books.append(Runbook(path.stem, match.group(1) if match else path.stem, path))
    return sorted(books, key=lambda book: (book.kind != "alert", book.name))


def find_runbook(name: str, directory: str | Path | None = None) -> Runbook | None:
    """The runbook called ``name``: a file stem, an alert name, or a topic title.

    Matching ignores case, and ``.md`` and spaces/underscores versus dashes.
    """
    wanted = re.sub(r"[\s_]+", "-", name.strip().lower()).removesuffix(".md")
    for book in list_runbooks(directory):
        if wanted in (book.name, re.sub(r"\s+", "-", book.title.lower())):
            return book
    return None
