"""The event log under a full disk, an unwritable directory and a wedged writer.

Promises checked: no exception reaches the app, ``emit`` never blocks, and the books
balance exactly: ``written + dropped == emitted``, with ``dropped`` equal to the
events that really did not reach storage.

"Never blocks", measured over 10,000 calls in two clocks: the wall time per emit has
a p99 under 50 µs plus the scheduling allowance measured around the run
(tests/timing.py), and the calling thread's CPU time per emit has a p95 under
200 µs (our own code's cost: waiting for a core or the interpreter lock is not CPU
time, but a shared core still slows the code itself: the p95 was 25-33 µs on the
loaded development machine and 64 µs on a CI runner, 2026-12-02, so the test bound is
four times the idle budget and the 50 µs figure itself is the benchmark's). An emit that waited
for the writer would wait for a wedged writer forever, and for a failing disk pay a
syscall and an exception per call. The tight figure (wall p99 < 50 µs on an idle
machine) is recorded and checked by ``benchmarks/reliability.py``.

* ``/dev/full`` is the kernel's always-full device: every write fails with ENOSPC.
  ``JsonlSink`` names its own files, so the one hook used is pointing its next
  file name at ``/dev/full`` (the open and the failing write are real).
* Unwritable directory: the tests run as root, which ignores permission bits, so
  ``chmod`` cannot produce a failure. A path whose parent is a regular file fails
  for every user (``mkdir`` gets EEXIST/ENOTDIR), so the directory is
  ``<tmp>/not-a-dir/events`` with ``not-a-dir`` a regular file.
* Blocked writer: a sink whose ``write`` waits on an Event (fault injection: a
  hung NFS mount cannot be produced on demand).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import counter_value
from timing import SchedulingAllowance, quantile

from rerank_plugins import Reranker, Status
from rerank_plugins.scoring.base import ScoreOutput
from rerank_plugins.telemetry import contract as c
from rerank_plugins.telemetry.sinks import EventLog, JsonlSink

EMITS = 10_000
EMIT_P99_BUDGET_US = 50.0
#: the CPU-time bound under load: catches emit doing the writer's work (serialising
#: and writing a batch costs milliseconds) while a slow shared core passes (docstring)
EMIT_CPU_P95_BOUND_US = 4 * EMIT_P99_BUDGET_US


def event(n: int) -> dict:
    return {"schema_version": 1, "event_id": f"e{n}", "n_candidates": n % 50,
            "score_top1": 0.5, "status": "ok"}


class Durations(list):
    """Wall-clock durations in µs (the list) and the thread CPU time of each (``cpu``)."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: list[float] = []


def emit_all(log: EventLog, count: int = EMITS) -> Durations:
    """Emit ``count`` events; returns each call's duration in microseconds."""
    durations = Durations()
    for n in range(count):
        cpu_started = time.thread_time_ns()
        started = time.perf_counter_ns()
        log.emit(event(n))
        durations.append((time.perf_counter_ns() - started) / 1000)
        durations.cpu.append((time.thread_time_ns() - cpu_started) / 1000)
    return durations


def assert_emit_never_blocks(durations: Durations, allowance: SchedulingAllowance,
                             record_property, name: str) -> None:
    record_property(f"{name}_emit_p99_us", round(p99(durations), 2))
    record_property(f"{name}_emit_cpu_p99_us", round(p99(durations.cpu), 2))
    wall_bound_us = EMIT_P99_BUDGET_US + 1000 * allowance.record(record_property, name)
    cpu_p95 = quantile(durations.cpu, 0.95)
    record_property(f"{name}_emit_cpu_p95_us", round(cpu_p95, 2))
    assert cpu_p95 < EMIT_CPU_P95_BOUND_US, f"cpu p95 {cpu_p95:.1f} µs"
    assert p99(durations) < wall_bound_us, f"wall p99 {p99(durations):.1f} > {wall_bound_us}"


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * len(ordered)) - 1]


def dropped_metric(reason: str) -> float:
    return counter_value(c.EVENTS_DROPPED.name, reason=reason)


def dev_full_sink(tmp_path: Path) -> JsonlSink:
    sink = JsonlSink(tmp_path)
    sink._new_path = lambda: Path("/dev/full")  # the one hook: next file is /dev/full
    return sink


def test_dev_full_drops_exactly_everything_and_emit_stays_fast(tmp_path, record_property):
    disk_full_before = dropped_metric("disk_full")
    log = EventLog(dev_full_sink(tmp_path), batch_size=64)
    allowance = SchedulingAllowance()
    durations = emit_all(log)
    assert log.flush(30)
    log.close()
    assert log.emitted == EMITS
    assert log.written == 0
    assert log.dropped == EMITS
    assert log.written + log.dropped == log.emitted
    assert dropped_metric("disk_full") - disk_full_before == EMITS
    assert_emit_never_blocks(durations, allowance, record_property, "dev_full")


