"""One task, start to finish: attempts, structured output, guardrails, the callback.

Each attempt has its own usage scope inside the task's, so an attempt's usage is exactly
its own requests (agent turns, tool-loop turns, conversion, guardrail judging), and the
task's usage is the sum over all of its attempts, rejected ones included.
"""

from __future__ import annotations

import logging
from typing import Any

from crewline import events
from crewline._accounting.policy import RequestPolicy
from crewline._accounting.usage import UsageScope
from crewline._core.conversion import convert, response_format_for
from crewline._core.effects import Call, Step
from crewline._core.guardrail import check_output
from crewline._core.notify import notify
from crewline._core.outputs import Attempt, TaskOutput
from crewline._core.prepared import PreparedTask
from crewline._core.turns import agent_answer, first_messages
from crewline.errors import CallbackError, ConversionError, GuardrailError
from crewline.log import get_logger, log_context

__all__ = ["run_task"]

_log = get_logger("crewline.task")


def _max_attempts(task: PreparedTask) -> int:
    if task.task.all_guardrails or task.task.output_model is not None:
        return 1 + task.task.guardrail_max_retries
    return 1


def _attempt(task: PreparedTask, number: int, context: str, feedback: list[str],
             response_format: dict[str, Any] | None, policy: RequestPolicy, scope: UsageScope
             ) -> Step[tuple[Attempt, TaskOutput | None]]:
    """One try at the task: the ``Attempt`` on record, and the output if it passed."""
    messages = first_messages(task, context, feedback)
    raw = yield from agent_answer(task, messages, policy, response_format)
    try:
        pydantic, json_dict = yield from convert(task, raw, response_format, policy)
    except ConversionError as exc:
        return Attempt(number, raw, (), scope.records, exc.message), None
    output = TaskOutput(raw=raw, name=task.name, description=task.description,
                        expected_output=task.expected_output, agent=task.role,
                        pydantic=pydantic, json_dict=json_dict)
    passed, output, verdicts, _ = yield from check_output(task, output, policy)
    return Attempt(number, raw, verdicts, scope.records), (output if passed else None)


def _feedback(attempt: Attempt) -> Any:
    """What the next attempt is told: the conversion error, or the failing verdict's."""
    if attempt.error is not None:
        return attempt.error
    return next((v.feedback for v in attempt.verdicts if not v.passed), None)


def run_task(task: PreparedTask, context: str, parent: UsageScope,
             policy: RequestPolicy) -> Step[TaskOutput]:
    """Run ``task`` with ``context`` until an attempt passes or retries run out."""
    scope = parent.child("task", task=task.name, agent=task.role)
    with scope.entered(), log_context(task=task.name, agent=task.role):
        notify(events.TaskStarted, agent=task.role)
        attempts: list[Attempt] = []
        started = 0
        try:
            response_format = response_format_for(task)
            feedback: list[str] = []
            accepted: TaskOutput | None = None
            last_feedback: Any = None
            for number in range(1, _max_attempts(task) + 1):
                started = number
                attempt_scope = scope.child("attempt", attempt=number)
                with attempt_scope.entered(), log_context(attempt=number):
                    notify(events.AttemptStarted, agent=task.role)
                    try:
                        attempt, accepted = yield from _attempt(
                            task, number, context, feedback, response_format, policy,
                            attempt_scope)
                    except BaseException as exc:
                        notify(events.AttemptFinished, agent=task.role, ok=False,
                               error=str(exc), error_type=type(exc).__name__)
                        raise
                    notify(events.AttemptFinished, agent=task.role, ok=accepted is not None,
                           error=None if accepted is not None else str(_feedback(attempt)),
                           error_type=None if accepted is not None else
                           "conversion" if attempt.error is not None else "guardrail")
                    attempts.append(attempt)
                    if accepted is not None:
                        break
                    last_feedback = _feedback(attempt)
                    feedback.append(str(last_feedback))
                    _log.warning("attempt rejected", feedback=str(last_feedback)[:300])
                    notify(events.AttemptFailed, reason=str(last_feedback))
            if accepted is None and attempts[-1].error is not None:
                raise ConversionError(
                    f"{attempts[-1].error} (after {len(attempts)} attempt(s), "
                    f"guardrail_max_retries={task.task.guardrail_max_retries})",
                    task=task.name, raw=attempts[-1].raw or "", attempts=attempts)
            if accepted is None:
                raise GuardrailError(
                    f"task {task.name!r} was rejected {len(attempts)} time(s) "
                    f"(guardrail_max_retries={task.task.guardrail_max_retries}); "
                    f"last feedback: {last_feedback}",
                    task=task.name, feedback=last_feedback, attempts=attempts)
            output = accepted.model_copy(update={"usage_records": scope.records,
                                                 "attempts": tuple(attempts)})
            if task.task.callback is not None:
                try:
                    yield Call(task.task.callback, (output,))
                except Exception as exc:
                    raise CallbackError(f"callback of task {task.name!r} raised "
                                        f"{type(exc).__name__}: {exc}", output=output) from exc
        except BaseException as exc:
            if events.listening():
                notify(events.TaskFinished, agent=task.role, ok=False, attempts=started,
                       usage=scope.usage, error=repr(exc))
            raise
        if _log.isEnabledFor(logging.INFO):
            usage = output.usage
            _log.info("task finished", attempts=len(attempts), requests=usage.requests,
                      total_tokens=usage.total_tokens, cost=str(usage.cost))
        notify(events.TaskFinished, agent=task.role, ok=True, attempts=len(attempts),
               usage=output.usage)
        return output
