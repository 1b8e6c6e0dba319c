"""kickoff_for_each on a real local Ray (started here, ``num_cpus=2``), checked against the
fake server's own counts: outputs in input order, usage exact and counted once, work in
other processes, context carried, budgets shared, a SIGKILLed worker's spend kept."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import structlog  # noqa: E402

import ray_app  # noqa: E402
from crewline import (  # noqa: E402
    LLM,
    Agent,
    Budget,
    BudgetExceededError,
    Crew,
    DefinitionError,
    Task,
    Usage,
    WorkerLostError,
)
from crewline.budget import SQLiteLedger  # noqa: E402
from crewline.events import LLMCallFinished  # noqa: E402
from crewline.ray import RayRunner  # noqa: E402
from crewline.testing import FakeLLMServer, Reply, ServedTotals, ToolCall  # noqa: E402

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
IN, OUT = Decimal("0.000001"), Decimal("0.000002")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray for the whole session; workers import crewline and ``ray_app``."""
    import crewline  # the workers import the same crewline as this process

    paths = [str(Path(crewline.__file__).resolve().parents[1]), str(HERE)]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [*paths, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)])
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def runner(ray_cluster: None) -> Iterator[RayRunner]:
    with RayRunner(workers=2, concurrency=64, context=(ray_app.tenant,)) as shared:
        yield shared


def _llm(server: FakeLLMServer) -> LLM:
    return LLM(model="openai/custom-model", base_url=server.base_url, api_key="sk-test",
               input_cost_per_token=IN, output_cost_per_token=OUT, max_tokens=20)


def _served_cost(t: ServedTotals) -> Decimal:
    return t.prompt_tokens * IN + t.completion_tokens * OUT


def _same(usage: Usage, served: ServedTotals) -> bool:
    return (usage.requests, usage.failed_requests, usage.prompt_tokens,
            usage.completion_tokens) == (served.requests, served.failed_requests,
                                         served.prompt_tokens, served.completion_tokens)


def _tool_crew(server: FakeLLMServer) -> Crew:
    """Two tasks per kickoff; the first calls ``whoami`` once, so each kickoff's work says
    where it ran and what context it saw."""
    server.add_rule(lambda s: "[[in" in str(s.messages) and ".a]]" in str(s.messages)
                    and s.messages[-1]["role"] != "tool",
                    Reply(tool_calls=[ToolCall("whoami", {})]))
    agent = Agent(role="Worker", goal="work", llm=_llm(server), tools=[ray_app.whoami])
    first = Task(name="a", description="[[in{i}.a]] Find out where you run, input {i}.",
                 agent=agent)
    second = Task(name="b", description="[[in{i}.b]] Summarise input {i}.", agent=agent,
                  context=[first])
    return Crew(agents=[agent], tasks=[first, second])


def _tool_results(server: FakeLLMServer) -> list[str]:
    return [m["content"] for s in server.served for m in s.messages
            if m["role"] == "tool" and s.messages[-1] is m]


def test_a_batch_of_40_on_two_workers(server: FakeLLMServer, runner: RayRunner) -> None:
    server.latency = 0.02
    crew = _tool_crew(server)
    pids = set(runner.worker_pids())
    token = ray_app.tenant.set("acme")
    try:
        with structlog.contextvars.bound_contextvars(request_id="req-7"):
            outs = crew.kickoff_for_each([{"i": i} for i in range(40)], runner=runner)
    finally:
        ray_app.tenant.reset(token)

    assert len(outs) == 40
    for i, out in enumerate(outs):  # input order, per-task usage exact
        assert [t.name for t in out.tasks_output] == ["a", "b"]
        for t in out.tasks_output:
            assert _same(t.usage, server.totals(marker=f"in{i}.{t.name}")), (i, t.name)
        assert out.usage == out.tasks_output[0].usage + out.tasks_output[1].usage
    total = sum((out.usage for out in outs), Usage())
    assert _same(total, server.totals())
    assert total.cost == _served_cost(server.totals())
    ids = [r.id for out in outs for r in out.usage_records]
    assert len(ids) == len(set(ids)) == 120  # 3 requests a kickoff, each counted once

    results = _tool_results(server)
    assert len(results) == 40
    ran_in = {int(m.group(1)) for m in (re.search(r"pid=(\d+)", r) for r in results) if m}
    assert os.getpid() not in ran_in
    assert ran_in == pids, "the work is spread over both workers"
    assert all("tenant=acme request=req-7" in r for r in results), results[:3]


