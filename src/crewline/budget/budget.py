"""Budgets: caps on money, tokens and requests that are reserved before they are spent.

The engine reserves a request's worst case on every budget in scope before sending it, and
settles the reservation to the actual spend afterwards (or releases it on failure). A
budget that refuses raises ``BudgetExceededError`` and the request is never sent, so a cap
holds even when many tasks ask at the same instant: the ledger checks and holds in one step.

A ``Budget`` is an immutable definition; what it has spent lives in its ledger, under an
account per run (period ``"run"``) or per calendar day in the budget's timezone (period
``"day"``). Two budgets that share a ledger and a period must have distinct names, or they
would share an account.

A budget crosses process boundaries (to Ray workers) by pickling: its limits, name,
period, timezone and clock travel as they are, and its ledger as a reference the other side
can reopen. A ``SQLiteLedger`` reopens its file, so every process counts on the same
accounts; an ``InMemoryLedger`` arrives empty, which only suits a ``"run"`` budget whose run
lives in one process. ``ledger_is_shared`` tells the two apart.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crewline.budget.amount import Amount, Limit
from crewline.budget.ledger import InMemoryLedger, Ledger, LimitExceeded
from crewline.errors import BudgetExceededError

__all__ = ["Budget", "Period", "Reservation"]

Period = Literal["run", "day"]
_PERIODS: tuple[Period, ...] = ("run", "day")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _dollars(value: Decimal) -> str:
    """At least five decimals, and every digit a nonzero amount has: a tiny per-token
    price must never print as $0.00000."""
    exponent = value.normalize().as_tuple().exponent
    places = max(5, -exponent) if isinstance(exponent, int) else 5
    return f"${value:.{places}f}"


def _count(value: int, unit: str) -> str:
    return f"{value} {unit}" if value == 1 else f"{value} {unit}s"


def _as_cost(value: Decimal | str | float | int | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | str | float | int):
        raise TypeError(f"max_cost must be a Decimal, str, float or int of dollars, "
                        f"got {type(value).__name__} {value!r}")
    try:
        # repr is a float's shortest round-tripping form: 0.1 becomes Decimal("0.1"),
        # not 0.1000000000000000055511151231257827.
        cost = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"max_cost must be a number of dollars, got {value!r}") from None
    if not cost.is_finite():
        raise ValueError(f"max_cost must be a finite number of dollars, got {value!r}")
    if cost < 0:
        raise ValueError(f"max_cost must be >= 0, got {cost}")
    return cost


def _as_count(field: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{field} must be >= 0, got {value}")
    return value


class Budget:
    """A cap on cost (US dollars), tokens and/or requests, per run or per day.

    Without a ``ledger`` the budget keeps a private in-memory one: a ``"run"`` budget then
    counts each kickoff on its own account, and a ``"day"`` budget counts every kickoff in
    this process that uses this object. Pass a shared ledger (a ``SQLiteLedger`` for several
    processes) to share the spend with every budget of the same name on it.

    ``clock`` returns the current aware datetime; it decides which day a ``"day"`` budget
    is in, and exists so tests can cross midnight without waiting for it.

    ``copy.copy`` and ``copy.deepcopy`` return the budget itself: a copy with a ledger of its
    own would silently double the cap. Pickling cannot keep identity: unpickled, even in the
    same process, a budget is a new object, sharing its spend with the original only if its
    ledger is shared across processes (see ``ledger_is_shared``).
    """

    __slots__ = ("_clock", "_ledger", "_limit", "_name", "_period", "_shared", "_timezone",
                 "_zone")

    _clock: Callable[[], datetime]
    _ledger: Ledger
    _limit: Limit
    _name: str
    _period: Period
    _shared: bool
    _timezone: str
    _zone: ZoneInfo

    def __init__(self, max_cost: Decimal | str | float | int | None = None,
                 max_tokens: int | None = None, max_requests: int | None = None, *,
                 period: Period = "run", ledger: Ledger | None = None,
                 name: str | None = None, timezone: str = "UTC",
                 clock: Callable[[], datetime] = _utc_now) -> None:
        limit = Limit(_as_cost(max_cost), _as_count("max_tokens", max_tokens),
                      _as_count("max_requests", max_requests))
        if limit == Limit():
            raise ValueError("a Budget needs at least one of max_cost, max_tokens, max_requests")
        if period not in _PERIODS:
            raise ValueError(f"period must be 'run' or 'day', got {period!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        name = name or "budget"
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"budget {name!r}: unknown timezone {timezone!r}") from None
        set_ = object.__setattr__
        set_(self, "_limit", limit)
        set_(self, "_period", period)
        set_(self, "_name", name)
        set_(self, "_timezone", timezone)
        set_(self, "_zone", zone)
        set_(self, "_clock", clock)
        set_(self, "_shared", ledger is not None)
        set_(self, "_ledger", ledger if ledger is not None else InMemoryLedger())

    @property
    def max_cost(self) -> Decimal | None:
        return self._limit.cost

    @property
    def max_tokens(self) -> int | None:
        return self._limit.tokens

    @property
    def max_requests(self) -> int | None:
        return self._limit.requests

    @property
    def period(self) -> Period:
        return self._period

    @property
    def name(self) -> str:
        return self._name

    @property
    def timezone(self) -> str:
        return self._timezone

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def limit(self) -> Limit:
        return self._limit

    @property
    def ledger_is_shared(self) -> bool:
        """Whether other processes that unpickle this budget count on the same accounts.

        True for a ``SQLiteLedger`` (or any ledger declaring ``shared_across_processes``),
        False for an ``InMemoryLedger``, which arrives empty on the other side: a budget
        spanning kickoffs on several workers needs a shared one.
        """
        declared = getattr(self._ledger, "shared_across_processes", None)
        if isinstance(declared, bool):
            return declared
        return not isinstance(self._ledger, InMemoryLedger)

    @property
    def requires_price(self) -> bool:
        """A cost cap cannot be enforced for a model whose price is unknown."""
        return self._limit.cost is not None

    def today(self) -> date:
        """The calendar day it is now in the budget's timezone."""
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError(f"budget {self._name!r}: clock returned naive datetime {now}")
        return now.astimezone(self._zone).date()

    def reserve(self, amount: Amount, *, run_id: str) -> Reservation:
        """Hold ``amount`` or raise ``BudgetExceededError``; nothing is held on refusal."""
        day = self.today() if self._period == "day" else None
        account = self._account(run_id, day)
        try:
            reservation_id = self._ledger.reserve(account, amount, self._limit)
        except LimitExceeded as exc:
            self._refuse(exc, day)
        return Reservation(self, account, amount, reservation_id)

    def spent(self, *, run_id: str | None = None, day: date | None = None) -> Amount:
        """What was spent in one run (period ``"run"``) or one day (default: today)."""
        return self._ledger.spent(self._account_for_query(run_id, day))

    def reserved(self, *, run_id: str | None = None, day: date | None = None) -> Amount:
        """What open reservations hold, for the same run or day ``spent`` would report."""
        return self._ledger.reserved(self._account_for_query(run_id, day))

    def _account(self, run_id: str | None, day: date | None) -> str:
        if day is not None:
            return f"{self._name}:day:{day.isoformat()}"
        return f"{self._name}:run:{run_id}"

    def _account_for_query(self, run_id: str | None, day: date | None) -> str:
        if self._period == "run":
            if run_id is None:
                raise ValueError(f"budget {self._name!r} has period 'run': pass run_id=")
            if day is not None:
                raise ValueError(f"budget {self._name!r} has period 'run': day= does not apply")
            return self._account(run_id, None)
        return self._account(None, day if day is not None else self.today())

    def _refuse(self, exc: LimitExceeded, day: date | None) -> NoReturn:
        if exc.dimension == "cost":
            asked, left, limit = (_dollars(Decimal(v)) for v in (exc.asked, exc.left, exc.limit))
            message = f"reserving {asked} with {left} left of {limit}"
        else:
            unit = "token" if exc.dimension == "tokens" else "request"
            asked_count = _count(int(exc.asked), unit)
            message = f"reserving {asked_count} with {exc.left} left of {exc.limit}"
        suffix = f" (period day {day.isoformat()})" if day is not None else ""
        raise BudgetExceededError(
            f"budget {self._name!r} exceeded: {message}{suffix}", budget=self._name,
            dimension=exc.dimension, asked=exc.asked, left=exc.left, limit=exc.limit) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Budget is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Budget is immutable; cannot delete {name!r}")

    def __copy__(self) -> Budget:
        return self  # a copy with its own ledger would silently double the cap

    def __deepcopy__(self, memo: dict[int, Any]) -> Budget:
        return self

    def __reduce__(self) -> tuple[Callable[..., Budget], tuple[dict[str, Any]]]:
        if self._clock is not _utc_now:
            try:
                pickle.dumps(self._clock)
            except Exception as exc:
                raise pickle.PicklingError(
                    f"budget {self._name!r} cannot be pickled: its clock {self._clock!r} "
                    f"cannot ({exc}); pass a module-level function as clock=") from exc
        return _restore_budget, ({
            "max_cost": self._limit.cost, "max_tokens": self._limit.tokens,
            "max_requests": self._limit.requests, "period": self._period,
            # a private ledger is recreated private (and empty) on the other side
            "ledger": self._ledger if self._shared else None,
            "name": self._name, "timezone": self._timezone, "clock": self._clock},)

    def __repr__(self) -> str:
        parts = [f"{field}={value!r}" for field, value in (
            ("max_cost", self._limit.cost), ("max_tokens", self._limit.tokens),
            ("max_requests", self._limit.requests)) if value is not None]
        parts += [f"period={self._period!r}", f"name={self._name!r}"]
        if self._timezone != "UTC":
            parts.append(f"timezone={self._timezone!r}")
        if self._shared:
            parts.append(f"ledger={self._ledger!r}")
        return f"Budget({', '.join(parts)})"