def test_unwritable_directory_drops_exactly_everything(tmp_path, record_property):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the log directory should be\n")
    target = blocker / "events"
    with pytest.raises(OSError):  # proof that the location really fails, even for root
        target.mkdir(parents=True, exist_ok=True)
    log = EventLog(JsonlSink(target), batch_size=64)
    allowance = SchedulingAllowance()
    durations = emit_all(log)
    assert log.flush(30)
    log.close()
    assert (log.emitted, log.written, log.dropped) == (EMITS, 0, EMITS)
    assert_emit_never_blocks(durations, allowance, record_property, "unwritable_dir")


class BlockedSink:
    """Stores what it is given, but each write first waits for ``release``.

    Fault injection: stands in for a writer stuck on a hung network filesystem.
    """

    backend = "blocked"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.stored: list[dict] = []

    def write(self, events: list[dict]) -> int:
        self.entered.set()
        self.release.wait()
        self.stored.extend(events)
        return len(events)


def blocked_writer_round() -> Durations:
    """One run against a wedged writer; checks the books, returns the emit durations."""
    sink = BlockedSink()
    log = EventLog(sink, queue_size=500, batch_size=64)
    log.emit(event(-1))
    assert sink.entered.wait(5)  # the writer thread is now stuck inside write()
    durations = emit_all(log)
    queued_while_blocked = log.pending
    sink.release.set()
    assert log.flush(30)
    log.close()
    emitted = EMITS + 1
    lost = emitted - len(sink.stored)
    assert log.emitted == emitted
    assert log.dropped == lost  # exactly what never reached the sink
    assert log.written == len(sink.stored)
    assert log.written + log.dropped == log.emitted
    assert queued_while_blocked <= 500 and lost >= EMITS - 500
    assert len({e["event_id"] for e in sink.stored}) == len(sink.stored)  # no duplicates
    return durations


def test_blocked_writer_never_blocks_emit_and_counts_exactly(record_property):
    # Most of these emits are drops, and a drop pays for one OpenTelemetry counter
    # add (~10 µs). The writer is stuck for the whole round: an emit that waited for
    # it would never return.
    allowance = SchedulingAllowance()
    durations = blocked_writer_round()
    assert_emit_never_blocks(durations, allowance, record_property, "blocked_writer")


class FlakySink:
    """Fails every third batch with ENOSPC; stores the others (fault injection)."""

    backend = "flaky"

    def __init__(self) -> None:
        self.calls = 0
        self.stored: list[dict] = []

    def write(self, events: list[dict]) -> int:
        self.calls += 1
        if self.calls % 3 == 0:
            raise OSError(28, "No space left on device")
        self.stored.extend(events)
        return len(events)


def test_intermittent_failures_are_counted_to_the_event():
    sink = FlakySink()
    log = EventLog(sink, queue_size=EMITS, batch_size=16)
    for n in range(EMITS):
        log.emit(event(n))
        if n % 100 == 0:
            time.sleep(0.001)  # let the writer take several batches
    assert log.flush(30)
    log.close()
    assert sink.calls >= 3
    assert log.written == len(sink.stored)
    assert log.dropped == EMITS - len(sink.stored)


class ConstantScorer:
    """Cheap scorer: the model is not under test here."""

    model_id = "constant"
    revision = "1"
    cache_namespace = "constant"
    activation = "identity"

    def describe(self) -> dict[str, str]:
        return {"model": self.model_id, "revision": self.revision}

    def score_many(self, requests):
        return [ScoreOutput([0.5] * len(r.texts)) for r in requests]


@pytest.mark.parametrize("fault", ["dev_full", "unwritable", "blocked"])
def test_reranker_requests_succeed_whatever_the_sink_does(tmp_path, fault):
    blocked = None
    if fault == "dev_full":
        sink = dev_full_sink(tmp_path)
    elif fault == "unwritable":
        (tmp_path / "file").write_text("x")
        sink = JsonlSink(tmp_path / "file" / "events")
    else:
        sink = blocked = BlockedSink()
    log = EventLog(sink, queue_size=50)
    reranker = Reranker(ConstantScorer(), cache=None, event_log=log, timeout_s=5)
    results = [reranker.rerank(f"query {n}", ["a", "b", "c"]) for n in range(300)]
    assert all(r.status is Status.OK and len(r) == 3 for r in results)
    if blocked is not None:
        blocked.release.set()
    assert log.flush(30)
    stored = len(blocked.stored) if blocked is not None else 0
    assert log.emitted == 300
    assert log.written == stored
    assert log.dropped == 300 - stored
    reranker.close()
    log.close()
