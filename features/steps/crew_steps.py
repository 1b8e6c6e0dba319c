"""Steps for crew_basics.feature: order, context, inputs, tools."""

from __future__ import annotations

from typing import Any

from behave import given, then, when
from crew_world import assert_same_usage, llm, outcome, require_output, served_for, user_prompt

from crewline import Agent, Crew, InputError, MaxIterationsError, Task, tool
from crewline.testing import Reply, ToolCall


def _task_spec(context: Any, name: str, description: str) -> None:
    context.task_specs.append({"name": name, "description": description, "context": None})


def _build_crew(context: Any) -> Crew:
    agent = Agent(role=getattr(context, "role", "Writer"), goal="do the work well",
                  backstory="careful", llm=llm(context.server),
                  tools=getattr(context, "tools", []), max_iter=getattr(context, "max_iter", 20))
    built: dict[str, Task] = {}
    for spec in context.task_specs:
        refs = spec["context"]
        built[spec["name"]] = Task(
            name=spec["name"], description=spec["description"], expected_output="text",
            agent=agent, context=None if refs is None else [built[r] for r in refs])
    return Crew(agents=[agent], tasks=list(built.values()))


@given('one agent with the tasks "{a}", "{b}" and "{c}", in that order')
def given_three_tasks(context: Any, a: str, b: str, c: str) -> None:
    context.task_specs = []
    for name in (a, b, c):
        _task_spec(context, name, f"[[{name}]] Do the {name} part of the report.")


@given('"{task}" names only "{other}" as its context')
def given_context(context: Any, task: str, other: str) -> None:
    spec = next(s for s in context.task_specs if s["name"] == task)
    spec["context"] = [other]


@given('a task "{name}" that says "{text}"')
def given_task_text(context: Any, name: str, text: str) -> None:
    context.task_specs = []
    _task_spec(context, name, f"[[{name}]] {text}")


@given('an agent whose role is "{role}" and a task "{name}" that says "{text}"')
def given_role_and_task(context: Any, role: str, name: str, text: str) -> None:
    context.role = role
    given_task_text(context, name, text)


@given('a task "{name}" that says:')
def given_task_block(context: Any, name: str) -> None:
    given_task_text(context, name, context.text.strip())


@given('an agent with a tool "{name}" that answers "{result}"')
def given_tool(context: Any, name: str, result: str) -> None:
    _tool(context, name, lambda topic: result)


@given('an agent with a tool "{name}" that answers "{result}", allowed {turns:d} turns')
def given_tool_with_turns(context: Any, name: str, result: str, turns: int) -> None:
    _tool(context, name, lambda topic: result)
    context.max_iter = turns


@given('an agent with a tool "{name}" that raises ValueError "{message}"')
def given_failing_tool(context: Any, name: str, message: str) -> None:
    def fail(topic: str) -> str:
        raise ValueError(message)

    _tool(context, name, fail)


def _tool(context: Any, name: str, behaviour: Any) -> None:
    context.tool_calls = []

    @tool(name=name)
    def the_tool(topic: str) -> str:
        """Look a topic up in the archive."""
        context.tool_calls.append((name, topic))
        return str(behaviour(topic))

    context.tools = [the_tool]
    context.task_specs = []
    _task_spec(context, "facts", "[[facts]] Find facts about octopuses with your tool.")


@given('the model answers "{task}" by calling "{name}" with topic "{topic}", then with "{final}"')
def given_tool_script(context: Any, task: str, name: str, topic: str, final: str) -> None:
    context.server.add_rule(f"[[{task}]]",
                            Reply(tool_calls=[ToolCall(name, {"topic": topic})]), final)


@given('the model answers "{task}" by calling "{name}" with topic "{topic}" every time')
def given_endless_tools(context: Any, task: str, name: str, topic: str) -> None:
    context.server.add_rule(f"[[{task}]]", Reply(tool_calls=[ToolCall(name, {"topic": topic})]))


@then("the kickoff fails with a MaxIterationsError naming the agent, the task and "
      "max_iter={n:d}")
def then_max_iter(context: Any, n: int) -> None:
    error = context.error
    assert isinstance(error, MaxIterationsError), f"expected MaxIterationsError, got {error!r}"
    text = str(error)
    assert "'Writer'" in text and "'facts'" in text and f"max_iter={n}" in text, text
    assert len(context.tool_calls) == n, context.tool_calls


@when("the crew is kicked off")
def when_kicked_off(context: Any) -> None:
    crew = context.crew if getattr(context, "crew", None) else _build_crew(context)
    outcome(context, crew.kickoff)


