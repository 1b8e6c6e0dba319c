"""A task as one run sees it: templates filled, agent and model resolved, context chosen.

Built once per run before anything is sent, so a missing input fails the kickoff before
a single token is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from crewline._definitions.agent import Agent
from crewline._definitions.llm import LLM
from crewline._definitions.task import Task

__all__ = ["PreparedTask"]


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
