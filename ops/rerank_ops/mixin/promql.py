"""PromQL building blocks tied to the metric contract.

:func:`series` is the only way the dashboards and rules name a metric: it takes a
:class:`~rerank_plugins.telemetry.contract.MetricSpec`, so a renamed metric or a
label the metric does not carry fails at generation time, not on a dashboard at
3 a.m. :func:`referenced_metrics` reads metric names back out of any expression,
for the test that every name a query uses is one the code emits.
"""

from __future__ import annotations

import re

from rerank_plugins.telemetry import contract as c

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

#: Series that Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_samples_scraped", "scrape_duration_seconds"})

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "atan2",
})
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACED = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def matchers(selector: str, *raw: str, **labels: str) -> str:
    """Join a configured selector with more matchers into ``{...}``.

    Args:
        selector: Label matchers from the mixin config, such as ``job="rerank"``.
        *raw: Matchers written out, such as ``breaker!="cache"``.
        **labels: Extra ``label="value"`` matchers.
    """
    parts = [selector] if selector else []
    parts += list(raw)
    parts += [f'{name}="{value}"' for name, value in labels.items()]
    return "{" + ",".join(parts) + "}"


def series(spec: c.MetricSpec, selector: str, suffix: str = "", **labels: str) -> str:
    """A vector selector for a contract metric.

    Args:
        spec: The metric.
        selector: Label matchers from the mixin config.
        suffix: ``_bucket``, ``_sum`` or ``_count`` for histograms, else empty.
        **labels: Exact-match label values; each must be one of ``spec.labels``.

    Raises:
        ValueError: For a suffix the metric kind does not have, or an unknown label.
    """
    if suffix and (spec.kind is not c.Kind.HISTOGRAM or suffix not in HISTOGRAM_SUFFIXES):
        raise ValueError(f"{spec.prom_name} ({spec.kind.value}) has no {suffix} series")
    if spec.kind is c.Kind.HISTOGRAM and not suffix:
        raise ValueError(f"{spec.prom_name} is a histogram: name _bucket, _sum or _count")
    unknown = sorted(set(labels) - set(spec.labels))
    if unknown:
        raise ValueError(f"{spec.prom_name} has no label(s) {unknown}")
    return spec.prom_name + suffix + matchers(selector, **labels)


def group(labels: tuple[str, ...] | list[str]) -> str:
    """``by (a, b)`` or the empty string for no labels."""
    return f" by ({', '.join(labels)})" if labels else ""


def rate(spec: c.MetricSpec, selector: str, window: str, *, by: tuple[str, ...] = (),
         suffix: str = "", **labels: str) -> str:
    """``sum by (...) (rate(metric{...}[window]))`` for a counter or histogram part."""
    if spec.kind is c.Kind.COUNTER:
        suffix = ""
    elif not suffix:
        suffix = "_count"
    inner = series(spec, selector, suffix, **labels)
    return f"sum{group(by)} (rate({inner}[{window}]))"


def quantile(q: float, spec: c.MetricSpec, selector: str, window: str,
             by: tuple[str, ...] = (), **labels: str) -> str:
    """``histogram_quantile`` of a contract histogram over ``window``."""
    buckets = rate(spec, selector, window, by=("le", *by), suffix="_bucket", **labels)
    return f"histogram_quantile({q}, {buckets})"


def referenced_metrics(expr: str) -> set[str]:
    """Metric names an expression selects (functions, labels and keywords removed).

    Args:
        expr: A PromQL expression; Grafana variables such as ``$__rate_interval``
            may appear in ranges and label matchers.

    Example::

        referenced_metrics('sum by (le) (rate(a_bucket{job="x"}[5m])) / b')
        # {'a_bucket', 'b'}
    """
    text = _STRING.sub('""', expr)
    text = _BRACED.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def contract_series() -> set[str]:
    """Every series name the library and the drift job expose (histogram parts included)."""
    names = set()
    for spec in c.ALL_METRICS:
        if spec.kind is c.Kind.HISTOGRAM:
            names.update(spec.prom_name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(spec.prom_name)
    return names
