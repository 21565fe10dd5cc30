"""Deadlines, circuit breakers and the inference engine that enforces both.

Everything takes an injectable monotonic ``clock`` so tests can step time instead
of sleeping.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from .errors import CircuitOpenError, ConfigurationError, Overloaded

Clock = Callable[[], float]

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"


class Deadline:
    """A point in time after which a request stops waiting for the model."""

    __slots__ = ("_clock", "expires_at")

    def __init__(self, timeout_s: float | None, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.expires_at = None if timeout_s is None else clock() + timeout_s

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` for no deadline."""
        if self.expires_at is None:
            return None
        return max(0.0, self.expires_at - self._clock())


@dataclass
class _Permit:
    issued_at: float
    half_open: bool
    generation: int = 0
    done: bool = False


class CircuitBreaker:
    """Stops calling a failing dependency, then probes it after a cool-down.

    Opens after ``failure_threshold`` consecutive failures, or when the failure rate
    over the last ``window`` calls (at least ``min_calls``) reaches ``failure_rate``.
    While open it rejects without calling. After ``reset_timeout_s`` it is half-open
    and lets ``half_open_max_calls`` probes through; a probe success closes it, a
    probe failure re-opens it. A probe that never reports back returns its permit
    after ``probe_timeout_s``; its outcome, should it arrive later, is ignored.

    Every state change starts a new generation: an outcome reported on a permit
    issued in an earlier generation (a slow call that outlived an open/close cycle)
    is ignored, so stale news never flips the current state.

    Args:
        name: Shown in metrics (``breaker`` label).
        failure_threshold: Consecutive failures that open the circuit. Defaults to 5.
        failure_rate: Optional failure share that opens it. Defaults to ``None`` (off).
        window: Calls remembered for the failure rate. Defaults to 20.
        min_calls: Calls needed before the rate counts. Defaults to 10.
        reset_timeout_s: Open time before probing. Defaults to 30.
        half_open_max_calls: Concurrent probes while half-open. Defaults to 1.
        probe_timeout_s: When an unanswered probe's permit is reclaimed. Defaults to 60.
        clock: Monotonic clock. Defaults to ``time.monotonic``.
    """

    def __init__(
        self,
        name: str = "scorer",
        *,
        failure_threshold: int = 5,
        failure_rate: float | None = None,
        window: int = 20,
        min_calls: int = 10,
        reset_timeout_s: float = 30.0,
        half_open_max_calls: int = 1,
        probe_timeout_s: float = 60.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigurationError("failure_threshold must be >= 1")
        if failure_rate is not None and not 0.0 < failure_rate <= 1.0:
            raise ConfigurationError("failure_rate must be in (0, 1]")
        if reset_timeout_s < 0 or probe_timeout_s <= 0 or half_open_max_calls < 1:
            raise ConfigurationError(
                "reset_timeout_s >= 0, probe_timeout_s > 0, half_open_max_calls >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self.probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._opened_at = 0.0
        self._consecutive = 0
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=window)
        self._probes: list[_Permit] = []
        self._generation = 0
        #: the latest state changes (old, new), for doctor and tests; bounded
        self.transitions: collections.deque[tuple[str, str]] = collections.deque(maxlen=32)

    def fresh(self, name: str | None = None) -> CircuitBreaker:
        """A closed breaker with this one's settings, under ``name`` (default: this
        one's): a swapped-in model starts with a clean record under its arm's breaker,
        and a rollout arm gets its own breaker configured like the control arm's."""
        return CircuitBreaker(
            name or self.name, failure_threshold=self.failure_threshold,
            failure_rate=self.failure_rate, window=self._outcomes.maxlen,
            min_calls=self.min_calls, reset_timeout_s=self.reset_timeout_s,
            half_open_max_calls=self.half_open_max_calls,
            probe_timeout_s=self.probe_timeout_s, clock=self._clock)

    def _set(self, new: str) -> None:
        old, self._state = self._state, new
        if old != new:
            self._generation += 1
            self.transitions.append((old, new))

    def _refresh(self, now: float) -> None:
        if self._state == OPEN and now - self._opened_at >= self.reset_timeout_s:
            self._set(HALF_OPEN)
            self._probes = []
        if self._state == HALF_OPEN:
            live = []
            for probe in self._probes:
                if probe.done:
                    continue
                if now - probe.issued_at >= self.probe_timeout_s:
                    probe.done = True  # reclaimed: a late outcome no longer counts
                    continue
                live.append(probe)
            self._probes = live

    @property
    def state(self) -> str:
        with self._lock:
            self._refresh(self._clock())
            return self._state

    def acquire(self) -> _Permit:
        """Return a permit to call the dependency, or raise ``CircuitOpenError``."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state == OPEN:
                raise CircuitOpenError(f"circuit {self.name!r} is open")
            if self._state == HALF_OPEN:
                if len(self._probes) >= self.half_open_max_calls:
                    raise CircuitOpenError(f"circuit {self.name!r} is half-open; probe in flight")
                permit = _Permit(now, True, self._generation)
                self._probes.append(permit)
                return permit
            return _Permit(now, False, self._generation)

    def _finish(self, permit: _Permit) -> bool:
        """Mark ``permit`` used; True when its outcome still counts."""
        if permit.half_open:
            self._refresh(self._clock())  # reclaim an expired probe before it reports
        if permit.done:
            return False
        permit.done = True
        return permit.generation == self._generation

    def record_success(self, permit: _Permit) -> None:
        """Report that the call made under ``permit`` succeeded."""
        with self._lock:
            if not self._finish(permit):
                return
            self._consecutive = 0
            self._outcomes.append(True)
            if permit.half_open and self._state == HALF_OPEN:
                self._outcomes.clear()
                self._set(CLOSED)

    def record_failure(self, permit: _Permit) -> None:
        """Report that the call made under ``permit`` failed (error or timeout)."""
        with self._lock:
            if not self._finish(permit):
                return
            now = self._clock()
            if permit.half_open:
                if self._state == HALF_OPEN:
                    self._open(now)
                return
            if self._state != CLOSED:
                return
            self._consecutive += 1
            self._outcomes.append(False)
            rate_tripped = False
            if self.failure_rate is not None and len(self._outcomes) >= self.min_calls:
                failures = sum(1 for ok in self._outcomes if not ok)
                rate_tripped = failures / len(self._outcomes) >= self.failure_rate
            if self._consecutive >= self.failure_threshold or rate_tripped:
                self._open(now)

    def release(self, permit: _Permit) -> None:
        """Give a permit back without an outcome (the call never happened)."""
        with self._lock:
            self._finish(permit)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._consecutive = 0
        self._probes = []
        self._set(OPEN)


@dataclass
class _Job:
    requests: Sequence
    future: Future


class InferenceEngine:
    """Runs a scorer on worker threads and merges concurrent requests into batches.

    Callers submit a job and wait on its future with their own deadline, so a hung
    model never blocks a caller past its deadline. Workers drain everything queued
    when they become free (continuous batching, no added wait). A worker stuck in a
    model call longer than ``stuck_after_s`` counts as abandoned; a replacement is
    started only while the total stays within ``max_threads``, and new work is
    refused (``Overloaded``) past that bound instead of piling up threads.

    Args:
        score_many: The scorer's batch function.
        max_batch_requests: Requests merged into one call. Defaults to 32.
        max_pending: Queued jobs before new ones are refused. Defaults to 256.
        max_threads: Worker threads including abandoned ones. Defaults to 4.
        stuck_after_s: A call older than this counts as hung. Defaults to 5.
    """

    def __init__(
        self,
        score_many: Callable[[Sequence], list],
        *,
        name: str = "scorer",
        max_batch_requests: int = 32,
        max_pending: int = 256,
        max_threads: int = 4,
        stuck_after_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_threads < 1 or max_pending < 1 or max_batch_requests < 1:
            raise ConfigurationError("max_threads, max_pending, max_batch_requests must be >= 1")
        self._score_many = score_many
        self.name = name
        self.max_batch_requests = max_batch_requests
        self.max_pending = max_pending
        self.max_threads = max_threads
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: collections.deque[_Job] = collections.deque()
        self._busy: dict[int, float] = {}  # worker id -> call start
        self._workers = 0
        self._idle = 0
        self._next_id = 0
        self._closed = False
        self.batches_run = 0

    # -- introspection ------------------------------------------------------------
    def abandoned_threads(self) -> int:
        """Workers whose current call is older than ``stuck_after_s``."""
        now = self._clock()
        with self._cond:
            return sum(1 for start in self._busy.values() if now - start >= self.stuck_after_s)

    def thread_count(self) -> int:
        with self._cond:
            return self._workers

    # -- submission ---------------------------------------------------------------
    def submit(self, requests: Sequence) -> Future:
        """Queue ``requests``; the future resolves to one output per request."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise Overloaded(f"inference engine {self.name!r} is closed")
            if len(self._queue) >= self.max_pending:
                # jobs whose callers gave up hold no one's place in the queue
                self._queue = collections.deque(
                    job for job in self._queue if not job.future.cancelled())
            if len(self._queue) >= self.max_pending:
                raise Overloaded(f"{len(self._queue)} requests already queued for the model")
            now = self._clock()
            healthy = self._workers - sum(
                1 for start in self._busy.values() if now - start >= self.stuck_after_s)
            if healthy <= 0:
                if self._workers >= self.max_threads:
                    raise Overloaded(
                        f"all {self._workers} inference threads are stuck in model calls; "
                        "refusing new model work until they return")
                self._spawn()
            elif self._idle == 0 and self._workers == 0:
                self._spawn()
            self._queue.append(_Job(requests, future))
            self._cond.notify()
        return future

    def _spawn(self) -> None:
        worker_id = self._next_id
        self._next_id += 1
        self._workers += 1
        thread = threading.Thread(
            target=self._run, args=(worker_id,), name=f"rerank-infer-{self.name}-{worker_id}",
            daemon=True)
        thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- worker -------------------------------------------------------------------
    def _take_batch(self) -> list[_Job]:
        jobs: list[_Job] = []
        while self._queue and len(jobs) < self.max_batch_requests:
            job = self._queue.popleft()
            if job.future.set_running_or_notify_cancel():
                jobs.append(job)  # callers that gave up are dropped unscored
        return jobs

    def _run(self, worker_id: int) -> None:
        try:
            while True:
                with self._cond:
                    self._idle += 1
                    while not self._queue and not self._closed:
                        self._cond.wait(timeout=30.0)
                        if not self._queue and self._workers > 1:
                            # surplus worker (spawned while another was stuck) retires
                            self._idle -= 1
                            return
                    self._idle -= 1
                    if self._closed and not self._queue:
                        return
                    jobs = self._take_batch()
                    if not jobs:
                        continue
                    self._busy[worker_id] = self._clock()
                try:
                    flat = [request for job in jobs for request in job.requests]
                    outputs = self._score_many(flat)
                    if len(outputs) != len(flat):
                        raise RuntimeError(
                            f"scorer returned {len(outputs)} outputs for {len(flat)} requests")
                    cursor = 0
                    for job in jobs:
                        n = len(job.requests)
                        job.future.set_result(outputs[cursor : cursor + n])
                        cursor += n
                except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                finally:
                    self.batches_run += 1
                    with self._cond:
                        self._busy.pop(worker_id, None)
                        # a worker back from a long (hung) call is surplus once another
                        # serves the queue: retire now rather than idle for minutes
                        surplus = not self._queue and self._workers > 1
                if surplus:
                    return
        finally:
            with self._cond:
                self._workers -= 1
