"""Telemetry: the metric/span contract, instruments and the feature/score event log.

Importing this package needs only ``opentelemetry-api``; the SDK, the Prometheus
exporter and pyarrow are imported when the features that need them are used.
"""

from . import contract
from .events import SCHEMA_VERSION, read_events
from .prometheus import start_metrics_server
from .sinks import EventLog, JsonlSink, ParquetSink

__all__ = [
    "SCHEMA_VERSION", "EventLog", "JsonlSink", "ParquetSink", "contract", "read_events",
    "start_metrics_server",
]
