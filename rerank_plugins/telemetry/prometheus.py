"""One call to expose the library's metrics for Prometheus to scrape.

``start_metrics_server()`` serves ``/metrics`` with ``prometheus_client``'s HTTP
server, fed by the OpenTelemetry Prometheus exporter (``PrometheusMetricReader``).
What it does depends on the process's global MeterProvider:

* none set yet (only the API proxy): it installs an SDK ``MeterProvider`` whose
  only reader is a ``PrometheusMetricReader`` and makes it the global provider;
* an SDK ``MeterProvider`` that already has a ``PrometheusMetricReader``: it only
  starts the HTTP server on that reader's registry (nothing is duplicated);
* an SDK ``MeterProvider`` without one: it adds a ``PrometheusMetricReader`` with
  ``MeterProvider.add_metric_reader``; the provider's other readers (OTLP, ...)
  keep working;
* any other provider: ``ConfigurationError`` (expose metrics with that SDK's tools).

Needs the ``ops`` extra (``opentelemetry-sdk``, ``opentelemetry-exporter-prometheus``,
``prometheus-client``); importing the library itself never needs them.
"""

from __future__ import annotations

import threading

from ..errors import ConfigurationError

_lock = threading.Lock()
_servers: dict[tuple[str, int], tuple[object, threading.Thread]] = {}


def _import_sdk():
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import REGISTRY, start_http_server
    except ImportError as exc:
        raise ImportError(
            "start_metrics_server needs opentelemetry-sdk, opentelemetry-exporter-prometheus "
            "and prometheus-client: pip install 'rerank-plugins[ops]'") from exc
    return PrometheusMetricReader, MeterProvider, REGISTRY, start_http_server


def _readers_of(provider) -> list:
    """The readers of this provider (the SDK has no public accessor).

    Not ``MeterProvider._all_metric_readers``: that is a class-wide set holding the
    readers of every provider in the process, so it would pick another provider's
    Prometheus reader (and serve its registry, possibly empty).
    """
    consumer = getattr(provider, "_measurement_consumer", None)
    storages = getattr(consumer, "_reader_storages", None)
    if storages is not None:
        return list(storages)  # includes readers added with add_metric_reader
    return list(getattr(provider, "_metric_readers", ()))


def _prometheus_registry():
    """The registry our metrics reach, installing or attaching a reader as needed."""
    from opentelemetry import metrics

    PrometheusMetricReader, MeterProvider, REGISTRY, _ = _import_sdk()
    provider = metrics.get_meter_provider()
    if isinstance(provider, MeterProvider):
        for reader in _readers_of(provider):
            if isinstance(reader, PrometheusMetricReader):
                return getattr(reader, "_registry", REGISTRY)
        provider.add_metric_reader(PrometheusMetricReader())
        return REGISTRY
    if type(provider).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider"):
        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
        if not isinstance(metrics.get_meter_provider(), MeterProvider):
            raise ConfigurationError("another MeterProvider was installed concurrently")
        return REGISTRY
    raise ConfigurationError(
        f"the global MeterProvider is a {type(provider).__name__}, not the OpenTelemetry "
        "SDK's: expose metrics with that provider's own exporter")


def start_metrics_server(port: int = 9464, addr: str = "127.0.0.1") -> int:
    """Serve the library's metrics on ``http://addr:port/metrics`` for Prometheus.

    Safe to call more than once: a second call for the same address returns the
    port already bound. See the module docstring for how an existing OpenTelemetry
    setup is handled.

    Args:
        port: TCP port; 0 picks a free one. Defaults to 9464 (the exporter's usual port).
        addr: Interface to bind. Defaults to ``"127.0.0.1"``; use ``"0.0.0.0"`` only
            where the network in front of the process restricts who can scrape.

    Returns:
        The port actually bound.

    Example::

        from rerank_plugins.telemetry.prometheus import start_metrics_server

        port = start_metrics_server()          # curl 127.0.0.1:9464/metrics
    """
    *_, start_http_server = _import_sdk()
    with _lock:
        key = (addr, port)
        if port and key in _servers:
            return port
        registry = _prometheus_registry()
        server, thread = start_http_server(port, addr=addr, registry=registry)
        bound = int(server.server_port)
        _servers[(addr, bound)] = (server, thread)
        return bound


def stop_metrics_server(port: int, addr: str = "127.0.0.1") -> None:
    """Stop a server started by :func:`start_metrics_server` (tests, shutdown)."""
    with _lock:
        entry = _servers.pop((addr, port), None)
    if entry is not None:
        server, thread = entry
        server.shutdown()
        server.server_close()
        thread.join(5)
