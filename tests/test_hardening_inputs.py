"""Kickoff inputs: every mistake in them is an ``InputError`` that names the input.

A value whose ``__str__`` raises used to escape a kickoff as the value's own exception;
a non-string key used to crash only when a listener was attached (events sort the names).
Both are refused before any request is sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crewline import LLM, Agent, Crew, CrewlineError, InputError, Task
from crewline.events import Event
from crewline.testing.server import FakeLLMServer


class Unprintable:
    """A value that cannot become text, as some proxies and lazy objects are."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    __repr__ = __str__


def _crew(server: FakeLLMServer) -> Crew:
    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")
    agent = Agent(role="Writer", goal="Write about {topic}", backstory="careful", llm=llm)
    task = Task(name="summary", description="Summarise {topic}.", expected_output="a line",
                agent=agent)
    return Crew(agents=[agent], tasks=[task])


def test_a_value_that_cannot_become_text_is_an_input_error_naming_key_and_template(
        server: FakeLLMServer) -> None:
    with pytest.raises(InputError) as info:
        _crew(server).kickoff(inputs={"topic": Unprintable()})

    message = str(info.value)
    assert "'topic'" in message
    assert "task 'summary' description" in message  # the first template that uses it
    assert "Unprintable" in message and "RuntimeError: no text for you" in message
    assert info.value.placeholder == "topic"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert server.totals().requests == 0


def test_a_value_that_cannot_become_text_fails_kickoff_async_and_each_the_same_way(
        server: FakeLLMServer) -> None:
    crew = _crew(server)
    with pytest.raises(InputError, match="'topic'"):
        asyncio.run(crew.kickoff_async(inputs={"topic": Unprintable()}))
    with pytest.raises(InputError, match=r"inputs\[1\]: .*'topic'"):
        crew.kickoff_for_each(inputs=[{"topic": "owls"}, {"topic": Unprintable()}])
    assert server.totals().requests == 0


@pytest.mark.parametrize("listeners", [[], [lambda event: None]], ids=["quiet", "listened"])
def test_a_key_that_is_not_a_string_is_an_input_error_naming_it(
        server: FakeLLMServer, listeners: list[Any]) -> None:
    seen: list[Event] = []
    with pytest.raises(InputError) as info:
        _crew(server).kickoff(inputs={"topic": "owls", 2: "two"},
                              listeners=[*listeners, seen.append])

    assert isinstance(info.value, CrewlineError)
    assert "input keys must be strings" in str(info.value)
    assert "2 (int)" in str(info.value)
    assert seen == []  # refused before the kickoff started
    assert server.totals().requests == 0


def test_a_key_with_an_unprintable_repr_is_still_named_by_its_type(
        server: FakeLLMServer) -> None:
    class Key:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(InputError, match=r"broken __repr__.*\(Key\)"):
        _crew(server).kickoff(inputs={"topic": "owls", Key(): 1})


def test_string_keys_that_no_placeholder_uses_are_fine(server: FakeLLMServer) -> None:
    out = _crew(server).kickoff(inputs={"topic": "owls", "not a name": Unprintable()})

    assert out.usage.requests == server.totals().requests == 1
