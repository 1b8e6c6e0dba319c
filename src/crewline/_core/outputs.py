"""What a run returns: ``TaskOutput`` per task, ``CrewOutput`` per kickoff.

Every usage figure on them is a sum of ``UsageRecord``s, so it is the same whichever
driver ran the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from crewline._accounting.usage import Usage, UsageRecord

__all__ = ["Attempt", "CrewOutput", "GuardrailVerdict", "TaskOutput"]


@dataclass(frozen=True, slots=True)
class GuardrailVerdict:
    guardrail: str
    passed: bool
    feedback: Any = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a task: its raw output, the guardrails' verdicts, and what it spent."""

    number: int
    raw: str | None
    verdicts: tuple[GuardrailVerdict, ...]
    usage_records: tuple[UsageRecord, ...]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(v.passed for v in self.verdicts)

    @property
    def usage(self) -> Usage:
        return Usage.from_records(self.usage_records)


class TaskOutput(BaseModel):
    """The accepted output of a task. Guardrails may return a modified copy of it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True)

    raw: str
    name: str
    description: str = ""
    expected_output: str = ""
    agent: str = ""
    pydantic: BaseModel | None = None
    json_dict: dict[str, Any] | None = None
    usage_records: tuple[UsageRecord, ...] = ()
    attempts: tuple[Attempt, ...] = ()

    @property
    def usage(self) -> Usage:
        return Usage.from_records(self.usage_records)

    def __str__(self) -> str:
        return self.raw


class CrewOutput(BaseModel):
    """The result of one kickoff."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True)

    run_id: str
    raw: str
    tasks_output: tuple[TaskOutput, ...]
    usage_records: tuple[UsageRecord, ...]

    @property
    def pydantic(self) -> BaseModel | None:
        return self.tasks_output[-1].pydantic if self.tasks_output else None

    @property
    def json_dict(self) -> dict[str, Any] | None:
        return self.tasks_output[-1].json_dict if self.tasks_output else None

    @property
    def usage(self) -> Usage:
        return Usage.from_records(self.usage_records)

    @property
    def usage_by_agent(self) -> dict[str, Usage]:
        by: dict[str, list[UsageRecord]] = {}
        for r in self.usage_records:
            by.setdefault(r.agent or "", []).append(r)
        return {agent: Usage.from_records(rs) for agent, rs in by.items()}

    @property
    def usage_by_task(self) -> dict[str, Usage]:
        by: dict[str, list[UsageRecord]] = {}
        for r in self.usage_records:
            by.setdefault(r.task or "", []).append(r)
        return {task: Usage.from_records(rs) for task, rs in by.items()}

    def __str__(self) -> str:
        return self.raw
