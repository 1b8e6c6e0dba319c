"""crewline: a multi-agent orchestration engine that stays exact under concurrency.

Importing crewline is cheap: litellm is imported at the first LLM request.
"""

from __future__ import annotations

from crewline.agent import Agent
from crewline.budget import Budget
from crewline.crew import Crew, Process
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
)
from crewline.llm import LLM
from crewline.outputs import Attempt, CrewOutput, GuardrailVerdict, TaskOutput
from crewline.task import Task
from crewline.tools import Tool, tool
from crewline.usage import Usage, UsageRecord

__version__ = "0.1.0"

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
    "__version__",
    "tool",
]