def _restore_budget(arguments: dict[str, Any]) -> Budget:
    return Budget(**arguments)


class Reservation:
    """A hold on a budget, to be settled to the actual spend or released.

    Settle and release are idempotent and the first one wins, from any thread: the engine's
    success path and its cancellation path may both reach for the same reservation. Used as
    a context manager, it is released on exit unless it was settled.
    """

    __slots__ = ("_account", "_amount", "_budget", "_id", "_lock", "_state")

    def __init__(self, budget: Budget, account: str, amount: Amount,
                 reservation_id: str) -> None:
        self._budget = budget
        self._account = account
        self._amount = amount
        self._id = reservation_id
        self._lock = threading.Lock()
        self._state: Literal["open", "settled", "released"] = "open"

    @property
    def budget(self) -> Budget:
        return self._budget

    @property
    def account(self) -> str:
        return self._account

    @property
    def amount(self) -> Amount:
        return self._amount

    @property
    def id(self) -> str:
        return self._id

    @property
    def state(self) -> Literal["open", "settled", "released"]:
        return self._state

    def settle(self, actual: Amount) -> None:
        """Record ``actual`` (even above the hold: real spend is never dropped)."""
        with self._lock:
            if self._state == "open":
                self._budget.ledger.settle(self._id, actual)
                self._state = "settled"

    def release(self) -> None:
        """Give the hold back without spending anything."""
        with self._lock:
            if self._state == "open":
                self._budget.ledger.release(self._id)
                self._state = "released"

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return (f"Reservation(budget={self._budget.name!r}, account={self._account!r}, "
                f"amount={self._amount!r}, state={self._state!r})")
