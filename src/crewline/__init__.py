"""crewline: a multi-agent orchestration engine that stays exact under concurrency.

Importing crewline is cheap: the public names below are loaded on first use (a module
``__getattr__``), pydantic when a definition is first touched, and litellm at the first
LLM request. ``dir(crewline)``, ``from crewline import *`` and type checkers see them all.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing alone costs more than crewline
__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    "Agent": "crewline._definitions.agent",
    "Attempt": "crewline._core.outputs",
    "Budget": "crewline.budget.budget",
    "BudgetExceededError": "crewline.errors",
    "CallbackError": "crewline.errors",
    "ConversionError": "crewline.errors",
    "Crew": "crewline._crew.crew",
    "CrewOutput": "crewline._core.outputs",
    "CrewlineError": "crewline.errors",
    "DefinitionError": "crewline.errors",
    "GuardrailError": "crewline.errors",
    "GuardrailVerdict": "crewline._core.outputs",
    "InputError": "crewline.errors",
    "LLM": "crewline._definitions.llm",
    "MaxIterationsError": "crewline.errors",
    "Process": "crewline._crew.process",
    "ProviderError": "crewline.errors",
    "Task": "crewline._definitions.task",
    "TaskOutput": "crewline._core.outputs",
    "Tool": "crewline._definitions.tools",
    "Usage": "crewline._accounting.usage",
    "UsageRecord": "crewline._accounting.usage",
    "tool": "crewline._definitions.tools",
    "WorkerLostError": "crewline.errors",
}

__all__ = [
    "LLM",
    "Agent",
    "Attempt",
    "Budget",
    "BudgetExceededError",
    "CallbackError",
    "ConversionError",
    "Crew",
    "CrewOutput",
    "CrewlineError",
    "DefinitionError",
    "GuardrailError",
    "GuardrailVerdict",
    "InputError",
    "MaxIterationsError",
    "Process",
    "ProviderError",
    "Task",
    "TaskOutput",
    "Tool",
    "Usage",
    "UsageRecord",
    "WorkerLostError",
    "__version__",
    "tool",
]

if TYPE_CHECKING:
    from crewline._accounting.usage import Usage, UsageRecord
    from crewline._core.outputs import Attempt, CrewOutput, GuardrailVerdict, TaskOutput
    from crewline._crew.crew import Crew
    from crewline._crew.process import Process
    from crewline._definitions.agent import Agent
    from crewline._definitions.llm import LLM
    from crewline._definitions.task import Task
    from crewline._definitions.tools import Tool, tool
    from crewline.budget.budget import Budget
    from crewline.errors import (
        BudgetExceededError,
        CallbackError,
        ConversionError,
        CrewlineError,
        DefinitionError,
        GuardrailError,
        InputError,
        MaxIterationsError,
        ProviderError,
        WorkerLostError,
    )


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'crewline' has no attribute {name!r}")
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
