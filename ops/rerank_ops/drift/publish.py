"""Publishing a drift run for Prometheus: a textfile-collector file and/or a
Pushgateway push-add. Metric names and help texts come from the telemetry contract
(``DRIFT_METRICS``), so the alert rules and dashboards generated from it match.

Only completed runs publish: a failed run leaves the last success timestamp alone,
which is what the "drift job stale" alert watches.
"""

from __future__ import annotations

import math
from pathlib import Path

from rerank_plugins.telemetry import contract as c

from .report import DriftResult

DEFAULT_JOB = "rerank_drift"


def build_registry(result: DriftResult):
    """A fresh ``CollectorRegistry`` holding the run's gauges."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(spec: c.MetricSpec) -> Gauge:
        return Gauge(spec.prom_name, spec.description, list(spec.labels), registry=registry)

    gauge(c.DRIFT_SHARE).set(result.share)
    gauge(c.DRIFT_DETECTED).set(1 if result.detected else 0)
    scores = gauge(c.DRIFT_FEATURE_SCORE)
    for feature in result.features:
        if feature.score is not None and math.isfinite(feature.score):
            scores.labels(**{c.L_FEATURE: feature.feature}).set(feature.score)
    gauge(c.DRIFT_LAST_SUCCESS).set(result.finished_at)
    gauge(c.DRIFT_DURATION).set(result.duration_s)
    return registry


def write_textfile(path: str | Path, registry) -> None:
    """Atomically replace ``path`` (the temporary file sits beside it, then a rename),
    so the node-exporter textfile collector never reads half a file."""
    from prometheus_client import write_to_textfile

    target = Path(path)
    if target.suffix != ".prom":
        raise ValueError(f"{target}: the textfile collector only reads files ending in .prom")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(target), registry)


def push(url: str, registry, *, job: str = DEFAULT_JOB, grouping: dict[str, str] | None = None,
         timeout_s: float = 10.0) -> None:
    """Push-add (HTTP POST): replaces this job's series of the same names only."""
    from prometheus_client import pushadd_to_gateway

    pushadd_to_gateway(url, job=job, registry=registry, grouping_key=grouping or {},
                       timeout=timeout_s)
