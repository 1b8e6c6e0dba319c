"""Steps for usage.feature: every figure against the server's count, and the naive control."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from behave import given, then, when
from crew_world import (
    assert_same_usage,
    figures,
    gather,
    llm,
    mismatches,
    require_output,
    served_sum,
)
from naive_counter import NaiveCounter

from crewline import Agent, Crew, Task, Usage

# -- one agent, six parallel tasks ---------------------------------------------------------


@given("one agent with 6 parallel tasks of very different prompt sizes and a final task "
       "that gathers them")
def given_fan_in(context: Any) -> None:
    agent = Agent(role="Analyst", goal="analyse", backstory="careful", llm=llm(context.server))
    parts = []
    for i in range(6):
        filler = " ".join(["word"] * (5 + 60 * i))
        parts.append(Task(name=f"part{i}", description=f"[[part{i}]] Study part {i}. {filler}",
                          expected_output="notes", agent=agent, async_execution=True))
    final = Task(name="final", description="[[final]] Combine the parts.",
                 expected_output="report", agent=agent, context=parts)
    context.crew = Crew(agents=[agent], tasks=[*parts, final])


@when("the crew is kicked off with a naive counter per agent listening")
def when_fan_in_sync(context: Any) -> None:
    context.naive = NaiveCounter(key="agent")
    context.output = context.crew.kickoff(listeners=[context.naive])


@when("the crew is kicked off with kickoff_async and a naive counter per agent listening")
def when_fan_in_async(context: Any) -> None:
    context.naive = NaiveCounter(key="agent")
    context.output = asyncio.run(context.crew.kickoff_async(listeners=[context.naive]))


@then("every task's usage equals the server's count for its marker")
def then_each_task_exact(context: Any) -> None:
    out = require_output(context)
    assert len(out.tasks_output) == len(context.crew.tasks)
    for task in out.tasks_output:
        assert_same_usage(task.usage, context.server.totals(marker=task.name),
                          f"task {task.name!r}")


@then("the crew's usage equals everything the server served")
def then_crew_exact(context: Any) -> None:
    assert_same_usage(require_output(context).usage, context.server.totals(), "the crew")


@then("the crew's usage is the sum of its tasks' usage")
def then_crew_is_sum(context: Any) -> None:
    out = require_output(context)
    assert out.usage == sum((t.usage for t in out.tasks_output), Usage())


@then("the naive counter charges at least one task for tokens it did not spend")
def then_naive_fan_in_wrong(context: Any) -> None:
    naive = {task: n for (_run, task), n in context.naive.per_task.items()}
    assert len(naive) == len(context.crew.tasks), naive
    wrong = mismatches(naive, context.server, lambda name: name)
    assert wrong, "the naive before/after counter matched the server; the check cannot fail"


# -- one crew object, many kickoffs --------------------------------------------------------


@given("one crew object whose two tasks are marked with the run's name")
def given_two_step_crew(context: Any) -> None:
    agent = Agent(role="Writer of {topic}", goal="write", llm=llm(context.server))
    context.crew = Crew(agents=[agent], tasks=[
        Task(name="draft", description="[[{run}-draft]] Draft about {topic}.", agent=agent),
        Task(name="polish", description="[[{run}-polish]] Polish the draft on {topic} "
             + "and more " * 7, agent=agent)])
    context.runs = {}


def _inputs(i: int) -> dict[str, str]:
    return {"run": f"r{i}", "topic": "x " * (i * 3 + 1)}


@when("{n:d} kickoffs of it with different inputs are gathered with kickoff_async, "
      "a shared naive counter listening")
def when_gathered(context: Any, n: int) -> None:
    naive = context.naive = NaiveCounter(key="shared")
    outs = gather(context.crew.kickoff_async(_inputs(i), listeners=[naive]) for i in range(n))
    context.runs = {f"r{i}": out for i, out in enumerate(outs)}


@when("{n:d} threads each kick it off at the same moment with different inputs, "
      "a shared naive counter listening")
def when_threads(context: Any, n: int) -> None:
    naive = context.naive = NaiveCounter(key="shared")
    barrier = threading.Barrier(n)
    outs: list[Any] = [None] * n

    def work(i: int) -> None:
        barrier.wait()
        try:
            outs[i] = context.crew.kickoff(_inputs(i), listeners=[naive])
        except BaseException as exc:
            outs[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [o for o in outs if isinstance(o, BaseException)]
    assert not failed, failed
    context.runs = {f"r{i}": out for i, out in enumerate(outs)}


@then("every kickoff's tasks each report the server's count for their markers")
def then_runs_exact(context: Any) -> None:
    assert context.runs
    for run, out in context.runs.items():
        assert [t.name for t in out.tasks_output] == ["draft", "polish"]
        for task in out.tasks_output:
            served = context.server.totals(marker=f"{run}-{task.name}")
            assert served.requests == 1, (run, task.name, served)
            assert_same_usage(task.usage, served, f"run {run!r} task {task.name!r}")


@then("every kickoff's usage is the sum of its own tasks' usage and holds only its own records")
def then_runs_own(context: Any) -> None:
    for run, out in context.runs.items():
        assert out.usage == sum((t.usage for t in out.tasks_output), Usage()), run
        assert {r.run_id for r in out.usage_records} == {out.run_id}, run
        assert_same_usage(out.usage, served_sum(context.server, [f"{run}-draft",
                                                                f"{run}-polish"]),
                          f"run {run!r}")
    assert len({out.run_id for out in context.runs.values()}) == len(context.runs)


@then("the shared naive counter charges at least one task for tokens it did not spend")
def then_naive_runs_wrong(context: Any) -> None:
    run_of = {out.run_id: run for run, out in context.runs.items()}
    naive = {f"{run_of[run_id]}-{task}": n for (run_id, task), n in context.naive.per_task.items()}
    assert len(naive) == 2 * len(context.runs), naive
    wrong = mismatches(naive, context.server, lambda marker: marker)
    assert wrong, "the shared counter matched the server; the check cannot fail"


# -- one LLM, seven agents -----------------------------------------------------------------


@given("one LLM object shared by {n:d} agents, one task each")
def given_shared_llm(context: Any, n: int) -> None:
    shared = llm(context.server)
    agents = [Agent(role=f"Agent {i}", goal="help", llm=shared) for i in range(n)]
    tasks = [Task(name=f"t{i}", description=f"[[t{i}]] Job {i}: " + "step " * i, agent=a)
             for i, a in enumerate(agents)]
    context.crew = Crew(agents=agents, tasks=tasks)


@when("the crew is kicked off with a naive counter per LLM listening")
def when_shared_llm(context: Any) -> None:
    context.naive = NaiveCounter(key="llm")
    context.output = context.crew.kickoff(listeners=[context.naive])


@then("each agent's usage equals the server's count for its task")
def then_each_agent(context: Any) -> None:
    out = require_output(context)
    by_agent = out.usage_by_agent
    assert set(by_agent) == {a.role for a in context.crew.agents}, set(by_agent)
    for i, agent in enumerate(context.crew.agents):
        assert_same_usage(by_agent[agent.role], context.server.totals(marker=f"t{i}"),
                          f"agent {agent.role!r}")


@then("adding up each agent's LLM counter, the naive way, counts the server's tokens "
      "{n:d} times")
def then_naive_shared_llm(context: Any, n: int) -> None:
    naive_crew_total = sum(context.naive.counter["llm"] for _agent in context.crew.agents)
    served = context.server.totals().total_tokens
    assert naive_crew_total != served, "the naive sum matched the server; the check cannot fail"
    assert naive_crew_total == n * served, (naive_crew_total, served)


# -- a second kickoff ----------------------------------------------------------------------


@when('it is kicked off as run "{first}", then as run "{second}" with a longer topic, '
      "a shared naive counter listening")
def when_twice(context: Any, first: str, second: str) -> None:
    naive = context.naive = NaiveCounter(key="shared")
    context.runs = {
        first: context.crew.kickoff({"run": first, "topic": "a"}, listeners=[naive]),
        second: context.crew.kickoff({"run": second, "topic": "a b c d e f"},
                                     listeners=[naive]),
    }
    context.last_run = second


def _served_for_run(context: Any, run: str) -> Any:
    return served_sum(context.server, [f"{run}-draft", f"{run}-polish"])


@then('the usage of run "{run}" equals what the server served for run "{same}" alone')
def then_run_alone(context: Any, run: str, same: str) -> None:
    assert run == same
    out = context.runs[run]
    served = _served_for_run(context, run)
    assert served.requests == 2, served
    assert_same_usage(out.usage, served, f"run {run!r}")
    assert {r.run_id for r in out.usage_records} == {out.run_id}


@then("the naive lifetime counter reports both kickoffs as the second one's usage")
def then_naive_lifetime(context: Any) -> None:
    second = _served_for_run(context, context.last_run).total_tokens
    everything = context.server.totals().total_tokens
    assert context.naive.lifetime() != second, "the lifetime counter matched; cannot fail"
    assert context.naive.lifetime() == everything > second
    assert figures(context.runs[context.last_run].usage)["total_tokens"] == second
