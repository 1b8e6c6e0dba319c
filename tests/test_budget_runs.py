"""Budgets in real runs: reserved before every request, never overshot, spend kept."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from crewline import (
    LLM,
    Agent,
    Budget,
    BudgetExceededError,
    Crew,
    DefinitionError,
    Task,
)
from crewline.budget import SQLiteLedger
from crewline.testing import FakeLLMServer, Reply, ServedTotals

IN, OUT = Decimal("0.000001"), Decimal("0.000002")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def served_cost(t: ServedTotals) -> Decimal:
    return t.prompt_tokens * IN + t.completion_tokens * OUT


def _llm(server: FakeLLMServer, **kw: object) -> LLM:
    return LLM(model="openai/custom-model", base_url=server.base_url, api_key="sk-test",
               input_cost_per_token=IN, output_cost_per_token=OUT, max_tokens=20, **kw)


def _fan_out(server: FakeLLMServer, n: int = 30) -> Crew:
    agent = Agent(role="Spender", goal="spend", llm=_llm(server))
    tasks = [Task(name=f"j{i}", description=f"[[j{i}]] job {i} " + "pad " * 20,
                  agent=agent, async_execution=True) for i in range(n)]
    tasks.append(Task(name="end", description="[[end]] wrap up", agent=agent, context=[]))
    return Crew(agents=[agent], tasks=tasks)


# One request here reserves about 60 prompt tokens x $0.000001 + 20 x $0.000002.
LIMIT = Decimal("0.0005")


@pytest.mark.parametrize("mode", ["sync", "asyncio"])
def test_thirty_parallel_tasks_never_overshoot(server: FakeLLMServer, mode: str) -> None:
    server.latency = 0.02
    crew = _fan_out(server)
    for _ in range(5):
        server.reset()
        budget = Budget(max_cost=LIMIT, name="cap")
        run_ids: list[str] = []

        def note(event: object, run_ids: list[str] = run_ids) -> None:
            from crewline.events import KickoffStarted

            if isinstance(event, KickoffStarted):
                run_ids.append(event.run_id)

        with pytest.raises(BudgetExceededError) as info:
            if mode == "sync":
                crew.kickoff(budget=budget, listeners=[note])
            else:
                asyncio.run(crew.kickoff_async(budget=budget, listeners=[note]))
        server.wait_idle()
        served = server.totals()
        assert served_cost(served) <= LIMIT
        err = info.value
        assert err.budget == "cap" and "budget 'cap' exceeded" in str(err)
        if mode == "sync":
            assert err.usage.cost == served_cost(served)
        assert budget.reserved(run_id=run_ids[0]).cost == 0  # every hold settled or released
        charged = budget.spent(run_id=run_ids[0]).cost
        # Never under what the provider billed, never over the cap.
        assert served_cost(served) <= charged <= LIMIT
        if mode == "sync":  # in-flight tasks finished and settled: the work that fit was done
            assert charged == err.usage.cost
            assert served.requests >= 3
            assert err.usage.requests == served.requests
        else:  # task-group policy: siblings cancelled mid-request, on record as cancelled,
            # and charged their full hold (the provider may have served them)
            spent = err.usage
            cancelled = [r for r in err.usage_records if r.outcome == "cancelled"]
            assert spent.requests <= served.requests <= spent.requests + len(cancelled)
            assert all(r.prompt_tokens == 0 and not r.priced for r in cancelled)
            assert charged >= err.usage.cost
        assert server.totals(marker="end").requests == 0


def test_naive_check_after_the_call_would_overshoot(server: FakeLLMServer) -> None:
    """The check this budget replaces: spend compared with the cap after each call."""
    server.latency = 0.02
    crew = _fan_out(server)
    spent = Decimal(0)
    stop = False

    def naive(event: object) -> None:
        nonlocal spent, stop
        from crewline.events import LLMCallFinished

        if isinstance(event, LLMCallFinished):
            spent += event.record.cost
            stop = stop or spent > LIMIT

    crew.kickoff(listeners=[naive])  # no budget: what a check-after engine lets through
    assert served_cost(server.totals()) > LIMIT, "this load must be able to overshoot"


def test_every_budget_in_scope_must_fit(server: FakeLLMServer) -> None:
    agent = Agent(role="A", llm=_llm(server))
    task_cap = Budget(max_requests=1, name="task-cap")
    crew = Crew(agents=[agent], budget=Budget(max_requests=10, name="crew-cap"), tasks=[
        Task(name="one", description="[[one]] first", agent=agent),
        Task(name="two", description="[[two]] second", agent=agent, budget=task_cap)])
    out = crew.kickoff()
    assert out.usage.requests == 2
    with pytest.raises(BudgetExceededError, match="budget 'kick' exceeded"):
        crew.kickoff(budget=Budget(max_requests=1, name="kick"))
    assert server.totals(marker="two").requests == 1  # the second kickoff stopped at 'two'


def test_token_budget_counts_the_worst_case(server: FakeLLMServer) -> None:
    agent = Agent(role="A", llm=_llm(server))
    crew = Crew(agents=[agent], tasks=[Task(description="[[tok]] hello", agent=agent)])
    with pytest.raises(BudgetExceededError) as info:
        crew.kickoff(budget=Budget(max_tokens=25, name="tiny"))
    assert info.value.dimension == "tokens"
    assert "tokens" in str(info.value)
    assert server.totals().requests == 0  # nothing was sent


def test_cost_budget_on_unpriced_model_is_an_error(server: FakeLLMServer) -> None:
    llm = LLM(model="openai/no-such-model-anywhere", base_url=server.base_url, api_key="k")
    agent = Agent(role="A", llm=llm)
    crew = Crew(agents=[agent], tasks=[Task(description="x", agent=agent)])
    with pytest.raises(DefinitionError, match="no known price"):
        crew.kickoff(budget=Budget(max_cost="1", name="b"))
    assert server.totals().requests == 0
    out = crew.kickoff()  # without a cost budget it runs, and says the price was unknown
    assert out.usage_records[0].priced is False and out.usage.cost == 0


def test_for_each_budget_spans_the_batch(server: FakeLLMServer) -> None:
    agent = Agent(role="A", llm=_llm(server))
    crew = Crew(agents=[agent], tasks=[Task(description="[[fe{i}]] item {i}", agent=agent)])
    with pytest.raises(BudgetExceededError) as info:
        crew.kickoff_for_each([{"i": i} for i in range(6)],
                              budget=Budget(max_requests=3, name="batch"))
    assert server.totals().requests == 3
    assert info.value.usage.requests == 3  # the whole batch's spend rides on the error
    server.reset()
    with pytest.raises(BudgetExceededError) as info:
        asyncio.run(crew.kickoff_for_each_async(
            [{"i": i} for i in range(6)], budget=Budget(max_requests=3, name="batch"),
            max_concurrency=2))
    server.wait_idle()
    served = server.totals()
    assert served.requests in (2, 3)  # a third may be in flight when the fourth is refused
    spent = info.value.usage
    # A request cancelled in flight is on record as failed (its usage never arrived),
    # so every request the server answered is accounted for, one record each.
    assert spent.requests <= served.requests <= spent.requests + spent.failed_requests


WORKER = """
import sys, time
from decimal import Decimal
from crewline import LLM, Agent, Budget, BudgetExceededError, Crew, Task
from crewline.budget import SQLiteLedger

