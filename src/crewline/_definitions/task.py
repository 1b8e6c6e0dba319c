"""The ``Task`` definition: what to ask, of whom, and what counts as a good answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from crewline._definitions.agent import Agent
from crewline._definitions.base import Definition
from crewline.budget import Budget

__all__ = ["Guardrail", "Task", "task_name"]

def task_name(index: int, explicit: str | None) -> str:
    """A task's name: its own, else a stable default from its position (``task_3``)."""
    return explicit if explicit else f"task_{index + 1}"


Guardrail = Callable[[Any], Any] | str
"""A callable ``(TaskOutput) -> (bool, Any)``, or a text an LLM judges the output against."""


class Task(Definition):
    """One piece of work. Frozen: a run keeps its own state, never on the task.

    ``description`` and ``expected_output`` may hold ``{placeholders}``. Without
    ``context`` a task sees the outputs of every earlier task; with ``context=[...]``
    exactly those.
    """

    description: str = Field(min_length=1)
    expected_output: str = ""
    agent: Agent | None = None
    context: tuple[Task, ...] | None = None
    async_execution: bool = False
    guardrail: Guardrail | None = None
    guardrails: tuple[Guardrail, ...] = ()
    guardrail_max_retries: int = Field(default=3, ge=0)
    output_pydantic: type[BaseModel] | None = None
    output_json: type[BaseModel] | None = None
    callback: Callable[[Any], Any] | None = None
    name: str | None = None
    budget: Budget | None = None
    """A ``crewline.Budget`` that every LLM request of this task must fit."""

    @field_validator("guardrails", mode="before")
    @classmethod
    def _guardrail_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if callable(value) or isinstance(value, str):
            return (value,)
        return tuple(value)

    @field_validator("guardrails")
    @classmethod
    def _check_guardrails(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        for i, g in enumerate(value):
            if not (callable(g) or (isinstance(g, str) and g.strip())):
                raise ValueError(f"guardrails[{i}] must be a callable or a non-empty text")
        return value

    @field_validator("guardrail")
    @classmethod
    def _check_guardrail(cls, value: Any) -> Any:
        if value is not None and not (callable(value) or (isinstance(value, str)
                                                          and value.strip())):
            raise ValueError("guardrail must be a callable or a non-empty text")
        return value

    @model_validator(mode="after")
    def _one_output_format(self) -> Task:
        if self.output_pydantic is not None and self.output_json is not None:
            raise ValueError("set output_pydantic or output_json, not both")
        return self

    @property
    def all_guardrails(self) -> tuple[Guardrail, ...]:
        first = (self.guardrail,) if self.guardrail is not None else ()
        return first + self.guardrails

    @property
    def output_model(self) -> type[BaseModel] | None:
        return self.output_pydantic or self.output_json
