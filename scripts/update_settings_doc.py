"""Rewrite the generated settings table in docs/settings.md (run by `make generate`)."""

from pathlib import Path

from rerank_plugins.settings import markdown_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
START, END = "-->\n", "\n<!-- end generated -->"

text = DOC.read_text(encoding="utf-8")
head, rest = text.split(START, 1)
_, tail = rest.split(END, 1)
DOC.write_text(head + START + markdown_table() + END + tail, encoding="utf-8")
print(f"wrote {DOC}")
