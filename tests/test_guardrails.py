"""Guardrail retries, structured output and conversion keep every token on record."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from crewline import (
    LLM,
    Agent,
    CallbackError,
    Crew,
    GuardrailError,
    Task,
    TaskOutput,
)
from crewline.testing import FakeLLMServer, Reply


class Report(BaseModel):
    title: str
    score: int


def _agent(server: FakeLLMServer) -> Agent:
    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")
    return Agent(role="Writer", goal="write", llm=llm)


def _totals_match(task_output: TaskOutput, server: FakeLLMServer, marker: str) -> None:
    served = server.totals(marker=marker)
    usage = task_output.usage
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (
        served.requests, served.prompt_tokens, served.completion_tokens)


@pytest.mark.parametrize("mode", ["sync", "asyncio"])
def test_guardrail_fails_twice_then_passes(server: FakeLLMServer, mode: str) -> None:
    server.add_rule("[[g]]", "draft one", "draft two", "draft three is good")
    seen: list[str] = []

    def long_enough(output: TaskOutput) -> tuple[bool, Any]:
        seen.append(output.raw)
        if "good" in output.raw:
            return True, output.raw.upper()
        return False, f"too weak: {output.raw!r}"

    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[
        Task(name="g", description="[[g]] write", agent=agent, guardrail=long_enough)])
    out = crew.kickoff() if mode == "sync" else asyncio.run(crew.kickoff_async())
    task = out.tasks_output[0]
    assert task.raw == "DRAFT THREE IS GOOD"
    assert [a.number for a in task.attempts] == [1, 2, 3]
    assert [a.passed for a in task.attempts] == [False, False, True]
    assert task.attempts[0].verdicts[0].feedback == "too weak: 'draft one'"
    _totals_match(task, server, "g")
    assert task.usage == sum((a.usage for a in task.attempts), type(task.usage)())
    assert [r.attempt for r in task.usage_records] == [1, 2, 3]
    # feedback is added to the prompt, and earlier feedback is kept
    third_prompt = server.served[2].messages[1]["content"]
    assert "too weak: 'draft one'" in third_prompt and "too weak: 'draft two'" in third_prompt


def test_every_guardrail_rechecks_each_new_output(server: FakeLLMServer) -> None:
    server.add_rule("[[every]]", "short", "long but no keyword at all", "long with keyword")
    calls: list[tuple[str, str]] = []

    def not_short(output: TaskOutput) -> tuple[bool, Any]:
        calls.append(("len", output.raw))
        return (True, output.raw) if len(output.raw) > 5 else (False, "too short")

    def has_keyword(output: TaskOutput) -> tuple[bool, Any]:
        calls.append(("kw", output.raw))
        ok = "keyword" in output.raw.split()[-1]
        return (True, None) if ok else (False, "needs keyword")

    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[Task(description="[[every]] go", agent=agent,
                                            guardrails=[not_short, has_keyword])])
    out = crew.kickoff()
    assert len(out.tasks_output[0].attempts) == 3
    assert calls == [("len", "short"),
                     ("len", "long but no keyword at all"), ("kw", "long but no keyword at all"),
                     ("len", "long with keyword"), ("kw", "long with keyword")]


def test_exhausted_guardrail_error_carries_exactly_the_served_usage(
        server: FakeLLMServer) -> None:
    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[
        Task(name="first", description="[[ok]] fine", agent=agent),
        Task(name="never", description="[[never]] try", agent=agent, guardrail_max_retries=2,
             guardrail=lambda o: (False, "never good enough"))])
    with pytest.raises(GuardrailError) as info:
        crew.kickoff()
    err = info.value
    assert err.task == "never" and err.feedback == "never good enough"
    assert len(err.attempts) == 3 and "3 time" in str(err)
    total = server.totals()
    assert err.usage.requests == total.requests == 4
    assert err.usage.total_tokens == total.total_tokens
    assert sum(a.usage.total_tokens for a in err.attempts) == server.totals(
        marker="never").total_tokens


def test_text_guardrail_is_judged_by_the_llm_and_recorded(server: FakeLLMServer) -> None:
    server.add_rule("Requirement: mention cats", Reply(
        content=json.dumps({"valid": False, "feedback": "no cats"})),
        json.dumps({"valid": True, "feedback": ""}))
    server.add_rule("[[cats]]", "dogs only", "cats and dogs")
    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[Task(name="cats", description="[[cats]] write",
                                            agent=agent, guardrail="mention cats")])
    out = crew.kickoff()
    task = out.tasks_output[0]
    assert task.raw == "cats and dogs"
    purposes = [(r.attempt, r.purpose) for r in task.usage_records]
    assert purposes == [(1, "agent"), (1, "guardrail"), (2, "agent"), (2, "guardrail")]
    assert task.attempts[0].verdicts[0].feedback == "no cats"
    assert task.usage.requests == server.totals().requests == 4


def test_structured_output_asks_for_json_and_parses_it(server: FakeLLMServer) -> None:
    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[Task(description="[[s]] rate it", agent=agent,
                                            output_pydantic=Report)])
    out = crew.kickoff()
    assert isinstance(out.pydantic, Report)
    assert out.json_dict == {"title": "x", "score": 0}
    assert server.served[0].response_format["type"] == "json_schema"


def test_non_json_reply_is_converted_and_the_conversion_is_counted(
        server: FakeLLMServer) -> None:
    server.add_rule("[[conv]]", "The title is Dune and I give it 9.")
    server.add_rule("Convert", '{"title": "Dune", "score": 9}')
    server.add_rule(lambda s: "into JSON" in s.messages[0]["content"],
                    '{"title": "Dune", "score": 9}')
    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[Task(name="conv", description="[[conv]] rate Dune",
                                            agent=agent, output_json=Report)])
    out = crew.kickoff()
    task = out.tasks_output[0]
    assert task.json_dict == {"title": "Dune", "score": 9} and task.pydantic is None
    assert [r.purpose for r in task.usage_records] == ["agent", "conversion"]
    assert task.usage.total_tokens == server.totals().total_tokens
    assert task.usage.requests == 2


def test_failed_conversion_is_a_failed_attempt_not_the_end(server: FakeLLMServer) -> None:
    server.add_rule(lambda s: "into JSON" in s.messages[0]["content"], "still not json",
                    "still not json", '{"title": "ok", "score": 1}')
    server.add_rule("[[retry-conv]]", "prose one", "prose two")
    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[Task(description="[[retry-conv]] rate", agent=agent,
                                            output_pydantic=Report)])
    out = crew.kickoff()
    task = out.tasks_output[0]
    assert task.pydantic == Report(title="ok", score=1)
    assert [a.passed for a in task.attempts] == [False, False, True]
    assert "not a valid Report" in (task.attempts[0].error or "")
    assert [r.purpose for r in task.attempts[0].usage_records] == ["agent", "conversion"]
    assert task.usage.requests == server.totals().requests == 6


def test_a_raising_guardrail_fails_the_run_with_usage(server: FakeLLMServer) -> None:
    def broken(output: TaskOutput) -> tuple[bool, Any]:
        raise ValueError("bug in guardrail")

    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[Task(description="[[b]] x", agent=agent,
                                            guardrail=broken)])
    with pytest.raises(CallbackError, match="bug in guardrail") as info:
        crew.kickoff()
    assert info.value.usage.requests == 1


def test_retry_counters_do_not_live_on_the_task(server: FakeLLMServer) -> None:
    verdicts = iter([False, True, False, True])

    def flaky(output: TaskOutput) -> tuple[bool, Any]:
        return next(verdicts), "again"

    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[Task(description="[[c]] x", agent=agent,
                                            guardrail=flaky, guardrail_max_retries=1)])
    assert len(crew.kickoff().tasks_output[0].attempts) == 2
    assert len(crew.kickoff().tasks_output[0].attempts) == 2  # a fresh budget each run


def test_exhausted_conversion_raises_conversion_error_with_attempts(
        server: FakeLLMServer) -> None:
    from crewline import ConversionError

    server.add_rule(lambda s: "into JSON" in s.messages[0]["content"], "nope")
    server.add_rule("[[never-json]]", "prose")
    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[Task(name="nj", description="[[never-json]] rate",
                                            agent=agent, output_pydantic=Report,
                                            guardrail_max_retries=1)])
    with pytest.raises(ConversionError, match="not a valid Report") as info:
        crew.kickoff()
    err = info.value
    assert err.task == "nj" and len(err.attempts) == 2 and err.raw == "prose"
    assert err.usage.requests == server.totals().requests == 4


def test_a_raising_callback_keeps_the_output(server: FakeLLMServer) -> None:
    def callback(output: TaskOutput) -> None:
        raise KeyError("downstream store is down")

    agent = _agent(server)
    crew = Crew(agents=[agent], tasks=[Task(description="[[cb]] x", agent=agent,
                                            callback=callback)])
    with pytest.raises(CallbackError, match="downstream store is down") as info:
        crew.kickoff()
    assert isinstance(info.value.output, TaskOutput)
    assert info.value.output.usage == info.value.usage
