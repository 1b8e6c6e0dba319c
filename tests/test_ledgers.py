"""Ledgers: semantics shared by both implementations, races, and SQLite across processes.

Each race check is run once against a deliberately naive ledger too, to show it detects
what it claims to detect.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crewline.budget import Amount, Budget, InMemoryLedger, Ledger, Limit, SQLiteLedger
from crewline.budget.ledger import LimitExceeded, check_fits
from crewline.errors import BudgetExceededError

ACCOUNT = "team:day:2026-11-22"
NOTHING = Amount()
TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "memory":
        yield InMemoryLedger()
    else:
        with SQLiteLedger(tmp_path / "ledger.db") as sqlite_ledger:
            yield sqlite_ledger


def usd(text: str) -> Decimal:
    return Decimal(text)


# -- semantics ---------------------------------------------------------------------------


def test_reserve_holds_and_settle_moves_actual_to_spent(ledger: Ledger) -> None:
    limit = Limit(cost=usd("1.00"))
    rid = ledger.reserve(ACCOUNT, Amount(usd("0.30"), 100, 1), limit)
    assert ledger.reserved(ACCOUNT) == Amount(usd("0.30"), 100, 1)
    assert ledger.spent(ACCOUNT) == NOTHING

    ledger.settle(rid, Amount(usd("0.12"), 40, 1))

    assert ledger.reserved(ACCOUNT) == NOTHING
    assert ledger.spent(ACCOUNT) == Amount(usd("0.12"), 40, 1)


def test_settle_records_actual_spend_above_the_hold(ledger: Ledger) -> None:
    rid = ledger.reserve(ACCOUNT, Amount(usd("0.10")), Limit(cost=usd("1")))
    ledger.settle(rid, Amount(usd("0.25"), 7, 1))
    assert ledger.spent(ACCOUNT) == Amount(usd("0.25"), 7, 1)


def test_release_spends_nothing(ledger: Ledger) -> None:
    rid = ledger.reserve(ACCOUNT, Amount(usd("0.40"), 10, 1), Limit(cost=usd("0.40")))
    ledger.release(rid)
    assert ledger.reserved(ACCOUNT) == NOTHING
    assert ledger.spent(ACCOUNT) == NOTHING
    ledger.reserve(ACCOUNT, Amount(usd("0.40")), Limit(cost=usd("0.40")))  # room is back


def test_settle_and_release_are_idempotent_and_first_wins(ledger: Ledger) -> None:
    limit = Limit(requests=10)
    one = Amount(usd("0.01"), 1, 1)
    settled = ledger.reserve(ACCOUNT, one, limit)
    ledger.settle(settled, one)
    ledger.settle(settled, one)
    ledger.release(settled)
    released = ledger.reserve(ACCOUNT, one, limit)
    ledger.release(released)
    ledger.release(released)
    ledger.settle(released, one)
    ledger.settle("no-such-reservation", one)
    ledger.release("no-such-reservation")

    assert ledger.spent(ACCOUNT) == one
    assert ledger.reserved(ACCOUNT) == NOTHING


@pytest.mark.parametrize(("limit", "step", "dimension", "cap"), [
    (Limit(cost=usd("0.30")), Amount(usd("0.10")), "cost", usd("0.30")),
    (Limit(tokens=300), Amount(tokens=100), "tokens", 300),
    (Limit(requests=3), Amount(requests=1), "requests", 3),
])
def test_each_dimension_caps_on_its_own(ledger: Ledger, limit: Limit, step: Amount,
                                        dimension: str, cap: Decimal | int) -> None:
    ledger.settle(ledger.reserve(ACCOUNT, step, limit), step)
    ledger.reserve(ACCOUNT, step, limit)
    ledger.record(ACCOUNT, step)  # exactly at the cap now: spent 2 steps, 1 held

    with pytest.raises(LimitExceeded) as refused:
        ledger.reserve(ACCOUNT, step, limit)

    assert (refused.value.account, refused.value.dimension) == (ACCOUNT, dimension)
    assert refused.value.asked == getattr(step, dimension)
    assert refused.value.left == 0
    assert refused.value.limit == cap
    assert ledger.reserved(ACCOUNT) == step  # the refusal held nothing


def test_refusal_names_the_first_dimension_and_what_is_left(ledger: Ledger) -> None:
    limit = Limit(cost=usd("1.00"), tokens=1000, requests=5)
    ledger.record(ACCOUNT, Amount(usd("0.75"), 900, 1))
    with pytest.raises(LimitExceeded) as refused:
        ledger.reserve(ACCOUNT, Amount(usd("0.30"), 200, 1), limit)
    assert refused.value.dimension == "cost"
    assert refused.value.left == usd("0.25")
    with pytest.raises(LimitExceeded) as refused:
        ledger.reserve(ACCOUNT, Amount(usd("0.10"), 200, 1), limit)
    assert (refused.value.dimension, refused.value.asked, refused.value.left) == ("tokens", 200,
                                                                                 100)


def test_uncapped_dimensions_are_not_checked(ledger: Ledger) -> None:
    ledger.reserve(ACCOUNT, Amount(usd("1000000"), 10**9, 10**6), Limit(requests=10**6))


def test_record_is_never_refused_and_left_is_never_negative(ledger: Ledger) -> None:
    limit = Limit(cost=usd("0.10"))
    ledger.record(ACCOUNT, Amount(usd("0.35")))
    assert ledger.spent(ACCOUNT).cost == usd("0.35")
    with pytest.raises(LimitExceeded) as refused:
        ledger.reserve(ACCOUNT, Amount(usd("0.01")), limit)
    assert refused.value.left == Decimal(0)


def test_accounts_are_independent(ledger: Ledger) -> None:
    limit = Limit(requests=1)
    ledger.reserve("a", Amount(requests=1), limit)
    ledger.reserve("b", Amount(requests=1), limit)
    with pytest.raises(LimitExceeded):
        ledger.reserve("a", Amount(requests=1), limit)
    assert ledger.reserved("c") == NOTHING


def test_money_is_exact_decimal(ledger: Ledger) -> None:
    # Every SQLite record is an fsync'd transaction, so it gets fewer, larger steps.
    times, step = (1_000, "0.00001") if isinstance(ledger, SQLiteLedger) else (10_000, "0.000001")
    for _ in range(times):
        ledger.record(ACCOUNT, Amount(usd(step)))
    assert ledger.spent(ACCOUNT).cost == usd("0.01")
    ledger.record("tenths", Amount(usd("0.1")))
    ledger.record("tenths", Amount(usd("0.2")))
    assert ledger.spent("tenths").cost == usd("0.3")


# -- races -------------------------------------------------------------------------------


class UnlockedLedger:
    """The bug a ledger exists to prevent: read, yield, write, with no lock."""

    def __init__(self) -> None:
        self._spent: dict[str, Amount] = {}
        self._holds: dict[str, tuple[str, Amount]] = {}

    def reserve(self, account: str, amount: Amount, limit: Limit) -> str:
        check_fits(account, self.spent(account), self.reserved(account), amount, limit)
        time.sleep(0)
        reservation_id = uuid.uuid4().hex
        self._holds[reservation_id] = (account, amount)
        return reservation_id

    def settle(self, reservation_id: str, actual: Amount) -> None:
        hold = self._holds.pop(reservation_id, None)
        if hold is not None:
            self.record(hold[0], actual)

    def release(self, reservation_id: str) -> None:
        self._holds.pop(reservation_id, None)

    def record(self, account: str, amount: Amount) -> None:
        current = self._spent.get(account, NOTHING)
        time.sleep(0)
        self._spent[account] = current + amount

    def spent(self, account: str) -> Amount:
        return self._spent.get(account, NOTHING)

    def reserved(self, account: str) -> Amount:
        total = NOTHING
        for held_account, amount in list(self._holds.values()):
            if held_account == account:
                total += amount
        return total


def run_together(threads: int, work: Callable[[], Any]) -> list[Any]:
    """Run ``work`` on ``threads`` threads released at once, with the GIL switching as
    often as it can; re-raise the first error a thread hit."""
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(work())
        except BaseException as exc:
            errors.append(exc)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        pool = [threading.Thread(target=run) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    if errors:
        raise errors[0]
    return results


def lost_records(ledger: Ledger, *, threads: int = 20, per_thread: int = 50) -> Amount:
    """Record concurrently; return what the ledger is missing (nothing, if it is right)."""
    step = Amount(usd("0.000001"), 3, 1)

    def work() -> None:
        for _ in range(per_thread):
            ledger.record(ACCOUNT, step)

    run_together(threads, work)
    n = threads * per_thread
    return Amount(step.cost * n, step.tokens * n, step.requests * n) - ledger.spent(ACCOUNT)


def test_concurrent_records_lose_nothing(ledger: Ledger) -> None:
    assert lost_records(ledger) == NOTHING


def test_lost_record_check_detects_an_unlocked_ledger() -> None:
    lost = lost_records(UnlockedLedger())
    assert lost.requests > 0 and lost.cost > 0


def reservation_race(ledger: Ledger, *, threads: int = 20, rounds: int = 10) -> list[str]:
    """Every thread reserves once against room for exactly 5, on a fresh account each
    round; return what went wrong. Rounds make a naive ledger's overshoot certain to show
    (one round alone misses it about once in a hundred)."""
    limit = Limit(cost=usd("0.50"))
    step = Amount(usd("0.10"), 10, 1)
    problems = []
    for round_ in range(rounds):
        account = f"{ACCOUNT}:{round_}"
        peaks: list[Amount] = []

        def work(account: str = account, peaks: list[Amount] = peaks) -> bool:
            try:
                ledger.reserve(account, step, limit)
            except LimitExceeded:
                return False
            peaks.append(ledger.reserved(account))
            return True

        outcomes = run_together(threads, work)
        if outcomes.count(True) != 5:
            problems.append(f"round {round_}: {outcomes.count(True)} of {threads} "
                            "reservations succeeded, not 5")
        for held in [*peaks, ledger.reserved(account)]:
            if limit.first_exceeded(held) is not None:
                problems.append(f"round {round_}: ${held.cost} held against ${limit.cost}")
        if ledger.reserved(account) != Amount(usd("0.50"), 50, 5):
            problems.append(f"round {round_}: {ledger.reserved(account)} held at the end")
    return problems


def test_concurrent_reservations_never_overshoot(ledger: Ledger) -> None:
    assert reservation_race(ledger) == []


def test_reservation_race_check_detects_check_then_act() -> None:
    problems = reservation_race(UnlockedLedger())
    assert any("held against" in problem for problem in problems), problems


# -- property ----------------------------------------------------------------------------


def amounts() -> st.SearchStrategy[Amount]:
    return st.builds(Amount, st.integers(0, 60).map(lambda cents: Decimal(cents) / 100),
                     st.integers(0, 400), st.integers(0, 3))


def at_most(amount: Amount) -> st.SearchStrategy[Amount]:
    cents = int(amount.cost * 100)
    return st.builds(Amount, st.integers(0, cents).map(lambda c: Decimal(c) / 100),
                     st.integers(0, amount.tokens), st.integers(0, amount.requests))


class LedgerStaysWithinLimit(RuleBasedStateMachine):
    """Any reserve/settle/release sequence keeps spent + reserved under the limit, as long
    as nothing settles above its hold."""

    limit = Limit(cost=usd("1.00"), tokens=1000, requests=6)

    def __init__(self) -> None:
        super().__init__()
        self.ledger = InMemoryLedger()
        self.open: dict[str, Amount] = {}
        self.closed: list[str] = []

    @rule(amount=amounts())
    def reserve(self, amount: Amount) -> None:
        try:
            self.open[self.ledger.reserve(ACCOUNT, amount, self.limit)] = amount
        except LimitExceeded as refused:
            total = self.ledger.spent(ACCOUNT) + self.ledger.reserved(ACCOUNT) + amount
            assert self.limit.first_exceeded(total) == refused.dimension

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(list(self.open)))
        self.ledger.settle(rid, data.draw(at_most(self.open.pop(rid))))
        self.closed.append(rid)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(list(self.open)))
        del self.open[rid]
        self.ledger.release(rid)
        self.closed.append(rid)

    @precondition(lambda self: self.closed)
    @rule(data=st.data(), amount=amounts())
    def repeat_on_a_closed_reservation(self, data: st.DataObject, amount: Amount) -> None:
        rid = data.draw(st.sampled_from(self.closed))
        before = self.ledger.spent(ACCOUNT)
        self.ledger.settle(rid, amount)
        self.ledger.release(rid)
        assert self.ledger.spent(ACCOUNT) == before

    @invariant()
    def within_limit(self) -> None:
        total = self.ledger.spent(ACCOUNT) + self.ledger.reserved(ACCOUNT)
        assert self.limit.first_exceeded(total) is None, total
        assert self.ledger.reserved(ACCOUNT) == sum(self.open.values(), NOTHING)


TestLedgerStaysWithinLimit = LedgerStaysWithinLimit.TestCase
TestLedgerStaysWithinLimit.settings = settings(max_examples=200, stateful_step_count=30,
                                               deadline=None)


# -- SQLite ------------------------------------------------------------------------------


def test_sqlite_spend_and_holds_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with SQLiteLedger(path) as first:
        first.record(ACCOUNT, Amount(usd("0.1"), 10, 1))
        first.settle(first.reserve(ACCOUNT, Amount(usd("0.5")), Limit(cost=usd("1"))),
                     Amount(usd("0.2"), 20, 1))
        first.reserve(ACCOUNT, Amount(usd("0.05")), Limit(cost=usd("1")))
    with SQLiteLedger(path) as second:
        assert second.spent(ACCOUNT) == Amount(usd("0.3"), 30, 2)
        assert second.reserved(ACCOUNT) == Amount(usd("0.05"))  # this process is alive


def test_sqlite_stores_money_as_decimal_text(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with SQLiteLedger(path) as ledger:
        ledger.record(ACCOUNT, Amount(usd("0.00000015")))
        ledger.reserve(ACCOUNT, Amount(usd("0.1")), Limit(cost=usd("1")))
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT typeof(cost), cost FROM spend").fetchall() == [
            ("text", "0.00000015")]
        assert raw.execute("SELECT typeof(cost) FROM reservations").fetchall() == [("text",)]
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


def test_sqlite_expired_hold_stops_blocking_but_a_late_settle_still_counts(
        tmp_path: Path) -> None:
    now = [1_000_000.0]
    limit = Limit(cost=usd("1.00"))
    with SQLiteLedger(tmp_path / "ledger.db", reservation_ttl=60, clock=lambda: now[0]) as ledger:
        slow = ledger.reserve(ACCOUNT, Amount(usd("0.70")), limit)
        with pytest.raises(LimitExceeded):
            ledger.reserve(ACCOUNT, Amount(usd("0.70")), limit)
        now[0] += 61
        ledger.reserve(ACCOUNT, Amount(usd("0.70")), limit)
        ledger.settle(slow, Amount(usd("0.65")))
        assert ledger.spent(ACCOUNT).cost == usd("0.65")
        assert ledger.reserved(ACCOUNT).cost == usd("0.70")


def test_sqlite_rejects_use_after_close(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    ledger.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        ledger.spent(ACCOUNT)


DAY = date(2026, 11, 22)


def start_worker(path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen(
        [sys.executable, str(TESTS / "ledger_worker.py"), str(path), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def daily_budget(ledger: SQLiteLedger, limit: str) -> Budget:
    noon = datetime(2026, 11, 22, 12, tzinfo=UTC)
    return Budget(max_cost=limit, period="day", ledger=ledger, name="daily", clock=lambda: noon)


@pytest.mark.slow
def test_sqlite_processes_together_never_exceed_a_daily_budget(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    SQLiteLedger(path).close()
    workers = [start_worker(path, "spend", "0.300", "0.002", DAY.isoformat())
               for _ in range(3)]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "READY"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=30)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert [worker.returncode for worker in workers] == [0, 0, 0], outputs
    per_worker = [int(out.split()[-1]) for out in outputs]
    settles = sum(per_worker)
    assert sum(n > 0 for n in per_worker) >= 2, f"the processes did not interleave: {outputs}"

    with SQLiteLedger(path) as ledger:
        spent = daily_budget(ledger, "0.300").spent(day=DAY)
    assert spent.cost <= usd("0.300")
    assert spent == Amount(usd("0.002") * settles, settles, settles)
    assert settles == 150  # refusals only happen once the day's room is all taken


@pytest.mark.slow
def test_sqlite_hold_of_a_killed_process_is_reclaimed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    SQLiteLedger(path).close()
    worker = start_worker(path, "hold", "1.00", "0.10", DAY.isoformat(), "3")
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "HELD"
        with SQLiteLedger(path, reservation_ttl=3600) as ledger:
            budget = daily_budget(ledger, "1.00")
            with pytest.raises(BudgetExceededError) as refused:
                budget.reserve(Amount(usd("0.70")), run_id="main")
            assert refused.value.left == usd("0.60")  # the live worker's hold counts

            os.kill(worker.pid, signal.SIGKILL)
            assert worker.wait(timeout=10) == -signal.SIGKILL

            assert budget.spent(day=DAY) == Amount(usd("0.30"), 3, 3)
            budget.reserve(Amount(usd("0.70")), run_id="main").settle(Amount(usd("0.70")))
            assert budget.spent(day=DAY).cost == usd("1.00")
    finally:
        worker.kill()
        worker.wait()
