"""rerank-ops: the operations CLI for rerank-plugins (drift, eval, calibrate, bench, doctor)."""

from importlib.metadata import PackageNotFoundError, version

try:  # one version for the distribution: pyproject.toml's, as rerank_plugins reads it
    __version__ = version("rerank-plugins")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0+unknown"
