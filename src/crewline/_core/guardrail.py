"""Guardrails: checks an output must pass before a task accepts it.

A guardrail is a callable ``(TaskOutput) -> (bool, Any)`` or a text an LLM judges the
output against (those requests are recorded with purpose ``guardrail``). On success the
value may be a ``str`` (replaces ``raw``) or a ``TaskOutput`` (replaces the output);
``(False, feedback)`` fails the attempt and the feedback joins the next attempt's prompt.
Every guardrail checks every new output, in order, stopping at the first failure.
"""

from __future__ import annotations

import json
from typing import Any

from crewline import events
from crewline._accounting.policy import RequestPolicy
from crewline._core.effects import Call, Step
from crewline._core.notify import notify
from crewline._core.outputs import GuardrailVerdict, TaskOutput
from crewline._core.prepared import PreparedTask
from crewline._core.request import llm_call
from crewline.errors import CallbackError, DefinitionError

__all__ = ["check_output", "guardrail_name"]


def guardrail_name(guardrail: Any) -> str:
    if isinstance(guardrail, str):
        text = " ".join(guardrail.split())
        return text if len(text) <= 60 else text[:57] + "..."
    return str(getattr(guardrail, "__qualname__", None) or getattr(guardrail, "__name__", None)
               or type(guardrail).__name__)


def _judge(task: PreparedTask, requirement: str, output: TaskOutput,
           policy: RequestPolicy) -> Step[tuple[bool, Any]]:
    messages = [
        {"role": "system", "content": (
            "You check whether a piece of work meets a requirement. Answer with a JSON "
            'object only: {"valid": true or false, "feedback": "what is wrong, if anything"}')},
        {"role": "user", "content": f"Requirement: {requirement}\n\nWork:\n{output.raw}"},
    ]
    fmt = {"type": "json_object"} if task.llm.model.startswith("openai/") else None
    reply = yield from llm_call(task.llm, messages, policy=policy, purpose="guardrail",
                                response_format=fmt)
    text = (reply.content or "").strip()
    try:
        verdict = json.loads(text[text.find("{"):text.rfind("}") + 1])
        valid = verdict["valid"]
        if not isinstance(valid, bool):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return False, f"the guardrail judge's reply could not be read: {text[:200]!r}"
    return valid, (None if valid else str(verdict.get("feedback") or "requirement not met"))


def _interpret(name: str, task: PreparedTask, result: Any) -> tuple[bool, Any]:
    if (isinstance(result, tuple | list) and len(result) == 2
            and isinstance(result[0], bool)):
        return result[0], result[1]
    raise DefinitionError(
        f"guardrail {name!r} of task {task.name!r} returned {result!r}; expected a "
        "(bool, value) pair")


def check_output(task: PreparedTask, output: TaskOutput, policy: RequestPolicy
                 ) -> Step[tuple[bool, TaskOutput, tuple[GuardrailVerdict, ...], Any]]:
    """Run every guardrail on ``output``: (passed, output, verdicts, feedback)."""
    verdicts: list[GuardrailVerdict] = []
    for guardrail in task.task.all_guardrails:
        name = guardrail_name(guardrail)
        if isinstance(guardrail, str):
            passed, value = yield from _judge(task, guardrail, output, policy)
        else:
            try:
                result = yield Call(guardrail, (output,))
            except Exception as exc:
                raise CallbackError(
                    f"guardrail {name!r} of task {task.name!r} raised "
                    f"{type(exc).__name__}: {exc}") from exc
            passed, value = _interpret(name, task, result)
        notify(events.GuardrailChecked, task=task.name, guardrail=name, passed=passed,
               feedback=None if passed else str(value))
        if not passed:
            verdicts.append(GuardrailVerdict(name, False, value))
            return False, output, tuple(verdicts), value
        verdicts.append(GuardrailVerdict(name, True, None))
        if isinstance(value, TaskOutput):
            output = value
        elif isinstance(value, str):
            output = output.model_copy(update={"raw": value})
    return True, output, tuple(verdicts), None
