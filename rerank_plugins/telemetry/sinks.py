"""Event-log sinks and the bounded, non-blocking writer in front of them.

``EventLog.emit`` never blocks and never raises: it puts the event on a bounded
queue, or drops and counts it when the queue is full. One background thread hands
batches to the sink. When the sink fails (disk full, permission denied, directory
removed) the events it held are dropped and counted, and the request path is not
affected.

Accounting is exact. Every event handed to ``emit`` ends up in exactly one of
``written`` (the sink confirmed it is in a file), ``dropped`` (lost, counted in
``rerank_event_log_dropped_total`` by reason) or ``pending`` (queued, or buffered
by a sink that writes in batches, such as :class:`ParquetSink`).

A sink is any object with ``backend: str`` and ``write(events) -> int | None``
returning how many events it has now persisted (its own earlier buffered events
included; ``None`` means "all of these"). Optional ``flush() -> int``,
``due() -> bool`` and ``close() -> int`` let a buffering sink persist on idle and
at shutdown. A sink that raises has lost everything it held.
"""

from __future__ import annotations

import atexit
import errno
import itertools
import json
import logging
import math
import os
import queue
import random
import stat
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigurationError
from . import contract as c
from . import instruments
from .events import FIELDS

logger = logging.getLogger(__name__)

_file_seq = itertools.count()

# Bounded label values for rerank_event_log_dropped{reason=...}
REASON_QUEUE_FULL = "queue_full"
REASON_CLOSED = "closed"
REASON_DISK_FULL = "disk_full"
REASON_FILE_TOO_LARGE = "file_too_large"
REASON_PERMISSION = "permission_denied"
REASON_MISSING_DIR = "directory_missing"
REASON_IO = "io_error"
REASON_SINK = "sink_error"

_ERRNO_REASONS = {
    errno.ENOSPC: REASON_DISK_FULL,
    errno.EDQUOT: REASON_DISK_FULL,
    errno.EFBIG: REASON_FILE_TOO_LARGE,
    errno.EACCES: REASON_PERMISSION,
    errno.EPERM: REASON_PERMISSION,
    errno.EROFS: REASON_PERMISSION,
    errno.ENOENT: REASON_MISSING_DIR,
    errno.ENOTDIR: REASON_MISSING_DIR,
    errno.EEXIST: REASON_MISSING_DIR,  # mkdir where a regular file now sits
}


def drop_reason(exc: BaseException) -> str:
    """The ``reason`` label for events lost to ``exc`` (a small, fixed set)."""
    if isinstance(exc, OSError):
        return _ERRNO_REASONS.get(exc.errno, REASON_IO)
    return REASON_SINK


