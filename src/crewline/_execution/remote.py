"""The worker side of ``crewline.ray``: what a Ray actor runs, without importing Ray.

A ``Worker`` runs many kickoffs of a batch at once on its event loop (``execute_async``,
the core every driver shares) and keeps one outbox per batch that ``serve`` streams to the
driver in chunks: every usage record as it is made (a per-kickoff listener on
``LLMCallFinished``), then each kickoff's output or error. ``crewline.ray`` wraps the class
with ``ray.remote``; keeping it here keeps that module about the driver.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pickle
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from crewline import events
from crewline._accounting.ratelimit import RateLimiter
from crewline._definitions.base import Definition, RateLimitedDefinition
from crewline.errors import CrewlineError

if TYPE_CHECKING:
    from crewline._crew.crew import Crew
    from crewline.budget import Budget

__all__ = ["BatchJob", "Carried", "CarriedVar", "Message", "Worker", "definitions_of",
           "split_rate_limits"]

# How long a worker gathers messages before sending them as one item of its stream.
_FLUSH_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class CarriedVar:
    """A ContextVar named by where the workers can import it."""

    module: str
    name: str

    def resolve(self) -> ContextVar[Any]:
        var = getattr(importlib.import_module(self.module), self.name)
        if not isinstance(var, ContextVar):
            raise TypeError(f"{self.module}.{self.name} is not a ContextVar on the worker")
        return var


@dataclass(frozen=True, slots=True)
class Carried:
    """The caller's context at the start of a batch, set around each kickoff on a worker."""

    values: tuple[tuple[CarriedVar, Any], ...] = ()
    log_context: Mapping[str, Any] = field(default_factory=dict)
    trace_context: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class BatchJob:
    """Everything a worker needs for a batch, besides the crew and the inputs."""

    budget: Budget | None
    budget_key: str
    carried: Carried
    forward_events: bool
    workers: int
    concurrency: int


Message = tuple[str, int, Any]
"""``(kind, input index, payload)``: ``record``, ``event``, ``done``, ``failed``, ``skipped``."""


