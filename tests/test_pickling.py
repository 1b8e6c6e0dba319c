"""What crosses a process boundary (to Ray workers) arrives whole: errors with their fields
and usage, budgets with their limits and a ledger the other side can reopen, outputs with
their records."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import crewline.errors
from crewline._accounting.usage import Usage, UsageRecord
from crewline._core.outputs import Attempt, CrewOutput, GuardrailVerdict, TaskOutput
from crewline.budget import Amount, Budget, InMemoryLedger, SQLiteLedger
from crewline.errors import (
    BudgetExceededError,
    CrewlineError,
    ProviderError,
)

NOON = datetime(2026, 11, 22, 12, tzinfo=UTC)


def record(n: int, *, outcome: str = "ok") -> UsageRecord:
    return UsageRecord(
        id=f"rec-{n}", run_id="run-1", task="summary", attempt=1, agent="Researcher",
        purpose="agent", model="openai/gpt-4o-mini", prompt_tokens=100 * n,
        completion_tokens=10 * n, cached_prompt_tokens=0, reasoning_tokens=0,
        cost=Decimal("0.000015") * n, priced=True, latency_s=0.25, started_at=NOON,
        outcome=outcome)  # type: ignore[arg-type]


RECORDS = (record(1), record(2), record(3, outcome="error"))


def round_trip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


def noon_clock() -> datetime:
    return NOON


def epoch_clock() -> float:
    return 1_000_000.0


class Summary(BaseModel):
    title: str
    points: list[str]


def attempt(number: int, *, passed: bool) -> Attempt:
    return Attempt(number=number, raw=f"draft {number}",
                   verdicts=(GuardrailVerdict("check", passed, None if passed else "too long"),),
                   usage_records=RECORDS[number - 1:number])


def task_output() -> TaskOutput:
    return TaskOutput(raw='{"title": "t", "points": ["a"]}', name="summary",
                      description="Summarise", expected_output="a summary", agent="Researcher",
                      pydantic=Summary(title="t", points=["a"]),
                      json_dict={"title": "t", "points": ["a"]}, usage_records=RECORDS[:2],
                      attempts=(attempt(1, passed=False), attempt(2, passed=True)))


# -- errors ------------------------------------------------------------------------------


class WorkerLostError(CrewlineError):
    """Stands for a subclass added later, with a signature of its own and no pickling code."""

    def __init__(self, message: str, worker: str, *, inputs_index: int) -> None:
        super().__init__(message)
        self.worker = worker
        self.inputs_index = inputs_index


SAMPLE_FIELDS: dict[str, dict[str, Any]] = {
    "CrewlineError": {},
    "DefinitionError": {},
    "InputError": {"placeholder": "topic", "where": "task 'summary' description"},
    "ProviderError": {"model": "openai/gpt-4o-mini", "status": 429, "retryable": True,
                      "retry_after": 1.5, "kind": "rate_limit"},
    "BudgetExceededError": {"budget": "daily", "dimension": "cost",
                            "asked": Decimal("0.00031"), "left": Decimal("0.00012"),
                            "limit": Decimal("0.5")},
    "GuardrailError": {"task": "summary", "feedback": {"why": "too long"},
                       "attempts": (attempt(1, passed=False), attempt(2, passed=False))},
    "ConversionError": {"task": "summary", "raw": "not json",
                        "attempts": (attempt(1, passed=True),)},
    "MaxIterationsError": {},
    "CallbackError": {"output": task_output()},
    "WorkerLostError": {"index": 7, "worker": "1"},
}


def test_every_public_error_has_a_sample() -> None:
    assert sorted(SAMPLE_FIELDS) == sorted(crewline.errors.__all__)


def assert_same_error(restored: BaseException, original: BaseException) -> None:
    assert type(restored) is type(original)
    assert str(restored) == str(original)
    assert restored.args == original.args
    if isinstance(original, CrewlineError):
        assert isinstance(restored, CrewlineError)
        assert restored.usage_records == original.usage_records
        assert restored.usage == original.usage
        assert len(restored.other_errors) == len(original.other_errors)
        for inner_restored, inner in zip(restored.other_errors, original.other_errors,
                                         strict=True):
            assert_same_error(inner_restored, inner)
        fields = {k: v for k, v in vars(original).items() if k != "other_errors"}
        assert {k: v for k, v in vars(restored).items() if k != "other_errors"} == fields


@pytest.mark.parametrize("name", sorted(SAMPLE_FIELDS))
def test_every_error_round_trips_with_its_fields_and_usage(name: str) -> None:
    cls = getattr(crewline.errors, name)
    error = cls(f"{name} happened to 'summary'", **SAMPLE_FIELDS[name])
    error.attach_spend(RECORDS)
    error.other_errors = (ProviderError("upstream 503", model="m", status=503),
                          ValueError("a tool broke"))
    restored = round_trip(error)
    assert_same_error(restored, error)
    assert restored.usage == Usage.from_records(RECORDS)
    assert restored.usage.requests == 2 and restored.usage.failed_requests == 1
    for field in SAMPLE_FIELDS[name]:
        assert getattr(restored, field) == getattr(error, field)


def test_an_error_subclass_added_later_round_trips_without_code_of_its_own() -> None:
    error = WorkerLostError("worker 3 died", "worker-3", inputs_index=7)
    error.attach_spend(RECORDS[:1])
    restored = round_trip(error)
    assert_same_error(restored, error)
    assert (restored.worker, restored.inputs_index) == ("worker-3", 7)
    assert restored.usage.prompt_tokens == 100


def test_a_restored_input_error_is_still_a_key_error_with_its_message() -> None:
    error = crewline.errors.InputError("no input for {topic}", placeholder="topic")
    restored = round_trip(error)
    assert isinstance(restored, KeyError)
    with pytest.raises(KeyError, match="no input for"):
        raise restored


# -- budgets -----------------------------------------------------------------------------


def test_a_budget_keeps_its_definition_and_its_in_memory_ledger_arrives_empty() -> None:
    budget = Budget(max_cost="0.50", max_tokens=10_000, max_requests=20, period="day",
                    name="daily", timezone="Europe/Paris", clock=noon_clock)
    budget.reserve(Amount(Decimal("0.1"), 100, 1), run_id="r").settle(
        Amount(Decimal("0.1"), 100, 1))

    restored = round_trip(budget)

    assert restored is not budget  # a new object, even in this process
    assert (restored.max_cost, restored.max_tokens, restored.max_requests) == (
        Decimal("0.50"), 10_000, 20)
    assert (restored.name, restored.period, restored.timezone) == ("daily", "day",
                                                                   "Europe/Paris")
    assert restored.today() == budget.today()
    assert repr(restored) == repr(budget)
    assert restored.ledger_is_shared is False
    assert isinstance(restored.ledger, InMemoryLedger)
    assert restored.spent() == Amount()
    assert budget.spent() == Amount(Decimal("0.1"), 100, 1)


def test_budgets_sharing_an_in_memory_ledger_still_share_one_after_pickling() -> None:
    ledger = InMemoryLedger()
    team = Budget(max_cost="1", ledger=ledger, name="team")
    person = Budget(max_cost="1", ledger=ledger, name="person")
    team_again, person_again = round_trip((team, person))
    assert team_again.ledger is person_again.ledger
    assert team_again.ledger is not ledger


def test_copying_a_budget_returns_the_budget_itself() -> None:
    budget = Budget(max_requests=3)
    assert copy.copy(budget) is budget
    assert copy.deepcopy(budget) is budget


def test_a_budget_with_a_clock_that_cannot_be_pickled_says_so() -> None:
    budget = Budget(max_requests=3, name="nightly", clock=lambda: NOON)
    with pytest.raises(pickle.PicklingError, match=r"budget 'nightly'.*clock"):
        pickle.dumps(budget)


def test_sqlite_ledger_pickles_as_its_path_and_options(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with SQLiteLedger(path, reservation_ttl=60.0, busy_timeout=5.0,
                      clock=epoch_clock) as ledger:
        ledger.record("a", Amount(Decimal("0.3"), 3, 1))
        with round_trip(ledger) as reopened:
            assert (reopened.path, reopened.reservation_ttl, reopened.busy_timeout) == (
                str(path), 60.0, 5.0)
            assert reopened.spent("a") == Amount(Decimal("0.3"), 3, 1)


def test_a_sqlite_ledger_with_a_clock_that_cannot_be_pickled_says_so(tmp_path: Path) -> None:
    with (SQLiteLedger(tmp_path / "ledger.db", clock=lambda: 0.0) as ledger,
          pytest.raises(pickle.PicklingError, match=r"ledger\.db.*clock")):
        pickle.dumps(ledger)


def _spend_in_another_process(budget: Budget, results: Any) -> None:
    """Reserve and settle on the unpickled budget, then report what it refused, and how."""
    assert budget.ledger_is_shared
    budget.reserve(Amount(Decimal("0.30"), 300, 1), run_id="w").settle(
        Amount(Decimal("0.25"), 250, 1))
    try:
        budget.reserve(Amount(Decimal("0.80"), 800, 1), run_id="w")
    except BudgetExceededError as refused:
        refused.attach_spend(RECORDS[:1])
        results.put(refused)
        return
    results.put(None)


@pytest.mark.slow
def test_a_budget_on_sqlite_spends_in_a_subprocess_and_the_parent_sees_it(
        tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "ledger.db") as ledger:
        budget = Budget(max_cost="1.00", period="day", ledger=ledger, name="daily",
                        clock=noon_clock)
        budget.reserve(Amount(Decimal("0.10"), 100, 1), run_id="main").settle(
            Amount(Decimal("0.10"), 100, 1))
        assert budget.ledger_is_shared is True

        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        worker = context.Process(target=_spend_in_another_process, args=(budget, results))
        worker.start()
        refused = results.get(timeout=60)
        worker.join(timeout=30)

        assert worker.exitcode == 0
        assert budget.spent() == Amount(Decimal("0.35"), 350, 2)
        assert budget.reserved() == Amount()
        assert isinstance(refused, BudgetExceededError)
        assert (refused.budget, refused.dimension, refused.left) == (
            "daily", "cost", Decimal("0.65"))
        assert refused.usage_records == RECORDS[:1]


# -- outputs -----------------------------------------------------------------------------


def test_an_attempt_round_trips_with_its_records() -> None:
    original = attempt(2, passed=True)
    restored = round_trip(original)
    assert restored == original
    assert restored.usage == original.usage and restored.passed


def test_task_and_crew_outputs_round_trip_with_their_records() -> None:
    task = task_output()
    crew = CrewOutput(run_id="run-1", raw=task.raw, tasks_output=(task,),
                      usage_records=RECORDS)
    restored = round_trip(crew)
    assert restored == crew
    assert restored.usage == Usage.from_records(RECORDS)
    assert restored.usage_by_task == crew.usage_by_task
    assert restored.pydantic == Summary(title="t", points=["a"])
    assert restored.tasks_output[0].attempts == task.attempts
    assert restored.tasks_output[0].usage == task.usage


def _unpickle_outputs(data: bytes, results: Any) -> None:
    crew = pickle.loads(data)
    results.put((crew.usage.to_dict(), crew.tasks_output[0].attempts[1].passed,
                 crew.pydantic.title))


@pytest.mark.slow
def test_a_crew_output_unpickles_in_a_fresh_process() -> None:
    crew = CrewOutput(run_id="run-1", raw="x", tasks_output=(task_output(),),
                      usage_records=RECORDS)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=_unpickle_outputs, args=(pickle.dumps(crew), results))
    worker.start()
    usage, passed, title = results.get(timeout=60)
    worker.join(timeout=30)
    assert usage == Usage.from_records(RECORDS).to_dict()
    assert (passed, title) == (True, "t")
