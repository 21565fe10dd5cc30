"""rerank-ops: the operations CLI for rerank-plugins (drift, eval, calibrate, bench, doctor)."""

__version__ = "0.1.0"
