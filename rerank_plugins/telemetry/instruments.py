"""OpenTelemetry instruments for the contract in :mod:`.contract`.

Only ``opentelemetry-api`` is imported: with no SDK configured every call is a
no-op. Instruments are created once per process on first use.
"""

from __future__ import annotations

import threading
import weakref

from opentelemetry import metrics

from . import contract as c

_lock = threading.Lock()
_instruments: dict[str, object] | None = None
_breakers: weakref.WeakSet = weakref.WeakSet()
_engines: list[tuple[str, weakref.ref]] = []
_models: dict[str, dict[str, str]] = {}


def _create(meter, spec: c.MetricSpec):
    if spec.kind is c.Kind.COUNTER:
        return meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
    if spec.kind is c.Kind.HISTOGRAM:
        return meter.create_histogram(
            spec.name, unit=spec.unit, description=spec.description,
            explicit_bucket_boundaries_advisory=list(spec.buckets or ()))
    raise ValueError(spec.kind)


def _observe_circuits(_options):
    for breaker in list(_breakers):
        yield metrics.Observation(c.CIRCUIT_STATES[breaker.state], {c.L_BREAKER: breaker.name})


def _observe_models(_options):
    for labels in list(_models.values()):
        yield metrics.Observation(1, labels)


def _observe_abandoned(_options):
    for model, ref in list(_engines):
        engine = ref()
        if engine is not None:
            yield metrics.Observation(engine.abandoned_threads(), {c.L_MODEL: model})


def get() -> dict[str, object]:
    """The instruments, keyed by OpenTelemetry name."""
    global _instruments
    if _instruments is not None:
        return _instruments
    with _lock:
        if _instruments is None:
            meter = metrics.get_meter(c.METER_NAME)
            created = {
                spec.name: _create(meter, spec)
                for spec in c.LIBRARY_METRICS + c.COMPONENT_METRICS
                if spec.kind is not c.Kind.GAUGE
            }
            for spec, callback in (
                (c.CIRCUIT_STATE, _observe_circuits),
                (c.MODEL_INFO, _observe_models),
                (c.INFLIGHT_ABANDONED, _observe_abandoned),
            ):
                created[spec.name] = meter.create_observable_gauge(
                    spec.name, callbacks=[callback], unit=spec.unit,
                    description=spec.description)
            _instruments = created
    return _instruments


def register_breaker(breaker) -> None:
    """Report ``breaker``'s state in ``rerank_circuit_state`` while it lives."""
    _breakers.add(breaker)


def unregister_breaker(breaker) -> None:
    """Stop reporting ``breaker`` (its slot was closed)."""
    _breakers.discard(breaker)


def register_engine(model: str, engine) -> None:
    """Report ``engine``'s abandoned inference threads while it lives."""
    _engines[:] = [(m, ref) for m, ref in _engines if ref() is not None]
    _engines.append((model, weakref.ref(engine)))


def register_model(description: dict[str, str]) -> None:
    """Publish ``rerank_model_info`` (always 1) for a loaded model."""
    labels = {
        c.L_MODEL: description.get("model", ""),
        c.L_REVISION: description.get("revision", ""),
        c.L_DEVICE: description.get("device", ""),
        c.L_DTYPE: description.get("dtype", ""),
    }
    _models[labels[c.L_MODEL] + "|" + labels[c.L_REVISION]] = labels


def add(spec: c.MetricSpec, value: float, **labels: str) -> None:
    """Add ``value`` to the counter ``spec``."""
    get()[spec.name].add(value, labels)


def observe(spec: c.MetricSpec, value: float, **labels: str) -> None:
    """Record ``value`` in the histogram ``spec``."""
    get()[spec.name].record(value, labels)


def cache_error(backend: str, operation: str, cause: str) -> None:
    """Count one cache backend failure."""
    add(c.CACHE_ERRORS, 1, **{c.L_BACKEND: backend, c.L_OPERATION: operation, c.L_CAUSE: cause})


def event_dropped(backend: str, reason: str, count: int = 1) -> None:
    """Count ``count`` events the event log lost, by a bounded ``reason``."""
    add(c.EVENTS_DROPPED, count, **{c.L_BACKEND: backend, c.L_REASON: reason})
