"""Steps for delegation.feature: a scripted manager, checked against the server's counts."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from behave import given, then, when
from crew_world import IN, OUT, gather, outcome, require_output, served_for
from naive_counter import NaiveCounter

from crewline import LLM, Agent, Budget, BudgetExceededError, Crew, Process, Task, Usage
from crewline.testing import FakeLLMServer, Reply, Served, agent_is, agent_turn, delegate

ROLES = {"m": "Crew Manager", "r": "Researcher", "w": "Writer"}


def _llm(server: FakeLLMServer) -> LLM:
    return LLM(model="openai/custom-model", base_url=server.base_url, api_key="sk-test",
               input_cost_per_token=IN, output_cost_per_token=OUT)


def _crew(server: FakeLLMServer, budget: Budget | None = None) -> Crew:
    llm = _llm(server)
    return Crew(agents=[Agent(role="Researcher", goal="find facts", llm=llm),
                        Agent(role="Writer", goal="write", llm=llm)],
                tasks=[Task(name="report", description="[[{run}-m]] Write a report")],
                process=Process.hierarchical, manager_llm=llm, budget=budget)


def _script(server: FakeLLMServer, run: str) -> None:
    def turn(n: int) -> Any:
        return lambda s: s.marker == f"{run}-m" and agent_turn("Crew Manager", n)(s)

    server.add_rule(turn(1), Reply(tool_calls=[
        delegate("Researcher", f"[[{run}-r]] Find three facts", "for a report"),
        delegate("Writer", f"[[{run}-w]] Draft an introduction, please, please")]))
    server.add_rule(turn(2), f"The report of {run}.")


def _cost(served: list[Served]) -> Decimal:
    return sum((s.prompt_tokens * IN + s.completion_tokens * OUT for s in served), Decimal(0))


def _check(out: Any, server: FakeLLMServer, run: str) -> None:
    by = {m: served_for(server, f"{run}-{m}") for m in ROLES}
    everything = [s for group in by.values() for s in group]
    usage = out.tasks_output[0].usage
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens, usage.cost) == (
        len(everything), sum(s.prompt_tokens for s in everything),
        sum(s.completion_tokens for s in everything), _cost(everything)), (run, usage)
    for m, role in ROLES.items():
        mine = out.usage_by_agent[role]
        assert (mine.requests, mine.total_tokens, mine.cost) == (
            len(by[m]), sum(s.total_tokens for s in by[m]), _cost(by[m])), (run, role)


@given("a hierarchical crew whose manager hands two pieces out in one reply")
def given_crew(context: Any) -> None:
    context.crew = _crew(context.server)
    context.runs = ["d"]
    _script(context.server, "d")


@given("a hierarchical crew whose manager hands two pieces out in one reply, for {n:d} runs")
def given_crew_many(context: Any, n: int) -> None:
    context.crew = _crew(context.server)
    context.runs = [f"d{i}" for i in range(n)]
    for run in context.runs:
        _script(context.server, run)


@given("a hierarchical crew whose manager hands two pieces out in one reply, with a budget "
       "of {n:d} requests")
def given_crew_budget(context: Any, n: int) -> None:
    context.crew = _crew(context.server, Budget(max_requests=n, name="team"))
    context.runs = ["d"]
    _script(context.server, "d")


@given("a hierarchical crew whose manager delegates to an unknown coworker")
def given_unknown(context: Any) -> None:
    context.crew = _crew(context.server)
    context.runs = ["u"]
    context.server.add_rule(agent_turn("Crew Manager", 1), Reply(tool_calls=[
        delegate("Accountant", "[[u-x]] Count the beans")]))
    context.server.add_rule(agent_turn("Crew Manager", 2), "I did it myself.")


@given("a planning crew of two tasks")
def given_planning(context: Any) -> None:
    llm = _llm(context.server)
    agent = Agent(role="Analyst", llm=llm)
    context.crew = Crew(agents=[agent], planning=True, tasks=[
        Task(name="one", description="[[p1]] Study", agent=agent),
        Task(name="two", description="[[p2]] Sum up", agent=agent)])
    context.runs = ["p"]
    context.server.add_rule(lambda s: "Task Execution Planner" in str(s.messages[0]),
                            "### Task 1\nRead.\n### Task 2\nWrite.")


@when("the delegating crew is kicked off")
def when_kickoff(context: Any) -> None:
    outcome(context, lambda: context.crew.kickoff({"run": context.runs[0]}))


@when("the delegating crew is kicked off with kickoff_async")
def when_kickoff_async(context: Any) -> None:
    outcome(context, lambda: asyncio.run(context.crew.kickoff_async({"run": context.runs[0]})))


@when("{n:d} kickoffs of it are gathered with kickoff_async, a naive counter per agent "
      "listening")
def when_gathered(context: Any, n: int) -> None:
    context.naive = NaiveCounter(key="agent")
    context.outputs = gather(context.crew.kickoff_async({"run": run}, listeners=[context.naive])
                             for run in context.runs[:n])


@then("the task's usage is the manager's requests plus both coworkers', to the token and the "
      "cent")
def then_task_exact(context: Any) -> None:
    _check(require_output(context), context.server, context.runs[0])


@then("the usage by agent splits it into the manager and each coworker")
def then_by_agent(context: Any) -> None:
    out = require_output(context)
    assert set(out.usage_by_agent) == set(ROLES.values())
    assert sum(out.usage_by_agent.values(), Usage()) == out.tasks_output[0].usage


@then("the two coworkers' requests overlapped in time")
def then_overlap(context: Any) -> None:
    run = context.runs[0]
    (a,), (b,) = served_for(context.server, f"{run}-r"), served_for(context.server, f"{run}-w")
    assert a.received_at < b.answered_at and b.received_at < a.answered_at, (a, b)


@then("every run's task and agents are charged exactly what the server served for the run")
def then_every_run(context: Any) -> None:
    for run, out in zip(context.runs, context.outputs, strict=True):
        _check(out, context.server, run)


@then("the naive counter charges at least one run's task for tokens it did not spend")
def then_naive_wrong(context: Any) -> None:
    truth = {o.run_id: o.tasks_output[0].usage.total_tokens for o in context.outputs}
    naive = {run_id: n for (run_id, _), n in context.naive.per_task.items()}
    assert naive != truth


@then("the kickoff fails with BudgetExceededError carrying what the server served")
def then_budget(context: Any) -> None:
    assert isinstance(context.error, BudgetExceededError), repr(context.error)
    served = context.server.totals()
    assert context.error.usage.requests == served.requests
    assert context.error.usage.total_tokens == served.total_tokens


@then("the server served no more than {n:d} requests")
def then_at_most(context: Any, n: int) -> None:
    assert len(context.server.served) <= n


@then("the manager is told which coworkers it can delegate to")
def then_told(context: Any) -> None:
    require_output(context)
    last = [s for s in context.server.served if agent_is("Crew Manager")(s)][-1]
    tool = next(m["content"] for m in last.messages if m["role"] == "tool")
    assert "no coworker 'Accountant'" in tool and "'Researcher', 'Writer'" in tool, tool


@then("exactly one planning request was served and it is in the crew's usage")
def then_one_plan(context: Any) -> None:
    out = require_output(context)
    planner = [s for s in context.server.served if "Task Execution Planner" in str(s.messages)]
    records = [r for r in out.usage_records if r.purpose == "planning"]
    assert len(planner) == len(records) == 1
    assert records[0].total_tokens == planner[0].total_tokens
    assert out.usage.total_tokens == context.server.totals().total_tokens


@then("no task's usage holds the planning request")
def then_no_task(context: Any) -> None:
    out = require_output(context)
    for task in out.tasks_output:
        assert all(r.purpose != "planning" for r in task.usage_records)
