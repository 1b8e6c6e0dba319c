"""The ``Crew`` definition and its kickoff methods.

A ``Crew`` is frozen and holds no run state: each ``kickoff*`` call creates a ``Run`` that
owns everything the execution changes, so one ``Crew`` object can be kicked off from any
number of threads and asyncio tasks at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from crewline._core.outputs import CrewOutput
from crewline._crew.process import CrewPlanShape, Process, plan_run, plan_shape
from crewline._definitions.agent import Agent
from crewline._definitions.base import RateLimitedDefinition
from crewline._definitions.llm import LLM
from crewline._definitions.task import Task, task_name
from crewline._execution.batch import BatchRunner, build_batch, run_batch, run_batch_async
from crewline._execution.execute import execute, execute_async
from crewline._execution.run import Run
from crewline.budget import Budget
from crewline.errors import DefinitionError

if TYPE_CHECKING:
    from crewline._execution.stream import AsyncCrewStream, CrewStream

__all__ = ["Crew", "Process"]


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
    manager_llm: LLM | None = None
    """Hierarchical: the model of the manager crewline builds (role ``"Crew Manager"``)."""
    manager_agent: Agent | None = None
    """Hierarchical: your own manager, instead of one built from ``manager_llm``."""
    planning: bool = False
    """Make one plan for every task before the first one starts (purpose ``planning``)."""
    planning_llm: LLM | None = None
    """The planner's model; default: the crew's ``llm``, else the manager's, else the first
    task's."""
    max_delegation_depth: int = Field(default=2, ge=1)
    """How deep hand-offs may nest: 1 lets the task's worker delegate, 2 lets its
    coworkers delegate once more, and so on."""

    _shape: CrewPlanShape | None = PrivateAttr(default=None)

    @field_validator("llm", "manager_llm", "planning_llm", mode="before")
    @classmethod
    def _llm_from_string(cls, value: Any) -> Any:
        return LLM(model=value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_delegation(self) -> Crew:
        """Raised as ``DefinitionError`` (not a validation error): the crew's shape, not a
        field's value, is wrong."""
        if self.process == Process.hierarchical:
            if self.manager_llm is None and self.manager_agent is None:
                raise DefinitionError(
                    "a hierarchical crew needs a manager: set manager_llm=LLM(...) (crewline "
                    "builds a 'Crew Manager' agent) or manager_agent=Agent(...)")
            if self.manager_agent is not None and self.manager_llm is not None:
                raise DefinitionError("set manager_llm or manager_agent, not both")
            if self.manager_agent is not None:
                if any(a is self.manager_agent for a in self.agents):
                    raise DefinitionError(
                        f"manager_agent {self.manager_agent.role!r} is also one of the crew's "
                        "agents: the manager delegates to the agents, so it must not be one")
                if self.manager_agent.llm is None and self.llm is None:
                    raise DefinitionError(
                        f"manager_agent {self.manager_agent.role!r} has no llm, and the crew "
                        "sets no default llm")
            if not self.agents:
                raise DefinitionError("a hierarchical crew needs agents for its manager to "
                                      "delegate to")
        elif self.manager_llm is not None or self.manager_agent is not None:
            raise DefinitionError(
                f"manager_llm and manager_agent are for Process.hierarchical; this crew's "
                f"process is {self.process.value!r}")
        if self.process == Process.hierarchical or any(a.allow_delegation
                                                        for a in self.agents):
            for agent in self.agents:
                if agent.llm is None and self.llm is None:
                    raise DefinitionError(
                        f"agent {agent.role!r} can be delegated to but has no llm, and the "
                        "crew sets no default llm")
        return self

    @model_validator(mode="after")
    def _check_tasks(self) -> Crew:
        hierarchical = self.process == Process.hierarchical
        seen: dict[str, int] = {}
        position = {id(t): i for i, t in enumerate(self.tasks)}
        for i, task in enumerate(self.tasks):
            name = task_name(i, task.name)
            if name in seen:
                raise ValueError(f"tasks[{i}]: name {name!r} is already used by "
                                 f"tasks[{seen[name]}]; task names must be unique")
            seen[name] = i
            if hierarchical:
                pass  # the manager works every task
            elif task.agent is None and len(self.agents) != 1:
                raise ValueError(f"tasks[{i}] ({name!r}) has no agent, and the crew has "
                                 f"{len(self.agents)} agents: give the task an agent")
            agent = task.agent or (self.agents[0] if self.agents else None)
            if not hierarchical and agent is not None and agent.llm is None \
                    and self.llm is None:
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

    def _plan_shape(self) -> CrewPlanShape:
        """What every kickoff of this crew plans alike, made at the first kickoff and kept:
        the crew is frozen, and the shape immutable (a failure is raised, never kept)."""
        private = self.__pydantic_private__
        shape: CrewPlanShape | None = private.get("_shape") if private else None
        if shape is None:
            shape = plan_shape(self)
            if private is not None:
                private["_shape"] = shape  # two first kickoffs at once make equal shapes
        return shape

    def _run(self, inputs: Mapping[str, Any] | None, budget: Budget | None,
             listeners: Sequence[Any], budget_key: str | None = None, *,
             stream: bool = False) -> Run:
        return Run(plan_run(self, inputs, self._plan_shape()), budget=budget,
                   listeners=listeners, budget_key=budget_key, stream=stream)

    def kickoff(self, inputs: Mapping[str, Any] | None = None, *,
                budget: Budget | None = None, listeners: Sequence[Any] = ()) -> CrewOutput:
        """Run the crew on the calling thread; background tasks run on worker threads."""
        return execute(self._run(inputs, budget, listeners))

    async def kickoff_async(self, inputs: Mapping[str, Any] | None = None, *,
                            budget: Budget | None = None,
                            listeners: Sequence[Any] = ()) -> CrewOutput:
        """Run the crew natively on the running event loop."""
        return await execute_async(self._run(inputs, budget, listeners))

    async def akickoff(self, inputs: Mapping[str, Any] | None = None, *,
                       budget: Budget | None = None,
                       listeners: Sequence[Any] = ()) -> CrewOutput:
        """Alias of ``kickoff_async``."""
        return await self.kickoff_async(inputs, budget=budget, listeners=listeners)

    def kickoff_for_each(self, inputs: Sequence[Mapping[str, Any]], *,
                         budget: Budget | None = None,
                         listeners: Sequence[Any] = (),
                         runner: BatchRunner | None = None) -> list[CrewOutput]:
        """One run per input, one after another; a ``budget`` spans the whole batch.

        With a ``runner`` (``crewline.ray.RayRunner``) the runner executes the batch, many
        runs at once on its workers; results stay in input order.
        """
        if runner is not None:
            return runner.run(self, inputs, budget=budget, listeners=listeners)
        return run_batch(self._batch(inputs, budget, listeners))

    async def kickoff_for_each_async(self, inputs: Sequence[Mapping[str, Any]], *,
                                     max_concurrency: int | None = None,
                                     budget: Budget | None = None,
                                     listeners: Sequence[Any] = (),
                                     runner: BatchRunner | None = None) -> list[CrewOutput]:
        """One run per input, at most ``max_concurrency`` at once; results in input order.

        The first failure cancels the runs still going and is raised, with later failures
        as ``.other_errors``; a ``budget`` spans the whole batch. With a ``runner`` the
        runner executes the batch (its own ``concurrency`` per worker applies).
        """
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if runner is not None:
            if max_concurrency is not None:
                raise ValueError("max_concurrency does not apply with a runner; set the "
                                 "runner's own concurrency (RayRunner(concurrency=...))")
            return await runner.run_async(self, inputs, budget=budget, listeners=listeners)
        return await run_batch_async(self._batch(inputs, budget, listeners),
                                     max_concurrency=max_concurrency)

    def stream(self, inputs: Mapping[str, Any] | None = None, *,
               budget: Budget | None = None, listeners: Sequence[Any] = ()) -> CrewStream:
        """Kick off on a thread of its own and watch it: every request is streamed, and the
        kickoff's events (``TextDelta`` among them) are yielded as they happen. Use it in a
        ``with`` block; leaving the block early cancels the kickoff (docs/streaming.md)."""
        from crewline._execution.stream import CrewStream

        return CrewStream(lambda handlers: self._run(inputs, budget, handlers, stream=True),
                          listeners)

    def astream(self, inputs: Mapping[str, Any] | None = None, *,
                budget: Budget | None = None, listeners: Sequence[Any] = ()) -> AsyncCrewStream:
        """``stream`` on the running event loop: ``async with crew.astream(...) as s``."""
        from crewline._execution.stream import AsyncCrewStream

        return AsyncCrewStream(
            lambda handlers: self._run(inputs, budget, handlers, stream=True), listeners)

    def _batch(self, inputs: Sequence[Mapping[str, Any]], budget: Budget | None,
               listeners: Sequence[Any]) -> list[Run]:
        return build_batch(inputs, lambda item, key: self._run(item, budget, listeners, key))

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Crew:
        """Load a crew file (see docs/yaml.md)."""
        from crewline._crew.crewfile import load_crew

        return load_crew(path, crew_type=cls, **overrides)
