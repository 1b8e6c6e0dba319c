"""Budget: what users configure, what refusals say, which account spend lands on."""

from __future__ import annotations

import copy
import threading
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest

import crewline.budget
from crewline.budget import (
    Amount,
    Budget,
    InMemoryLedger,
    Limit,
    Reservation,
    SQLiteLedger,
    reserve_all,
)
from crewline.errors import BudgetExceededError, CrewlineError

NOON = datetime(2026, 11, 22, 12, tzinfo=UTC)


def at(moment: datetime) -> Any:
    return lambda: moment


def test_public_surface_is_deliberate() -> None:
    assert sorted(crewline.budget.__all__) == [
        "Amount", "Budget", "InMemoryLedger", "Ledger", "Limit", "RedisLedger", "Reservation",
        "SQLiteLedger", "reserve_all"]


# -- refusals ----------------------------------------------------------------------------


def test_cost_refusal_message_names_budget_numbers_and_day() -> None:
    daily = Budget(max_cost="0.5", period="day", name="daily", clock=at(NOON))
    daily.reserve(Amount(Decimal("0.5")), run_id="r1").settle(Amount(Decimal("0.49988")))

    with pytest.raises(BudgetExceededError) as refused:
        daily.reserve(Amount(Decimal("0.00031")), run_id="r2")

    assert str(refused.value) == ("budget 'daily' exceeded: reserving $0.00031 with $0.00012 "
                                  "left of $0.50000 (period day 2026-11-22)")
    error = refused.value
    assert isinstance(error, CrewlineError)
    assert (error.budget, error.dimension) == ("daily", "cost")
    assert (error.asked, error.left, error.limit) == (Decimal("0.00031"), Decimal("0.00012"),
                                                      Decimal("0.5"))


def test_token_refusal_message() -> None:
    cap = Budget(max_tokens=5000, name="run-cap")
    cap.reserve(Amount(tokens=4200), run_id="r1")
    with pytest.raises(BudgetExceededError) as refused:
        cap.reserve(Amount(tokens=1200), run_id="r1")
    assert str(refused.value) == ("budget 'run-cap' exceeded: reserving 1200 tokens with 800 "
                                  "left of 5000")
    assert (refused.value.dimension, refused.value.left) == ("tokens", 800)


def test_request_refusal_message() -> None:
    calls = Budget(max_requests=2, name="calls")
    for _ in range(2):
        calls.reserve(Amount(requests=1), run_id="r1")
    with pytest.raises(BudgetExceededError, match=r"^budget 'calls' exceeded: reserving 1 "
                                                  r"request with 0 left of 2$"):
        calls.reserve(Amount(requests=1), run_id="r1")


def test_tiny_amounts_are_printed_to_their_last_digit() -> None:
    tiny = Budget(max_cost="0.000001", name="tiny")
    with pytest.raises(BudgetExceededError) as refused:
        tiny.reserve(Amount(Decimal("0.0000015")), run_id="r1")
    assert str(refused.value) == ("budget 'tiny' exceeded: reserving $0.0000015 with "
                                  "$0.000001 left of $0.000001")


def test_a_refusal_holds_nothing() -> None:
    budget = Budget(max_cost=1)
    with pytest.raises(BudgetExceededError):
        budget.reserve(Amount(Decimal("1.01")), run_id="r1")
    assert budget.reserved(run_id="r1") == Amount()
    budget.reserve(Amount(Decimal("1.00")), run_id="r1")


# -- accounts ----------------------------------------------------------------------------


