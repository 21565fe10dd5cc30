"""Telemetry: the metric/span contract, instruments and the feature/score event log."""

from . import contract
from .sinks import EventLog, JsonlSink, ParquetSink

__all__ = ["EventLog", "JsonlSink", "ParquetSink", "contract"]
