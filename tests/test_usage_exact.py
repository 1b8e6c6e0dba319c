"""Every usage figure equals what the fake server says it served, in every mode.

Each scenario also feeds the same run to ``NaiveCounter`` (a shared counter diffed around
each task, as the engine users know does it) and checks that the very comparison used
for crewline rejects the naive figures: the tests can fail.
"""

from __future__ import annotations

import asyncio
import threading

from crewline import LLM, Agent, Crew, Task, Usage
from crewline.testing.server import FakeLLMServer
from naive import NaiveCounter


def _llm(server: FakeLLMServer) -> LLM:
    return LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")


def _mismatches(per_task: dict[str, int], server: FakeLLMServer, markers: dict[str, str]
                ) -> list[str]:
    """Tasks whose reported total tokens differ from the server's count for their marker."""
    return [name for name, tokens in per_task.items()
            if tokens != server.totals(marker=markers[name]).total_tokens]


def _fan_in_crew(server: FakeLLMServer, prefix: str = "") -> tuple[Crew, dict[str, str]]:
    agent = Agent(role="Analyst", goal="analyse", backstory="careful", llm=_llm(server))
    tasks, markers = [], {}
    for i in range(6):
        name = f"part{i}"
        marker = f"{prefix}{name}"
        filler = " ".join(["word"] * (5 + 60 * i))  # very different prompt sizes
        tasks.append(Task(name=name, description=f"[[{marker}]] Study part {i}. {filler}",
                          expected_output="notes", agent=agent, async_execution=True))
        markers[name] = marker
    markers["final"] = f"{prefix}final"
    tasks.append(Task(name="final", description=f"[[{prefix}final]] Combine the parts.",
                      expected_output="report", agent=agent, context=list(tasks)))
    return Crew(agents=[agent], tasks=tasks), markers


def _check_against_server(out, server, markers) -> None:  # type: ignore[no-untyped-def]
    per_task = {t.name: t.usage.total_tokens for t in out.tasks_output}
    assert _mismatches(per_task, server, markers) == []
    for t in out.tasks_output:
        served = server.totals(marker=markers[t.name])
        assert (t.usage.requests, t.usage.prompt_tokens, t.usage.completion_tokens) == (
            served.requests, served.prompt_tokens, served.completion_tokens)
    total = server.totals()
    assert out.usage.total_tokens == total.total_tokens
    assert out.usage.requests == total.requests
    assert out.usage == sum((t.usage for t in out.tasks_output), Usage())


def test_async_execution_tasks_each_get_their_own_usage_sync(server: FakeLLMServer) -> None:
    server.latency = 0.05  # the six background tasks overlap
    crew, markers = _fan_in_crew(server)
    naive = NaiveCounter()
    out = crew.kickoff(listeners=[naive])
    _check_against_server(out, server, markers)
    naive_per_task = {task: n for (_, task), n in naive.per_task.items()}
    assert _mismatches(naive_per_task, server, markers), "naive deltas should be wrong"


def test_async_execution_tasks_each_get_their_own_usage_asyncio(server: FakeLLMServer) -> None:
    server.latency = 0.05
    crew, markers = _fan_in_crew(server)
    naive = NaiveCounter()
    out = asyncio.run(crew.kickoff_async(listeners=[naive]))
    _check_against_server(out, server, markers)
    naive_per_task = {task: n for (_, task), n in naive.per_task.items()}
    assert _mismatches(naive_per_task, server, markers)


def _two_step_crew(server: FakeLLMServer) -> Crew:
    agent = Agent(role="Writer of {topic}", goal="write", llm=_llm(server))
    return Crew(agents=[agent], tasks=[
        Task(name="draft", description="[[{run}-draft]] Draft about {topic}.", agent=agent),
        Task(name="polish", description="[[{run}-polish]] Polish the draft on {topic} "
                                        + "and more " * 7, agent=agent),
    ])


def _check_runs(outs, server, runs) -> None:  # type: ignore[no-untyped-def]
    for run, out in zip(runs, outs, strict=True):
        for t in out.tasks_output:
            served = server.totals(marker=f"{run}-{t.name}")
            assert served.requests == 1
            assert t.usage.total_tokens == served.total_tokens, (run, t.name)
        assert out.usage.total_tokens == sum(
            server.totals(marker=f"{run}-{n}").total_tokens for n in ("draft", "polish"))


def test_twenty_concurrent_kickoff_async_of_one_crew(server: FakeLLMServer) -> None:
    server.latency = 0.02
    crew = _two_step_crew(server)
    runs = [f"r{i}" for i in range(20)]
    naive = NaiveCounter(key="shared")

    async def main() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(
            crew.kickoff_async({"topic": "x " * (i + 1), "run": run}, listeners=[naive])
            for i, run in enumerate(runs)))

    outs = asyncio.run(main())
    _check_runs(outs, server, runs)
    naive_by_run = {run_id: n for (run_id, task), n in naive.per_task.items()
                    if task == "polish"}
    truth = {out.run_id: out.tasks_output[1].usage.total_tokens for out in outs}
    assert naive_by_run != truth, "a shared counter diffed per task must be wrong here"


def test_eight_threads_kickoff_one_crew(server: FakeLLMServer, fast_switching: None) -> None:
    crew = _two_step_crew(server)
    runs = [f"t{i}" for i in range(8)]
    outs: list = [None] * 8  # type: ignore[type-arg]
    barrier = threading.Barrier(8)
    naive = NaiveCounter(key="shared")

    def work(i: int) -> None:
        barrier.wait()
        outs[i] = crew.kickoff({"topic": "y " * (i * 3 + 1), "run": runs[i]},
                               listeners=[naive])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_runs(outs, server, runs)
    truth = {out.run_id: out.tasks_output[1].usage.total_tokens for out in outs}
    naive_by_run = {run_id: n for (run_id, task), n in naive.per_task.items()
                    if task == "polish"}
    assert naive_by_run != truth


def test_one_llm_shared_by_seven_agents_is_counted_once(server: FakeLLMServer) -> None:
    llm = _llm(server)
    agents = [Agent(role=f"Agent {i}", goal="g", llm=llm) for i in range(7)]
    tasks = [Task(name=f"t{i}", description=f"[[t{i}]] Job {i}", agent=a)
             for i, a in enumerate(agents)]
    out = Crew(agents=agents, tasks=tasks).kickoff()
    total = server.totals()
    assert out.usage.total_tokens == total.total_tokens
    assert out.usage.requests == total.requests == 7
    assert set(out.usage_by_agent) == {a.role for a in agents}
    assert sum(u.total_tokens for u in out.usage_by_agent.values()) == total.total_tokens
    for i, a in enumerate(agents):
        assert out.usage_by_agent[a.role].total_tokens == server.totals(
            marker=f"t{i}").total_tokens
    # The naive way: each agent reports its LLM's lifetime counter.
    naive = NaiveCounter(key="llm")
    Crew(agents=agents, tasks=tasks).kickoff(listeners=[naive])
    naive_total = 7 * naive.lifetime()
    assert naive_total != server.totals().total_tokens - total.total_tokens


def test_second_kickoff_reports_only_its_own_usage(server: FakeLLMServer) -> None:
    crew = _two_step_crew(server)
    naive = NaiveCounter(key="shared")
    first = crew.kickoff({"topic": "a", "run": "one"}, listeners=[naive])
    after_first = server.totals().total_tokens
    second = crew.kickoff({"topic": "a b c", "run": "two"}, listeners=[naive])
    assert first.usage.total_tokens == after_first
    assert second.usage.total_tokens == server.totals().total_tokens - after_first
    assert {r.run_id for r in second.usage_records} == {second.run_id}
    assert naive.lifetime() != second.usage.total_tokens  # lifetime totals are not a run's


def test_records_carry_who_and_why(server: FakeLLMServer) -> None:
    crew = _two_step_crew(server)
    out = crew.kickoff({"topic": "z", "run": "rec"})
    assert [r.task for r in out.usage_records] == ["draft", "polish"]
    for r in out.usage_records:
        assert r.run_id == out.run_id
        assert r.attempt == 1
        assert r.agent == "Writer of z"
        assert r.purpose == "agent"
        assert r.model == "openai/gpt-4o-mini"
        assert r.outcome == "ok"
        assert r.priced is True
        assert r.cost > 0
        assert r.latency_s >= 0
    assert len({r.id for r in out.usage_records}) == 2
