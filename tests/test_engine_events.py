"""The engine builds its events without validating them again (``crewline.events.make``).

That is safe only while every value the engine puts in an event is of the declared type.
These kickoffs make every kind of event the engine emits (streamed text, tools, guardrail
rejections, budget holds, provider errors, delegation) and check that each one, validated
from its own field values, is equal to itself: a value of the wrong type would either be
refused or coerced into something unequal.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from crewline import LLM, Agent, Budget, Crew, Process, Task, events, tool
from crewline.testing import FakeLLMServer, Reply, ToolCall, agent_turn, delegate

IN, OUT = Decimal("0.0000011"), Decimal("0.0000023")


def _llm(server: FakeLLMServer) -> LLM:
    return LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test",
               input_cost_per_token=IN, output_cost_per_token=OUT, num_retries=1,
               retry_backoff=0.01)


def _revalidated(event: events.Event) -> events.Event:
    fields = {name: getattr(event, name) for name in type(event).model_fields}
    return type(event)(**fields)


def _check(seen: list[events.Event]) -> set[type[events.Event]]:
    for event in seen:
        assert _revalidated(event) == event, event
    return {type(e) for e in seen}


def test_every_event_of_a_streamed_kickoff_is_of_its_declared_types(
        server: FakeLLMServer) -> None:
    @tool
    def lookup(topic: str) -> str:
        """Look a topic up."""
        return f"facts on {topic}"

    calls = iter([(False, "too short"), (True, None)])
    llm = _llm(server)
    agent = Agent(role="Writer", goal="write", llm=llm, tools=[lookup])
    crew = Crew(agents=[agent], budget=Budget(name="cap", max_cost=Decimal("1")), tasks=[
        Task(name="t", description="[[ev]] Write on {topic}", expected_output="text",
             agent=agent, guardrail=lambda _o: next(calls))])
    server.add_rule(lambda s: s.marker == "ev" and agent_turn("Writer", 1)(s),
                    Reply(tool_calls=[ToolCall("lookup", {"topic": "tea"})]), times=1)
    server.add_rule(lambda s: s.marker == "ev", Reply(status=500), times=1)
    server.add_rule(lambda s: s.marker == "ev", "A first answer.", "A second, better answer.")
    seen: list[events.Event] = []
    with crew.stream(inputs={"topic": "tea"}, listeners=[seen.append]) as stream:
        for _ in stream:
            pass
    assert stream.result.raw == "A second, better answer."
    kinds = _check(seen)
    assert {events.KickoffStarted, events.KickoffFinished, events.TaskStarted,
            events.TaskFinished, events.AttemptStarted, events.AttemptFinished,
            events.AttemptFailed, events.LLMCallStarted, events.LLMCallFinished,
            events.ToolStarted, events.ToolCalled, events.GuardrailChecked,
            events.BudgetReserved, events.TextDelta} <= kinds


@pytest.mark.parametrize("mode", ["kickoff", "kickoff_async"])
def test_every_event_of_a_delegating_kickoff_is_of_its_declared_types(
        server: FakeLLMServer, mode: str) -> None:
    llm = _llm(server)
    crew = Crew(agents=[Agent(role="Researcher", goal="find", llm=llm)],
                process=Process.hierarchical, manager_llm=llm,
                tasks=[Task(description="[[evd]] Report", expected_output="a report")])
    server.add_rule(lambda s: s.marker == "evd" and agent_turn("Crew Manager", 1)(s),
                    Reply(tool_calls=[delegate("Researcher", "[[evr]] Find facts")]))
    server.add_rule(lambda s: s.marker == "evd", "The report.")
    seen: list[events.Event] = []
    if mode == "kickoff":
        crew.kickoff(listeners=[seen.append])
    else:
        asyncio.run(crew.kickoff_async(listeners=[seen.append]))
    kinds = _check(seen)
    assert {events.DelegationStarted, events.DelegationFinished} <= kinds


def test_make_refuses_what_the_type_does_not_declare() -> None:
    with pytest.raises(TypeError, match="no field"):
        events.make(events.TaskStarted, run_id="r", task="t", agent="a", colour="red")
    with pytest.raises(TypeError, match="needs 'agent'"):
        events.make(events.TaskStarted, run_id="r", task="t")
    made: Any = events.make(events.TextDelta, run_id="r", task="t", agent="a", attempt=1,
                            purpose="agent", text="hi")
    assert made == events.TextDelta(run_id="r", task="t", agent="a", attempt=1,
                                    purpose="agent", text="hi", at=made.at)
    assert made.retry == 0 and made.model_fields_set == {"run_id", "task", "agent",
                                                         "attempt", "purpose", "text"}
