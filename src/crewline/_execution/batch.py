"""Batches: one run per input (``kickoff_for_each`` and ``kickoff_for_each_async``).

Every run of a batch is built before the first one starts, so a bad input fails the batch
before anything is spent. A batch's own ``budget`` spans all of its runs (one account, keyed
by the batch); the crew's and tasks' budgets stay per run. A failure carries the spend of
the whole batch, never of the one run that failed.

A ``BatchRunner`` (``crewline.ray.RayRunner``) runs a batch elsewhere instead: the crew
hands it the whole batch, and it keeps the same promises (results in input order, the
batch's spend on a failure).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from crewline._accounting.usage import Usage, UsageRecord
from crewline._core.outputs import CrewOutput
from crewline._execution.execute import execute, execute_async
from crewline._execution.run import Run
from crewline.errors import CrewlineError, InputError

if TYPE_CHECKING:
    from crewline._crew.crew import Crew
    from crewline.budget import Budget

__all__ = ["BatchRunner", "build_batch", "run_batch", "run_batch_async"]

MakeRun = Callable[[Mapping[str, Any], str], Run]
"""Builds one run of the batch from its input and the batch's budget key."""


def build_batch(inputs: Sequence[Mapping[str, Any]], make_run: MakeRun) -> list[Run]:
    """Every run of the batch, or an ``InputError`` naming the first bad input."""
    if isinstance(inputs, Mapping | str | bytes):
        raise InputError("inputs must be a sequence of mappings, one per run")
    key = f"batch-{uuid.uuid4().hex}"
    runs = []
    for i, item in enumerate(inputs):
        try:
            runs.append(make_run(item, key))
        except InputError as exc:
            raise InputError(f"inputs[{i}]: {exc.message}", placeholder=exc.placeholder,
                             where=exc.where) from None
    return runs


def _spend(runs: Sequence[Run]) -> list[UsageRecord]:
    return [record for run in runs for record in run.scope.records]


def run_batch(runs: Sequence[Run]) -> list[CrewOutput]:
    """The runs one after another on the calling thread; the first failure stops the batch."""
    outputs: list[CrewOutput] = []
    for run in runs:
        try:
            outputs.append(execute(run))
        except CrewlineError as exc:
            exc.attach_spend(_spend(runs))
            raise
    return outputs


async def run_batch_async(runs: Sequence[Run], *,
                          max_concurrency: int | None = None) -> list[CrewOutput]:
    """At most ``max_concurrency`` runs at once; results in input order.

    The first failure cancels the runs still going and is raised, with later failures as
    ``.other_errors``; a cancelled batch re-raises the cancellation with the batch's spend.
    """
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    gate = asyncio.Semaphore(max_concurrency or len(runs) or 1)

    async def one(run: Run) -> CrewOutput:
        async with gate:
            return await execute_async(run)

    try:
        async with asyncio.TaskGroup() as group:
            started = [group.create_task(one(run)) for run in runs]
    except BaseExceptionGroup as group_error:
        first, *rest = group_error.exceptions
        if isinstance(first, CrewlineError):
            first.other_errors = (*first.other_errors, *rest)
            first.attach_spend(_spend(runs))
        raise first from None
    except asyncio.CancelledError as cancelled:
        records = _spend(runs)
        cancelled.usage_records = tuple(records)  # type: ignore[attr-defined]
        cancelled.usage = Usage.from_records(records)  # type: ignore[attr-defined]
        raise
    return [t.result() for t in started]


class BatchRunner(Protocol):
    """Runs a whole ``kickoff_for_each`` batch somewhere else (other processes, hosts)."""

    def run(self, crew: Crew, inputs: Sequence[Mapping[str, Any]], *,
            budget: Budget | None = None, listeners: Sequence[Any] = ()) -> list[CrewOutput]:
        ...

    async def run_async(self, crew: Crew, inputs: Sequence[Mapping[str, Any]], *,
                        budget: Budget | None = None,
                        listeners: Sequence[Any] = ()) -> list[CrewOutput]:
        ...
