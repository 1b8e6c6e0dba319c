"""How a crew's process turns a definition and inputs into one run's plan.

Sequential: tasks in order, each with its own agent; an agent with ``allow_delegation``
holds the delegation tools over the crew's other agents. Hierarchical: the same order, but
every task is worked by the manager (``manager_agent``, or one built from ``manager_llm``
with the role ``"Crew Manager"``), holding the delegation tools over the crew's agents.
A main-line task waits for every
background (``async_execution``) task started before it; a background task waits only for
the earlier background tasks it names as context. Everything is resolved here, before a
single request is sent, so a missing input or agent fails the kickoff for free.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from crewline._core.prepared import Coworker, Delegation, PreparedTask, RunPlan
from crewline._core.templates import Template, checked_inputs, fill
from crewline._definitions.agent import Agent
from crewline._definitions.task import task_name
from crewline.errors import DefinitionError, InputError

if TYPE_CHECKING:
    from crewline._accounting.ratelimit import RateLimiter
    from crewline._definitions.llm import LLM
    from crewline._definitions.task import Task
    from crewline.budget.budget import Budget

__all__ = ["MANAGER_BACKSTORY", "MANAGER_GOAL", "MANAGER_ROLE", "CrewPlanShape", "Process",
           "manager_agent", "plan_run", "plan_shape"]

MANAGER_ROLE = "Crew Manager"
MANAGER_GOAL = "Manage the team to complete the task in the best way possible."
MANAGER_BACKSTORY = (
    "You are a seasoned manager with a knack for getting the best out of your team. You "
    "are also known for your ability to delegate work to the right people, and to ask the "
    "right questions to get the best out of your team. Even though you don't perform tasks "
    "by yourself, you have a lot of experience in the field, which allows you to properly "
    "evaluate the work of your team members.")


class CrewShape(Protocol):
    """What planning reads of a crew (a ``Crew``, typed here so that this layer needs no
    import of the layer above it)."""

    @property
    def tasks(self) -> tuple[Task, ...]: ...
    @property
    def agents(self) -> tuple[Agent, ...]: ...
    @property
    def llm(self) -> LLM | None: ...
    @property
    def budget(self) -> Budget | None: ...
    @property
    def limiter(self) -> RateLimiter | None: ...
    @property
    def process(self) -> Process: ...
    @property
    def manager_agent(self) -> Agent | None: ...
    @property
    def manager_llm(self) -> LLM | None: ...
    @property
    def planning(self) -> bool: ...
    @property
    def planning_llm(self) -> LLM | None: ...
    @property
    def max_delegation_depth(self) -> int: ...


class Process(enum.StrEnum):
    """How a crew orders its tasks and who works them."""

    sequential = "sequential"
    hierarchical = "hierarchical"


def manager_agent(crew: CrewShape) -> Agent | None:
    """The agent that works every task of a hierarchical crew (None for sequential).

    Built from ``manager_llm`` when no ``manager_agent`` is given; a new ``Agent`` per
    plan is cheap, and the user's ``LLM`` (with its rate limiter) is the one used.
    """
    if crew.process != Process.hierarchical:
        return None
    if crew.manager_agent is not None:
        return crew.manager_agent
    return Agent(role=MANAGER_ROLE, goal=MANAGER_GOAL, backstory=MANAGER_BACKSTORY,
                 llm=crew.manager_llm, allow_delegation=True)


def plan_run(crew: CrewShape, inputs: Mapping[str, Any] | None,
             shape: CrewPlanShape | None = None) -> RunPlan:
    """The plan of one kickoff of ``crew`` with ``inputs``, or the error that stops it.

    ``shape`` is ``plan_shape(crew)`` when the caller keeps it (a ``Crew`` does, from its
    first kickoff on): only the templates are then filled per kickoff."""
    if inputs is not None and type(inputs) is not dict and not isinstance(inputs, Mapping):
        raise InputError(f"inputs must be a mapping of names to values, got "
                         f"{type(inputs).__name__}")
    values = checked_inputs(inputs)
    tasks = _fill_tasks(crew, shape or plan_shape(crew), values)
    return RunPlan(tasks=tasks, budget=crew.budget, limiter=crew.limiter, inputs=values,
                   planning_llm=_planning_llm(crew, tasks))


def _planning_llm(crew: CrewShape, tasks: tuple[PreparedTask, ...]) -> LLM | None:
    if not crew.planning:
        return None
    return crew.planning_llm or crew.llm or crew.manager_llm or tasks[0].llm


def _roster(crew: CrewShape, inputs: Mapping[str, Any]) -> tuple[Coworker, ...]:
    """The crew's agents as delegation reaches them, with templates filled."""
    roster: list[Coworker] = []
    seen: dict[str, str] = {}
    for agent in crew.agents:
        llm = agent.llm or crew.llm
        if llm is None:  # Crew validation makes this unreachable; kept as a guard
            raise DefinitionError(f"agent {agent.role!r} can be delegated to but has no llm")
        where = f"agent {agent.role!r}"
        role = fill(agent.role, inputs, where=f"{where} role")
        key = " ".join(role.split()).casefold()
        if key in seen:
            raise DefinitionError(
                f"agents {seen[key]!r} and {role!r} have the same role, so delegation cannot "
                "tell them apart: give each agent of a delegating crew its own role")
        seen[key] = role
        roster.append(Coworker(
            agent=agent, llm=llm, role=role,
            goal=fill(agent.goal, inputs, where=f"{where} goal"),
            backstory=fill(agent.backstory, inputs, where=f"{where} backstory")))
    return tuple(roster)