def test_the_async_batch_on_the_same_runner(server: FakeLLMServer, runner: RayRunner) -> None:
    crew = _tool_crew(server)
    outs = asyncio.run(crew.kickoff_for_each_async([{"i": i} for i in range(10)],
                                                   runner=runner))
    assert [o.tasks_output[0].usage == Usage() for o in outs] == [False] * 10
    for i, out in enumerate(outs):
        assert _same(out.tasks_output[0].usage, server.totals(marker=f"in{i}.a"))
    assert _same(sum((o.usage for o in outs), Usage()), server.totals())
    assert all("tenant=- request=-" in r for r in _tool_results(server))  # nothing set


def test_listeners_get_the_workers_events_on_the_driver(server: FakeLLMServer,
                                                       runner: RayRunner) -> None:
    crew = _tool_crew(server)
    seen: list[LLMCallFinished] = []
    outs = crew.kickoff_for_each([{"i": i} for i in range(4)], runner=runner,
                                 listeners=[lambda e: isinstance(e, LLMCallFinished)
                                            and seen.append(e)])
    assert sorted(e.record.id for e in seen) == sorted(
        r.id for o in outs for r in o.usage_records)


def test_a_batch_budget_on_a_shared_ledger_holds_across_workers(
        server: FakeLLMServer, runner: RayRunner, tmp_path: Path) -> None:
    server.latency = 0.02
    agent = Agent(role="Spender", goal="spend", llm=_llm(server))
    crew = Crew(agents=[agent], tasks=[Task(description="[[j{i}]] job {i} " + "pad " * 20,
                                            agent=agent)])
    limit = Decimal("0.002")  # about 35 requests of the 80 asked
    with SQLiteLedger(tmp_path / "spend.db") as ledger:
        budget = Budget(max_cost=limit, ledger=ledger, name="batch-cap")
        with pytest.raises(BudgetExceededError) as info:
            crew.kickoff_for_each([{"i": i} for i in range(80)], budget=budget,
                                  runner=runner)
    served = server.totals()
    assert 0 < _served_cost(served) <= limit
    assert info.value.budget == "batch-cap"
    assert _same(info.value.usage, served)  # in-flight kickoffs finished and counted
    assert info.value.usage.cost == _served_cost(served)


def test_an_in_memory_budget_spanning_kickoffs_is_refused(server: FakeLLMServer) -> None:
    agent = Agent(role="A", llm=_llm(server))
    crew = Crew(agents=[agent], tasks=[Task(description="x {i}", agent=agent)])
    runner = RayRunner(workers=2)  # refused before Ray is touched
    with pytest.raises(DefinitionError, match=r"budget 'nightly'.*shared ledger"):
        crew.kickoff_for_each([{"i": 1}], runner=runner,
                              budget=Budget(max_cost=1, name="nightly"))
    daily = crew.model_copy(update={"budget": Budget(max_cost=1, period="day", name="daily")})
    with pytest.raises(DefinitionError, match="budget 'daily'"):
        daily.kickoff_for_each([{"i": 1}], runner=runner)
    # a crew's own per-run budget lives with its run on one worker: allowed
    per_run = crew.model_copy(update={"budget": Budget(max_cost=1, name="per-run")})
    assert per_run.budget is not None and not per_run.budget.ledger_is_shared
    with pytest.raises(DefinitionError, match="max_rpm=1 cannot be split over 2"):
        per_run.model_copy(update={"max_rpm": 1}).kickoff_for_each([{"i": 1}],
                                                                   runner=runner)
    runner.close()


