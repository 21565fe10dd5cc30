"""The circuit breaker checked against a reference model on an injected clock.

The model below is written from the documented behaviour (CircuitBreaker's
docstring), not from the implementation: hypothesis drives both with the same
random calls, clock steps and late outcomes and compares them after every step.
No test here sleeps: time is an integer count of ticks we advance by hand.

A tick is 1/1024 s (just under a millisecond) so that every clock reading and
every configured interval is an exact binary fraction: the machine can then probe
the exact boundaries (``>=``) without float rounding deciding the outcome. The
literal "1 ms either side" checks use real millisecond values further down.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from rerank_plugins import CircuitOpenError, Reranker, Status
from rerank_plugins.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from rerank_plugins.scoring.base import ScoreOutput

TICK_S = 1 / 1024


class ManualClock:
    """Monotonic clock counting ticks (``unit`` seconds each), advanced by the test."""

    def __init__(self, unit: float = TICK_S, start: int = 1_000_000) -> None:
        self.ms = start  # named ms for readability; one unit of ``unit`` seconds
        self.unit = unit

    def __call__(self) -> float:
        return self.ms * self.unit


class ModelPermit:
    def __init__(self, issued_ms: int, half_open: bool, generation: int) -> None:
        self.issued_ms = issued_ms
        self.half_open = half_open
        self.generation = generation
        self.done = False


class ReferenceBreaker:
    """What the docstring promises, in the plainest code we could write."""

    def __init__(self, threshold: int, reset_ms: int, probes: int, probe_timeout_ms: int):
        self.threshold = threshold
        self.reset_ms = reset_ms
        self.max_probes = probes
        self.probe_timeout_ms = probe_timeout_ms
        self.state = CLOSED
        self.generation = 0
        self.opened_ms = 0
        self.consecutive = 0
        self.probes: list[ModelPermit] = []

    def _become(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.generation += 1

    def refresh(self, now: int) -> None:
        if self.state == OPEN and now - self.opened_ms >= self.reset_ms:
            self._become(HALF_OPEN)
            self.probes = []
        if self.state == HALF_OPEN:
            for probe in self.probes:
                if now - probe.issued_ms >= self.probe_timeout_ms:
                    probe.done = True
            self.probes = [p for p in self.probes if not p.done]

    def acquire(self, now: int) -> ModelPermit | None:
        self.refresh(now)
        if self.state == OPEN:
            return None
        if self.state == HALF_OPEN:
            if len(self.probes) >= self.max_probes:
                return None
            permit = ModelPermit(now, True, self.generation)
            self.probes.append(permit)
            return permit
        return ModelPermit(now, False, self.generation)

    def record(self, permit: ModelPermit, ok: bool, now: int) -> None:
        if permit.half_open:
            self.refresh(now)
        if permit.done:
            return
        permit.done = True
        if permit.generation != self.generation:
            return  # stale news from an earlier state
        if ok:
            self.consecutive = 0
            if permit.half_open and self.state == HALF_OPEN:
                self._become(CLOSED)
            return
        if permit.half_open:
            if self.state == HALF_OPEN:
                self._open(now)
            return
        if self.state == CLOSED:
            self.consecutive += 1
            if self.consecutive >= self.threshold:
                self._open(now)

    def _open(self, now: int) -> None:
        self.opened_ms = now
        self.consecutive = 0
        self.probes = []
        self._become(OPEN)


class BreakerMachine(RuleBasedStateMachine):
    """Random calls, clock steps and late outcomes on the real and the model breaker."""

    held = Bundle("held")

    @initialize(threshold=st.integers(1, 6), reset_ms=st.integers(1, 5_000),
                probes=st.integers(1, 3), probe_timeout_ms=st.integers(1, 5_000))
    def setup(self, threshold, reset_ms, probes, probe_timeout_ms):
        self.clock = ManualClock()
        self.real = CircuitBreaker(
            "model-test", failure_threshold=threshold, reset_timeout_s=reset_ms * TICK_S,
            half_open_max_calls=probes, probe_timeout_s=probe_timeout_ms * TICK_S,
            clock=self.clock)
        self.model = ReferenceBreaker(threshold, reset_ms, probes, probe_timeout_ms)
        self.scorer_calls = 0

    def _call(self, ok: bool) -> None:
        """One guarded call: the scorer runs only when the breaker hands out a permit."""
        expected = self.model.acquire(self.clock.ms)
        calls_before = self.scorer_calls
        try:
            permit = self.real.acquire()
        except CircuitOpenError:
            assert expected is None, "real breaker rejected a call the model allows"
            assert self.scorer_calls == calls_before  # rejected without touching it
            return
        assert expected is not None, f"real breaker let a call through in {self.model.state}"
        self.scorer_calls += 1
        if ok:
            self.real.record_success(permit)
        else:
            self.real.record_failure(permit)
        self.model.record(expected, ok, self.clock.ms)

    @rule()
    def call_succeeds(self):
        self._call(True)

    @rule()
    def call_fails(self):
        self._call(False)

    @rule(target=held)
    def start_slow_call(self):
        expected = self.model.acquire(self.clock.ms)
        try:
            permit = self.real.acquire()
        except CircuitOpenError:
            assert expected is None
            return None
        assert expected is not None
        return (permit, expected)

    @rule(pair=consumes(held), ok=st.booleans())
    def slow_call_reports(self, pair, ok):
        if pair is None:
            return
        permit, expected = pair
        if ok:
            self.real.record_success(permit)
        else:
            self.real.record_failure(permit)
        self.model.record(expected, ok, self.clock.ms)

    @rule(ms=st.sampled_from([0, 1, 7, 100, 999, 1_000, 2_500, 6_000]))
    def advance(self, ms):
        self.clock.ms += ms

    @precondition(lambda self: self.model.state == OPEN)
    @rule()
    def cool_down_edge(self):
        """Still open 1 tick before the cool-down ends, half-open 1 tick after."""
        due = self.model.opened_ms + self.model.reset_ms
        if self.clock.ms < due - 1:
            self.clock.ms = due - 1
            assert self.real.state == OPEN
            self.model.refresh(self.clock.ms)
        if self.clock.ms < due + 1:
            self.clock.ms = due + 1
        assert self.real.state == HALF_OPEN
        self.model.refresh(self.clock.ms)

    @precondition(lambda self: self.model.state == CLOSED and self.model.consecutive == 0)
    @rule()
    def exact_threshold(self):
        """threshold - 1 consecutive failures leave it closed; the next one opens it."""
        for _ in range(self.model.threshold - 1):
            self._call(False)
            assert self.real.state == CLOSED
        self._call(False)
        assert self.real.state == OPEN

    @invariant()
    def same_state(self):
        self.model.refresh(self.clock.ms)
        assert self.real.state == self.model.state


BreakerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_breaker_matches_reference_model = BreakerMachine.TestCase


@pytest.mark.parametrize("threshold", [1, 2, 5, 17])
def test_opens_on_exactly_the_configured_failure_not_one_earlier(threshold):
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=threshold, clock=clock)
    for _ in range(threshold - 1):
        breaker.record_failure(breaker.acquire())
    assert breaker.state == CLOSED
    breaker.record_success(breaker.acquire())  # a success resets the streak
    for _ in range(threshold - 1):
        breaker.record_failure(breaker.acquire())
    assert breaker.state == CLOSED
    breaker.record_failure(breaker.acquire())
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpenError):
        breaker.acquire()


@pytest.mark.parametrize("reset_s", [0.25, 5.0, 30.0, 123.456])
@pytest.mark.parametrize("opened_at_s", [0.0, 12_345.678, 9_876_543.21])
def test_still_open_1ms_before_the_cool_down_and_half_open_1ms_after(reset_s, opened_at_s):
    clock = ManualClock(unit=0.001, start=round(opened_at_s * 1000))
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=reset_s, clock=clock)
    breaker.record_failure(breaker.acquire())
    opened = clock.ms
    clock.ms = opened + round(reset_s * 1000) - 1
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.ms = opened + round(reset_s * 1000) + 1
    assert breaker.state == HALF_OPEN
    breaker.acquire()


def test_unanswered_probe_gives_its_permit_back_after_probe_timeout():
    clock = ManualClock(unit=0.001)
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=2.0,
                             half_open_max_calls=1, probe_timeout_s=0.5, clock=clock)
    breaker.record_failure(breaker.acquire())
    clock.ms += 2_000
    lost_probe = breaker.acquire()  # the caller of this probe never reports back
    clock.ms += 499
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.ms += 1
    fresh_probe = breaker.acquire()
    assert breaker.state == HALF_OPEN
    breaker.record_failure(lost_probe)  # too late: its permit was reclaimed
    assert breaker.state == HALF_OPEN
    breaker.record_success(fresh_probe)
    assert breaker.state == CLOSED


class GatedScorer:
    """A scorer that counts requests and holds every call until released.

    Fault injection: holding the probes in flight is what makes the concurrent
    callers meet a half-open breaker whose probe slots are all taken.
    """

    model_id = "gated"
    revision = "1"
    cache_namespace = "gated"
    activation = "identity"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.requests = 0
        self._lock = threading.Lock()

    def describe(self) -> dict[str, str]:
        return {"model": self.model_id, "revision": self.revision}

    def score_many(self, requests):
        with self._lock:
            self.requests += len(requests)
        self.release.wait(30)
        return [ScoreOutput([0.5] * len(r.texts)) for r in requests]


@pytest.mark.parametrize("probes", [1, 3])
def test_200_concurrent_callers_let_exactly_the_configured_probes_through(probes):
    clock = ManualClock(unit=0.001)
    breaker = CircuitBreaker("probe-race", failure_threshold=1, reset_timeout_s=1.0,
                             half_open_max_calls=probes, probe_timeout_s=60.0, clock=clock)
    breaker.record_failure(breaker.acquire())
    clock.ms += 1_001
    assert breaker.state == HALF_OPEN
    scorer = GatedScorer()
    reranker = Reranker(scorer, cache=None, breaker=breaker, timeout_s=20,
                        max_inference_threads=probes + 1)
    statuses: list = []
    statuses_lock = threading.Lock()
    start = threading.Barrier(101)

    def thread_caller(n):
        start.wait()
        result = reranker.rerank(f"query {n}", ["a", "b"])
        with statuses_lock:
            statuses.append(result)

    async def task_caller(n):
        await asyncio.sleep(0)
        result = await reranker.arerank(f"async query {n}", ["a", "b"])
        with statuses_lock:
            statuses.append(result)

    async def all_tasks():
        await asyncio.gather(*(task_caller(n) for n in range(100)))

    threads = [threading.Thread(target=thread_caller, args=(n,)) for n in range(100)]
    for thread in threads:
        thread.start()
    loop_thread = threading.Thread(target=lambda: asyncio.run(all_tasks()))
    start.wait()  # the threads and the event loop start together
    loop_thread.start()
    # every caller except the probes comes back at once with circuit_open
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with statuses_lock:
            rejected = sum(1 for r in statuses if r.status is Status.FALLBACK)
        if rejected >= 200 - probes:
            break
        time.sleep(0.01)
    scorer.release.set()
    for thread in threads:
        thread.join(20)
    loop_thread.join(20)
    reranker.close()
    results = statuses
    assert len(results) == 200
    served = [r for r in results if r.status is Status.OK]
    rejected = [r for r in results if r.status is Status.FALLBACK]
    assert len(served) == probes
    assert scorer.requests == probes
    assert {r.fallback_reason.value for r in rejected} == {"circuit_open"}
    assert breaker.state == CLOSED