@dataclass(frozen=True, slots=True)
class CrewPlanShape:
    """What a crew's process decides whatever the inputs: each task's agent, model, order,
    context and delegation, with every text as written (templates unfilled).

    A ``Crew`` is frozen, so this is made once per crew object and shared by its kickoffs
    (it is immutable, and holds nothing a run changes); a kickoff fills the templates."""

    tasks: tuple[PreparedTask, ...]
    templates: tuple[tuple[tuple[Template, str], ...] | None, ...]
    """Per task: its role, description, expected output, goal and backstory as templates,
    each with where it stands (for an error message), or None when none holds a
    placeholder."""
    delegates: tuple[bool, ...]
    """Per task: whether its worker holds the delegation tools (filled per kickoff)."""
    fixed: bool
    """No task has a template or delegation tools: every kickoff plans ``tasks`` as they are."""


def _templates(task: PreparedTask) -> tuple[tuple[Template, str], ...] | None:
    texts = (task.role, task.description, task.expected_output, task.goal, task.backstory)
    if all("{" not in text for text in texts):
        return None
    by, where = f"agent {task.role!r}", f"task {task.name!r}"
    places = (f"{by} role", f"{where} description", f"{where} expected_output", f"{by} goal",
              f"{by} backstory")
    return tuple((Template(text), place) for text, place in zip(texts, places, strict=True))


def plan_shape(crew: CrewShape) -> CrewPlanShape:
    """The input-independent part of every plan of ``crew`` (``DefinitionError`` if none)."""
    tasks = crew.tasks
    position = {id(t): i for i, t in enumerate(tasks)}
    prepared: list[PreparedTask] = []
    delegates: list[bool] = []
    pending: list[int] = []  # background tasks started since the main line last joined
    manager = manager_agent(crew)
    for i, task in enumerate(tasks):
        name = task_name(i, task.name)
        agent = manager or task.agent or (crew.agents[0] if len(crew.agents) == 1 else None)
        if agent is None:  # Crew validation makes this unreachable; kept as a guard
            raise DefinitionError(f"task {name!r} has no agent")
        llm = agent.llm or crew.llm
        if llm is None:
            raise DefinitionError(f"agent {agent.role!r} (task {name!r}) has no llm")
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
            description=task.description, expected_output=task.expected_output,
            role=agent.role, goal=agent.goal, backstory=agent.backstory,
            background=task.async_execution, context_from=context_from, waits_for=waits_for,
            manager=manager is not None))
        delegates.append(manager is not None or agent.allow_delegation)
        if task.async_execution:
            pending.append(i)
        else:
            pending.clear()
    templates = tuple(_templates(t) for t in prepared)
    return CrewPlanShape(tasks=tuple(prepared), delegates=tuple(delegates), templates=templates,
                         fixed=not any(delegates) and all(t is None for t in templates))


def _fill_tasks(crew: CrewShape, shape: CrewPlanShape, inputs: Mapping[str, Any]
                ) -> tuple[PreparedTask, ...]:
    """The shape's tasks with this kickoff's inputs in their templates (and delegation
    rosters); a task with neither is the shape's own object."""
    if shape.fixed:
        return shape.tasks
    roster = _roster(crew, inputs) if any(shape.delegates) else ()
    filled: list[PreparedTask] = []
    for task, templates, delegates in zip(shape.tasks, shape.templates, shape.delegates,
                                          strict=True):
        if templates is None and not delegates:
            filled.append(task)
            continue
        texts: tuple[str, ...] = (task.role, task.description, task.expected_output,
                                  task.goal, task.backstory)
        if templates is not None:
            texts = tuple(template.fill(inputs, where=place) for template, place in templates)
        role, description, expected_output, goal, backstory = texts
        filled.append(PreparedTask(
            index=task.index, name=task.name, task=task.task, agent=task.agent,
            llm=task.llm, description=description, expected_output=expected_output,
            role=role, goal=goal, backstory=backstory, background=task.background,
            context_from=task.context_from, waits_for=task.waits_for,
            delegation=Delegation(coworkers=roster, max_depth=crew.max_delegation_depth)
            if delegates else None, manager=task.manager))
    return tuple(filled)
