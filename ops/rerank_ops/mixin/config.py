"""The mixin's one configuration: SLO targets, selectors, runbook base URL.

The values live only in ``config.yaml`` next to this module (no defaults are
repeated here). Every field is required; a missing or empty value raises
:class:`MixinConfigError` naming the key, so generation stops loudly instead of
writing rules with a hole in them.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
            "y": 31536000}


class MixinConfigError(ValueError):
    """The mixin configuration is missing a value or holds an invalid one."""


def duration_seconds(value: str) -> float:
    """Seconds in a single-unit Prometheus duration such as ``30m`` or ``1d``.

    Args:
        value: The duration string.

    Raises:
        MixinConfigError: When ``value`` is not a single-unit duration.
    """
    match = _DURATION.match(value)
    if match is None:
        raise MixinConfigError(f"{value!r} is not a Prometheus duration like 30m or 1d")
    return int(match.group(1)) * _SECONDS[match.group(2)]


@dataclass(frozen=True)
class BurnRate:
    """One long/short window pair of the error budget alerts (``burn_rate_alerts``)."""

    long_window: str
    short_window: str
    budget_spent: float  #: share of the whole SLO period's budget spent in long_window
    severity: str
    for_: str

    def factor(self, slo_window: str) -> float | int:
        """How many times the budget rate the fallback share must exceed (an int
        when whole, so rules read ``6 * 0.005``)."""
        value = round(self.budget_spent * duration_seconds(slo_window)
                      / duration_seconds(self.long_window), 6)
        return int(value) if value == int(value) else value


_BURN_KEYS = {"long_window", "short_window", "budget_spent", "severity", "for"}


def _burn_rates(raw, source: str) -> tuple[BurnRate, ...]:
    if not isinstance(raw, list) or not raw:
        raise MixinConfigError(f"{source}: burn_rate_alerts must be a non-empty list")
    out = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) != _BURN_KEYS:
            raise MixinConfigError(
                f"{source}: burn_rate_alerts[{index}] needs exactly {sorted(_BURN_KEYS)}")
        try:
            burn = BurnRate(str(entry["long_window"]), str(entry["short_window"]),
                            float(entry["budget_spent"]), str(entry["severity"]),
                            str(entry["for"]))
        except (TypeError, ValueError) as exc:
            raise MixinConfigError(f"{source}: burn_rate_alerts[{index}]: {exc}") from exc
        if burn.severity not in ("critical", "warning") or not 0 < burn.budget_spent <= 1:
            raise MixinConfigError(f"{source}: burn_rate_alerts[{index}]: severity must be "
                                   "critical or warning, budget_spent in (0, 1]")
        for window in (burn.long_window, burn.short_window, burn.for_):
            duration_seconds(window)
        out.append(burn)
    return tuple(out)


@dataclass(frozen=True)
class MixinConfig:
    """Settings that the dashboards and rules are built from (see ``config.yaml``)."""

    reranker_selector: str
    drift_selector: str
    availability_slo: float
    slo_window: str
    burn_rate_alerts: tuple[BurnRate, ...]
    latency_p99_slo_seconds: float
    latency_alert_for: str
    cache_hit_ratio_collapse_factor: float
    truncation_ratio_threshold: float
    drift_share_threshold: float
    drift_interval: str
    policy_block_share_threshold: float
    policy_block_spike_factor: float
    policy_block_spike_min_share: float
    policy_block_alert_for: str
    missing_feature_share_threshold: float
    missing_feature_alert_for: str
    variant_fallback_factor: float
    variant_latency_p99_factor: float
    variant_latency_floor_seconds: float
    variant_alert_for: str
    runbook_base_url: str
    dashboard_uid_prefix: str
    dashboard_tag: str
    grafana_dashboards_path: str

    @property
    def error_budget(self) -> float:
        """Allowed share of fallback requests, ``1 - availability_slo``."""
        return round(1.0 - self.availability_slo, 10)

    def validate(self) -> None:
        """Check ranges and formats.

        Raises:
            MixinConfigError: On the first invalid value.
        """
        for name in ("availability_slo", "cache_hit_ratio_collapse_factor",
                     "truncation_ratio_threshold", "drift_share_threshold",
                     "policy_block_share_threshold", "policy_block_spike_min_share",
                     "missing_feature_share_threshold"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise MixinConfigError(f"{name} must be in (0, 1), got {value}")
        if self.latency_p99_slo_seconds <= 0 or self.variant_latency_floor_seconds <= 0:
            raise MixinConfigError(
                "latency_p99_slo_seconds and variant_latency_floor_seconds must be > 0")
        for name in ("policy_block_spike_factor", "variant_fallback_factor",
                     "variant_latency_p99_factor"):
            if getattr(self, name) <= 1:
                raise MixinConfigError(f"{name} must be > 1, got {getattr(self, name)}")
        for name in ("slo_window", "latency_alert_for", "drift_interval",
                     "policy_block_alert_for", "missing_feature_alert_for",
                     "variant_alert_for"):
            duration_seconds(getattr(self, name))
        for burn in self.burn_rate_alerts:
            if duration_seconds(burn.long_window) > duration_seconds(self.slo_window):
                raise MixinConfigError(f"burn-rate window {burn.long_window} is longer than "
                                       f"slo_window {self.slo_window}")
        if self.runbook_base_url.endswith("/"):
            raise MixinConfigError("runbook_base_url must not end with '/'")

    @property
    def fallback_ratio_windows(self) -> tuple[str, ...]:
        """Every window a fallback share is recorded for: the burn-rate windows plus
        those the dashboards chart (5m, 1h, 6h), shortest first."""
        windows = {"5m", "1h", "6h"}
        for burn in self.burn_rate_alerts:
            windows |= {burn.long_window, burn.short_window}
        return tuple(sorted(windows, key=duration_seconds))


def load_config(path: str | Path | None = None) -> MixinConfig:
    """Read and validate a mixin configuration file.

    Args:
        path: A YAML file with every field of :class:`MixinConfig`. Defaults to
            the shipped ``config.yaml``.

    Raises:
        MixinConfigError: When the file is unreadable, a key is missing, empty or
            unknown, or a value is out of range.

    Example::

        config = load_config()
        config.error_budget  # 0.005
    """
    source = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MixinConfigError(f"cannot read mixin config {source}: {exc}") from exc
    if not isinstance(raw, dict):
        raise MixinConfigError(f"{source}: expected a mapping of settings")
    return config_from_mapping(raw, source=str(source))


def config_from_mapping(raw: dict, *, source: str = "<mapping>") -> MixinConfig:
    """Build a validated :class:`MixinConfig` from a mapping of settings.

    Args:
        raw: Setting name to value.
        source: Named in error messages.

    Raises:
        MixinConfigError: As for :func:`load_config`.
    """
    fields = {f.name: f for f in dataclasses.fields(MixinConfig)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise MixinConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    missing = sorted(name for name in fields if raw.get(name) in (None, ""))
    if missing:
        raise MixinConfigError(
            f"{source}: required setting(s) without a value: {', '.join(missing)}")
    values = {"burn_rate_alerts": _burn_rates(raw["burn_rate_alerts"], source)}
    for name, field in fields.items():
        if name in values:
            continue
        kind = float if field.type == "float" else str
        try:
            values[name] = kind(raw[name])
        except (TypeError, ValueError) as exc:
            raise MixinConfigError(f"{source}: {name}: {exc}") from exc
    config = MixinConfig(**values)
    config.validate()
    return config
