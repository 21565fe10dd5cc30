"""The Evidently 0.7 drift report and the verdict drawn from it.

Evidently gets an explicit ``DataDefinition`` (numeric and categorical columns of the
event schema) and a ``DataDriftPreset`` whose ``per_column_method`` and
``per_column_threshold`` name a test for every column, so nothing is auto-selected.
The per-column verdict is Evidently's own ``ValueDrift`` test; the run reports drift
when the share of drifted columns reaches ``drift_share``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .logs import EventSample, LogStats
from .schema import DriftConfig

HTML_NAME = "drift-report.html"
EVIDENTLY_JSON_NAME = "drift-report.json"
SUMMARY_NAME = "drift-summary.json"


@dataclass
class FeatureResult:
    """One column's verdict."""

    feature: str
    kind: str  #: "numeric" or "categorical"
    method: str
    threshold: float
    score: float | None  #: Evidently's drift score (a distance or a p-value)
    drifted: bool
    note: str = ""


@dataclass
class DriftResult:
    """The outcome of one run, as printed, published and written to JSON."""

    features: list[FeatureResult]
    drift_share_threshold: float
    reference: LogStats
    current: LogStats
    windows: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    finished_at: float = 0.0

    @property
    def judged(self) -> list[FeatureResult]:
        return [f for f in self.features if f.score is not None or f.drifted]

    @property
    def drifted(self) -> list[FeatureResult]:
        return [f for f in self.features if f.drifted]

    @property
    def share(self) -> float:
        judged = self.judged
        return len(self.drifted) / len(judged) if judged else 0.0

    @property
    def detected(self) -> bool:
        return bool(self.judged) and self.share >= self.drift_share_threshold

    def as_dict(self) -> dict:
        return {
            "drift_detected": self.detected,
            "drift_share": self.share,
            "drift_share_threshold": self.drift_share_threshold,
            "drifted_features": [f.feature for f in self.drifted],
            "features": [asdict(f) for f in self.features],
            "reference": self.reference.as_dict(),
            "current": self.current.as_dict(),
            "windows": self.windows,
            "duration_seconds": self.duration_s,
            "finished_at": self.finished_at,
        }


def run_report(reference: EventSample, current: EventSample, config: DriftConfig):
    """Compare ``current`` against ``reference``.

    Returns:
        ``(DriftResult, snapshot)``; the snapshot is Evidently's (HTML/JSON), or
        ``None`` when no column had values on both sides.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    results: dict[str, FeatureResult] = {}
    numeric, categorical = [], []
    for column in config.columns:
        kind = "numeric" if column in config.numeric else "categorical"
        test = config.test_for(column)
        result = FeatureResult(column, kind, test.method, test.threshold, None, False)
        results[column] = result
        if kind == "categorical":
            categorical.append(column)
            continue
        ref_has = bool(reference.frame[column].notna().any())
        cur_has = bool(current.frame[column].notna().any())
        if ref_has and cur_has:
            numeric.append(column)
        elif ref_has or cur_has:
            # a feature that vanished (or appeared) is drift no distance can score
            result.drifted = True
            result.note = f"no values in {'current' if ref_has else 'reference'}"
        else:
            result.note = "no values on either side"
    columns = numeric + categorical
    snapshot = None
    if columns:
        definition = DataDefinition(numerical_columns=numeric,
                                    categorical_columns=categorical)
        preset = DataDriftPreset(
            columns=columns,
            drift_share=config.drift_share,
            per_column_method={c: config.test_for(c).method for c in columns},
            per_column_threshold={c: config.test_for(c).threshold for c in columns},
        )
        with warnings.catch_warnings():
            # Evidently's correlation widgets divide by zero on constant columns
            # (n_candidates is often constant); the drift scores are unaffected
            warnings.simplefilter("ignore", RuntimeWarning)
            snapshot = Report([preset], include_tests=True).run(
                Dataset.from_pandas(current.frame[columns], data_definition=definition),
                Dataset.from_pandas(reference.frame[columns], data_definition=definition))
        _read_snapshot(snapshot.dict(), results)
    return DriftResult(list(results.values()), config.drift_share, reference.stats,
                       current.stats), snapshot


def _read_snapshot(data: dict, results: dict[str, FeatureResult]) -> None:
    for metric in data.get("metrics", []):
        config = metric.get("config", {})
        column = config.get("column")
        if config.get("type", "").endswith("ValueDrift") and column in results:
            value = metric.get("value")
            score = float(value) if isinstance(value, (int, float)) else None
            results[column].score = score if score is None or math.isfinite(score) else None
    for test in data.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        column = params.get("column")
        if params.get("type", "").endswith("ValueDrift") and column in results:
            results[column].drifted = test.get("status") == "FAIL"


def write_reports(out_dir: str | Path, result: DriftResult, snapshot) -> list[Path]:
    """Write the HTML and JSON reports into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if snapshot is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            snapshot.save_html(str(out / HTML_NAME))
        snapshot.save_json(str(out / EVIDENTLY_JSON_NAME))
        written += [out / HTML_NAME, out / EVIDENTLY_JSON_NAME]
    summary = out / SUMMARY_NAME
    tmp = summary.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n",
                   encoding="utf-8")
    tmp.replace(summary)
    written.append(summary)
    return written


def summary_table(result: DriftResult) -> str:
    """The short table the command prints."""
    rows = [f"{'feature':<22} {'test':<18} {'score':>10}  verdict"]
    for f in result.features:
        score = "-" if f.score is None else f"{f.score:10.4f}"
        verdict = "DRIFT" if f.drifted else ("skipped" if f.score is None else "ok")
        note = f" ({f.note})" if f.note else ""
        rows.append(f"{f.feature:<22} {f.method + '@' + format(f.threshold, 'g'):<18} "
                    f"{score:>10}  {verdict}{note}")
    ref, cur = result.reference, result.current

    def side(name: str, stat: LogStats) -> str:
        sampled = f", sampled from {stat.lines}" if stat.sampled else ""
        other = sum(stat.other_versions.values())
        extra = f", {other} other-schema" if other else ""
        extra += f", {stat.feedback} feedback" if stat.feedback else ""
        extra += f", {stat.shadow} shadow" if stat.shadow else ""
        return (f"{name}: {stat.valid} events{sampled} ({stat.files} files, "
                f"{stat.malformed} malformed{extra})")

    rows.append(side("reference", ref))
    rows.append(side("current", cur))
    verdict = "DRIFT DETECTED" if result.detected else "no drift"
    rows.append(f"drifted {len(result.drifted)}/{len(result.judged)} features "
                f"(share {result.share:.2f}, threshold {result.drift_share_threshold:.2f}): "
                f"{verdict}")
    return "\n".join(rows)
