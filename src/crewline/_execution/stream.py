"""Watching one kickoff as it works: ``crew.stream`` and ``crew.astream``.

A stream is an ordinary kickoff whose policy says "stream every request", with one more
per-kickoff listener: the stream itself. It therefore yields exactly its kickoff's events
(per-kickoff listeners live in the kickoff's context, never in another run's), and every
figure it ends with is the kickoff's own ``CrewOutput``.

Back-pressure: events wait in a bounded buffer (``buffer``, 256 by default). A consumer that
stalls stalls its kickoff: under ``stream`` the kickoff's thread waits to hand over its
next event; under ``astream`` a streamed request waits after its delta. Either way the
request stops reading from the provider's connection, so nothing piles up in memory; a
provider may time out a connection left unread for long.

Closing: leaving the block early, ``close()``, or cancelling the consumer (``astream``)
cancels the kickoff, and ``close`` returns once it has ended. A request cut off mid-reply
is on record with outcome ``"cancelled"`` and its budget holds are settled in full; the
kickoff's ``CancelledError`` (carrying ``.usage`` and ``.usage_records``) is what
``result`` then raises. Under ``stream`` the kickoff runs on a thread of its own, which is
told to stop at its next safe point (the next delta of a reply, or the next effect of its
step) and joined: no thread outlives ``close()``.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

from crewline import events
from crewline._core.outputs import CrewOutput
from crewline._execution.drivers import paced, stoppable
from crewline._execution.execute import execute, execute_async
from crewline._execution.run import Run

__all__ = ["AsyncCrewStream", "CrewStream"]

DEFAULT_BUFFER = 256
_END: Any = object()
MakeRun = Callable[[Sequence[Any]], Run]


def _streaming(make_run: MakeRun, listeners: Sequence[Any], deliver: Callable[[Any], None]
               ) -> Run:
    """The kickoff's run: the caller's listeners first, then the stream's own."""
    run = make_run((*listeners, deliver))
    if not run.policy.stream:  # a ``make_run`` that did not build a streamed run
        run.policy = replace(run.policy, stream=True)
    return run


def _check_buffer(buffer: int) -> int:
    if buffer < 1:
        raise ValueError(f"buffer must be >= 1 events, got {buffer}")
    return buffer


def _closed() -> asyncio.CancelledError:
    return asyncio.CancelledError("the stream was closed")