def split_rate_limits(crew: Crew, workers: int) -> None:
    """Give every rate-limited definition of this worker's copy of the crew its share of
    ``max_rpm`` / ``max_tpm``, so the cluster as a whole keeps the limit."""
    for definition in definitions_of(crew):
        if isinstance(definition, RateLimitedDefinition) and definition.limiter is not None:
            definition._limiter = RateLimiter(
                rpm=definition.max_rpm // workers if definition.max_rpm else None,
                tpm=definition.max_tpm // workers if definition.max_tpm else None)


def definitions_of(root: Definition) -> list[Definition]:
    seen: dict[int, Definition] = {}
    stack: list[Any] = [root]
    while stack:
        value = stack.pop()
        if isinstance(value, Definition):
            if id(value) in seen:
                continue
            seen[id(value)] = value
            stack.extend(getattr(value, name) for name in type(value).model_fields)
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
    return list(seen.values())


def picklable_error(exc: BaseException) -> BaseException:
    """``exc`` if it can cross to the driver; else a ``CrewlineError`` saying what it was."""
    try:
        pickle.dumps(exc)
    except Exception:
        wrapped = CrewlineError(f"{type(exc).__name__}: {exc}")
        wrapped.attach_spend(getattr(exc, "usage_records", ()))
        return wrapped
    return exc


class WorkerBatch:
    """One batch on one worker: the kickoffs it was given and its outbox to the driver."""

    def __init__(self) -> None:
        self.configured = asyncio.Event()
        self.crew: Crew | None = None
        self.job: BatchJob | None = None
        self.gate: asyncio.Semaphore | None = None
        self.outbox: list[Message] = []
        self.wake = asyncio.Event()
        self.finished = 0
        self.total: int | None = None
        self.aborted = False
        self.tasks: set[asyncio.Task[None]] = set()

    def send(self, message: Message) -> None:
        self.outbox.append(message)
        self.wake.set()

    @property
    def complete(self) -> bool:
        return self.total is not None and self.finished >= self.total and not self.outbox


class Worker:
    """A Ray async actor: runs many kickoffs at once on its event loop."""

    def __init__(self) -> None:
        from crewline.transport.litellm import litellm_module

        litellm_module()  # pay the import once, at start-up, not in the first batch
        self._batches: dict[str, WorkerBatch] = {}
        self._vars: dict[CarriedVar, ContextVar[Any]] = {}

    def pid(self) -> int:
        return os.getpid()

    def _batch(self, batch_id: str) -> WorkerBatch:
        batch = self._batches.get(batch_id)
        if batch is None:
            batch = self._batches[batch_id] = WorkerBatch()
        return batch

    async def serve(self, batch_id: str, crew: Crew,
                    job: BatchJob) -> AsyncIterator[list[Message]]:
        """The batch's stream to the driver: messages in chunks, until every kickoff this
        worker was given has reported."""
        batch = self._batch(batch_id)
        split_rate_limits(crew, job.workers)
        batch.crew, batch.job = crew, job
        batch.gate = asyncio.Semaphore(job.concurrency)
        batch.configured.set()
        try:
            while True:
                if not batch.outbox and not batch.complete:
                    await batch.wake.wait()
                    await asyncio.sleep(_FLUSH_SECONDS)  # let a few more gather
                batch.wake.clear()
                messages, batch.outbox = batch.outbox, []
                if messages:
                    yield messages
                if batch.complete:
                    return
        finally:
            self._batches.pop(batch_id, None)

    async def submit(self, batch_id: str, items: list[tuple[int, Mapping[str, Any]]]) -> None:
        batch = self._batch(batch_id)
        for index, item in items:
            task = asyncio.get_running_loop().create_task(self._kickoff(batch, index, item))
            batch.tasks.add(task)
            task.add_done_callback(batch.tasks.discard)

    async def close(self, batch_id: str, total: int) -> None:
        """No more inputs: the stream ends once ``total`` kickoffs have reported."""
        batch = self._batch(batch_id)
        batch.total = total
        batch.wake.set()

    async def abort(self, batch_id: str) -> None:
        """Start no more kickoffs of this batch; those running finish."""
        batch = self._batches.get(batch_id)
        if batch is not None:
            batch.aborted = True

    async def cancel(self, batch_id: str) -> None:
        """The driver gave up on the batch: cancel its kickoffs."""
        batch = self._batches.get(batch_id)
        if batch is not None:
            batch.aborted = True
            for task in list(batch.tasks):
                task.cancel()

    async def _kickoff(self, batch: WorkerBatch, index: int,
                       item: Mapping[str, Any]) -> None:
        from crewline._execution.execute import execute_async

        try:
            await batch.configured.wait()
            assert batch.crew is not None and batch.job is not None and batch.gate is not None
            job = batch.job
            async with batch.gate:
                if batch.aborted:
                    batch.send(("skipped", index, None))
                    return

                def listener(event: events.Event) -> None:
                    if isinstance(event, events.LLMCallFinished):
                        batch.send(("record", index, event.record))
                    if job.forward_events:
                        batch.send(("event", index, event))

                restore = self._enter(job.carried)
                try:
                    run = batch.crew._run(item, job.budget, [listener], job.budget_key)
                    output = await execute_async(run)
                finally:
                    restore()
            batch.send(("done", index, output))
        except BaseException as exc:
            batch.send(("failed", index, picklable_error(exc)))
            if not isinstance(exc, Exception):
                raise
        finally:
            batch.finished += 1
            batch.wake.set()

    def _enter(self, carried: Carried) -> Callable[[], None]:
        """Set the caller's context in this kickoff's task; returns what undoes it."""
        undo: list[Callable[[], None]] = []
        for ref, value in carried.values:
            var = self._vars.get(ref)
            if var is None:
                var = self._vars[ref] = ref.resolve()
            undo.append(partial(var.reset, var.set(value)))
        if carried.log_context:
            tokens = structlog.contextvars.bind_contextvars(**carried.log_context)
            # Through each token's own variable, as crewline.log.log_context does.
            undo.extend(partial(token.var.reset, token) for token in tokens.values())
        if carried.trace_context:
            try:
                from opentelemetry import context as otel_context
                from opentelemetry import propagate
            except ImportError:
                pass
            else:
                token = otel_context.attach(propagate.extract(dict(carried.trace_context)))
                undo.append(lambda: otel_context.detach(token))

        def restore() -> None:
            for step in reversed(undo):
                step()

        return restore
