"""The ``Agent`` definition: who answers a task, with which model and tools."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from crewline._definitions.base import Definition
from crewline._definitions.llm import LLM
from crewline._definitions.tools import Tool, as_tool

__all__ = ["Agent"]


class Agent(Definition):
    """A role played by a model. Frozen: runs read it, never change it.

    ``role``, ``goal`` and ``backstory`` may hold ``{placeholders}`` filled from the
    kickoff's inputs.
    """

    role: str = Field(min_length=1)
    goal: str = ""
    backstory: str = ""
    llm: LLM | None = None
    tools: tuple[Tool, ...] = ()
    max_iter: int = Field(default=20, gt=0)
    """How many model turns one attempt may take before it fails with MaxIterationsError."""
    allow_delegation: bool = False
    """Whether this agent may hand work to its crew's other agents (and ask them questions)
    through the ``delegate_work_to_coworker`` and ``ask_question_to_coworker`` tools."""

    @field_validator("llm", mode="before")
    @classmethod
    def _llm_from_string(cls, value: Any) -> Any:
        return LLM(model=value) if isinstance(value, str) else value

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> tuple[Tool, ...]:
        if value is None:
            return ()
        tools = tuple(as_tool(v) for v in value)
        names = [t.name for t in tools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate tool names: {', '.join(dupes)}")
        return tools