def test_day_rolls_over_at_midnight_in_the_budget_timezone() -> None:
    now = [datetime(2026, 11, 23, 4, 59, 59, tzinfo=UTC)]  # 23:59:59 on the 22nd in New York
    new_york = Budget(max_requests=1, period="day", timezone="America/New_York",
                      clock=lambda: now[0])
    utc = Budget(max_requests=1, period="day", clock=lambda: now[0])
    new_york.reserve(Amount(requests=1), run_id="r1").settle(Amount(requests=1))
    utc.reserve(Amount(requests=1), run_id="r1").settle(Amount(requests=1))
    with pytest.raises(BudgetExceededError, match=r"\(period day 2026-11-22\)$"):
        new_york.reserve(Amount(requests=1), run_id="r2")

    now[0] = datetime(2026, 11, 23, 5, 0, 0, tzinfo=UTC)  # midnight in New York, 05:00 UTC

    new_york.reserve(Amount(requests=1), run_id="r2")
    with pytest.raises(BudgetExceededError, match=r"\(period day 2026-11-23\)$"):
        utc.reserve(Amount(requests=1), run_id="r2")  # still the same day in UTC
    assert new_york.today() == date(2026, 11, 23)
    assert new_york.spent(day=date(2026, 11, 22)) == Amount(requests=1)
    assert new_york.spent() == Amount()
    assert new_york.reserved() == Amount(requests=1)


def test_run_budgets_count_each_run_separately() -> None:
    per_run = Budget(max_requests=1)
    per_run.reserve(Amount(requests=1), run_id="a").settle(Amount(Decimal("0.2"), 5, 1))
    with pytest.raises(BudgetExceededError):
        per_run.reserve(Amount(requests=1), run_id="a")
    per_run.reserve(Amount(requests=1), run_id="b")
    assert per_run.spent(run_id="a") == Amount(Decimal("0.2"), 5, 1)
    assert per_run.spent(run_id="b") == Amount()
    with pytest.raises(ValueError, match="run_id"):
        per_run.spent()


def test_a_daily_budget_spans_every_run_that_uses_it() -> None:
    daily = Budget(max_requests=2, period="day", clock=at(NOON))
    daily.reserve(Amount(requests=1), run_id="a")
    daily.reserve(Amount(requests=1), run_id="b")
    with pytest.raises(BudgetExceededError):
        daily.reserve(Amount(requests=1), run_id="c")


def test_budgets_on_a_shared_ledger_share_spend_by_name(tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "ledger.db") as ledger:
        first = Budget(max_requests=1, period="day", ledger=ledger, name="team", clock=at(NOON))
        same = Budget(max_requests=1, period="day", ledger=ledger, name="team", clock=at(NOON))
        other = Budget(max_requests=1, period="day", ledger=ledger, name="ops", clock=at(NOON))
        first.reserve(Amount(requests=1), run_id="r1")
        with pytest.raises(BudgetExceededError):
            same.reserve(Amount(requests=1), run_id="r2")
        other.reserve(Amount(requests=1), run_id="r3")


def test_reserve_all_is_all_or_nothing() -> None:
    budgets = [Budget(max_cost=1, name="a"), Budget(max_cost=1, name="b"),
               Budget(max_cost="0.1", name="c")]
    with pytest.raises(BudgetExceededError) as refused:
        reserve_all(budgets, Amount(Decimal("0.5")), run_id="r1")
    assert refused.value.budget == "c"
    assert [b.reserved(run_id="r1") for b in budgets] == [Amount()] * 3

    held = reserve_all(budgets[:2], Amount(Decimal("0.5")), run_id="r1")
    assert [r.budget for r in held] == budgets[:2]
    assert [b.reserved(run_id="r1").cost for b in budgets[:2]] == [Decimal("0.5")] * 2


# -- reservations ------------------------------------------------------------------------


def test_reservation_first_of_settle_and_release_wins() -> None:
    budget = Budget(max_cost=1)
    settled = budget.reserve(Amount(Decimal("0.3")), run_id="r")
    settled.settle(Amount(Decimal("0.2")))
    settled.release()
    settled.settle(Amount(Decimal("0.9")))
    released = budget.reserve(Amount(Decimal("0.3")), run_id="r")
    released.release()
    released.settle(Amount(Decimal("0.9")))
    assert (settled.state, released.state) == ("settled", "released")
    assert budget.spent(run_id="r").cost == Decimal("0.2")
    assert budget.reserved(run_id="r") == Amount()
    assert settled.account == "budget:run:r"