def test_a_worker_killed_mid_batch_keeps_its_spend(server: FakeLLMServer, ray_cluster: None,
                                                   tmp_path: Path) -> None:
    release = tmp_path / "release"
    n = 12
    server.add_rule(lambda s: s.messages[-1]["role"] != "tool",
                    Reply(tool_calls=[ToolCall("hold", {"path": str(release)})]))
    agent = Agent(role="Holder", goal="wait", llm=_llm(server), tools=[ray_app.hold])
    crew = Crew(agents=[agent], tasks=[Task(description="[[k{i}]] Wait, input {i}.",
                                            agent=agent)])
    first_requests_in = threading.Event()
    seen: list[str] = []

    def count(event: object) -> None:
        if isinstance(event, LLMCallFinished):
            seen.append(event.record.id)
            if len(seen) == n:
                first_requests_in.set()

    with RayRunner(workers=2, concurrency=16) as runner:
        victim = runner.worker_pids()[0]
        outcome: list[BaseException | object] = []

        def batch() -> None:
            try:
                outcome.append(crew.kickoff_for_each([{"i": i} for i in range(n)],
                                                     runner=runner, listeners=[count]))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=batch)
        thread.start()
        # every kickoff made its first request (and the driver holds its record): all
        # of them now sit in the tool, so none of the victim's requests is in flight
        assert first_requests_in.wait(180)
        os.kill(victim, signal.SIGKILL)
        release.touch()
        thread.join(180)
        assert not thread.is_alive(), "the batch must not hang"

        error = outcome[0]
        assert isinstance(error, WorkerLostError), error
        lost = [e for e in (error, *error.other_errors) if isinstance(e, WorkerLostError)]
        assert len(lost) == n // 2  # the victim's share, spread evenly
        served = server.totals()
        assert served.requests == n + n // 2  # the live worker's kickoffs finished
        assert _same(error.usage, served)  # the raised error carries the batch's spend
        assert sorted(e.index for e in lost if e.index is not None) == sorted(
            {e.index for e in lost if e.index is not None})
        for e in lost[1:]:  # each other lost kickoff: the request it completed before the kill
            assert e.usage.requests == 1 and e.usage.failed_requests == 0

        # the runner replaces the lost worker and stays usable
        server.reset()
        plain_agent = Agent(role="P", llm=_llm(server))
        plain = Crew(agents=[plain_agent], tasks=[Task(description="[[p{i}]] Hi {i}.",
                                                       agent=plain_agent)])
        outs = plain.kickoff_for_each([{"i": i} for i in range(4)], runner=runner)
        assert _same(sum((o.usage for o in outs), Usage()), server.totals())
        assert victim not in runner.worker_pids()


def test_rate_limits_are_split_evenly_across_workers(server: FakeLLMServer) -> None:
    """Each worker's copy of the crew keeps ``limit // workers``: the cluster keeps the limit."""
    import pickle

    from crewline._execution.remote import split_rate_limits

    llm = _llm(server).model_copy(update={"max_rpm": 90, "max_tpm": 10_001})
    agent = Agent(role="A", llm=llm)
    crew = Crew(agents=[agent], tasks=[Task(description="x", agent=agent)], max_rpm=60)
    copy = pickle.loads(pickle.dumps(crew))  # what a worker receives
    split_rate_limits(copy, 3)
    worker_llm = copy.tasks[0].agent.llm
    assert worker_llm.limiter.requests.capacity == 30
    assert worker_llm.limiter.tokens.capacity == 3333
    assert copy.limiter.requests.capacity == 20 and copy.limiter.tokens is None
    assert crew.limiter.requests.capacity == 60  # the driver's own crew is untouched
