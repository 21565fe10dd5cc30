"""Reranker settings files (written by ``rerank-ops eval --tune``, read by
``Reranker.from_config`` and the drop-ins' ``config=``).

The ``reranker`` section holds :class:`RerankerSettings` fields by name -- every
field except those in ``settings.NOT_IN_CONFIG_FILE`` (Python callables, secrets).
Object-valued settings take their plain forms: ``cache`` a string (``"memory"`` or a
``redis://`` URL) or null, ``breaker`` a mapping of CircuitBreaker arguments,
``event_log`` and ``calibration`` paths, ``secondary_scorer`` a model name::

    {"schema_version": 1,
     "reranker": {"fusion": "linear", "alpha": 0.5, "normalization": "minmax",
                  "threshold": null, "rerank_depth": 50, "timeout_s": 0.3},
     "provenance": {...}}

Renamed keys (``candidate_depth``, ``timeout_ms``) are still read, with a warning.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import settings as settings_module
from .errors import ConfigurationError
from .settings import RerankerSettings

CONFIG_SCHEMA = 1

#: Keys a settings file may hold (declaration order), and the renamed ones it may.
CONFIG_KEYS = tuple(n for n in settings_module.names()
                    if n not in settings_module.NOT_IN_CONFIG_FILE)
_PLAIN = (str, int, float, bool, type(None))
#: Settings whose file form is a mapping of plain values.
_MAPPINGS = ("breaker", "split", "variants")


def _plain_mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(v, _PLAIN) for v in value.values())


def load_settings_values(path: str | Path) -> dict[str, Any]:
    """The settings a file sets, by field name (renamed keys upgraded)."""
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
    values = settings_module.upgrade_names(section)
    # a legacy top-level "model" key (schema 1 before settings held the model)
    if data.get("model") is not None and "model" not in values:
        values["model"] = data["model"]
    unknown = sorted(set(values) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown settings {unknown}; a settings file holds {', '.join(CONFIG_KEYS)}")
    for key, value in values.items():
        if not isinstance(value, _PLAIN) and not (key in _MAPPINGS and _plain_mapping(value)):
            raise ConfigurationError(f"{path}: {key} must be a plain JSON value, got "
                                     f"{type(value).__name__}")
    return values


def load_settings(path: str | Path, base: RerankerSettings | None = None) -> RerankerSettings:
    """Read a settings file into :class:`RerankerSettings` (``base`` fills the rest)."""
    return RerankerSettings.build(base, **load_settings_values(path))


def config_values(settings: RerankerSettings, keys: Iterable[str] | None = None
                  ) -> dict[str, Any]:
    """The file form of ``settings`` (``keys``, else those that differ from the
    defaults): plain values only, since objects cannot be written."""
    values = settings.changed() if keys is None else {k: getattr(settings, k) for k in keys}
    out = {}
    for key, value in values.items():
        if key not in CONFIG_KEYS:
            continue
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, Mapping):
            value = dict(value)
        if not isinstance(value, _PLAIN) and not (key in _MAPPINGS and _plain_mapping(value)):
            raise ConfigurationError(
                f"{key}={value!r} is an object; a settings file holds its plain form")
        out[key] = value
    return out


def write_settings(path: str | Path, settings: RerankerSettings, *,
                   keys: Iterable[str] | None = None,
                   provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``settings`` (``keys``, else those that differ from the defaults) as a
    settings file; returns the document written. A file sets only what it names, so
    a drop-in's own defaults (e.g. its ``top_n``) apply to everything else."""
    document = {"schema_version": CONFIG_SCHEMA,
                "reranker": config_values(settings, keys),
                "provenance": dict(provenance or {})}
    Path(path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return document


def load_reranker_settings(path: str | Path) -> dict[str, Any]:
    """Deprecated: keyword arguments for :class:`Reranker` from a settings file."""
    return load_settings_values(path)
