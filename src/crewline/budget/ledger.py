"""Where a budget's spend and holds live: the ``Ledger`` protocol and its in-memory form.

A ledger knows nothing about budgets, periods or runs. It keeps, per account (a plain
string the ``Budget`` chooses), what was spent and what is held by open reservations, and it
answers one question atomically: does this amount still fit under that limit? Keeping the
check and the hold in one atomic step is the whole point: a check followed by a separate
write is how concurrent callers overshoot a cap.

Every method either applies fully or raises having changed nothing: an amount that cannot
be counted (NaN dollars, negative tokens) is refused before any hold moves, and sums are
exact at any size (``exact_arithmetic``), so a provider reporting absurd usage is charged
what it reported instead of breaking the ledger.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import AbstractContextManager
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, localcontext
from typing import ClassVar, Protocol, runtime_checkable

from crewline.budget.amount import Amount, Limit

__all__ = ["InMemoryLedger", "Ledger", "LimitExceeded", "check_fits", "checked_amount",
           "exact_arithmetic", "new_reservation_id"]

_NOTHING = Amount()

# Decimal's default context keeps 28 digits: $10**30 plus a fraction of a cent would round.
# Ledgers only add, subtract and compare, which are exact under unbounded precision.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def exact_arithmetic() -> AbstractContextManager[Context]:
    """A decimal context in which a ledger's sums and comparisons never round."""
    return localcontext(_EXACT)


