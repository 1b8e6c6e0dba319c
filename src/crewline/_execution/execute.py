"""Executing a run's tasks in order, on threads or as asyncio tasks.

The plan is the run's: a main-line task first waits for every background
(``async_execution``) task started before it; a background task waits only for the
earlier background tasks it names as context. The two executors below differ only in how
they wait and start work.

Sync: the kickoff runs in a copy of the caller's context; background tasks run on threads
started in a copy of the kickoff's context. A failure stops the main line; tasks already
in flight finish (their requests settle) before the kickoff raises.

Asyncio: background tasks are asyncio tasks in a ``TaskGroup``; a failure cancels the
siblings (their in-flight requests are recorded as cancelled and charged their full hold),
and cancelling the kickoff cancels everything it started. Either way no thread or task
outlives the kickoff, and one exception leaves it: the first failure, with the others
attached as ``.other_errors``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from contextlib import nullcontext

from crewline._core.outputs import CrewOutput
from crewline._core.prepared import PreparedTask
from crewline._execution.drivers import drive, drive_async
from crewline._execution.run import Run
from crewline._execution.workers import run_sync
from crewline.transport.litellm import litellm_imported, litellm_module

__all__ = ["execute", "execute_async"]


def _background(run: Run, task: PreparedTask,
                deps: list[concurrent.futures.Future[object]]) -> object:
    concurrent.futures.wait(deps)
    if any(d.exception() is not None for d in deps):
        return None  # a dependency failed; its error is the run's
    return drive(run.step(task))


def _execute(run: Run) -> CrewOutput:
    futures: dict[int, concurrent.futures.Future[object]] = {}
    background = sum(1 for t in run.tasks if t.background)
    pool = (concurrent.futures.ThreadPoolExecutor(
        max_workers=background, thread_name_prefix=f"crewline-{run.id[:8]}")
        if background else None)
    with run.active():
        try:
            if run.plans_first:
                drive(run.before_tasks())
            for task in run.tasks:
                if task.background:
                    assert pool is not None
                    deps = [futures[j] for j in task.waits_for]
                    futures[task.index] = pool.submit(
                        contextvars.copy_context().run, _background, run, task, deps)
                    continue
                if task.waits_for:
                    concurrent.futures.wait([futures[j] for j in task.waits_for])
                if run.failures:
                    break
                try:
                    drive(run.step(task))
                except Exception:
                    break
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        if run.failures:
            raise run.failures[0]
        return run.output()


def execute(run: Run) -> CrewOutput:
    """Run to completion on the calling thread (``Crew.kickoff``)."""
    try:
        run.check_routes()
        return contextvars.copy_context().run(_execute, run)
    except BaseException as exc:
        raise run.error(exc)  # noqa: B904 - the error is the run's first failure


async def _background_async(run: Run, task: PreparedTask,
                            deps: list[asyncio.Task[object]]) -> object:
    if deps:
        await asyncio.wait(deps)
        if any(not d.cancelled() and d.exception() is not None for d in deps):
            return None
    return await drive_async(run.step(task))


async def execute_async(run: Run) -> CrewOutput:
    """Run to completion on the running event loop (``Crew.kickoff_async``)."""
    if not litellm_imported() and any(llm.uses_litellm() for llm in run.llms()):
        await run_sync(litellm_module)  # seconds of import, kept off the event loop
    try:
        run.check_routes()
        with run.active():
            if run.plans_first:
                await drive_async(run.before_tasks())
            # Only background tasks need a group; without one a run saves its cost before
            # its first request (which a streamed kickoff's first token waits for).
            background = any(task.background for task in run.tasks)
            async with asyncio.TaskGroup() if background else nullcontext() as group:
                started: dict[int, asyncio.Task[object]] = {}
                for task in run.tasks:
                    deps = [started[j] for j in task.waits_for]
                    if task.background:
                        assert group is not None
                        started[task.index] = group.create_task(
                            _background_async(run, task, deps))
                        continue
                    if deps:
                        await asyncio.wait(deps)
                    await drive_async(run.step(task))
            return run.output()
    except BaseException as exc:
        raise run.error(exc)  # noqa: B904 - the error is the run's first failure
