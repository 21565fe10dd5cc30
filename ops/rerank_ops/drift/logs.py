"""Reading event logs for drift: which files, which rows, and how many were usable.

Inputs are files, directories of ``events-*.jsonl`` / ``events-*.parquet`` parts (the
library's :func:`~rerank_plugins.telemetry.events.event_files`), or time windows over
a log directory selected by each event's ``ts``. One pass over the files feeds every
window, so "reference = previous 7 days, current = last day" reads the directory once.

Large logs are sampled while streaming (reservoir sampling, seeded, so a rerun picks
the same rows): only the sampled lines are decoded, which keeps a million-event log
well inside a cron slot. Lines that are not valid schema-v1 events are skipped and
counted; events of another schema version are counted by version.

Only request records describe the traffic. Feedback records (``event="feedback"``,
written by ``Reranker.feedback``) and the non-served arm of a shadow-compare
(``served: false``: the same request scored by the other model) are skipped before
sampling and counted apart (``feedback``, ``shadow``), never as malformed.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rerank_plugins.telemetry.events import FEEDBACK_EVENT, SCHEMA_VERSION, event_files

from . import DriftInputError
from .schema import DriftConfig, OtherSchema, RowError, extract

DAY_S = 86_400.0
# A file last modified this long before a window starts cannot hold its events
# (events are written within moments of their ts).
_MTIME_SLACK_S = 3_600.0
_PROGRESS_EVERY = 1 << 16
# A line that may not be a served request record; only those are decoded to check.
_NOT_A_REQUEST = re.compile(rb'"(?:event|served)"\s*:\s*(?:"feedback"|false)')
FEEDBACK, SHADOW = "feedback", "shadow"


@dataclass(frozen=True)
class Window:
    """Events with ``since <= ts < until`` (unix seconds)."""

    since: float
    until: float

    def contains(self, ts: float) -> bool:
        return self.since <= ts < self.until

    def describe(self) -> str:
        def iso(t: float) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

        return f"{iso(self.since)} .. {iso(self.until)}"


def day_windows(reference_days: float, current_days: float, until: float) -> tuple[Window,
                                                                                   Window]:
    """(reference, current): the current window ends at ``until``, the reference one
    ends where the current one starts."""
    current = Window(until - current_days * DAY_S, until)
    reference = Window(current.since - reference_days * DAY_S, current.since)
    return reference, current


@dataclass
class LogStats:
    """What one side (reference or current) read, for the summary and the JSON report."""

    files: int = 0
    lines: int = 0  #: complete lines in the window (all lines without a window)
    decoded: int = 0  #: lines decoded: all of them, or the sample
    malformed: int = 0  #: decoded lines that were not valid schema-v1 events
    feedback: int = 0  #: feedback records skipped (not traffic)
    shadow: int = 0  #: non-served shadow-compare records skipped
    other_versions: Counter = field(default_factory=Counter)
    valid: int = 0
    malformed_examples: list[str] = field(default_factory=list)

    @property
    def sampled(self) -> bool:
        return self.decoded < self.lines

    def as_dict(self) -> dict:
        return {"files": self.files, "lines": self.lines, "decoded": self.decoded,
                "sampled": self.sampled, "malformed": self.malformed,
                "feedback": self.feedback, "shadow": self.shadow,
                "other_schema_versions": {str(k): v for k, v in self.other_versions.items()},
                "valid": self.valid, "malformed_examples": self.malformed_examples}


@dataclass
class EventSample:
    """The rows of one side as a DataFrame of the monitored columns."""

    frame: pd.DataFrame
    stats: LogStats
    label: str


class _Reservoir:
    """Seeded reservoir sample (Li's algorithm L: O(k log(n/k)) random draws)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size = size
        self.items: list = []
        self.seen = 0
        self._rng = rng
        self._w = 1.0
        self._next = size

    def _skip(self) -> None:
        self._w *= math.exp(math.log(self._rng.random() or 1e-300) / self.size)
        gap = math.floor(math.log(self._rng.random() or 1e-300) / math.log1p(-self._w))
        self._next += gap + 1

    def offer(self, item) -> None:
        index = self.seen
        self.seen += 1
        if index < self.size:
            self.items.append(item)
            if index == self.size - 1:
                self._next = self.size - 1
                self._skip()
        elif index == self._next:
            self.items[self._rng.randrange(self.size)] = item
            self._skip()


def _fast_ts(line: bytes) -> float | None:
    """The ``ts`` value of an encoded event without decoding the whole line."""
    start = line.find(b'"ts":')
    if start < 0:
        return None
    start += 5
    end = start
    for end in range(start, min(len(line), start + 40)):
        if line[end] in b",}":
            break
    try:
        return float(line[start:end])
    except ValueError:
        return None


def _skipped_kind(row) -> str | None:
    """``"feedback"`` or ``"shadow"`` for records that are not served requests, else None.

    ``row`` is a Parquet dict or a JSONL line (bytes); a line is decoded only when a
    cheap search says it may be one of those (a line that fails to decode is left to
    the sampler, which counts it as malformed)."""
    if isinstance(row, bytes):
        if _NOT_A_REQUEST.search(row) is None:
            return None
        try:
            row = json.loads(row)
        except ValueError:
            return None
        if not isinstance(row, dict):
            return None
    if row.get("event") == FEEDBACK_EVENT:
        return FEEDBACK
    if row.get("served") is False:
        return SHADOW
    return None


def expand(paths: Sequence[str | os.PathLike], label: str) -> list[Path]:
    """Event files under ``paths``; raises :class:`DriftInputError` when none exist."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DriftInputError(f"{label} log {path} does not exist")
        found = event_files(path)
        if path.is_dir() and not found:
            raise DriftInputError(
                f"{label} log directory {path} holds no events-*.jsonl or events-*.parquet "
                "files (point --log-dir at the Reranker's event_log directory)")
        files.extend(found)
    return files


def read_samples(files: Sequence[Path], windows: Sequence[Window | None], *,
                 config: DriftConfig, max_rows: int, seed: int, labels: Sequence[str],
                 progress: bool | None = None) -> list[EventSample]:
    """Read ``files`` once, routing each event to every window that contains it.

    Args:
        files: Event files (see :func:`expand`).
        windows: One entry per output sample; ``None`` takes every event.
        config: The monitored columns.
        max_rows: Per-window sample size; larger windows are sampled (seeded).
        seed: Sampling seed; the same logs and seed give the same rows.
        labels: Names for messages ("reference", "current").
        progress: tqdm bar on stderr; ``None`` shows it only on a terminal.
    """
    from tqdm import tqdm

    rng = random.Random(seed)
    reservoirs = [_Reservoir(max_rows, rng) for _ in windows]
    stats = [LogStats() for _ in windows]
    unplaced = 0
    earliest = min((w.since for w in windows if w is not None), default=None)
    chosen = []
    for file in files:
        try:
            if earliest is not None and file.stat().st_mtime < earliest - _MTIME_SLACK_S:
                continue
        except OSError:
            continue
        chosen.append(file)
    total_bytes = sum(_size(f) for f in chosen)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="reading event logs",
               disable=None if progress is None else not progress, leave=False)
    try:
        for file in chosen:
            hit = [False] * len(windows)
            if file.suffix == ".parquet":
                rows = _parquet_rows(file, config)
                bar.update(_size(file))
            else:
                rows = _jsonl_lines(file, bar)
            for row in rows:
                ts = None
                if earliest is not None:
                    ts = row.get("ts") if isinstance(row, dict) else _fast_ts(row)
                    if not isinstance(ts, (int, float)):
                        unplaced += 1
                        continue
                skipped = _skipped_kind(row)
                for index, window in enumerate(windows):
                    if window is None or window.contains(ts):
                        if skipped is None:
                            reservoirs[index].offer(row)
                            hit[index] = True
                        elif skipped == FEEDBACK:
                            stats[index].feedback += 1
                        else:
                            stats[index].shadow += 1
            for index, was_hit in enumerate(hit):
                stats[index].files += was_hit
    finally:
        bar.close()
    samples = []
    for reservoir, stat, label in zip(reservoirs, stats, labels, strict=True):
        stat.lines = reservoir.seen
        stat.malformed += unplaced
        samples.append(EventSample(_decode(reservoir.items, stat, config), stat, label))
    return samples


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _jsonl_lines(file: Path, bar):
    """Complete lines of ``file`` (a trailing line without newline is still being
    written and is left for the next run)."""
    try:
        fh = open(file, "rb")  # noqa: SIM115 - closed below, generator
    except OSError as exc:
        raise DriftInputError(f"cannot read {file}: {exc.strerror}") from exc
    with fh:
        pending = 0
        for count, line in enumerate(fh):
            pending += len(line)
            if count % _PROGRESS_EVERY == 0:
                bar.update(pending)
                pending = 0
            if not line.endswith(b"\n"):
                break
            if line.strip():
                yield line
        bar.update(pending)


def _parquet_rows(file: Path, config: DriftConfig):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for bad files
        raise DriftInputError(f"cannot read Parquet file {file}: {exc}") from exc
    wanted = [c for c in ("schema_version", "ts", "event", "served", *config.columns)
              if c in table.column_names]
    yield from table.select(wanted).to_pylist()


def _decode(items: list, stat: LogStats, config: DriftConfig) -> pd.DataFrame:
    numeric, categorical = config.numeric, config.categorical
    numbers: list[list[float]] = []
    labels: list[list[str]] = []
    for item in items:
        stat.decoded += 1
        try:
            row = json.loads(item) if isinstance(item, bytes) else item
            values, names = extract(row, numeric, categorical)
        except OtherSchema as other:
            stat.other_versions[other.version] += 1
            continue
        except (ValueError, RowError) as exc:  # JSONDecodeError and UnicodeDecodeError too
            stat.malformed += 1
            if len(stat.malformed_examples) < 3:
                stat.malformed_examples.append(str(exc)[:120])
            continue
        numbers.append(values)
        labels.append(names)
    stat.valid = len(numbers)
    frame = pd.DataFrame(np.asarray(numbers, dtype=np.float64).reshape(len(numbers),
                                                                       len(numeric)),
                         columns=list(numeric))
    for index, name in enumerate(categorical):
        frame[name] = pd.Series([row[index] for row in labels], dtype=object)
    return frame


def check_usable(sample: EventSample, *, min_rows: int) -> None:
    """Raise :class:`DriftInputError` when ``sample`` cannot support a verdict."""
    stat, label = sample.stats, sample.label
    if stat.lines == 0 and not stat.other_versions:
        raise DriftInputError(f"{label}: no events found (empty log or empty time window)")
    if stat.valid == 0 and stat.other_versions:
        versions = ", ".join(f"v{v} x{n}" for v, n in sorted(stat.other_versions.items(),
                                                              key=lambda kv: str(kv[0])))
        raise DriftInputError(
            f"{label}: schema version mismatch: the log holds events of schema {versions}, "
            f"this rerank-ops reads schema v{SCHEMA_VERSION}; run the rerank-ops release "
            "that matches the library writing the log")
    if stat.valid < min_rows:
        detail = f"{stat.malformed} malformed line(s) skipped" if stat.malformed else \
            "no malformed lines"
        raise DriftInputError(
            f"{label}: only {stat.valid} valid event(s) ({detail}); at least {min_rows} are "
            "needed to judge drift. Widen the window (--reference-days/--current-days), "
            "wait for more traffic, or lower --min-rows")
