"""Planning: one request before the first task writes a plan for every task.

The plan belongs to the run, not to any task: its request is recorded in a run-level scope
(``purpose="planning"``, no task), so it is in the crew's usage and in no task's. Each
task's part reaches only that task's prompt, through the run's copy of the prepared task;
the ``Task`` definitions are never touched.

The planner is asked to head each task's part with ``### Task N``; a reply without such
headers is one plan for every task, so no reply is ever lost.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from crewline._accounting.policy import RequestPolicy
from crewline._accounting.usage import UsageScope
from crewline._core.effects import Step
from crewline._core.request import llm_call

if TYPE_CHECKING:
    from crewline._core.prepared import PreparedTask
    from crewline._definitions.llm import LLM

__all__ = ["PLANNER_ROLE", "plan_messages", "plan_tasks", "split_plan"]

PLANNER_ROLE = "Task Execution Planner"
_HEADER = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*)?\**[ \t]*Task[ \t]+(\d+)\b.*$",
                     re.IGNORECASE | re.MULTILINE)


def plan_messages(tasks: tuple[PreparedTask, ...]) -> list[dict[str, str]]:
    system = (f"You are {PLANNER_ROLE}. You are an expert planner who turns each task of a "
              "crew into a step-by-step plan the agent working it can follow.\nYour personal "
              "goal is: Plan how each task of the crew will be done, step by step.")
    parts = []
    for number, task in enumerate(tasks, start=1):
        tools = ", ".join(t.name for t in task.agent.tools) or "none"
        parts.append(f"Task {number}: {task.name}\nAgent: {task.role}\nAgent goal: {task.goal}"
                     f"\nTask description: {task.description}\nExpected output: "
                     f"{task.expected_output or '(not given)'}\nAgent tools: {tools}")
    user = (f"Make a step-by-step plan for each of these {len(tasks)} task(s). Start the plan "
            "of each task on a line of its own with the header '### Task N', N being the "
            "task's number, and write nothing before the first header.\n\n"
            + "\n\n".join(parts))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def split_plan(text: str, count: int) -> dict[int, str]:
    """Each task's part of the plan, by task index; the whole text for all without headers."""
    headers = [m for m in _HEADER.finditer(text) if 1 <= int(m.group(1)) <= count]
    if not headers:
        whole = text.strip()
        return {i: whole for i in range(count)} if whole else {}
    plans: dict[int, str] = {}
    for n, match in enumerate(headers):
        end = headers[n + 1].start() if n + 1 < len(headers) else len(text)
        part = text[match.end():end].strip()
        index = int(match.group(1)) - 1
        if part:
            plans[index] = f"{plans[index]}\n{part}" if index in plans else part
    return plans


def plan_tasks(llm: LLM, tasks: tuple[PreparedTask, ...], run_scope: UsageScope,
               policy: RequestPolicy) -> Step[dict[int, str]]:
    """Ask ``llm`` for the plan (one request, in a run-level scope); return it per task."""
    with run_scope.planning(agent=PLANNER_ROLE).entered():
        reply = yield from llm_call(llm, plan_messages(tasks), policy=policy,
                                    purpose="planning")
    return split_plan(reply.content or "", len(tasks))