class _Channel:
    """A bounded hand-over from the kickoff's threads to the consumer's."""

    def __init__(self, size: int) -> None:
        self._items: deque[Any] = deque()
        self._size = size
        self._cond = threading.Condition()
        self._ended = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Wait for room, then add; False once the consumer has gone."""
        with self._cond:
            while len(self._items) >= self._size and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self) -> Any:
        """The next item, or ``_END`` once the kickoff has ended and all was taken."""
        with self._cond:
            while not self._items and not self._ended and not self._closed:
                self._cond.wait()
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return _END

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


class CrewStream:
    """One kickoff on a thread of its own, its events handed over as they happen.

    Use it as a context manager and iterate it; ``result`` is the ``CrewOutput`` (or raises
    the kickoff's error) once the kickoff has ended.
    """

    def __init__(self, make_run: MakeRun, listeners: Sequence[Any] = (), *,
                 buffer: int = DEFAULT_BUFFER) -> None:
        self._channel = _Channel(_check_buffer(buffer))
        self._stop = threading.Event()
        self._run = _streaming(make_run, listeners, self._deliver)
        self._thread: threading.Thread | None = None
        self._outcome: CrewOutput | BaseException | None = None
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return self._run.id

    def _deliver(self, event: events.Event) -> None:
        # Called on the kickoff's threads. Only a delta may be cut off here: it is raised
        # inside a request, which records itself as cut off; anything else is dropped.
        if (self._stop.is_set() or not self._channel.put(event)) \
                and isinstance(event, events.TextDelta):
            raise _closed()

    def _work(self) -> None:
        try:
            with stoppable(self._stop):
                self._outcome = execute(self._run)
        except BaseException as exc:
            self._outcome = exc
        finally:
            self._channel.end()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            if self._stop.is_set():
                raise RuntimeError("this stream was closed before it started")
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run, args=(self._work,), daemon=True,
                name=f"crewline-stream-{self._run.id[:8]}")
            self._thread.start()

    def __enter__(self) -> CrewStream:
        self._start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __iter__(self) -> Iterator[events.Event]:
        self._start()
        return self

    def __next__(self) -> events.Event:
        item = self._channel.get()
        if item is _END:
            raise StopIteration
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Cancel the kickoff if it is still going; return once it has ended."""
        self._stop.set()
        self._channel.close()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
        elif self._outcome is None:
            self._outcome = _closed()

    @property
    def result(self) -> CrewOutput:
        """The kickoff's output; raises its error (a closed stream's ``CancelledError``).

        Read before the stream was consumed, it consumes the rest (events are dropped) and
        waits for the kickoff to end.
        """
        if self._thread is None and self._outcome is None:
            self._start()
        for _ in self:
            pass
        if self._thread is not None:
            self._thread.join()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


class AsyncCrewStream:
    """One kickoff as an asyncio task, its events handed over as they happen.

    ``async with crew.astream(...) as stream: async for event in stream: ...``; then
    ``stream.result``.
    """

    def __init__(self, make_run: MakeRun, listeners: Sequence[Any] = (), *,
                 buffer: int = DEFAULT_BUFFER) -> None:
        self._size = _check_buffer(buffer)
        self._items: deque[events.Event] = deque()
        # One future at a time per side, made only when that side must wait: the consumer
        # for an event (``_reader``), the kickoff for room in the buffer (``_writer``). An
        # ``asyncio.Event`` per side cost a set or clear call for every event handed over.
        self._reader: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self._closed = False
        self._ended = False
        self._run = _streaming(make_run, listeners, self._deliver)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._outcome: CrewOutput | BaseException | None = None

    @property
    def run_id(self) -> str:
        return self._run.id

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _append(self, event: events.Event) -> None:
        if not self._closed:
            self._items.append(event)
            if self._reader is not None:
                self._wake(self._reader)

    def _deliver(self, event: events.Event) -> None:
        if threading.get_ident() == self._loop_thread:
            self._append(event)
        elif self._loop is not None:  # emitted from a worker thread of the kickoff
            self._loop.call_soon_threadsafe(self._append, event)

    def _pace(self, first: bool) -> Awaitable[None] | None:
        # The first delta of a reply goes to the consumer at once: chunks already buffered
        # would otherwise be read to the end of the reply before it saw any text. Later
        # deltas reach it when the request next waits on the network, which it does between
        # chunks as they are generated; a loop turn for each one cost a task step per delta,
        # 200 streams' worth of them in the makespan benchmark. Only a full buffer waits.
        if first or (len(self._items) >= self._size and not self._closed):
            return self._wait(first)
        return None

    async def _wait(self, first: bool) -> None:
        if first:
            await asyncio.sleep(0)
        while len(self._items) >= self._size and not self._closed:
            writer = self._writer = asyncio.get_running_loop().create_future()
            try:
                await writer
            finally:
                self._writer = None

    async def _work(self) -> None:
        try:
            with paced(self._pace):
                self._outcome = await execute_async(self._run)
        except BaseException as exc:  # stored for ``result``; this task is ours to end
            self._outcome = exc
        finally:
            self._ended = True
            self._wake(self._reader)

    def _start(self) -> None:
        if self._task is not None:
            return
        if self._closed:
            raise RuntimeError("this stream was closed before it started")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = self._loop.create_task(self._work(), name=f"crewline-stream-"
                                            f"{self._run.id[:8]}")

    async def __aenter__(self) -> AsyncCrewStream:
        self._start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[events.Event]:
        self._start()
        return self

    async def __anext__(self) -> events.Event:
        items = self._items
        while not items:
            if self._ended or self._closed:
                raise StopAsyncIteration
            if self._task is None:
                self._start()
            if self._reader is not None:
                raise RuntimeError("this stream is already being read by another task: "
                                   "an astream has one consumer")
            reader = self._reader = asyncio.get_running_loop().create_future()
            try:
                await reader
            finally:
                self._reader = None
        item = items.popleft()
        if self._writer is not None and len(items) < self._size:
            self._wake(self._writer)
        return item

    async def close(self) -> None:
        """Cancel the kickoff if it is still going; return once it has ended."""
        self._closed = True
        self._items.clear()
        self._wake(self._writer)
        self._wake(self._reader)
        task = self._task
        if task is None:
            if self._outcome is None:
                self._outcome = _closed()
            return
        if not task.done():
            task.cancel()
            await asyncio.wait({task})

    aclose = close

    @property
    def result(self) -> CrewOutput:
        """The kickoff's output; raises its error (a closed stream's ``CancelledError``)."""
        if self._outcome is None:
            raise RuntimeError("the kickoff is still running: iterate the stream to its end "
                               "or leave its block before reading result")
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome
