"""Definitions are frozen, validated at construction, and errors name what is wrong."""

from __future__ import annotations

from decimal import Decimal

import pydantic
import pytest

import crewline
from crewline import LLM, Agent, Crew, InputError, Task, tool
from crewline._core.templates import fill


def _agent(role: str = "Writer", **kw: object) -> Agent:
    return Agent(role=role, goal="g", backstory="b", llm=LLM(model="openai/gpt-4o-mini"), **kw)


def test_public_surface_is_deliberate() -> None:
    expected = {"Agent", "Task", "Crew", "LLM", "Process", "Usage", "Budget",
                "BudgetExceededError", "CrewlineError", "tool"}
    assert expected <= set(crewline.__all__)
    for name in crewline.__all__:
        assert hasattr(crewline, name), name


def test_definitions_are_frozen() -> None:
    agent = _agent()
    task = Task(description="d", agent=agent)
    crew = Crew(agents=[agent], tasks=[task])
    with pytest.raises(pydantic.ValidationError):
        agent.role = "x"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        task.description = "x"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        crew.tasks = ()  # type: ignore[misc]
    assert isinstance(crew.tasks, tuple)


def test_price_floats_keep_their_shortest_repr() -> None:
    llm = LLM(model="m", input_cost_per_token=0.000001, output_cost_per_token="0.000002")
    assert llm.input_cost_per_token == Decimal("0.000001")
    assert llm.output_cost_per_token == Decimal("0.000002")
    with pytest.raises(pydantic.ValidationError, match="input_cost_per_token"):
        LLM(model="m", input_cost_per_token=-1)


def test_api_key_never_in_repr_or_dump() -> None:
    llm = LLM(model="m", api_key="sk-very-secret-123")
    assert "sk-very-secret" not in repr(llm)
    assert "sk-very-secret" not in str(llm.model_dump())
    assert "sk-very-secret" not in repr(Agent(role="r", llm=llm))


def test_task_without_agent_needs_a_single_agent_crew() -> None:
    a, b = _agent("A"), _agent("B")
    with pytest.raises(pydantic.ValidationError, match=r"tasks\[0\].*has no agent.*2 agents"):
        Crew(agents=[a, b], tasks=[Task(description="d")])
    Crew(agents=[a], tasks=[Task(description="d")])


def test_context_only_points_at_earlier_tasks() -> None:
    a = _agent()
    later = Task(description="later", agent=a, name="later")
    first = Task(description="first", agent=a, context=[later], name="first")
    with pytest.raises(pydantic.ValidationError, match=r"earlier tasks.*'later'"):
        Crew(agents=[a], tasks=[first, later])
    stranger = Task(description="x", agent=a)
    with pytest.raises(pydantic.ValidationError, match="not in this crew"):
        Crew(agents=[a], tasks=[Task(description="y", agent=a, context=[stranger])])


def test_task_names_unique_including_defaults() -> None:
    a = _agent()
    with pytest.raises(pydantic.ValidationError, match="'task_2' is already used"):
        Crew(agents=[a], tasks=[Task(description="x", agent=a, name="task_2"),
                                Task(description="y", agent=a)])


def test_at_most_one_trailing_async_task() -> None:
    a = _agent()
    with pytest.raises(pydantic.ValidationError, match="ends with 2 async_execution"):
        Crew(agents=[a], tasks=[Task(description="x", agent=a, async_execution=True),
                                Task(description="y", agent=a, async_execution=True)])
    Crew(agents=[a], tasks=[Task(description="x", agent=a),
                            Task(description="y", agent=a, async_execution=True)])


def test_agent_without_llm_is_rejected_naming_it() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"agent 'Lonely'.*no llm"):
        Crew(agents=[Agent(role="Lonely")], tasks=[Task(description="d")])


def test_fill_replaces_identifiers_only() -> None:
    text = 'Summarise {topic} as {"a": {topic}, "b": 1} and { spaced } {0}'
    assert fill(text, {"topic": "AI"}, where="w") == (
        'Summarise AI as {"a": AI, "b": 1} and { spaced } {0}')


def test_missing_placeholder_names_it_and_where() -> None:
    with pytest.raises(InputError) as info:
        fill("About {topic}", {"other": 1}, where="task 'summary' description")
    message = str(info.value)
    assert "'topic'" in message and "task 'summary' description" in message
    assert "other" in message


def test_tool_schema_from_hints_and_docstring() -> None:
    @tool
    def search(query: str, limit: int = 5) -> str:
        """Search the archive.

        Args:
            query: what to look for
            limit: how many results
        """
        return query

    spec = search.openai_spec()
    assert spec["function"]["name"] == "search"
    assert spec["function"]["description"] == "Search the archive."
    params = spec["function"]["parameters"]
    assert params["required"] == ["query"]
    assert params["properties"]["query"] == {"type": "string", "description": "what to look for"}
    assert params["properties"]["limit"]["default"] == 5
    assert search.parse_arguments('{"query": "x"}') == {"query": "x", "limit": 5}
    with pytest.raises(ValueError, match="limit"):
        search.parse_arguments('{"query": "x", "limit": "many"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        search.parse_arguments("{oops")
