"""Steps for budgets.feature: spend measured by the server, never past the cap."""

from __future__ import annotations

import tempfile
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

from behave import given, then, when
from crew_world import assert_same_usage, outcome, priced_llm, served_cost

from crewline import Agent, Budget, BudgetExceededError, Crew, Task, events
from crewline.budget import InMemoryLedger, SQLiteLedger


def _tmpdir(context: Any) -> Path:
    if getattr(context, "tmpdir", None) is None:
        holder = tempfile.TemporaryDirectory(prefix="crewline-bdd-")
        context.tmpdir = Path(holder.name)
        context.cleanups.append(holder.cleanup)
    return Path(context.tmpdir)


def _open_ledger(context: Any, path: Path) -> SQLiteLedger:
    ledger = SQLiteLedger(path)
    context.cleanups.append(ledger.close)
    return ledger


@given("a daily budget of ${limit} shared through a SQLite ledger")
def given_daily_budget(context: Any, limit: str) -> None:
    context.limit = Decimal(limit)
    context.ledger_files = []

    def make() -> Budget:
        path = _tmpdir(context) / f"ledger-{len(context.ledger_files)}.sqlite3"
        context.ledger_files.append(path)
        context.ledger = _open_ledger(context, path)
        return Budget(max_cost=context.limit, period="day", ledger=context.ledger,
                      name="daily")

    context.make_budget = make


@given("a budget of ${limit} for one kickoff")
def given_run_budget(context: Any, limit: str) -> None:
    context.limit = Decimal(limit)
    context.make_budget = lambda: Budget(max_cost=context.limit, name="cap")


@given("a budget of {tokens:d} tokens for one kickoff")
def given_token_budget(context: Any, tokens: int) -> None:
    context.token_limit = tokens
    context.make_budget = lambda: Budget(max_tokens=tokens, name="tokens")


def _job(i: int) -> str:
    return f"[[j{i}]] job {i} " + "pad " * 20


@given("{n:d} tasks that run at once and each want about ${each}, then a last task")
def given_parallel_spenders(context: Any, n: int, each: str) -> None:
    agent = Agent(role="Spender", goal="spend", llm=priced_llm(context.server))
    tasks = [Task(name=f"j{i}", description=_job(i), agent=agent, async_execution=True)
             for i in range(n)]
    tasks.append(Task(name="end", description="[[end]] wrap up", agent=agent, context=[]))
    context.crew = Crew(agents=[agent], tasks=tasks)
    context.each = Decimal(each)


@given("{n:d} tasks done one after another that each want about ${each}")
def given_sequential_spenders(context: Any, n: int, each: str) -> None:
    agent = Agent(role="Spender", goal="spend", llm=priced_llm(context.server))
    context.crew = Crew(agents=[agent], tasks=[
        Task(name=f"j{i}", description=_job(i), agent=agent, context=[]) for i in range(n)])
    context.each = Decimal(each)


class _Reservations:
    """Listens for the worst cases crewline reserved, to check the 'about $Y' of a step."""

    def __init__(self) -> None:
        self.costs: list[Decimal] = []

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.BudgetReserved):
            self.costs.append(Decimal(event.cost))


def _kickoff_once(context: Any) -> dict[str, Any]:
    reserved = _Reservations()
    budget = context.make_budget()
    before = context.server.totals()
    outcome(context, lambda: context.crew.kickoff(budget=budget, listeners=[reserved]))
    context.server.wait_idle()
    after = context.server.totals()
    served = {field: getattr(after, field) - getattr(before, field)
              for field in ("requests", "prompt_tokens", "completion_tokens", "total_tokens")}
    served["cost"] = served_cost(after) - served_cost(before)
    if reserved.costs and getattr(context, "each", None) is not None:
        low, high = context.each / 2, context.each * 2
        odd = [c for c in reserved.costs if not low <= c <= high]
        assert not odd, f"reservations far from ${context.each}: {odd[:5]}"
    return {"budget": budget, "error": context.error, "output": context.output,
            "served": served, "ledger": getattr(context, "ledger", None)}


@when("the crew is kicked off against the budget")
def when_budgeted(context: Any) -> None:
    context.rounds = [_kickoff_once(context)]


@when("the crew is kicked off against the budget, {n:d} times over, with a fresh ledger "
      "each time")
def when_budgeted_rounds(context: Any, n: int) -> None:
    context.rounds = []
    for _ in range(n):
        context.server.reset()
        context.rounds.append(_kickoff_once(context))


@then("the money the server says was spent never exceeds ${limit}")
def then_never_exceeds(context: Any, limit: str) -> None:
    for i, r in enumerate(context.rounds):
        assert r["served"]["cost"] <= Decimal(limit), (
            f"round {i}: the server served ${r['served']['cost']} against a ${limit} budget")


