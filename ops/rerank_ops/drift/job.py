"""One drift run from inputs to verdict: read both sides, check them, compare."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .logs import Window, check_usable, day_windows, expand, read_samples
from .report import DriftResult, run_report
from .schema import DEFAULT_MAX_ROWS, DEFAULT_MIN_ROWS, DriftConfig


@dataclass(frozen=True)
class DriftInputs:
    """Where the two sides come from: explicit paths, or windows over ``log_dir``."""

    reference: Sequence[Path] = ()
    current: Sequence[Path] = ()
    log_dir: Path | None = None
    reference_days: float = 7.0
    current_days: float = 1.0
    until: float | None = None


def run_drift(inputs: DriftInputs, config: DriftConfig, *, min_rows: int = DEFAULT_MIN_ROWS,
              max_rows: int = DEFAULT_MAX_ROWS, seed: int = 13,
              progress: bool | None = None) -> tuple[DriftResult, object]:
    """Compare the current events against the reference events.

    Returns:
        ``(DriftResult, evidently snapshot or None)``.

    Raises:
        DriftInputError: missing or empty logs, schema mismatch, too few valid rows.
    """
    started = time.perf_counter()
    labels = ("reference", "current")
    windows_text: dict[str, str] = {}
    if inputs.log_dir is not None:
        until = inputs.until if inputs.until is not None else time.time()
        windows: list[Window | None] = list(
            day_windows(inputs.reference_days, inputs.current_days, until))
        files = expand([inputs.log_dir], "event")
        samples = read_samples(files, windows, config=config, max_rows=max_rows, seed=seed,
                               labels=labels, progress=progress)
        windows_text = {label: w.describe() for label, w in zip(labels, windows, strict=True)}
    else:
        samples = [
            read_samples(expand(paths, label), [None], config=config, max_rows=max_rows,
                         seed=seed, labels=[label], progress=progress)[0]
            for paths, label in ((inputs.reference, "reference"), (inputs.current, "current"))
        ]
    for sample in samples:
        check_usable(sample, min_rows=min_rows)
    result, snapshot = run_report(samples[0], samples[1], config)
    result.windows = windows_text
    result.duration_s = time.perf_counter() - started
    result.finished_at = time.time()
    return result, snapshot
