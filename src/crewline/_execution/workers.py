"""crewline's own worker threads for sync user code under asyncio.

Sync tools, guardrails and callbacks called from ``kickoff_async`` run here, never on the
event loop's default executor (litellm's ``acompletion`` uses that one internally, so LLM
calls would queue behind slow tools). Each call runs in a copy of the awaiting task's
context, so the caller's context variables, the usage scope and the log context follow.

A thread cannot be interrupted: when the awaiting task is cancelled, the call is waited
for before the cancellation goes on, so no tool outlives the kickoff that started it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["run_sync", "worker_pool"]

T = TypeVar("T")

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def worker_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process's one pool, created on first use (``CREWLINE_WORKER_THREADS``, default 32)."""
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                size = int(os.environ.get("CREWLINE_WORKER_THREADS", "32"))
                _pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=max(1, size), thread_name_prefix="crewline-worker")
    return _pool


async def _finish(future: concurrent.futures.Future[Any]) -> None:
    while not future.done():
        try:
            await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            continue
        except BaseException:
            return


async def run_sync(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a worker thread, in a copy of the current context."""
    context = contextvars.copy_context()
    future = worker_pool().submit(context.run, functools.partial(fn, *args, **kwargs))
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if not future.cancel():
            await _finish(future)
        raise
