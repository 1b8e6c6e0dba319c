"""The two ways of performing a task step's effects: blocking, and asyncio.

A driver sends the step's requests, calls its user code and sleeps its waits; that is
all. The sync driver runs on whatever thread calls it (the kickoff's, or a worker thread
for an ``async_execution`` task); the asyncio driver on the event loop, with sync user
code on crewline's worker threads. Both always finish or close the step in the context
that started it, so every context variable a step set is reset where it was set.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from crewline._core.effects import (
    Call,
    Effect,
    Ledgered,
    Parallel,
    Reserve,
    Send,
    Settle,
    Sleep,
    Step,
)
from crewline._execution.workers import run_sync, worker_pool

__all__ = ["drive", "drive_async", "paced", "stoppable"]

T = TypeVar("T")


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _resolve(awaitable: Awaitable[T]) -> T:
    """Await user code from the blocking driver.

    Where this thread already runs an event loop (``kickoff()`` called from async code or
    a notebook), the awaitable runs on a worker thread with a loop of its own, in a copy of
    this context, since a loop cannot be re-entered.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(awaitable))
    context = contextvars.copy_context()
    return worker_pool().submit(context.run, asyncio.run, _await(awaitable)).result()


_stop: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "crewline_stop", default=None)
Pace = Callable[[bool], Awaitable[None] | None]
"""Called after each delta of a streamed reply, told whether it was the reply's first; what
it returns, if anything, is awaited before the next chunk is read (most deltas need no
wait, and an ``async def`` would build a coroutine for each one)."""
_pace: contextvars.ContextVar[Pace | None] = contextvars.ContextVar("crewline_pace",
                                                                    default=None)


@contextmanager
def stoppable(stop: threading.Event) -> Iterator[None]:
    """Steps driven by ``drive`` in this context (and in threads started from it) stop once
    ``stop`` is set: the next effect other than a send or a settle raises
    ``CancelledError`` into the step, and a wait is cut short. This is how a sync
    ``crew.stream`` is closed: a thread cannot be cancelled, but it can be told at its
    next safe point."""
    token = _stop.set(stop)
    try:
        yield
    finally:
        _stop.reset(token)


class paced:
    """Streamed requests driven by ``drive_async`` in this context call ``pace(first)``
    after each delta and await what it returns: an ``astream`` consumer that falls behind
    slows its kickoff down instead of letting deltas pile up without bound. (A class: it is
    entered by every streamed kickoff on the way to its first request.)"""

    __slots__ = ("_pace", "_token")

    def __init__(self, pace: Pace) -> None:
        self._pace = pace

    def __enter__(self) -> None:
        self._token = _pace.set(self._pace)

    def __exit__(self, *exc: object) -> None:
        _pace.reset(self._token)


def _check_stop(effect: Effect) -> None:
    stop = _stop.get()
    # Never at a Send (a stopped stream cuts it at its first delta, so it is on record as
    # cut off) nor at a Settle (a hold is always closed).
    if stop is not None and stop.is_set() and not isinstance(effect, Send | Settle):
        raise asyncio.CancelledError("the stream was closed")


def _sleep(seconds: float) -> None:
    stop = _stop.get()
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise asyncio.CancelledError("the stream was closed")


def _stream(effect: Send) -> Any:
    assert effect.on_delta is not None
    stream = getattr(effect.transport, "stream", None)
    if stream is None:  # a transport that cannot stream: its whole text is one delta
        response = effect.transport.complete(effect.request)
        if response.content:
            effect.on_delta(response.content)
        return response
    return stream(effect.request, effect.on_delta)


async def _astream(effect: Send) -> Any:
    on_delta, pace = effect.on_delta, _pace.get()
    assert on_delta is not None
    astream = getattr(effect.transport, "astream", None)
    if astream is None:
        response = await effect.transport.acomplete(effect.request)
        if response.content:
            on_delta(response.content)
        return response

    delivered = False

    async def deliver(text: str) -> None:
        nonlocal delivered
        on_delta(text)
        if pace is not None:
            wait = pace(not delivered)
            if wait is not None:
                await wait
        delivered = True

    return await astream(effect.request, deliver)


def _perform(effect: Effect) -> Any:
    if isinstance(effect, Send):
        if effect.on_delta is not None:
            return _stream(effect)
        return effect.transport.complete(effect.request)
    if isinstance(effect, Call):
        result = effect.fn(*effect.args, **effect.kwargs)
        if inspect.isawaitable(result):
            return _resolve(result)
        return result
    if isinstance(effect, Sleep):
        _sleep(effect.seconds)
        return None
    if isinstance(effect, Reserve | Settle):
        return effect.perform()
    if isinstance(effect, Parallel):
        return _perform_parallel(effect)
    raise TypeError(f"unknown effect {effect!r}")


async def _aperform(effect: Effect) -> Any:
    if isinstance(effect, Send):
        if effect.on_delta is not None:
            return await _astream(effect)
        return await effect.transport.acomplete(effect.request)
    if isinstance(effect, Call):
        fn = effect.fn
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
                getattr(fn, "__call__", None)):  # noqa: B004
            return await fn(*effect.args, **effect.kwargs)
        result = await run_sync(fn, *effect.args, **effect.kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
    if isinstance(effect, Sleep):
        # A zero sleep is a checkpoint for the thread driver (a closed stream stops there).
        # On the loop a cancellation lands at the await the task is suspended in, so this
        # one need not give the loop a turn (it would delay the request it stands before).
        if effect.seconds > 0:
            await asyncio.sleep(effect.seconds)
        return None
    if isinstance(effect, Reserve | Settle):
        return effect.perform() if not effect.blocking else await _off_loop(effect)
    if isinstance(effect, Parallel):
        return await _aperform_parallel(effect)
    raise TypeError(f"unknown effect {effect!r}")


async def _off_loop(effect: Ledgered) -> Any:
    """A ledger operation that may wait on I/O, on crewline's worker threads.

    If the awaiting task is cancelled, the operation is still waited for (a thread cannot
    be interrupted), and what it did is undone when its result can no longer be delivered:
    holds taken for a request that will never be sent are given back.
    """
    done: list[Any] = []

    def perform() -> Any:
        result = effect.perform()
        done.append(result)
        return result

    try:
        return await run_sync(perform)
    except asyncio.CancelledError:
        for result in done:
            effect.undo(result)
        raise


class _Stepper:
    """Feeds a step the outcome of its last effect and hands out the next one."""

    __slots__ = ("error", "result", "step", "value")

    def __init__(self, step: Step[Any]) -> None:
        self.step = step
        self.value: Any = None
        self.error: BaseException | None = None
        self.result: Any = None

    def next_effect(self) -> Effect | None:
        """The next effect to perform, or None once the step has returned ``result``."""
        value, error = self.value, self.error
        self.value = self.error = None
        try:
            return self.step.send(value) if error is None else self.step.throw(error)
        except StopIteration as done:
            self.result = done.value
            return None


def drive(step: Step[T]) -> T:
    """Run ``step`` to completion with blocking I/O on the calling thread."""
    stepper = _Stepper(step)
    try:
        while (effect := stepper.next_effect()) is not None:
            try:
                _check_stop(effect)
                stepper.value = _perform(effect)
            except BaseException as exc:
                stepper.error = exc
        return stepper.result  # type: ignore[no-any-return]
    finally:
        step.close()


async def drive_async(step: Step[T]) -> T:
    """Run ``step`` to completion on the running event loop."""
    stepper = _Stepper(step)
    try:
        while (effect := stepper.next_effect()) is not None:
            try:
                stepper.value = await _aperform(effect)
            except BaseException as exc:
                stepper.error = exc
        return stepper.result  # type: ignore[no-any-return]
    finally:
        step.close()


def _stoppable(step: Generator[Any, Any, T], stop: threading.Event) -> Step[T]:
    """``step``, with a cancellation thrown into it at its next effect once ``stop`` is set.

    A thread cannot be interrupted; a step can, between two effects. It is thrown in once,
    so the step's own cleanup (settling holds, recording a cut-off request) runs to the end.
    """
    value: Any = None
    error: BaseException | None = None
    thrown = False
    while True:
        if stop.is_set() and not thrown and error is None:
            thrown = True
            error = asyncio.CancelledError("cancelled with its parallel siblings")
        try:
            effect = step.send(value) if error is None else step.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            value, error = (yield effect), None
        except BaseException as exc:
            value, error = None, exc


def _join(thread: threading.Thread) -> None:
    """Wait for ``thread`` to end, whatever interrupts the wait: no orphan threads."""
    while thread.is_alive():
        try:
            thread.join()
        except BaseException:
            continue


def _perform_parallel(effect: Parallel) -> tuple[Any, ...]:
    """Each sub-step on a thread of its own, started in its own copy of this context."""
    outcomes: list[Any] = [None] * len(effect.steps)
    stop = threading.Event()

    def run(index: int, step: Generator[Any, Any, Any]) -> None:
        try:
            outcomes[index] = drive(_stoppable(step, stop))
        except BaseException as exc:
            outcomes[index] = exc

    threads: list[threading.Thread] = []
    try:
        for index, step in enumerate(effect.steps):
            thread = threading.Thread(target=contextvars.copy_context().run,
                                      args=(run, index, step), daemon=True,
                                      name=f"crewline-parallel-{index}")
            threads.append(thread)  # before start: an interrupt between the two is handled
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        stop.set()
        for index, step in enumerate(effect.steps):
            handed = threads[index] if index < len(threads) else None
            if handed is not None and (handed.ident is not None or handed.is_alive()):
                _join(handed)  # it runs the step: it ends it
            else:
                step.close()  # never handed to a thread
        raise
    return tuple(outcomes)


async def _aperform_parallel(effect: Parallel) -> tuple[Any, ...]:
    """Each sub-step as an asyncio task (a task runs in a copy of its creator's context)."""
    tasks = [asyncio.create_task(drive_async(step)) for step in effect.steps]
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        while not all(task.done() for task in tasks):
            try:
                await asyncio.wait(tasks)
            except asyncio.CancelledError:
                continue
        raise
    outcomes: list[Any] = []
    for task in tasks:
        if task.cancelled():
            outcomes.append(asyncio.CancelledError())
        else:
            error = task.exception()
            outcomes.append(error if error is not None else task.result())
    return tuple(outcomes)