base_url, db, name = sys.argv[1], sys.argv[2], sys.argv[3]
llm = LLM(model="openai/custom-model", base_url=base_url, api_key="k",
          input_cost_per_token="0.000001", output_cost_per_token="0.000002", max_tokens=20)
agent = Agent(role="A", llm=llm)
crew = Crew(agents=[agent], tasks=[Task(description="[[" + name + "]] go {i} " + "pad " * 20)])
budget = Budget(max_cost="0.002", period="day", ledger=SQLiteLedger(db), name="daily")
print("READY", flush=True)
i = 0
while True:
    try:
        crew.kickoff({"i": i}, budget=budget)
    except BudgetExceededError:
        print("STOPPED", flush=True)
        break
    i += 1
"""


@pytest.mark.slow
def test_two_processes_share_a_daily_budget(server: FakeLLMServer, tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.sqlite3")
    env = {**os.environ, "PYTHONPATH": SRC, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    server.latency = 0.01
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, server.base_url, db, f"p{i}"],
                              env=env, stdout=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "READY"
    # kill -9 the first one once it has spent something
    deadline = time.monotonic() + 60
    while server.totals(marker="p0").requests < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    assert procs[1].wait(timeout=120) == 0
    limit = Decimal("0.002")
    total = served_cost(server.totals())
    assert total <= limit
    ledger = SQLiteLedger(db)
    budget = Budget(max_cost="0.002", period="day", ledger=ledger, name="daily")
    spent = budget.spent().cost
    one_request = Decimal("0.0001")  # more than any single request here costs
    assert total - one_request <= spent <= total  # at most the killed in-flight one unsettled
    left = limit - spent
    # nothing is held by the dead process: the whole remainder can be reserved at once
    from crewline.budget import Amount

    budget.reserve(Amount(cost=left), run_id="check").release()
    ledger.close()


def test_crew_budget_is_per_run_even_in_a_batch(server: FakeLLMServer) -> None:
    agent = Agent(role="A", llm=_llm(server))
    crew = Crew(agents=[agent], budget=Budget(max_requests=1, name="per-run"),
                tasks=[Task(description="[[pr{i}]] item {i}", agent=agent)])
    outs = crew.kickoff_for_each([{"i": i} for i in range(3)])
    assert [o.usage.requests for o in outs] == [1, 1, 1]


def test_cancelled_batch_carries_its_spend(server: FakeLLMServer) -> None:
    server.add_rule("[[slow1]]", Reply(content="late", delay=10))
    agent = Agent(role="A", llm=_llm(server))
    crew = Crew(agents=[agent], tasks=[Task(description="[[{m}]] item", agent=agent)])

    async def main() -> None:
        batch = asyncio.create_task(crew.kickoff_for_each_async(
            [{"m": "fast0"}, {"m": "slow1"}], max_concurrency=1))
        # slow1's request is in flight only once fast0's run has ended (max_concurrency=1),
        # so fast0's request is on record as served by then, not cut off on its way back.
        while not (server.totals(marker="fast0").requests == 1  # noqa: ASYNC110
                   and server.in_flight == 1):
            await asyncio.sleep(0.01)
        batch.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await batch
        assert info.value.usage.requests == 1  # type: ignore[attr-defined]

    asyncio.run(main())


def test_a_reply_without_usage_is_charged_its_hold() -> None:
    from crewline.transport.litellm import ChatResponse

    class NoUsage:
        def complete(self, request: dict[str, object]) -> ChatResponse:
            return ChatResponse(content="ok", usage_reported=False)

        async def acomplete(self, request: dict[str, object]) -> ChatResponse:
            return self.complete(request)

    llm = LLM(model="openai/custom-model", transport=NoUsage(), input_cost_per_token=IN,
              output_cost_per_token=OUT, max_tokens=20)
    agent = Agent(role="A", llm=llm)
    crew = Crew(agents=[agent], tasks=[Task(description="hello", agent=agent)])
    budget = Budget(max_cost="1", name="b")
    run_ids: list[str] = []
    out = crew.kickoff(budget=budget, listeners=[
        lambda e: run_ids.append(e.run_id) if type(e).__name__ == "KickoffStarted" else None])
    record = out.usage_records[0]
    assert record.priced is False and record.cost == 0  # the record says what it knows
    assert budget.spent(run_id=run_ids[0]).cost > 0  # the budget is not fooled


def test_one_budget_in_several_scopes_is_charged_once(server: FakeLLMServer) -> None:
    daily = Budget(max_requests=2, period="day", name="daily")
    agent = Agent(role="A", llm=_llm(server))
    crew = Crew(agents=[agent], budget=daily, tasks=[
        Task(name="a", description="[[a]] one", agent=agent, budget=daily),
        Task(name="b", description="[[b]] two", agent=agent)])
    out = crew.kickoff(budget=daily)
    assert out.usage.requests == 2
    assert daily.spent().requests == 2  # not 2 x 3 scopes