@when('the crew is kicked off with {key} "{value}"')
def when_kicked_off_with(context: Any, key: str, value: str) -> None:
    outcome(context, lambda: _build_crew(context).kickoff({key: value}))


def _output_of(context: Any, name: str) -> str:
    out = require_output(context)
    return str(next(t.raw for t in out.tasks_output if t.name == name))


def _prompt_of(context: Any, name: str) -> str:
    require_output(context)
    served = served_for(context.server, name)
    assert len(served) == 1, f"expected one request for {name!r}, the server saw {len(served)}"
    return user_prompt(served[0])


@then('the crew\'s output is the output of "{name}"')
def then_crew_output(context: Any, name: str) -> None:
    out = require_output(context)
    assert out.raw == _output_of(context, name), (out.raw, _output_of(context, name))
    assert [t.name for t in out.tasks_output] == [s["name"] for s in context.task_specs]


@then('the prompt of "{task}" holds the output of "{other}"')
def then_prompt_holds(context: Any, task: str, other: str) -> None:
    output = _output_of(context, other)
    assert output in _prompt_of(context, task), (
        f"{task!r} did not see the output of {other!r} ({output!r}):\n"
        f"{_prompt_of(context, task)}")


@then('the prompt of "{task}" holds the outputs of "{a}" and "{b}"')
def then_prompt_holds_both(context: Any, task: str, a: str, b: str) -> None:
    then_prompt_holds(context, task, a)
    then_prompt_holds(context, task, b)


@then('the prompt of "{task}" does not hold the output of "{other}"')
def then_prompt_lacks(context: Any, task: str, other: str) -> None:
    output = _output_of(context, other)
    assert output not in _prompt_of(context, task), (
        f"{task!r} saw the output of {other!r} although its context does not name it")


@then('the prompt of "{task}" holds no earlier output')
def then_prompt_holds_none(context: Any, task: str) -> None:
    prompt = _prompt_of(context, task)
    others = [t.raw for t in require_output(context).tasks_output if t.name != task]
    assert others and not any(raw in prompt for raw in others), prompt


@then('the prompt of "{task}" holds:')
def then_prompt_holds_text(context: Any, task: str) -> None:
    expected = context.text.strip()
    prompt = _prompt_of(context, task)
    assert expected in prompt, f"expected {expected!r} in the prompt:\n{prompt}"


@then("the kickoff fails with an InputError")
def then_input_error(context: Any) -> None:
    assert isinstance(context.error, InputError), f"expected an InputError, got {context.error!r}"


@then('the error names the placeholder "{placeholder}" and "{where}"')
def then_error_names(context: Any, placeholder: str, where: str) -> None:
    error = context.error
    assert error.placeholder == placeholder, error.placeholder
    assert error.where == where, error.where
    assert f"{{{placeholder}}}" in str(error) and where in str(error), str(error)


@then("the server was sent no request")
def then_nothing_sent(context: Any) -> None:
    assert context.server.served == [], f"{len(context.server.served)} requests were sent"


@then('"{name}" ran once, with topic "{topic}"')
def then_tool_ran(context: Any, name: str, topic: str) -> None:
    assert context.tool_calls == [(name, topic)], context.tool_calls


@then('"{name}" never ran')
def then_tool_never_ran(context: Any, name: str) -> None:
    assert context.tool_calls == [], context.tool_calls


@then('the model\'s second request for "{task}" carries the tool result "{result}"')
def then_tool_result_sent(context: Any, task: str, result: str) -> None:
    served = served_for(context.server, task)
    assert len(served) >= 2, f"the server saw {len(served)} request(s) for {task!r}"
    first_call = served[0].tool_calls[0]
    tool_messages = [m for m in served[1].messages if m.get("role") == "tool"]
    assert [(m.get("tool_call_id"), m.get("content")) for m in tool_messages] == [
        (first_call.id, result)], tool_messages


@then('the output of "{task}" is "{text}"')
def then_output_is(context: Any, task: str, text: str) -> None:
    assert _output_of(context, task) == text, _output_of(context, task)


@then('the usage of "{task}" equals the server\'s count for it, {n:d} requests')
def then_task_usage(context: Any, task: str, n: int) -> None:
    out = require_output(context)
    usage = next(t.usage for t in out.tasks_output if t.name == task)
    served = context.server.totals(marker=task)
    assert served.requests == n, f"the server served {served.requests} requests, not {n}"
    assert_same_usage(usage, served, f"task {task!r}")
