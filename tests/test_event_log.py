"""The feature/score event log: schema, rotation, sampling, and exact accounting when
the sink fails (disk full, permission denied, directory removed, torn writes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import counter_value

from rerank_plugins import Reranker
from rerank_plugins.telemetry import contract as c
from rerank_plugins.telemetry.events import FIELDS, SCHEMA_VERSION, build_event, read_events
from rerank_plugins.telemetry.sinks import EventLog, JsonlSink, ParquetSink
from rerank_plugins.types import Candidate, RankedItem, RerankResult, StageTimings, Status

DROPPED = c.EVENTS_DROPPED.name
WRITTEN = c.EVENTS_WRITTEN.name
DOCS = [
    "Airfoils turn the oncoming air downwards, and the reaction lifts the wing.",
    "Cats sleep for most of the day and hunt at dusk.",
    "Bernoulli's principle relates pressure and speed along a streamline.",
]


def make_event(index: int = 0) -> dict:
    """A real schema-v1 event built from a real RerankResult (no model needed)."""
    candidates = [Candidate(str(i), text, retrieval_score=1.0 - i / 10)
                  for i, text in enumerate(DOCS)]
    items = tuple(RankedItem(cand, 0.9 - i / 10, 0.9 - i / 10, 2.0 - i, i)
                  for i, cand in enumerate(candidates))
    result = RerankResult(items=items, status=Status.OK,
                          timings=StageTimings(0.001, 0.002, 0.02, 0.001, 0.024),
                          cache_misses=3, model_id="m", request_id=f"req-{index}")
    return build_event(query="how do wings lift", query_fp="f" * 64, texts=DOCS,
                       retrieval_scores=[x.retrieval_score for x in candidates],
                       model_scores=[0.9, 0.8, 0.7], result=result, model_revision="r1",
                       kept_after_threshold=3)


def jsonl_lines(directory: Path) -> list[str]:
    lines = []
    for file in sorted(directory.glob("*.jsonl")):
        data = file.read_bytes()
        assert not data or data.endswith(b"\n"), f"{file.name} ends in a torn line"
        lines.extend(data.decode("utf-8").splitlines())
    return lines


def dropped_metric(backend: str, reason: str) -> float:
    return counter_value(DROPPED, backend=backend, reason=reason)


class DevFullSink(JsonlSink):
    """Writes to /dev/full: a real device whose every write fails with ENOSPC.

    Only the file name is overridden (the sink names its own files); the writes,
    the error and the recovery are all real.
    """

    def _new_path(self) -> Path:
        return Path("/dev/full")


# -- schema and files ---------------------------------------------------------------
def test_each_event_is_one_complete_schema_line(tmp_path):
    log = EventLog(JsonlSink(tmp_path), batch_size=7)
    for index in range(50):
        assert log.emit(make_event(index))
    assert log.flush()
    log.close()
    lines = jsonl_lines(tmp_path)
    assert len(lines) == 50 == log.written
    records = [json.loads(line) for line in lines]
    assert all(set(record) == set(FIELDS) for record in records)
    assert {r["schema_version"] for r in records} == {SCHEMA_VERSION}
    assert [r["event_id"] for r in records] == [f"req-{i}" for i in range(50)]
    assert records[0]["score_gap12"] == pytest.approx(0.1)
    assert records[0]["query_text"] is None  # no raw text unless the operator opts in
    assert list(read_events(tmp_path)) == records


def test_non_finite_numbers_are_written_as_null(tmp_path):
    log = EventLog(JsonlSink(tmp_path))
    event = make_event()
    event["score_top1"] = float("nan")
    event["score_gap12"] = float("inf")
    log.emit(event)
    log.close()
    [record] = read_events(tmp_path)
    assert record["score_top1"] is None and record["score_gap12"] is None


def test_files_rotate_by_size(tmp_path):
    line_bytes = len(json.dumps(make_event(), separators=(",", ":")).encode()) + 1
    sink = JsonlSink(tmp_path, max_bytes=line_bytes * 4)
    log = EventLog(sink, batch_size=1)
    for index in range(20):
        log.emit(make_event(index))
    log.close()
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) >= 5
    assert all(f.stat().st_size <= line_bytes * 5 for f in files)
    assert len(jsonl_lines(tmp_path)) == 20


def test_files_rotate_by_age(tmp_path):
    now = [1000.0]
    sink = JsonlSink(tmp_path, max_age_s=60.0, clock=lambda: now[0])
    log = EventLog(sink)
    log.emit(make_event(0))
    assert log.flush()
    now[0] += 59.0
    log.emit(make_event(1))
    assert log.flush()
    assert len(list(tmp_path.glob("*.jsonl"))) == 1
    now[0] += 2.0
    log.emit(make_event(2))
    log.close()
    assert len(list(tmp_path.glob("*.jsonl"))) == 2
    assert len(jsonl_lines(tmp_path)) == 3


def test_max_files_keeps_the_newest(tmp_path):
    sink = JsonlSink(tmp_path, max_bytes=1, max_files=3)
    log = EventLog(sink, batch_size=1)
    for index in range(8):
        log.emit(make_event(index))
        assert log.flush()
    log.close()
    ids = [json.loads(line)["event_id"] for line in jsonl_lines(tmp_path)]
    assert ids == ["req-5", "req-6", "req-7"]


# -- the queue ----------------------------------------------------------------------
class HungSink:
    """Stands in for a disk that stops answering (no real part hangs on demand)."""

    backend = "hung"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.events: list[dict] = []

    def write(self, events):
        self.entered.set()
        self.release.wait(30)
        self.events.extend(events)
        return len(events)


def test_full_queue_drops_without_blocking_and_counts_exactly():
    sink = HungSink()
    log = EventLog(sink, queue_size=10)
    before = dropped_metric("hung", "queue_full")
    log.emit(make_event(0))
    assert sink.entered.wait(5)  # the writer holds event 0; the queue is empty
    started = time.perf_counter()
    accepted = [log.emit(make_event(i)) for i in range(1, 21)]
    elapsed = time.perf_counter() - started
    assert accepted == [True] * 9 + [False] * 11  # 1 in the sink + 9 queued = 10
    assert elapsed < 0.5  # never waits for the sink
    assert log.dropped == 11
    assert dropped_metric("hung", "queue_full") - before == 11
    sink.release.set()
    assert log.flush()
    log.close()
    assert log.written == 10 == len(sink.events)
    assert log.emitted == log.written + log.dropped


def test_events_after_close_are_counted_as_dropped(tmp_path):
    log = EventLog(JsonlSink(tmp_path))
    log.emit(make_event(0))
    log.close()
    before = dropped_metric("jsonl", "closed")
    assert log.emit(make_event(1)) is False
    assert (log.written, log.dropped) == (1, 1)
    assert dropped_metric("jsonl", "closed") - before == 1


def test_sampling_keeps_the_configured_share(tmp_path):
    log = EventLog(JsonlSink(tmp_path), sample_rate=0.25, seed=7)
    kept = sum(log.should_sample() for _ in range(4000))
    log.close()
    assert 900 <= kept <= 1100
    assert log.sampled_out == 4000 - kept


# -- sink failures --------------------------------------------------------------------
def test_disk_full_drops_every_event_and_counts_it():
    log = EventLog(DevFullSink("/tmp"), batch_size=4)
    before = dropped_metric("jsonl", "disk_full")
    for index in range(30):
        assert log.emit(make_event(index))
    assert log.flush()
    log.close()
    assert (log.written, log.dropped) == (0, 30)
    assert dropped_metric("jsonl", "disk_full") - before == 30


def test_requests_succeed_while_the_log_disk_is_full(bi_scorer):
    log = EventLog(DevFullSink("/tmp"))
    reranker = Reranker(bi_scorer, cache=None, timeout_s=None, event_log=log)
    try:
        results = [reranker.rerank(f"how do wings lift {i}", DOCS) for i in range(5)]
    finally:
        assert log.flush()
        reranker.close()
    assert [r.status for r in results] == [Status.OK] * 5
    assert results[0].ids[0] == "0"
    assert (log.written, log.dropped) == (0, 5)


def _chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("sink_type", [JsonlSink, ParquetSink])
def test_permission_denied_drops_and_counts(tmp_path, sink_type):
    # Tests run as root, which ignores mode bits; the immutable attribute refuses even
    # root (EPERM), so it stands for "permission denied" on a real file system.
    target = tmp_path / "events"
    target.mkdir()
    if not _chattr("+i", target):
        pytest.skip("chattr +i is not available on this file system")
    try:
        sink = sink_type(target) if sink_type is JsonlSink else sink_type(target, rows_per_file=5)
        log = EventLog(sink, batch_size=5)
        before = dropped_metric(sink.backend, "permission_denied")
        for index in range(12):
            log.emit(make_event(index))
        assert log.flush()
        log.close()
    finally:
        _chattr("-i", target)
    assert (log.written, log.dropped) == (0, 12)
    assert dropped_metric(sink.backend, "permission_denied") - before == 12
    assert list(target.iterdir()) == []


def test_directory_removed_mid_run_is_recreated(tmp_path):
    target = tmp_path / "events"
    log = EventLog(JsonlSink(target))
    for index in range(10):
        log.emit(make_event(index))
    assert log.flush()
    shutil.rmtree(target)
    for index in range(10, 25):
        log.emit(make_event(index))
    assert log.flush()
    log.close()
    ids = [json.loads(line)["event_id"] for line in jsonl_lines(target)]
    assert ids == [f"req-{i}" for i in range(10, 25)]
    assert (log.written, log.dropped) == (25, 0)


def test_directory_replaced_by_a_file_drops_and_counts(tmp_path):
    target = tmp_path / "events"
    log = EventLog(JsonlSink(target))
    log.emit(make_event(0))
    assert log.flush()
    shutil.rmtree(target)
    target.write_text("not a directory")  # the sink cannot recreate its directory
    before = dropped_metric("jsonl", "directory_missing")
    for index in range(1, 8):
        log.emit(make_event(index))
    assert log.flush()
    log.close()
    assert (log.written, log.dropped) == (1, 7)
    assert dropped_metric("jsonl", "directory_missing") - before == 7


TORN_WRITER = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.path.insert(0, sys.argv[3])
    from test_event_log import make_event
    from rerank_plugins.telemetry.sinks import EventLog, JsonlSink
    log = EventLog(JsonlSink(Path(sys.argv[1])), batch_size=64)
    for index in range(120):
        log.emit(make_event(index))
        if index % 5 == 4:
            log.flush()
    log.close()
    print(json.dumps(log.stats()))
""")


