"""The ``Crew`` definition and its kickoff methods.

A ``Crew`` is frozen and holds no run state: each ``kickoff*`` call creates a ``Run`` that
owns everything the execution changes, so one ``Crew`` object can be kicked off from any
number of threads and asyncio tasks at once.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from crewline._accounting.usage import Usage
from crewline._core.outputs import CrewOutput
from crewline._definitions.agent import Agent
from crewline._definitions.base import RateLimitedDefinition
from crewline._definitions.llm import LLM
from crewline._definitions.task import Task
from crewline.budget import Budget
from crewline.errors import CrewlineError

__all__ = ["Crew", "Process"]


class Process(enum.StrEnum):
    """How a crew orders its tasks."""

    sequential = "sequential"


class Crew(RateLimitedDefinition):
    """Agents working through tasks. Frozen; validated at construction."""

    agents: tuple[Agent, ...] = ()
    tasks: tuple[Task, ...] = Field(min_length=1)
    process: Process = Process.sequential
    budget: Budget | None = None
    """A ``crewline.Budget`` every LLM request of every kickoff must fit."""
    llm: LLM | None = None
    """The model of agents that name none."""
    name: str | None = None

    @field_validator("llm", mode="before")
    @classmethod
    def _llm_from_string(cls, value: Any) -> Any:
        return LLM(model=value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_tasks(self) -> Crew:
        from crewline._execution.run import task_name

        seen: dict[str, int] = {}
        position = {id(t): i for i, t in enumerate(self.tasks)}
        for i, task in enumerate(self.tasks):
            name = task_name(i, task.name)
            if name in seen:
                raise ValueError(f"tasks[{i}]: name {name!r} is already used by "
                                 f"tasks[{seen[name]}]; task names must be unique")
            seen[name] = i
            if task.agent is None and len(self.agents) != 1:
                raise ValueError(f"tasks[{i}] ({name!r}) has no agent, and the crew has "
                                 f"{len(self.agents)} agents: give the task an agent")
            agent = task.agent or self.agents[0]
            if agent.llm is None and self.llm is None:
                raise ValueError(f"agent {agent.role!r} (tasks[{i}], {name!r}) has no llm, "
                                 "and the crew sets no default llm")
            for ref in task.context or ():
                j = position.get(id(ref))
                if j is None:
                    raise ValueError(f"tasks[{i}] ({name!r}): context names a task that is "
                                     "not in this crew")
                if j >= i:
                    raise ValueError(f"tasks[{i}] ({name!r}): context may only name earlier "
                                     f"tasks, but names tasks[{j}] ({task_name(j, ref.name)!r})")
        trailing = 0
        for task in reversed(self.tasks):
            if not task.async_execution:
                break
            trailing += 1
        if trailing > 1:
            raise ValueError(f"the crew ends with {trailing} async_execution tasks; at most "
                             "one may end a crew (add a task that gathers their outputs)")
        return self


    # -- running -----------------------------------------------------------------------

    def _run(self, inputs: Mapping[str, Any] | None, budget: Budget | None,
             listeners: Sequence[Any], budget_key: str | None = None) -> Any:
        from crewline._execution.run import Run

        return Run(self, inputs, budget=budget, listeners=listeners, budget_key=budget_key)

    def kickoff(self, inputs: Mapping[str, Any] | None = None, *,
                budget: Budget | None = None, listeners: Sequence[Any] = ()) -> CrewOutput:
        """Run the crew on the calling thread; background tasks run on worker threads."""
        from crewline._execution.execute import execute

        return execute(self._run(inputs, budget, listeners))

    async def kickoff_async(self, inputs: Mapping[str, Any] | None = None, *,
                            budget: Budget | None = None,
                            listeners: Sequence[Any] = ()) -> CrewOutput:
        """Run the crew natively on the running event loop."""
        from crewline._execution.execute import execute_async

        return await execute_async(self._run(inputs, budget, listeners))

    async def akickoff(self, inputs: Mapping[str, Any] | None = None, *,
                       budget: Budget | None = None,
                       listeners: Sequence[Any] = ()) -> CrewOutput:
        """Alias of ``kickoff_async``."""
        return await self.kickoff_async(inputs, budget=budget, listeners=listeners)

    def kickoff_for_each(self, inputs: Sequence[Mapping[str, Any]], *,
                         budget: Budget | None = None,
                         listeners: Sequence[Any] = ()) -> list[CrewOutput]:
        """One run per input, one after another; a ``budget`` spans the whole batch."""
        from crewline._execution.execute import execute

        runs = self._batch(inputs, budget, listeners)
        outputs: list[CrewOutput] = []
        for run in runs:
            try:
                outputs.append(execute(run))
            except CrewlineError as exc:
                exc.attach_spend([r for each in runs for r in each.scope.records])
                raise
        return outputs

    async def kickoff_for_each_async(self, inputs: Sequence[Mapping[str, Any]], *,
                                     max_concurrency: int | None = None,
                                     budget: Budget | None = None,
                                     listeners: Sequence[Any] = ()) -> list[CrewOutput]:
        """One run per input, at most ``max_concurrency`` at once; results in input order.

        The first failure cancels the runs still going and is raised, with later failures
        as ``.other_errors``; a ``budget`` spans the whole batch.
        """
        import asyncio

        from crewline._execution.execute import execute_async

        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        runs = self._batch(inputs, budget, listeners)
        gate = asyncio.Semaphore(max_concurrency or len(runs) or 1)

        async def one(run: Any) -> CrewOutput:
            async with gate:
                return await execute_async(run)

        try:
            async with asyncio.TaskGroup() as group:
                started = [group.create_task(one(run)) for run in runs]
        except BaseExceptionGroup as group_error:
            first, *rest = group_error.exceptions
            if isinstance(first, CrewlineError):
                first.other_errors = (*first.other_errors, *rest)
                first.attach_spend([r for each in runs for r in each.scope.records])
            raise first from None
        except asyncio.CancelledError as cancelled:
            records = [r for each in runs for r in each.scope.records]
            cancelled.usage_records = tuple(records)  # type: ignore[attr-defined]
            cancelled.usage = Usage.from_records(records)  # type: ignore[attr-defined]
            raise
        return [t.result() for t in started]

    def _batch(self, inputs: Sequence[Mapping[str, Any]], budget: Budget | None,
               listeners: Sequence[Any]) -> list[Any]:
        import uuid

        from crewline.errors import InputError

        if isinstance(inputs, (Mapping, str | bytes)):
            raise InputError("inputs must be a sequence of mappings, one per run")
        key = f"batch-{uuid.uuid4().hex}"
        runs = []
        for i, item in enumerate(inputs):
            try:
                runs.append(self._run(item, budget, listeners, budget_key=key))
            except InputError as exc:
                raise InputError(f"inputs[{i}]: {exc.message}", placeholder=exc.placeholder,
                                 where=exc.where) from None
        return runs

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Crew:
        """Load a crew file (see docs/yaml.md)."""
        from crewline._surface.crewfile import load_crew

        return load_crew(path, **overrides)
