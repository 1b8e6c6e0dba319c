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

__all__ = ["PreparedTask", "RunPlan"]


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