def test_a_write_cut_short_by_the_file_size_limit_leaves_no_torn_line(tmp_path):
    # RLIMIT_FSIZE makes the kernel accept part of a write and then fail with EFBIG,
    # the same shape as a disk filling up mid-write.
    limit = 10_000
    proc = subprocess.run(
        [sys.executable, "-B", "-c", TORN_WRITER, str(tmp_path), str(limit),
         str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    lines = jsonl_lines(tmp_path)  # asserts every file ends in a newline
    records = [json.loads(line) for line in lines]
    assert stats["emitted"] == 120 and stats["pending"] == 0
    assert stats["dropped"] > 0  # the limit was really hit
    assert stats["written"] + stats["dropped"] == 120
    assert len(records) == stats["written"]
    assert all(f.stat().st_size <= limit for f in tmp_path.glob("*.jsonl"))


# -- parquet --------------------------------------------------------------------------
def test_parquet_counts_events_only_once_the_file_exists(tmp_path):
    import pyarrow.parquet as pq

    log = EventLog(ParquetSink(tmp_path, rows_per_file=10, max_wait_s=3600), batch_size=5)
    for index in range(5):
        log.emit(make_event(index))
    deadline = time.monotonic() + 5
    while log.sink.buffered < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert log.sink.buffered == 5
    assert (log.written, log.pending) == (0, 5)
    assert list(tmp_path.glob("*.parquet")) == []
    for index in range(5, 10):
        log.emit(make_event(index))
    deadline = time.monotonic() + 5
    while log.written < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert (log.written, log.pending) == (10, 0)
    [part] = tmp_path.glob("*.parquet")
    table = pq.read_table(part)
    assert table.schema == ParquetSink.schema()
    assert table.num_rows == 10
    log.emit(make_event(10))
    log.close()  # close writes the short tail
    assert log.written == 11
    assert [r["event_id"] for r in read_events(tmp_path)] == [f"req-{i}" for i in range(11)]


def test_parquet_write_failure_drops_everything_buffered(tmp_path):
    target = tmp_path / "events"
    target.write_text("a file where the directory should be")
    log = EventLog(ParquetSink(target, rows_per_file=4))
    before = dropped_metric("parquet", "directory_missing")
    for index in range(10):
        log.emit(make_event(index))
    assert log.flush()
    log.close()
    assert (log.written, log.dropped, log.pending) == (0, 10, 0)
    assert dropped_metric("parquet", "directory_missing") - before == 10
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_written_metric_matches_the_files(tmp_path):
    before = counter_value(WRITTEN, backend="jsonl")
    log = EventLog(JsonlSink(tmp_path))
    for index in range(33):
        log.emit(make_event(index))
    log.close()
    assert counter_value(WRITTEN, backend="jsonl") - before == 33 == len(jsonl_lines(tmp_path))


def test_reranker_samples_requests_into_the_log(bi_scorer, tmp_path):
    log = EventLog(JsonlSink(tmp_path), sample_rate=0.5, seed=3)
    reranker = Reranker(bi_scorer, timeout_s=None, event_log=log)
    try:
        for index in range(8):
            reranker.rerank(f"question number {index}", DOCS)
    finally:
        reranker.close()
    records = list(read_events(tmp_path))
    assert 0 < len(records) < 8  # seed 3 keeps some and skips some
    assert len(records) + log.sampled_out == 8
    assert all(r["model_id"] == bi_scorer.model_id and r["n_candidates"] == 3
               for r in records)


FORKED_WRITER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_event_log import make_event
    from rerank_plugins.telemetry.sinks import EventLog, JsonlSink
    log = EventLog(JsonlSink(Path(sys.argv[1])))
    log.emit(make_event(0))
    log.flush()
    pid = os.fork()
    if pid == 0:  # a pre-forked worker: its own writer thread, its own file
        for index in range(1, 4):
            log.emit(make_event(index))
        log.close()
        os._exit(0 if log.stats()["written"] == 3 else 1)
    _, status = os.waitpid(pid, 0)
    log.emit(make_event(9))
    log.close()
    print(json.dumps({"child": pid, "status": status, "parent": log.stats()}))
""")


def test_a_forked_worker_logs_with_its_own_writer(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-B", "-c", FORKED_WRITER, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == 0
    assert report["parent"]["written"] == 2
    by_pid: dict[int, list[str]] = {}
    for file in tmp_path.glob("*.jsonl"):
        pid = int(file.stem.split("-")[2])
        by_pid.setdefault(pid, []).extend(
            json.loads(line)["event_id"] for line in file.read_text().splitlines())
    assert by_pid.pop(report["child"]) == ["req-1", "req-2", "req-3"]
    assert list(by_pid.values()) == [["req-0", "req-9"]]