def checked_amount(amount: Amount, what: str = "amount") -> Amount:
    """``amount`` if a ledger can count it: finite, non-negative dollars, int counts >= 0.

    Checked before anything is held or dropped, so a bad amount raises with the ledger
    unchanged; a NaN stored as spend would make every later comparison on the account fail.
    """
    if not isinstance(amount, Amount):
        raise TypeError(f"{what} must be an Amount, got {type(amount).__name__} {amount!r}")
    cost = amount.cost
    if not isinstance(cost, Decimal) or not cost.is_finite() or cost < 0:
        raise ValueError(f"{what}.cost must be a finite Decimal >= 0, got {cost!r}")
    for field in ("tokens", "requests"):
        value = getattr(amount, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{what}.{field} must be an int >= 0, got {value!r}")
    return amount


class LimitExceeded(Exception):
    """Raised by a ledger when a reservation does not fit; ``Budget`` turns it into a
    ``BudgetExceededError`` that names the budget and its period."""

    def __init__(self, account: str, dimension: str, *, asked: Decimal | int,
                 left: Decimal | int, limit: Decimal | int) -> None:
        super().__init__(f"account {account!r} over its {dimension} limit: "
                         f"asked {asked}, {left} left of {limit}")
        self.account = account
        self.dimension = dimension
        self.asked = asked
        self.left = left
        self.limit = limit


@runtime_checkable
class Ledger(Protocol):
    """Spend and holds per account; every method is safe to call from any thread.

    Every method applies whole or raises having changed nothing. An implementation whose
    accounts are visible to every process that unpickles it (a file, a server) says so with
    a class attribute ``shared_across_processes = True``; ``Budget.ledger_is_shared`` reads
    it, and a runner spreading kickoffs over processes refuses budgets without it.
    """

    def reserve(self, account: str, amount: Amount, limit: Limit) -> str:
        """Atomically: if spent(account) + reserved(account) + amount fits `limit` in every
        capped dimension, hold `amount` and return a reservation id; else raise
        LimitExceeded naming the first dimension that does not fit, what was asked and what
        is left (limit - spent - reserved, never negative)."""
        ...

    def settle(self, reservation_id: str, actual: Amount) -> None:
        """Drop the hold and add `actual` to spent, even when it exceeds the hold: real spend
        is always recorded. An unknown or already settled id is a no-op."""
        ...

    def release(self, reservation_id: str) -> None:
        """Drop the hold and spend nothing; idempotent."""
        ...

    def record(self, account: str, amount: Amount) -> None:
        """Add spend that had no reservation; never refused, because it already happened."""
        ...

    def spent(self, account: str) -> Amount:
        """Everything settled or recorded on `account`."""
        ...

    def reserved(self, account: str) -> Amount:
        """The sum of the open holds on `account`."""
        ...


def check_fits(account: str, spent: Amount, reserved: Amount, amount: Amount,
               limit: Limit) -> None:
    """Raise ``LimitExceeded`` unless ``amount`` fits on top of ``spent + reserved``.

    Shared by every ledger so the arithmetic (and what "left" means) is written once.
    """
    with exact_arithmetic():
        _check_fits(account, spent, reserved, amount, limit)


def _check_fits(account: str, spent: Amount, reserved: Amount, amount: Amount,
                limit: Limit) -> None:
    dimension = limit.first_exceeded(spent + reserved + amount)
    if dimension is None:
        return
    asked: Decimal | int
    left: Decimal | int
    cap: Decimal | int | None
    if dimension == "cost":
        asked, cap = amount.cost, limit.cost
        assert cap is not None  # first_exceeded only names capped dimensions
        left = max(cap - spent.cost - reserved.cost, Decimal(0))
    else:
        asked = getattr(amount, dimension)
        cap = getattr(limit, dimension)
        assert cap is not None
        left = max(cap - getattr(spent, dimension) - getattr(reserved, dimension), 0)
    raise LimitExceeded(account, dimension, asked=asked, left=left, limit=cap)


def new_reservation_id() -> str:
    """Random ids, so processes sharing a ledger never collide without coordinating."""
    return uuid.uuid4().hex


class InMemoryLedger:
    """A ledger in this process's memory, guarded by one lock.

    Critical sections are a few dict operations and never block, sleep or await, so the
    same ledger is safe to use from threads and from asyncio code at once. Spend is lost
    when the process exits; use ``SQLiteLedger`` for spend that must outlive it.

    A pickled ``InMemoryLedger`` arrives empty: its accounts live in this process's memory
    and cannot follow it, which is right for a ``"run"`` budget whose run lives on one
    worker. Budgets that span processes need a ledger with ``shared_across_processes``.
    """

    __slots__ = ("_holds", "_lock", "_reserved", "_spent")

    shared_across_processes: ClassVar[bool] = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[str, Amount] = {}
        self._reserved: dict[str, Amount] = {}
        self._holds: dict[str, tuple[str, Amount]] = {}

    def reserve(self, account: str, amount: Amount, limit: Limit) -> str:
        checked_amount(amount)
        reservation_id = new_reservation_id()
        with self._lock, exact_arithmetic():
            reserved = self._reserved.get(account, _NOTHING)
            check_fits(account, self._spent.get(account, _NOTHING), reserved, amount, limit)
            self._reserved[account] = reserved + amount
            self._holds[reservation_id] = (account, amount)
        return reservation_id

    def settle(self, reservation_id: str, actual: Amount) -> None:
        checked_amount(actual, "actual")
        with self._lock, exact_arithmetic():
            hold = self._holds.get(reservation_id)
            if hold is None:
                return
            account = hold[0]
            spent = self._spent.get(account, _NOTHING) + actual
            self._drop_hold(reservation_id)
            self._spent[account] = spent

    def release(self, reservation_id: str) -> None:
        with self._lock, exact_arithmetic():
            self._drop_hold(reservation_id)

    def record(self, account: str, amount: Amount) -> None:
        checked_amount(amount)
        with self._lock, exact_arithmetic():
            self._spent[account] = self._spent.get(account, _NOTHING) + amount

    def spent(self, account: str) -> Amount:
        with self._lock:
            return self._spent.get(account, _NOTHING)

    def reserved(self, account: str) -> Amount:
        with self._lock:
            return self._reserved.get(account, _NOTHING)

    def _drop_hold(self, reservation_id: str) -> None:
        """Remove a hold, if known (the caller holds the lock and exact arithmetic)."""
        hold = self._holds.get(reservation_id)
        if hold is None:
            return
        account, amount = hold
        remaining = self._reserved.get(account, _NOTHING) - amount
        del self._holds[reservation_id]
        if remaining == _NOTHING:
            self._reserved.pop(account, None)
        else:
            self._reserved[account] = remaining

    def __reduce__(self) -> tuple[type[InMemoryLedger], tuple[()]]:
        return InMemoryLedger, ()

    def __repr__(self) -> str:
        with self._lock:
            return (f"InMemoryLedger(accounts={len(self._spent.keys() | self._reserved.keys())}, "
                    f"open_reservations={len(self._holds)})")
