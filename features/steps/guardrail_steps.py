"""Steps for guardrails.feature: attempts, conversion and provider retries, all counted."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from behave import given, then, when
from crew_world import assert_same_usage, figures, llm, require_output, served_for, user_prompt
from pydantic import BaseModel

from crewline import (
    Agent,
    Crew,
    CrewOutput,
    GuardrailError,
    ProviderError,
    Task,
    TaskOutput,
    Usage,
)
from crewline.testing import Reply


class Animal(BaseModel):
    name: str
    legs: int


def _crew(context: Any, task: Task) -> None:
    context.crew = Crew(agents=[task.agent], tasks=[task])


def _agent(context: Any, **llm_overrides: Any) -> Agent:
    return Agent(role="Writer", goal="write well", llm=llm(context.server, **llm_overrides))


@given('a task "{name}" whose guardrail rejects the first {n:d} outputs and accepts the third')
def given_flaky_guardrail(context: Any, name: str, n: int) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def guard(output: TaskOutput) -> tuple[bool, Any]:
        with lock:
            seen.append(output.raw)
            count = len(seen)
        if count <= n:
            return False, f"rejection {count}: say more"
        return True, output.raw

    _crew(context, Task(name=name, description=f"[[{name}]] Write an essay.",
                        agent=_agent(context), guardrail=guard, guardrail_max_retries=3))


@given('a task "{name}" whose guardrail rejects every output, with {n:d} retries allowed')
def given_hard_guardrail(context: Any, name: str, n: int) -> None:
    count = iter(range(1, 100))

    def guard(output: TaskOutput) -> tuple[bool, Any]:
        return False, f"rejection {next(count)}: still too short"

    _crew(context, Task(name=name, description=f"[[{name}]] Write an essay.",
                        agent=_agent(context), guardrail=guard, guardrail_max_retries=n))


def _task_output(context: Any, name: str) -> TaskOutput:
    out = require_output(context)
    return next(t for t in out.tasks_output if t.name == name)


@then('the task "{name}" took {n:d} attempts, the first {k:d} rejected with their feedback')
def then_attempts(context: Any, name: str, n: int, k: int) -> None:
    attempts = _task_output(context, name).attempts
    assert [a.number for a in attempts] == list(range(1, n + 1)), attempts
    assert [a.passed for a in attempts] == [False] * k + [True] * (n - k), attempts
    feedback = [a.verdicts[-1].feedback for a in attempts[:k]]
    assert feedback == [f"rejection {i}: say more" for i in range(1, k + 1)], feedback


@then("each attempt's usage equals the server's count for its own request")
def then_attempt_usage(context: Any) -> None:
    task = require_output(context).tasks_output[0]
    served = served_for(context.server, task.name)
    assert len(served) == len(task.attempts)
    for attempt, request in zip(task.attempts, served, strict=True):
        assert attempt.usage.requests == 1
        assert (attempt.usage.prompt_tokens, attempt.usage.completion_tokens) == (
            request.prompt_tokens, request.completion_tokens), (attempt.number, request)


@then("the third attempt's prompt carries the feedback of both rejections")
def then_feedback_in_prompt(context: Any) -> None:
    task = require_output(context).tasks_output[0]
    prompts = [user_prompt(s) for s in served_for(context.server, task.name)]
    assert "rejection 1" in prompts[2] and "rejection 2" in prompts[2], prompts[2]
    assert "rejection" not in prompts[0]


@then("the accepted attempt alone, as a rebuilt output would report it, is not the server's "
      "count")
def then_last_attempt_control(context: Any) -> None:
    task = require_output(context).tasks_output[0]
    last = task.attempts[-1].usage
    served = context.server.totals(marker=task.name)
    assert figures(last) != figures(served), "one attempt matched all; the check is void"
    assert task.usage == sum((a.usage for a in task.attempts), Usage())


@then('the kickoff fails with a GuardrailError for "{name}" after {n:d} attempts, '
      "with the last feedback")
def then_guardrail_error(context: Any, name: str, n: int) -> None:
    error = context.error
    assert isinstance(error, GuardrailError), f"expected a GuardrailError, got {error!r}"
    assert error.task == name and len(error.attempts) == n, (error.task, error.attempts)
    assert error.feedback == f"rejection {n}: still too short", error.feedback
    assert not any(a.passed for a in error.attempts)


@then("the error's usage equals the server's count, {n:d} requests")
def then_error_usage(context: Any, n: int) -> None:
    served = context.server.totals()
    assert served.requests == n, served
    assert_same_usage(context.error.usage, served, "the GuardrailError")


@then("the error's usage is the sum of its attempts' usage")
def then_error_attempts_sum(context: Any) -> None:
    error = context.error
    total = sum((a.usage for a in error.attempts), Usage())
    assert total == error.usage, (total, error.usage)


# -- structured output ---------------------------------------------------------------------

CONVERSION = "You convert text into JSON"


@given('a task "{name}" that wants a pydantic Animal, and a model that first answers in prose')
def given_prose(context: Any, name: str) -> None:
    context.server.add_rule(f"[[{name}]]", "The octopus has eight legs and three hearts.")
    _crew(context, Task(name=name, description=f"[[{name}]] Describe an octopus.",
                        agent=_agent(context), output_pydantic=Animal))


@given('a task "{name}" that wants a pydantic Animal, a model that first answers in prose, '
       "and a first conversion that fails")
def given_prose_failed_conversion(context: Any, name: str) -> None:
    context.server.add_rule(CONVERSION, "Sorry, I cannot do JSON.", times=1)
    context.server.add_rule(f"[[{name}]]", "The octopus has eight legs.", times=1)
    _crew(context, Task(name=name, description=f"[[{name}]] Describe an octopus.",
                        agent=_agent(context), output_pydantic=Animal))


@then('the output of "{name}" is a valid Animal')
def then_valid_animal(context: Any, name: str) -> None:
    task = _task_output(context, name)
    assert isinstance(task.pydantic, Animal), repr(task.pydantic)


@then("the task's requests were an agent turn, then a conversion")
def then_purposes(context: Any) -> None:
    task = require_output(context).tasks_output[0]
    assert [r.purpose for r in task.usage_records] == ["agent", "conversion"], [
        r.purpose for r in task.usage_records]
    assert CONVERSION in str(context.server.served[1].messages[0]["content"])


@then('the usage of "{name}" equals everything the server served, {n:d} requests')
def then_usage_everything(context: Any, name: str, n: int) -> None:
    served = context.server.totals()
    assert served.requests == n, served
    assert_same_usage(_task_output(context, name).usage, served, f"task {name!r}")


@then("the server's count for the task's own prompt alone is {n:d} request: the conversion "
      "is what makes the difference")
def then_marker_alone(context: Any, n: int) -> None:
    task = require_output(context).tasks_output[0]
    own = context.server.totals(marker=task.name)
    assert own.requests == n
    assert figures(own) != figures(task.usage), "the conversion call left no trace"


@then('the task "{name}" took {n:d} attempts, the first failed by its conversion')
def then_conversion_attempts(context: Any, name: str, n: int) -> None:
    attempts = _task_output(context, name).attempts
    assert len(attempts) == n, attempts
    assert attempts[0].error is not None and "Animal" in attempts[0].error, attempts[0]
    assert [r.purpose for r in attempts[0].usage_records] == ["agent", "conversion"]
    assert attempts[-1].passed


# -- provider retries ----------------------------------------------------------------------


@given('a task "{name}" whose first request the server answers with 429')
def given_rate_limited(context: Any, name: str) -> None:
    context.server.add_rule(f"[[{name}]]", Reply(status=429, content="slow down",
                                                 retry_after=0.01), "second try",
                            times=2)
    _crew(context, Task(name=name, description=f"[[{name}]] Answer when you can.",
                        agent=_agent(context, retry_backoff=0.01)))


@then('the output of "{name}" came from the second try')
def then_second_try(context: Any, name: str) -> None:
    assert _task_output(context, name).raw == "second try"


@then('the usage of "{name}" counts {failed:d} failed and {ok:d} successful request, '
      "as the server does")
def then_retry_usage(context: Any, name: str, failed: int, ok: int) -> None:
    usage = _task_output(context, name).usage
    assert (usage.failed_requests, usage.requests) == (failed, ok), usage
    assert_same_usage(usage, context.server.totals(marker=name), f"task {name!r}")


# -- a guardrail the model judges ----------------------------------------------------------

JUDGE = "You check whether a piece of work meets a requirement"


@given('a task "{name}" with the guardrail "{requirement}", which the judge rejects once, '
       "then accepts")
def given_judged(context: Any, name: str, requirement: str) -> None:
    context.server.add_rule(JUDGE, '{"valid": false, "feedback": "no number in it"}',
                            '{"valid": true}')
    _crew(context, Task(name=name, description=f"[[{name}]] Write an essay.",
                        agent=_agent(context), guardrail=requirement))


@then('the task "{name}" took {n:d} attempts, the first rejected by the judge with "{text}"')
def then_judged_attempts(context: Any, name: str, n: int, text: str) -> None:
    attempts = _task_output(context, name).attempts
    assert len(attempts) == n and attempts[-1].passed, attempts
    assert attempts[0].verdicts[-1].feedback == text, attempts[0].verdicts


@then("the task's requests were an agent turn, a judgement, an agent turn, a judgement")
def then_judged_purposes(context: Any) -> None:
    task = require_output(context).tasks_output[0]
    purposes = [r.purpose for r in task.usage_records]
    assert purposes == ["agent", "guardrail", "agent", "guardrail"], purposes


# -- injected server errors ----------------------------------------------------------------


@given("the server fails every fifth request with 500")
def given_every_fifth_fails(context: Any) -> None:
    context.server.add_rule(lambda request: request.index % 5 == 0,
                            Reply(status=500, content="injected failure"))


@given("a crew of one task, retried at most once on a provider error")
def given_one_retry(context: Any) -> None:
    agent = Agent(role="Worker {i}", goal="work",
                  llm=llm(context.server, num_retries=1, retry_backoff=0.01))
    context.crew = Crew(agents=[agent], tasks=[
        Task(name="only", description="[[c{i}]] Do job {i}.", agent=agent)])


@when("{n:d} kickoffs of it are gathered with kickoff_async, keeping errors")
def when_gathered_keeping_errors(context: Any, n: int) -> None:
    async def main() -> list[Any]:
        return await asyncio.gather(
            *(context.crew.kickoff_async({"i": i}) for i in range(n)), return_exceptions=True)

    context.results = asyncio.run(main())


@then("every kickoff either completed or raised a ProviderError with status 500")
def then_completed_or_typed(context: Any) -> None:
    odd = [r for r in context.results if not isinstance(r, CrewOutput)
           and not (isinstance(r, ProviderError) and r.status == 500)]
    assert not odd, odd[:3]
    failed = sum(1 for r in context.results if isinstance(r, ProviderError))
    assert failed < len(context.results), "no kickoff completed"


@then("the records of all kickoffs and errors account for every request the server saw")
def then_all_accounted(context: Any) -> None:
    total = sum((r.usage for r in context.results), Usage())
    served = context.server.totals()
    assert served.failed_requests > 0, "no failure was injected; the check is void"
    assert_same_usage(total, served, "all kickoffs together")
    for i, r in enumerate(context.results):
        assert_same_usage(r.usage, context.server.totals(marker=f"c{i}"), f"kickoff {i}")