def _stamp() -> str:
    return datetime.now(tz=timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf are not JSON; readers get null
    return value


def encode_jsonl(events: list[dict]) -> bytes:
    """One compact JSON object per line, UTF-8; never raises for odd values."""
    return b"".join(
        json.dumps({k: _finite(v) for k, v in e.items()}, ensure_ascii=False,
                   separators=(",", ":"), allow_nan=False, default=str).encode("utf-8")
        + b"\n"
        for e in events)


class JsonlSink:
    """Appends events to ``events-<utc>-<pid>-<n>.jsonl`` files, rotated by size and age.

    Each batch is appended with one ``write`` call on an ``O_APPEND`` descriptor.
    When a write fails part-way (disk full), the file is cut back to its length
    before the batch, so no file ever holds a torn line; if even that fails the
    file is renamed to ``*.jsonl.torn`` so readers skip it. A file whose directory
    was removed is noticed (link count 0) and a fresh file is opened.

    Args:
        directory: Where files go (created, with parents, on first write).
        max_bytes: Start a new file when the current one reaches this size.
            Defaults to 64 MiB.
        max_age_s: Start a new file when the current one is older than this.
            Defaults to 1 hour.
        max_files: Keep at most this many of this directory's event files, deleting
            the oldest when a new one starts. Defaults to ``None`` (keep all).
        fsync: ``fsync`` after every batch (survives power loss, costs a disk
            flush per batch). Defaults to False: "written" means handed to the OS.

    Example::

        log = EventLog(JsonlSink("/var/log/rerank", max_bytes=16 << 20))
    """

    backend = "jsonl"

    def __init__(self, directory: str | os.PathLike, *, max_bytes: int = 64 << 20,
                 max_age_s: float = 3600.0, max_files: int | None = None,
                 fsync: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 1 or max_age_s <= 0:
            raise ConfigurationError("max_bytes must be >= 1 and max_age_s > 0")
        if max_files is not None and max_files < 1:
            raise ConfigurationError("max_files must be >= 1 or None")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.max_files = max_files
        self.fsync = fsync
        self._clock = clock
        self._fd: int | None = None
        self._opened_at = 0.0
        self.path: Path | None = None

    def _new_path(self) -> Path:
        return self.directory / f"events-{_stamp()}-{os.getpid()}-{next(_file_seq)}.jsonl"

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._new_path()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.path = path
        self._opened_at = self._clock()
        if self.max_files is not None:
            self._prune()

    def _prune(self) -> None:
        def mtime(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:
                return 0.0

        files = sorted(self.directory.glob("events-*.jsonl"), key=mtime)
        for old in files[:-self.max_files]:
            if old != self.path:
                try:
                    old.unlink(missing_ok=True)
                except OSError:
                    logger.warning("could not delete old event file %s", old.name)

    def _current_size(self) -> int | None:
        """Size of the open file, or ``None`` when a new file is needed."""
        if self._fd is None:
            return None
        info = os.fstat(self._fd)
        if info.st_nlink == 0:  # deleted, or its directory was removed
            return None
        if info.st_size >= self.max_bytes or self._clock() - self._opened_at >= self.max_age_s:
            return None
        return info.st_size

    def write(self, events: list[dict]) -> int:
        """Append ``events``; returns how many were written (all, or it raises)."""
        if not events:
            return 0
        payload = encode_jsonl(events)
        for _attempt in range(2):
            start = self._current_size()
            if start is None:
                self.close()
                self._open()
                start = 0
            self._append(payload, start)
            if os.fstat(self._fd).st_nlink > 0:
                return len(events)
            # the directory vanished between the check and the write: the batch went
            # into an unlinked file, so write it again into a fresh one
            self.close()
        raise FileNotFoundError(errno.ENOENT, "event log directory keeps disappearing",
                                str(self.directory))

    def _append(self, payload: bytes, start: int) -> None:
        view = memoryview(payload)
        try:
            while view:
                written = os.write(self._fd, view)  # short writes happen at a size limit
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            self._discard_torn_tail(start)
            raise

    def _discard_torn_tail(self, start: int) -> None:
        fd, path = self._fd, self.path
        self._fd = None
        try:
            if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
                return  # e.g. a device: nothing was kept, nothing to cut
            try:
                os.ftruncate(fd, start)
            except OSError:
                if path is not None:
                    try:
                        path.rename(path.with_name(path.name + ".torn"))
                    except OSError:
                        logger.error("event log file %s may end in a torn line", path)
        except OSError:
            pass
        finally:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _forget_after_fork(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the child's copy; the parent keeps writing its file
        self._fd = None

    def close(self) -> int:
        """Close the current file (nothing is buffered here). Returns 0."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass
        return 0


class ParquetSink:
    """Buffers events and writes them as Parquet part files (schema from ``FIELDS``).

    A part file is written under a temporary name, fsynced and then renamed, so a
    reader never sees a half-written file, and events count as written only after
    the rename. When the write fails, the buffered events are lost (and counted).

    Args:
        directory: Where part files go (created, with parents, when needed).
        rows_per_file: Write a part once this many events are buffered.
            Defaults to 1000.
        max_wait_s: Write a part once the oldest buffered event is this old, even
            if smaller. Defaults to 60.
        compression: Parquet codec. Defaults to ``"zstd"``.
    """

    backend = "parquet"

    def __init__(self, directory: str | os.PathLike, *, rows_per_file: int = 1000,
                 max_wait_s: float = 60.0, compression: str = "zstd",
                 clock: Callable[[], float] = time.monotonic) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "ParquetSink needs pyarrow: pip install 'rerank-plugins[ops]'") from exc
        if rows_per_file < 1 or max_wait_s <= 0:
            raise ConfigurationError("rows_per_file must be >= 1 and max_wait_s > 0")
        self.directory = Path(directory)
        self.rows_per_file = rows_per_file
        self.max_wait_s = max_wait_s
        self.compression = compression
        self._clock = clock
        self._buffer: list[dict] = []
        self._first = 0.0

    @property
    def buffered(self) -> int:
        """Events held in memory, not yet in a file."""
        return len(self._buffer)

    @staticmethod
    def schema():
        """The Arrow schema of schema-version-1 events."""
        import pyarrow as pa

        types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(),
                 "bool": pa.bool_()}
        return pa.schema([(name, types[kind]) for name, kind in FIELDS.items()])

    def due(self) -> bool:
        """True when the buffer should be written now."""
        return bool(self._buffer) and (
            len(self._buffer) >= self.rows_per_file
            or self._clock() - self._first >= self.max_wait_s)

    def write(self, events: list[dict]) -> int:
        """Buffer ``events``; returns how many events this call put into files."""
        if not self._buffer:
            self._first = self._clock()
        self._buffer.extend(events)
        return self.flush() if self.due() else 0

    def flush(self) -> int:
        """Write every buffered event to a new part file; returns how many."""
        if not self._buffer:
            return 0
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self._buffer = self._buffer, []
        table = pa.Table.from_pylist(
            [{k: _finite(row.get(k)) for k in FIELDS} for row in rows], schema=self.schema())
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"events-{_stamp()}-{os.getpid()}-{next(_file_seq)}.parquet"
        tmp = target.with_name("." + target.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression=self.compression)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)  # readers never see a half-written file
        except BaseException:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise
        return len(rows)

    def _forget_after_fork(self) -> None:
        self._buffer = []  # the parent writes these

    def close(self) -> int:
        """Write what is buffered; returns how many events that was."""
        return self.flush()


_STOP = object()
_FLUSH = object()
_live_logs: weakref.WeakSet = weakref.WeakSet()


class EventLog:
    """Bounded queue + one writer thread in front of a sink.

    Args:
        sink: A :class:`JsonlSink`, :class:`ParquetSink`, any object following the
            sink protocol (module docstring), or a directory path (JSONL).
        queue_size: Events buffered before new ones are dropped. Defaults to 10,000.
        sample_rate: Share of requests logged, in (0, 1]. Defaults to 1.0.
        batch_size: Most events per sink write. Defaults to 256.
        include_text: Log the raw query text (operator opt-in; off by default).
        seed: Seed of the sampling generator (reproducible sampling in tests).
        idle_flush_s: How often an idle writer asks a buffering sink whether its
            buffer is due. Defaults to 1.0.

    Example::

        log = EventLog("/var/log/rerank-events", sample_rate=0.1)
        reranker = Reranker(event_log=log)
    """

    def __init__(self, sink, *, queue_size: int = 10_000, sample_rate: float = 1.0,
                 batch_size: int = 256, include_text: bool = False,
                 seed: int | None = None, idle_flush_s: float = 1.0) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ConfigurationError("sample_rate must be in (0, 1]")
        if queue_size < 0 or batch_size < 1 or idle_flush_s <= 0:
            raise ConfigurationError(
                "queue_size must be >= 0, batch_size >= 1 and idle_flush_s > 0")
        if isinstance(sink, (str, os.PathLike)):
            sink = JsonlSink(sink)
        if not callable(getattr(sink, "write", None)):
            raise ConfigurationError(f"{type(sink).__name__} has no write(events) method")
        self.sink = sink
        self.backend = str(getattr(sink, "backend", "custom"))
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self.include_text = include_text
        self.idle_flush_s = idle_flush_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._capacity = queue_size
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._pending = 0  # queued + held by the sink
        self._held = 0  # handed to the sink, not yet confirmed written
        self.emitted = 0
        self.written = 0
        self.dropped = 0
        self.sampled_out = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="rerank-event-log", daemon=True)
        self._thread.start()
        _live_logs.add(self)

    # -- request path ---------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Events neither written nor dropped yet (queued or buffered by the sink)."""
        return self._pending

    def should_sample(self) -> bool:
        """Decide whether this request is logged (counts the ones that are not)."""
        if self.sample_rate >= 1.0:
            return True
        keep = self._rng.random() < self.sample_rate
        if not keep:
            with self._lock:
                self.sampled_out += 1
        return keep

    def emit(self, event: dict) -> bool:
        """Queue one event; never blocks or raises. Returns False when it was dropped."""
        with self._lock:
            self.emitted += 1
            if self._closed:
                reason = REASON_CLOSED
            elif self._pending >= self._capacity:
                reason = REASON_QUEUE_FULL
            else:
                self._pending += 1
                reason = None
                # under the lock, so close() cannot slip its stop marker in before it
                self._queue.put(event)
            if reason is not None:
                self.dropped += 1
        if reason is not None:
            self._count_dropped(reason, 1)
            return False
        return True

    # -- writer thread --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle_flush_s)
            except queue.Empty:
                self._flush_if_due()
                continue
            if item is _STOP:
                break
            if item is _FLUSH:
                self._flush_sink("flush")
                continue
            batch, marker = [item], None
            while len(batch) < self.batch_size:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP or more is _FLUSH:
                    marker = more
                    break
                batch.append(more)
            self._write(batch)
            if marker is _STOP:
                break
            if marker is _FLUSH:
                self._flush_sink("flush")
            else:
                self._flush_if_due()
        self._flush_sink("close")

    def _write(self, batch: list[dict]) -> None:
        with self._lock:
            self._held += len(batch)
        try:
            confirmed = self.sink.write(batch)
        except Exception as exc:  # noqa: BLE001 - a failing sink must never reach the app
            self._lose_held(exc)
            return
        self._confirm(len(batch) if confirmed is None else int(confirmed))

    def _flush_if_due(self) -> None:
        due = getattr(self.sink, "due", None)
        try:
            is_due = bool(due()) if due is not None else False
        except Exception:  # noqa: BLE001
            is_due = False
        if is_due:
            self._flush_sink("flush")

    def _flush_sink(self, method: str) -> None:
        call = getattr(self.sink, method, None)
        try:
            confirmed = call() if call is not None else 0
        except Exception as exc:  # noqa: BLE001
            self._lose_held(exc)
            return
        self._confirm(int(confirmed or 0))
        if method == "close" and self._held:
            # a sink that closed without confirming what it held has lost it
            self._lose_held(RuntimeError("sink closed with events unconfirmed"))

    def _confirm(self, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            count = min(count, self._held)
            self._held -= count
            self._pending -= count
            self.written += count
        try:
            instruments.add(c.EVENTS_WRITTEN, count, **{c.L_BACKEND: self.backend})
        except Exception:  # noqa: BLE001 - a metrics bug must not stop the writer
            pass

    def _lose_held(self, exc: BaseException) -> None:
        with self._lock:
            lost, self._held = self._held, 0
            self._pending -= lost
            self.dropped += lost
        if lost:
            reason = drop_reason(exc)
            logger.warning("event log %s dropped %d events: %s (%s)", self.backend, lost,
                           reason, type(exc).__name__)
            self._count_dropped(reason, lost)

    def _count_dropped(self, reason: str, count: int) -> None:
        try:
            instruments.event_dropped(self.backend, reason, count)
        except Exception:  # noqa: BLE001 - metrics must never fail a request
            pass

    # -- control --------------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write out everything emitted so far (buffering sinks included).

        Returns True when nothing is pending any more, False on timeout.
        """
        if self._thread.is_alive():
            self._queue.put(_FLUSH)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._pending == 0:
                return True
            if not self._thread.is_alive():
                break
            time.sleep(0.002)
        return self._pending == 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (later events are dropped, counted)."""
        return self._closed

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting events, write what is queued and close the sink."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._pending = self._held = 0
        self.emitted = self.written = self.dropped = self.sampled_out = 0
        forget = getattr(self.sink, "_forget_after_fork", None)
        if forget is not None:
            forget()
        if not self._closed:
            self._thread = threading.Thread(
                target=self._run, name="rerank-event-log", daemon=True)
            self._thread.start()

    def stats(self) -> dict[str, int]:
        """Counters for health checks: emitted, written, dropped, pending, sampled_out."""
        with self._lock:
            return {"emitted": self.emitted, "written": self.written,
                    "dropped": self.dropped, "pending": self._pending,
                    "sampled_out": self.sampled_out}


def _restart_in_child() -> None:
    # A forked worker (gunicorn --preload, multiprocessing) inherits no writer thread
    # and a copy of the parent's queue: start clean, with its own files.
    for log in list(_live_logs):
        log._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_in_child)


@atexit.register
def _close_live_logs() -> None:
    # the writer is a daemon thread: without this, queued events die with the process
    for log in list(_live_logs):
        try:
            log.close(timeout_s=2.0)
        except Exception:  # noqa: BLE001
            pass
