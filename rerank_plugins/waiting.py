"""One plan, two ways to wait.

A *plan* is a generator that decides what to do next (which scorer to try, whether
to retry, when to give up) and yields a :class:`Wait` whenever it needs something
to finish. :func:`run_sync` blocks on each wait; :func:`run_async` awaits it. The
outcome comes back into the plan at its ``yield`` -- a value, or the exception the
wait raised -- so the decisions are written once and both paths share them.

Example::

    def plan():
        try:
            scores = yield FutureWait(future, timeout_s=0.2)
        except TimeoutError:
            return None
        return scores

    run_sync(plan())          # from a thread
    await run_async(plan())   # from a coroutine
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")
Plan = Generator["Wait", Any, T]


class Wait:
    """Something a plan waits for; subclasses say how to wait in each world."""

    def block(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    async def wait(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class FutureWait(Wait):
    """A ``concurrent.futures.Future`` with a timeout (``None`` = no limit).

    On timeout the plan receives ``TimeoutError``; the future itself is left to the
    plan (cancel it, or keep it for a later attempt)."""

    def __init__(self, future: concurrent.futures.Future, timeout_s: float | None) -> None:
        self.future = future
        self.timeout_s = timeout_s

    def block(self) -> Any:
        try:
            return self.future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise TimeoutError("no result before the deadline") from None

    async def wait(self) -> Any:
        # shield: a timeout of this waiter must not cancel work other callers share
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.future)),
                                          self.timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError("no result before the deadline") from None


class SleepWait(Wait):
    """A pause (a retry back-off)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, seconds)

    def block(self) -> None:
        time.sleep(self.seconds)

    async def wait(self) -> None:
        await asyncio.sleep(self.seconds)


class CallWait(Wait):
    """One I/O call (e.g. an HTTP request). The plan is handed the client that fits
    its driver, so ``call()`` returns the result under :func:`run_sync` and an
    awaitable under :func:`run_async`."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call

    def block(self) -> Any:
        return self.call()

    async def wait(self) -> Any:
        return await self.call()


class _Exchange:
    """Carries each wait's outcome (a value or an exception) back into the plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.value: Any = None
        self.failure: BaseException | None = None
        self.result: Any = None

    def next_wait(self) -> Wait | None:
        """The plan's next wait, or None once it has returned (see ``result``)."""
        failure, self.failure = self.failure, None
        try:
            return self.plan.throw(failure) if failure is not None else self.plan.send(self.value)
        except StopIteration as done:
            self.result = done.value
            return None

    @contextlib.contextmanager
    def outcome(self, *catch: type[BaseException]):
        """Record what the wait inside raised (of ``catch``) for the plan to see."""
        self.value = None
        try:
            yield
        except catch as exc:
            self.failure = exc


def run_sync(plan: Plan[T]) -> T:
    """Drive ``plan`` to its return value, blocking the calling thread on each wait."""
    exchange = _Exchange(plan)
    while (wait := exchange.next_wait()) is not None:
        with exchange.outcome(Exception):
            exchange.value = wait.block()
    return exchange.result


async def run_async(plan: Plan[T]) -> T:
    """Drive ``plan`` to its return value, awaiting each wait (cancellation included:
    a ``CancelledError`` is thrown into the plan so it can release what it holds)."""
    exchange = _Exchange(plan)
    while (wait := exchange.next_wait()) is not None:
        with exchange.outcome(Exception, asyncio.CancelledError):
            exchange.value = await wait.wait()
    return exchange.result