@then("the work that fitted was done: several requests were answered, each one on the ledger")
def then_work_done(context: Any) -> None:
    for i, r in enumerate(context.rounds):
        error, served = r["error"], r["served"]
        assert served["requests"] >= 3, f"round {i}: only {served['requests']} requests fitted"
        assert error.usage.requests == served["requests"], (error.usage, served)
        assert error.usage.cost == served["cost"], (error.usage.cost, served["cost"])
        assert r["budget"].spent().cost == served["cost"], (r["budget"].spent(), served)


@then('every kickoff stopped with a BudgetExceededError naming the "{name}" budget')
def then_stopped_by(context: Any, name: str) -> None:
    for r in context.rounds:
        error = r["error"]
        assert isinstance(error, BudgetExceededError), repr(error)
        assert error.budget == name and f"budget {name!r} exceeded" in str(error), str(error)


@then("the last task never ran, and no reservation was left open")
def then_nothing_held(context: Any) -> None:
    for r in context.rounds:
        assert r["budget"].reserved().cost == 0, r["budget"].reserved()
    assert context.server.totals(marker="end").requests == 0


@then("{n:d} kickoffs that each check the spend before their call and add it after spend "
      "more than ${limit} (the control)")
def then_check_after_overshoots(context: Any, n: int, limit: str) -> None:
    """The tracker crewline replaces: compare settled spend with the cap, call, then add."""
    cap = Decimal(limit)
    agent = Agent(role="Spender", goal="spend", llm=priced_llm(context.server))
    one = Crew(agents=[agent], tasks=[
        Task(name="j", description="[[j{i}]] job {i} " + "pad " * 20, agent=agent)])
    spent = Decimal(0)
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def tracked(i: int) -> None:
        nonlocal spent
        barrier.wait()
        with lock:
            if spent >= cap:
                return
        out = one.kickoff({"i": i})
        with lock:
            spent += out.usage.cost

    context.server.reset()
    threads = [threading.Thread(target=tracked, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served = served_cost(context.server.totals())
    assert served == spent, (served, spent)
    assert served > cap, f"the check-after tracker held at ${served}; the control is void"


@when("the ledger is closed and its file opened again, as after a restart")
def when_restart(context: Any) -> None:
    require_round = context.rounds[0]
    assert require_round["error"] is None, repr(require_round["error"])
    context.ledger.close()
    context.reopened = _open_ledger(context, context.ledger_files[-1])


@then("the reopened ledger's spend for today equals what the server served")
def then_reopened_spend(context: Any) -> None:
    budget = Budget(max_cost=context.limit, period="day", ledger=context.reopened,
                    name="daily")
    served = context.rounds[0]["served"]
    assert served["requests"] == len(context.crew.tasks)
    assert budget.spent().cost == served["cost"] > 0, (budget.spent(), served)
    assert budget.spent().requests == served["requests"]
    assert_same_usage(context.rounds[0]["output"].usage, context.server.totals(), "the crew")


@then("a daily budget on the reopened file with less than one request's worth left refuses "
      "the next kickoff, sending nothing")
def then_reopened_refuses(context: Any) -> None:
    spent = context.rounds[0]["served"]["cost"]
    tight = Budget(max_cost=spent + context.each / 4, period="day", ledger=context.reopened,
                   name="daily")
    before = context.server.totals().requests
    try:
        context.crew.kickoff(budget=tight)
    except BudgetExceededError as exc:
        assert exc.budget == "daily"
    else:
        raise AssertionError("the reopened ledger forgot today's spend: the kickoff ran")
    assert context.server.totals().requests == before


@then("an in-memory ledger starts again from nothing (the control)")
def then_in_memory_forgets(context: Any) -> None:
    first = Budget(max_cost=context.limit, period="day", ledger=InMemoryLedger(), name="daily")
    context.crew.kickoff(budget=first)
    assert first.spent().cost > 0
    restarted = Budget(max_cost=context.limit, period="day", ledger=InMemoryLedger(),
                       name="daily")
    assert restarted.spent().cost == 0


@then("the kickoff stopped with a BudgetExceededError that names the budget, the amount asked "
      "and what is left")
def then_refused_message(context: Any) -> None:
    error = context.rounds[0]["error"]
    assert isinstance(error, BudgetExceededError), repr(error)
    assert error.budget == "cap" and error.dimension == "cost"
    assert error.asked > error.left == context.limit, (error.asked, error.left)
    assert "budget 'cap' exceeded" in str(error) and "left of $0.00005" in str(error), str(error)
    assert error.usage.requests == 0


@then("the tokens the server served stay within {limit:d}")
def then_tokens_within(context: Any, limit: int) -> None:
    served = context.rounds[0]["served"]
    assert 0 < served["total_tokens"] <= limit, served


@then("the kickoff stopped with a BudgetExceededError on tokens")
def then_token_error(context: Any) -> None:
    error = context.rounds[0]["error"]
    assert isinstance(error, BudgetExceededError), repr(error)
    assert error.dimension == "tokens" and "tokens" in str(error), str(error)


@then("every request the server answered is on the error's usage")
def then_error_has_all(context: Any) -> None:
    error = context.rounds[0]["error"]
    assert_same_usage(error.usage, context.server.totals(), "the stopped kickoff")
