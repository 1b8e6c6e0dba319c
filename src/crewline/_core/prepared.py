"""A task as one run sees it: templates filled, agent and model resolved, context chosen.

Built once per run before anything is sent, so a missing input fails the kickoff before
a single token is spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crewline._definitions.agent import Agent
from crewline._definitions.llm import LLM
from crewline._definitions.task import Task

if TYPE_CHECKING:
    from crewline._accounting.ratelimit import RateLimiter
    from crewline.budget.budget import Budget

__all__ = ["Coworker", "Delegation", "PreparedTask", "RunPlan"]


@dataclass(frozen=True, slots=True)
class Coworker:
    """An agent delegation may reach, with its templates filled for this run."""

    agent: Agent
    llm: LLM
    role: str
    goal: str
    backstory: str


@dataclass(frozen=True, slots=True)
class Delegation:
    """Who the worker of a task may hand work to, and how deep hand-offs may nest.

    ``coworkers`` is the crew's roster; a holder never reaches itself nor anyone already
    in its chain of delegators (``chain``, roles as written), whatever the roster says.
    """

    coworkers: tuple[Coworker, ...]
    max_depth: int
    depth: int = 0
    """How many delegations deep the holder works (0: the task's own worker)."""
    chain: tuple[str, ...] = ()
    """The roles above the holder, first delegator first."""


@dataclass(frozen=True, slots=True)
class PreparedTask:
    index: int
    name: str
    task: Task
    agent: Agent
    llm: LLM
    description: str
    expected_output: str
    role: str
    goal: str
    backstory: str
    background: bool
    """Runs beside the main line (``async_execution``)."""
    context_from: tuple[int, ...]
    """Indices of the tasks whose outputs this task sees, in task order."""
    waits_for: tuple[int, ...]
    """Indices that must be finished before this task starts."""
    delegation: Delegation | None = None
    """The delegation tools the worker holds, over whom; None: it holds none."""
    manager: bool = False
    """Worked by a hierarchical crew's manager (its requests have purpose ``manager``)."""
    plan: str | None = None
    """This task's part of the crew's plan (``Crew(planning=True)``), set by the run."""
    delegated_by: str | None = None
    """For a coworker's piece of work: the role that delegated it."""


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What one kickoff of a crew will do, made by the crew's process before the run starts:
    the run is built from this, never from the ``Crew`` itself."""

    tasks: tuple[PreparedTask, ...]
    budget: Budget | None = None
    """The crew's own budget (period ``"run"`` means each run)."""
    limiter: RateLimiter | None = None
    """The crew's rate limiter, shared by every run of that crew object."""
    inputs: dict[str, Any] = field(default_factory=dict)
    planning_llm: LLM | None = None
    """The model that writes the plan before the first task; None: no planning."""
