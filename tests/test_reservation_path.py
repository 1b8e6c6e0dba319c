"""The one reservation path: holds taken all or nothing, closed once, whatever happens.

Each test here failed against the engine before the reservation path was made one
(`Holds`): usage without a bill, negative usage refunding a budget, a ledger error leaving
a hold open, a cancelled request's hold released though the provider may have billed it,
and ledger I/O on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from decimal import Decimal

import pytest

from crewline import LLM, Agent, Budget, Crew, CrewlineError, Task
from crewline.budget import Amount, InMemoryLedger, Limit
from crewline.events import BudgetReserved, KickoffStarted
from crewline.testing import FakeLLMServer, Reply

IN, OUT = Decimal("0.000001"), Decimal("0.000002")


def _crew(server: FakeLLMServer, n: int = 8, **llm: object) -> Crew:
    model = LLM(model="openai/custom-model", base_url=server.base_url, api_key="sk-test",
                input_cost_per_token=IN, output_cost_per_token=OUT, max_tokens=20, **llm)
    agent = Agent(role="Worker", llm=model)
    return Crew(agents=[agent], tasks=[Task(name=f"t{i}", description=f"job {i}", agent=agent)
                                       for i in range(n)])


def _run_ids(into: list[str]):  # type: ignore[no-untyped-def]
    return lambda e: into.append(e.run_id) if isinstance(e, KickoffStarted) else None


def _body(usage: dict[str, int] | None) -> str:
    doc: dict[str, object] = {
        "id": "x", "object": "chat.completion", "created": 0, "model": "custom-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "done"}}]}
    if usage is not None:
        doc["usage"] = usage
    return json.dumps(doc)


def _hold_of(crew: Crew) -> Decimal:
    from crewline._accounting.pricing import price_of
    from crewline._core.request import build_request, worst_case
    from crewline._core.turns import first_messages
    from crewline._crew.process import plan_run

    task = plan_run(crew, {}).tasks[0]
    request = build_request(task.llm, first_messages(task, "", []))
    return worst_case(task.llm, request, price_of(task.llm)).cost


@pytest.mark.parametrize("usage", [
    None,  # no usage at all: litellm fills in zeros
    {"prompt_tokens": -1_000_000, "completion_tokens": 5, "total_tokens": -999_995},
    {"prompt_tokens": 10**19, "completion_tokens": 5, "total_tokens": 10**19 + 5},
], ids=["missing", "negative", "absurd"])
def test_untrustworthy_usage_is_unpriced_and_charged_the_full_hold(
        server: FakeLLMServer, usage: dict[str, int] | None) -> None:
    crew = _crew(server)
    hold = _hold_of(crew)
    budget = Budget(max_cost=hold * Decimal("2.5"), name="cap")
    run_ids: list[str] = []
    holds: list[Decimal] = []

    def note(event: object) -> None:
        if isinstance(event, BudgetReserved):
            holds.append(Decimal(event.cost))

    server.add_rule(None, Reply(raw_body=_body(usage)))
    with pytest.raises(CrewlineError) as info:
        crew.kickoff(budget=budget, listeners=[_run_ids(run_ids), note])
    assert "budget 'cap' exceeded" in str(info.value)
    assert server.totals().requests == 2  # 2.5 worst cases fit two requests, never more
    records = info.value.usage_records
    assert len(records) == 2
    assert all(not r.priced and r.cost == 0 for r in records)
    assert all(r.prompt_tokens >= 0 and r.completion_tokens >= 0 for r in records)
    assert budget.spent(run_id=run_ids[0]).cost == sum(holds)  # each charged its full hold
    assert len(holds) == 2
    assert budget.reserved(run_id=run_ids[0]) == Amount()


class _FailingLedger(InMemoryLedger):
    """A ledger whose file is locked by someone else: every reserve fails."""

    def reserve(self, account: str, amount: Amount, limit: Limit) -> str:
        raise sqlite3.OperationalError("database is locked")


def test_a_ledger_error_on_one_budget_releases_the_holds_on_the_others(
        server: FakeLLMServer) -> None:
    crew = _crew(server, n=1)
    first = Budget(max_cost="1", name="first")
    broken = crew.model_copy(update={"budget": Budget(max_cost="1", name="broken",
                                                      ledger=_FailingLedger())})
    run_ids: list[str] = []
    with pytest.raises(CrewlineError, match="database is locked"):
        broken.kickoff(budget=first, listeners=[_run_ids(run_ids)])
    assert server.totals().requests == 0
    assert first.reserved(run_id=run_ids[0]) == Amount()  # nothing left held
    assert first.spent(run_id=run_ids[0]) == Amount()


def test_a_request_cut_off_in_flight_is_charged_its_full_hold(server: FakeLLMServer) -> None:
    crew = _crew(server, n=1)
    hold = _hold_of(crew)
    budget = Budget(max_cost="1", name="b")
    run_ids: list[str] = []
    server.add_rule(None, Reply(delay=30))

    async def main() -> BaseException:
        run = asyncio.create_task(crew.kickoff_async(budget=budget,
                                                     listeners=[_run_ids(run_ids)]))
        while server.in_flight == 0:  # noqa: ASYNC110 - the server's own signal
            await asyncio.sleep(0.01)
        run.cancel()
        try:
            await run
        except asyncio.CancelledError as exc:
            return exc
        raise AssertionError("the kickoff was not cancelled")

    cancelled = asyncio.run(main())
    records = cancelled.usage_records  # type: ignore[attr-defined]
    assert [r.outcome for r in records] == ["cancelled"]
    assert records[0].priced is False and records[0].total_tokens == 0
    assert budget.spent(run_id=run_ids[0]).cost == hold  # the provider may have billed it
    assert budget.reserved(run_id=run_ids[0]) == Amount()


class _ThreadNotingLedger(InMemoryLedger):
    def __init__(self, *, blocking: bool) -> None:
        super().__init__()
        self.blocking = blocking
        self.threads: list[int] = []

    def reserve(self, account: str, amount: Amount, limit: Limit) -> str:
        self.threads.append(threading.get_ident())
        return super().reserve(account, amount, limit)

    def settle(self, reservation_id: str, actual: Amount) -> None:
        self.threads.append(threading.get_ident())
        super().settle(reservation_id, actual)


@pytest.mark.parametrize("blocking", [True, False])
def test_blocking_ledgers_are_used_off_the_event_loop(server: FakeLLMServer,
                                                      blocking: bool) -> None:
    ledger = _ThreadNotingLedger(blocking=blocking)
    budget = Budget(max_cost="1", name="b", ledger=ledger)
    crew = _crew(server, n=2)

    async def main() -> int:
        await crew.kickoff_async(budget=budget)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(ledger.threads) == 4  # a reserve and a settle per request
    if blocking:
        assert loop_thread not in ledger.threads
    else:  # an in-memory ledger never waits: no thread hop per request
        assert set(ledger.threads) == {loop_thread}


def test_one_run_budget_on_the_crew_and_a_task_is_one_cap(server: FakeLLMServer) -> None:
    """Charging task a's requests to a task account and b's to the run's (one account per
    scope, as before) let 3 requests through a cap of 2: one object is one account."""
    from crewline import BudgetExceededError, tool
    from crewline.testing import ToolCall

    @tool
    def look() -> str:
        """Look something up."""
        return "found"

    cap = Budget(max_requests=2, name="cap")  # period "run"
    model = LLM(model="openai/custom-model", base_url=server.base_url, api_key="sk-test",
                input_cost_per_token=IN, output_cost_per_token=OUT, max_tokens=20)
    agent = Agent(role="Worker", llm=model, tools=[look])
    crew = Crew(agents=[agent], budget=cap, tasks=[
        Task(name="a", description="[[a]] two requests", agent=agent, budget=cap),
        Task(name="b", description="[[b]] one request", agent=agent)])
    server.add_rule("a", Reply(tool_calls=[ToolCall("look", {})]), Reply(content="done"),
                    times=2)
    with pytest.raises(BudgetExceededError):
        crew.kickoff()
    assert server.totals().requests == 2  # task b's request did not fit: one cap, not two