class CountingLedger(InMemoryLedger):
    """Counts the settles and releases that reach it, and yields mid-call so racing
    callers overlap."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def settle(self, reservation_id: str, actual: Amount) -> None:
        self.calls.append("settle")
        time.sleep(0)
        super().settle(reservation_id, actual)

    def release(self, reservation_id: str) -> None:
        self.calls.append("release")
        time.sleep(0)
        super().release(reservation_id)


def test_racing_settle_and_release_reach_the_ledger_once() -> None:
    ledger = CountingLedger()
    budget = Budget(max_cost=1, ledger=ledger)
    for _ in range(20):
        reservation = budget.reserve(Amount(Decimal("0.1")), run_id="r")
        barrier = threading.Barrier(8)

        def race(which: int, reservation: Reservation = reservation,
                 barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            if which % 2:
                reservation.release()
            else:
                reservation.settle(Amount(Decimal("0.01")))

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(ledger.calls) == 20
    assert budget.spent(run_id="r").cost == Decimal("0.01") * ledger.calls.count("settle")


def test_reservation_as_context_manager_releases_unless_settled() -> None:
    budget = Budget(max_requests=5)
    with pytest.raises(RuntimeError), budget.reserve(Amount(requests=1), run_id="r"):
        raise RuntimeError("provider failed")
    with budget.reserve(Amount(requests=1), run_id="r") as reservation:
        reservation.settle(Amount(requests=1))
    assert budget.spent(run_id="r") == Amount(requests=1)
    assert budget.reserved(run_id="r") == Amount()


# -- definition --------------------------------------------------------------------------


def test_float_max_cost_keeps_its_shortest_decimal_form() -> None:
    budget = Budget(max_cost=0.3)
    assert budget.max_cost == Decimal("0.3")
    budget.reserve(Amount(Decimal("0.3")), run_id="r")  # Decimal(0.3) is 0.2999…, too small


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"max_cost": -1}, ValueError, "max_cost must be >= 0, got -1"),
    ({"max_cost": "-0.01"}, ValueError, "max_cost"),
    ({"max_cost": "ten"}, ValueError, "max_cost must be a number of dollars, got 'ten'"),
    ({"max_cost": float("nan")}, ValueError, "max_cost must be a finite"),
    ({"max_cost": True}, TypeError, "max_cost"),
    ({"max_tokens": -5}, ValueError, "max_tokens must be >= 0, got -5"),
    ({"max_requests": -1}, ValueError, "max_requests"),
    ({"max_requests": 1.5}, TypeError, "max_requests must be an int"),
    ({}, ValueError, "at least one of max_cost, max_tokens, max_requests"),
    ({"max_cost": 1, "period": "week"}, ValueError, "period must be 'run' or 'day', got 'week'"),
    ({"max_cost": 1, "timezone": "Mars/Olympus"}, ValueError, "unknown timezone 'Mars/Olympus'"),
    ({"max_cost": 1, "name": ""}, ValueError, "name"),
])
def test_invalid_budgets_are_refused(kwargs: dict[str, Any], error: type[Exception],
                                     match: str) -> None:
    with pytest.raises(error, match=match):
        Budget(**kwargs)


def test_budget_is_immutable_and_shows_its_configuration(tmp_path: Path) -> None:
    budget = Budget(max_cost="0.50", max_tokens=5000, period="day", name="daily",
                    timezone="Europe/Paris")
    with pytest.raises(AttributeError, match="immutable"):
        budget.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        budget.__dict__  # noqa: B018
    assert repr(budget) == ("Budget(max_cost=Decimal('0.50'), max_tokens=5000, period='day', "
                            "name='daily', timezone='Europe/Paris')")
    assert budget.limit == Limit(Decimal("0.50"), 5000, None)
    assert budget.requires_price
    assert not Budget(max_tokens=10).requires_price
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        assert repr(Budget(max_requests=3, ledger=ledger)).endswith(
            f"ledger=SQLiteLedger({str(tmp_path / 'l.db')!r}, reservation_ttl=900.0))")


def test_budget_is_a_pydantic_field_and_copies_keep_its_ledger() -> None:
    class Crewish(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(arbitrary_types_allowed=True, frozen=True)
        budget: Budget | None = None

    budget = Budget(max_requests=1, period="day", clock=at(NOON))
    model = Crewish(budget=budget)
    assert model.model_copy(deep=True).budget is budget
    assert copy.deepcopy(model).budget is budget
    with pytest.raises(pydantic.ValidationError):
        Crewish.model_validate({"budget": "0.5"})
