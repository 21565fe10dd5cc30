"""Event-log sinks and the bounded, non-blocking writer in front of them.

``EventLog.emit`` never blocks and never raises: it puts the event on a bounded
queue (or drops and counts it when full). One background thread writes batches to
the sink; when the sink fails (disk full, permission denied, directory removed)
the batch is dropped and counted, and the request path is unaffected.
``EventLog.dropped`` is exact: every event handed to ``emit`` is either written
(``written``), dropped, or still queued.
"""

from __future__ import annotations

import json
import os
import queue
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigurationError
from . import instruments
from .events import FIELDS


def _stamp() -> str:
    return datetime.now(tz=timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


class JsonlSink:
    """Appends events to ``events-<utc>-<pid>.jsonl`` files, rotated by size and age.

    Args:
        directory: Where files go (created on first write).
        max_bytes: Rotate when the current file reaches this size. Defaults to 64 MiB.
        max_age_s: Rotate when the current file is older than this. Defaults to 1 hour.
    """

    backend = "jsonl"

    def __init__(self, directory: str | os.PathLike, *, max_bytes: int = 64 << 20,
                 max_age_s: float = 3600.0) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._fh = None
        self._opened_at = 0.0
        self.path: Path | None = None

    def _rotate_if_needed(self) -> None:
        if self._fh is not None:
            too_big = self._fh.tell() >= self.max_bytes
            too_old = time.monotonic() - self._opened_at >= self.max_age_s
            still_there = self.path is not None and self.path.exists()
            if not (too_big or too_old or not still_there):
                return
            self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"events-{_stamp()}-{os.getpid()}.jsonl"
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        self._opened_at = time.monotonic()

    def write(self, events: list[dict]) -> None:
        self._rotate_if_needed()
        payload = "".join(
            json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events)
        try:
            self._fh.write(payload)
            self._fh.flush()
        except OSError:
            # a partial line would corrupt the log for readers: start a new file next time
            self.close()
            raise

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None


class ParquetSink:
    """Writes each batch of events as one Parquet part file (schema from ``FIELDS``)."""

    backend = "parquet"

    def __init__(self, directory: str | os.PathLike, *, min_rows: int = 1000,
                 max_wait_s: float = 60.0) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "ParquetSink needs pyarrow: pip install 'rerank-plugins[ops]'") from exc
        self.directory = Path(directory)
        self.min_rows = min_rows
        self.max_wait_s = max_wait_s
        self._buffer: list[dict] = []
        self._first = 0.0

    def _schema(self):
        import pyarrow as pa

        types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
        return pa.schema([(name, types[kind]) for name, kind in FIELDS.items()])

    def write(self, events: list[dict]) -> None:
        if not self._buffer:
            self._first = time.monotonic()
        self._buffer.extend(events)
        if len(self._buffer) >= self.min_rows or time.monotonic() - self._first >= self.max_wait_s:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self._buffer = self._buffer, []
        table = pa.Table.from_pylist(
            [{k: row.get(k) for k in FIELDS} for row in rows], schema=self._schema())
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"events-{_stamp()}-{os.getpid()}.parquet"
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, target)  # readers never see a half-written file

    def close(self) -> None:
        self.flush()


class EventLog:
    """Bounded queue + writer thread in front of a sink.

    Args:
        sink: A :class:`JsonlSink`, :class:`ParquetSink` or a directory path (JSONL).
        queue_size: Events buffered before new ones are dropped. Defaults to 10,000.
        sample_rate: Share of requests logged (0..1]. Defaults to 1.0.
        batch_size: Events per sink write. Defaults to 256.
        include_text: Log raw query text (operator opt-in; see README privacy notes).
    """

    def __init__(self, sink, *, queue_size: int = 10_000, sample_rate: float = 1.0,
                 batch_size: int = 256, include_text: bool = False,
                 seed: int | None = None) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ConfigurationError("sample_rate must be in (0, 1]")
        if isinstance(sink, (str, os.PathLike)):
            sink = JsonlSink(sink)
        self.sink = sink
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self.include_text = include_text
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._capacity = queue_size
        self._pending = 0
        self._count_lock = threading.Lock()
        self._rng = random.Random(seed)
        self.written = 0
        self.dropped = 0
        self.sampled_out = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="rerank-event-log", daemon=True)
        self._thread.start()

    def should_sample(self) -> bool:
        if self.sample_rate >= 1.0:
            return True
        keep = self._rng.random() < self.sample_rate
        if not keep:
            self.sampled_out += 1
        return keep

    def emit(self, event: dict) -> bool:
        """Queue one event; never blocks or raises. Returns False when dropped."""
        with self._count_lock:
            if self._closed or self._pending >= self._capacity:
                self.dropped += 1
                full = True
            else:
                self._pending += 1
                full = False
        if full:
            instruments.event_dropped(self.sink.backend, "queue_full")
            return False
        self._queue.put(event)
        return True

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                break
            batch = [event]
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            self._write(batch)
        self._close_sink()

    def _write(self, batch: list[dict]) -> None:
        try:
            self.sink.write(batch)
            with self._count_lock:
                self.written += len(batch)
                self._pending -= len(batch)
            instruments.add(_written_spec(), len(batch), backend=self.sink.backend)
        except Exception as exc:  # noqa: BLE001 - a failing sink must never reach the app
            with self._count_lock:
                self.dropped += len(batch)
                self._pending -= len(batch)
            instruments.event_dropped(self.sink.backend, type(exc).__name__, len(batch))

    def _close_sink(self) -> None:
        try:
            self.sink.close()
        except Exception as exc:  # noqa: BLE001
            lost = len(getattr(self.sink, "_buffer", []) or [])
            with self._count_lock:
                self.dropped += lost
                self.written -= lost
            instruments.event_dropped(self.sink.backend, type(exc).__name__, lost)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event is written or dropped."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._count_lock:
                if self._pending == 0:
                    return True
            time.sleep(0.002)
        return False

    def close(self, timeout_s: float = 10.0) -> None:
        with self._count_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout_s)


def _written_spec():
    from .contract import EVENTS_WRITTEN

    return EVENTS_WRITTEN
