"""The agent's tool loop, against the in-process ScriptedModel (no HTTP)."""

from __future__ import annotations

import asyncio
import json

import pytest

from crewline import LLM, Agent, Crew, InputError, MaxIterationsError, Task, TaskOutput, tool
from crewline.testing import Reply, ScriptedModel, ToolCall


def _crew(model: ScriptedModel, tools: list[object], **task_kw: object) -> Crew:
    llm = LLM(model="openai/gpt-4o-mini", transport=model)
    agent = Agent(role="Clerk", goal="file things", backstory="tidy", llm=llm,
                  tools=tools, max_iter=4)
    return Crew(agents=[agent], tasks=[Task(description="[[t]] file it", agent=agent,
                                            **task_kw)])


def _tool_results(model: ScriptedModel) -> list[str]:
    last = model.served[-1].messages
    return [m["content"] for m in last if m["role"] == "tool"]


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def explode() -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


def test_tool_call_round_trip_and_usage() -> None:
    model = ScriptedModel(Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 3})]), "sum is 5")
    out = _crew(model, [add]).kickoff()
    assert out.raw == "sum is 5"
    assert _tool_results(model) == ["5"]
    assert out.usage.requests == 2 == model.totals().requests
    assert out.usage.total_tokens == model.totals().total_tokens
    offered = model.served[0].tools
    assert offered is not None and offered[0]["function"]["name"] == "add"


@pytest.mark.parametrize("call,expect", [
    (ToolCall("nope", {}), "unknown tool 'nope'; available tools: add, explode"),
    (ToolCall("explode", {}), "raised RuntimeError: disk on fire"),
    (ToolCall("add", {"a": "x", "b": 1}), "invalid arguments: a:"),
    (ToolCall("add", "{broken"), "not valid JSON"),
])
def test_tool_problems_are_fed_back_to_the_model(call: ToolCall, expect: str) -> None:
    model = ScriptedModel(Reply(tool_calls=[call]), "recovered")
    out = _crew(model, [add, explode]).kickoff()
    assert out.raw == "recovered"
    (result,) = _tool_results(model)
    assert result.startswith("Error:") and expect in result


def test_max_iter_is_a_clear_error_with_usage() -> None:
    model = ScriptedModel(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1})]))
    with pytest.raises(MaxIterationsError, match=r"'Clerk'.*4 model turns.*max_iter=4") as info:
        _crew(model, [add]).kickoff()
    assert info.value.usage.requests == 4 == model.totals().requests


def test_prompt_holds_role_goal_task_and_context() -> None:
    model = ScriptedModel("first answer", "second answer")
    llm = LLM(model="openai/gpt-4o-mini", transport=model)
    agent = Agent(role="Analyst of {field}", goal="study {field}", backstory="old hand",
                  llm=llm)
    first = Task(description="Find facts on {field}", expected_output="a list", agent=agent)
    second = Task(description='Summarise as {"format": "json"}', agent=agent)
    out = Crew(agents=[agent], tasks=[first, second]).kickoff({"field": "bees"})
    system, user = model.served[1].messages
    assert system["content"].startswith("You are Analyst of bees. old hand")
    assert "study bees" in system["content"]
    assert 'Summarise as {"format": "json"}' in user["content"]
    assert "first answer" in user["content"]  # earlier outputs are context
    assert out.tasks_output[0].agent == "Analyst of bees"
    assert out.tasks_output[0].description == "Find facts on bees"


def test_explicit_context_limits_what_a_task_sees() -> None:
    model = ScriptedModel("alpha", "beta", "gamma")
    llm = LLM(model="openai/gpt-4o-mini", transport=model)
    agent = Agent(role="R", llm=llm)
    a = Task(description="one", agent=agent)
    b = Task(description="two", agent=agent)
    c = Task(description="three", agent=agent, context=[a])
    Crew(agents=[agent], tasks=[a, b, c]).kickoff()
    user = model.served[2].messages[1]["content"]
    assert "alpha" in user and "beta" not in user


def test_missing_input_fails_before_anything_is_sent() -> None:
    model = ScriptedModel("x")
    crew = _crew(model, [], expected_output="about {subject}")
    with pytest.raises(InputError, match=r"'subject'.*task 'task_1' expected_output"):
        crew.kickoff()
    assert model.totals().requests == 0


def test_callback_gets_the_task_output_with_usage() -> None:
    got: list[TaskOutput] = []
    model = ScriptedModel("done")
    out = _crew(model, [], callback=got.append).kickoff()
    assert got[0].raw == "done" and got[0].usage == out.usage
    assert json.loads(json.dumps(out.usage.to_dict()))["requests"] == 1


def test_same_numbers_in_sync_and_asyncio() -> None:
    def run(mode: str) -> list[int]:
        model = ScriptedModel(Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 3})]), "ok")
        crew = _crew(model, [add])
        out = crew.kickoff() if mode == "sync" else asyncio.run(crew.kickoff_async())
        return [r.total_tokens for r in out.usage_records]

    assert run("sync") == run("asyncio")


def test_an_llm_request_outside_any_usage_scope_is_refused() -> None:
    from crewline._accounting.policy import RequestPolicy
    from crewline._core.request import llm_call
    from crewline._execution.drivers import drive

    model = ScriptedModel("x")
    llm = LLM(model="openai/gpt-4o-mini", transport=model)
    with pytest.raises(RuntimeError, match="outside any usage scope"):
        drive(llm_call(llm, [{"role": "user", "content": "hi"}], policy=RequestPolicy(),
                       purpose="agent"))
    assert model.totals().requests == 0
