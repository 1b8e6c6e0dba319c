"""How a crew's process turns a definition and inputs into one run's plan.

Sequential: tasks in order, each with its own agent. A main-line task waits for every
background (``async_execution``) task started before it; a background task waits only for
the earlier background tasks it names as context. Everything is resolved here, before a
single request is sent, so a missing input or agent fails the kickoff for free.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from crewline._core.prepared import PreparedTask, RunPlan
from crewline._core.templates import checked_inputs, fill
from crewline._definitions.task import task_name
from crewline.errors import DefinitionError, InputError

if TYPE_CHECKING:
    from crewline._crew.crew import Crew

__all__ = ["Process", "plan_run"]


class Process(enum.StrEnum):
    """How a crew orders its tasks."""

    sequential = "sequential"


def plan_run(crew: Crew, inputs: Mapping[str, Any] | None) -> RunPlan:
    """The plan of one kickoff of ``crew`` with ``inputs``, or the error that stops it."""
    if inputs is not None and not isinstance(inputs, Mapping):
        raise InputError(f"inputs must be a mapping of names to values, got "
                         f"{type(inputs).__name__}")
    values = checked_inputs(inputs)
    return RunPlan(tasks=_prepare_tasks(crew, values), budget=crew.budget,
                   limiter=crew.limiter, inputs=values)


def _prepare_tasks(crew: Crew, inputs: Mapping[str, Any]) -> tuple[PreparedTask, ...]:
    tasks = crew.tasks
    position = {id(t): i for i, t in enumerate(tasks)}
    prepared: list[PreparedTask] = []
    pending: list[int] = []  # background tasks started since the main line last joined
    for i, task in enumerate(tasks):
        name = task_name(i, task.name)
        agent = task.agent or (crew.agents[0] if len(crew.agents) == 1 else None)
        if agent is None:  # Crew validation makes this unreachable; kept as a guard
            raise DefinitionError(f"task {name!r} has no agent")
        llm = agent.llm or crew.llm
        if llm is None:
            raise DefinitionError(f"agent {agent.role!r} (task {name!r}) has no llm")
        role = fill(agent.role, inputs, where=f"agent {agent.role!r} role")
        where = f"task {name!r}"
        if task.context is not None:
            context_from = tuple(sorted(position[id(t)] for t in task.context))
        else:
            context_from = tuple(j for j in range(i) if j not in pending)
        if task.async_execution:
            waits_for = tuple(j for j in context_from if j in pending)
        else:
            waits_for = tuple(pending)
            context_from = context_from if task.context is not None else tuple(range(i))
        prepared.append(PreparedTask(
            index=i, name=name, task=task, agent=agent, llm=llm,
            description=fill(task.description, inputs, where=f"{where} description"),
            expected_output=fill(task.expected_output, inputs,
                                 where=f"{where} expected_output"),
            role=role,
            goal=fill(agent.goal, inputs, where=f"agent {agent.role!r} goal"),
            backstory=fill(agent.backstory, inputs, where=f"agent {agent.role!r} backstory"),
            background=task.async_execution, context_from=context_from, waits_for=waits_for))
        if task.async_execution:
            pending.append(i)
        else:
            pending.clear()
    return tuple(prepared)
