"""Reranker settings files (written by ``rerank-ops eval --tune``).

Format (JSON)::

    {"schema_version": 1,
     "reranker": {"fusion": "linear", "alpha": 0.5, "normalization": "minmax",
                  "threshold": null, "candidate_depth": 50},
     "model": null,
     "provenance": {...}}

``load_reranker_settings`` returns keyword arguments for :class:`Reranker`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigurationError

CONFIG_SCHEMA = 1
_KEYS = {
    "fusion": "fusion", "alpha": "alpha", "normalization": "normalization",
    "threshold": "threshold", "candidate_depth": "rerank_depth", "top_n": "top_n",
    "min_keep": "min_keep", "timeout_ms": "timeout_ms", "relative_cutoff": "relative_cutoff",
}


def load_reranker_settings(path: str | Path) -> dict:
    """Read a settings file and return ``Reranker`` keyword arguments."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read reranker config {path}: {exc}") from exc
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != CONFIG_SCHEMA:
        raise ConfigurationError(
            f"{path}: schema_version {version!r} is not {CONFIG_SCHEMA}; regenerate it with "
            "`rerank-ops eval --tune`")
    section = data.get("reranker")
    if not isinstance(section, dict):
        raise ConfigurationError(f"{path}: missing 'reranker' section")
    unknown = set(section) - set(_KEYS)
    if unknown:
        raise ConfigurationError(f"{path}: unknown settings {sorted(unknown)}")
    return {_KEYS[key]: value for key, value in section.items()}
