"""The agent's loop for one attempt: ask the model, run the tools it asks for, repeat.

An assistant message without tool calls is the final answer. A tool that raises, an
unknown tool name and arguments that do not validate are all fed back to the model as the
tool's result, so it can correct itself; ``max_iter`` turns without a final answer fail
the attempt with ``MaxIterationsError``.
"""

from __future__ import annotations

import json
from typing import Any

from crewline import events
from crewline._accounting.policy import RequestPolicy
from crewline._accounting.usage import Purpose
from crewline._core.delegation import DELEGATION_TOOLS, Handoff, delegation_specs, start_delegation
from crewline._core.effects import Call, Parallel, Step
from crewline._core.notify import notify
from crewline._core.prepared import PreparedTask
from crewline._core.request import llm_call
from crewline.errors import MaxIterationsError
from crewline.transport.litellm import ToolCallRequest

__all__ = ["agent_answer", "first_messages"]


def first_messages(task: PreparedTask, context: str, feedback: list[str]
                   ) -> list[dict[str, Any]]:
    system = f"You are {task.role}."
    if task.backstory:
        system += f" {task.backstory}"
    if task.goal:
        system += f"\nYour personal goal is: {task.goal}"
    user = f"Current task: {task.description}"
    if task.expected_output:
        user += f"\n\nThis is the expected criteria for your final answer: {task.expected_output}"
    if context:
        user += f"\n\nThis is the context you are working with:\n{context}"
    if task.plan:
        user += f"\n\nThis is the plan for this task:\n{task.plan}"
    if feedback:
        notes = "\n".join(f"- {f}" for f in feedback)
        user += ("\n\nEarlier answers to this task were rejected. Address this feedback:\n"
                 f"{notes}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _render_result(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(result)


def _run_tool(task: PreparedTask, call: ToolCallRequest) -> Step[str]:
    notify(events.ToolStarted, task=task.name, tool=call.name, call_id=call.id,
           arguments=call.arguments)
    tools = {t.name: t for t in task.agent.tools}
    tool = tools.get(call.name)
    error: str | None = None
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        error = f"unknown tool {call.name!r}; available tools: {available}"
        result = f"Error: {error}"
    else:
        try:
            kwargs = tool.parse_arguments(call.arguments)
        except ValueError as exc:
            error = str(exc)
            result = f"Error: tool {call.name!r}: {error}"
        else:
            try:
                result = _render_result((yield Call(tool.fn, (), kwargs)))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                result = f"Error: tool {call.name!r} raised {error}"
    notify(events.ToolCalled, task=task.name, tool=call.name, ok=error is None, error=error,
           result=result)
    return result


def _run_calls(task: PreparedTask, calls: tuple[ToolCallRequest, ...],
               policy: RequestPolicy) -> Step[list[str]]:
    """Every tool call of one reply, results in call order.

    Delegation calls are sub-steps of this task; two or more in one reply run at once (one
    ``Parallel`` effect), and a failure that stops the task is raised only once all of
    them have ended, so no coworker's spend goes unrecorded.
    """
    handoffs: dict[int, Handoff] = {}
    pending: dict[int, Step[Handoff]] = {}
    if task.delegation is not None:
        for i, call in enumerate(calls):
            if call.name in DELEGATION_TOOLS:
                started = start_delegation(task, call, policy, _coworker_work)
                if isinstance(started, Handoff):
                    handoffs[i] = started
                else:
                    pending[i] = started
    if len(pending) > 1:
        outcomes = yield Parallel(tuple(pending.values()))
        failure: BaseException | None = None
        for i, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failure = failure or outcome
            else:
                handoffs[i] = outcome
        if failure is not None:
            raise failure
        pending.clear()
    results: list[str] = []
    for i, call in enumerate(calls):
        if i in pending:
            handoffs[i] = yield from pending[i]
        if i in handoffs:
            handoff = handoffs[i]
            notify(events.ToolCalled, task=task.name, tool=call.name, ok=handoff.error is None,
                   error=handoff.error)
            results.append(handoff.text)
        else:
            results.append((yield from _run_tool(task, call)))
    return results


def agent_answer(task: PreparedTask, messages: list[dict[str, Any]], policy: RequestPolicy,
                 response_format: dict[str, Any] | None = None) -> Step[str]:
    """Run the tool loop until the model gives a final answer; return its text.

    A hierarchical crew's manager makes its requests with purpose ``manager``; everyone
    else (a coworker too) with ``agent``.
    """
    specs = [t.openai_spec() for t in task.agent.tools] + delegation_specs(task) or None
    purpose: Purpose = "manager" if task.manager else "agent"
    for _turn in range(task.agent.max_iter):
        reply = yield from llm_call(task.llm, messages, policy=policy, purpose=purpose,
                                    tools=specs, response_format=response_format)
        if not reply.tool_calls:
            return reply.content or ""
        messages.append({
            "role": "assistant", "content": reply.content,
            "tool_calls": [{"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments}}
                           for c in reply.tool_calls]})
        results = yield from _run_calls(task, reply.tool_calls, policy)
        for call, result in zip(reply.tool_calls, results, strict=True):
            messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                             "content": result})
    raise MaxIterationsError(
        f"agent {task.role!r} on task {task.name!r} made {task.agent.max_iter} model turns "
        f"without a final answer (max_iter={task.agent.max_iter})")


def _coworker_work(task: PreparedTask, context: str, policy: RequestPolicy) -> Step[str]:
    """A coworker's piece of a delegated task: the same agent loop, from its own prompt."""
    return agent_answer(task, first_messages(task, context, []), policy)
