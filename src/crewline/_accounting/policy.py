"""What a request must obey, and the one path by which it holds budget.

A ``RequestPolicy`` is built by the run (the kickoff's budget, the crew's, its rate limiter)
and extended by each task (the task's budget); the task step passes it down explicitly to
every request it makes. The usage scope keeps records only.

``Holds`` is the one reservation path of the engine: it reserves a request's worst case on
every budget account in force, all or nothing, whatever goes wrong while reserving (a
budget refusing, a locked SQLite file, a bug), and it is closed exactly once: settled to the
actual spend, settled at the full hold (a reply without trustworthy usage, a request cut
off while the provider may have served it), or released (a request that never reached the
provider, or that the provider refused).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from crewline.budget.amount import Amount

if TYPE_CHECKING:
    from crewline._accounting.ratelimit import RateLimiter
    from crewline.budget.budget import Budget, Reservation

__all__ = ["BudgetAccount", "Holds", "RequestPolicy", "reserve_all"]


@dataclass(frozen=True, slots=True)
class BudgetAccount:
    """A budget and the key of the run (or batch, or task) whose account it charges."""

    budget: Budget
    key: str


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """The budgets and rate limits every request of one scope obeys, innermost first."""

    budgets: tuple[BudgetAccount, ...] = ()
    limiters: tuple[RateLimiter, ...] = ()
    stream: bool = False
    """Stream every request (``crew.stream``): its text becomes ``TextDelta`` events."""

    def extended(self, *, budgets: Iterable[BudgetAccount] = (),
                 limiters: Iterable[RateLimiter] = ()) -> RequestPolicy:
        """This policy plus more; one ``Budget`` object in several scopes stays one cap."""
        seen = {id(account.budget) for account in self.budgets}
        added = []
        for account in budgets:
            if id(account.budget) not in seen:
                seen.add(id(account.budget))
                added.append(account)
        return RequestPolicy((*added, *self.budgets), (*self.limiters, *limiters), self.stream)

    @property
    def requires_price(self) -> tuple[str, ...]:
        """Names of the budgets that cap cost (they need a known price to be enforced)."""
        return tuple(a.budget.name for a in self.budgets if a.budget.requires_price)

    @property
    def blocking(self) -> bool:
        """Whether reserving may wait on I/O (a ledger shared across processes).

        A ledger may say so with a ``blocking`` attribute; without one, a ledger shared
        across processes (``Budget.ledger_is_shared``) is taken to block, since it waits on
        a file lock or the network."""
        return any(getattr(a.budget.ledger, "blocking", None) or a.budget.ledger_is_shared
                   for a in self.budgets)


NO_POLICY = RequestPolicy()
STREAMED = RequestPolicy(stream=True)

Closing = Literal["actual", "full", "release"]


class Holds:
    """The reservations of one request, on every budget in force; closed exactly once."""

    __slots__ = ("_lock", "amount", "closed", "reservations")

    def __init__(self, amount: Amount, reservations: tuple[Reservation, ...]) -> None:
        self.amount = amount
        self.reservations = reservations
        self.closed: Closing | None = None
        self._lock = threading.Lock()

    @classmethod
    def take(cls, accounts: tuple[BudgetAccount, ...], amount: Amount) -> Holds:
        """Reserve ``amount`` on every account, or on none: any failure while reserving
        (a refusal, a ledger error) releases every hold already taken, then propagates."""
        held: list[Reservation] = []
        try:
            for account in accounts:
                held.append(account.budget.reserve(amount, run_id=account.key))
        except BaseException:
            for reservation in reversed(held):
                reservation.release()
            raise
        return cls(amount, tuple(held))

    def close(self, how: Closing, actual: Amount | None = None) -> None:
        """Settle to ``actual``, settle at the full hold, or release; the first close wins.

        Every reservation is closed even if one ledger fails; the first failure is raised
        after the others were closed.
        """
        with self._lock:
            if self.closed is not None:
                return
            self.closed = how
        failure: BaseException | None = None
        for reservation in self.reservations:
            try:
                if how == "release":
                    reservation.release()
                elif how == "full" or actual is None:
                    reservation.settle(reservation.amount)
                else:
                    reservation.settle(actual)
            except BaseException as exc:  # close the rest, then report the first failure
                failure = failure or exc
        if failure is not None:
            raise failure

    @contextmanager
    def guarded(self) -> Iterator[Holds]:
        """Inside the block the request is in flight. Leaving it by an exception that is not
        a provider's refusal (cancellation, an interrupt, a bug) settles at the full hold,
        since the provider may have served and billed the request; leaving it normally
        without closing also settles at the full hold. Never overshoot beats never
        over-count."""
        try:
            yield self
        finally:
            self.close("full")

    def __repr__(self) -> str:
        return f"Holds(amount={self.amount!r}, budgets={len(self.reservations)}, " \
               f"closed={self.closed!r})"


def reserve_all(budgets: Sequence[Budget], amount: Amount, *,
                run_id: str) -> list[Reservation]:
    """Reserve ``amount`` on every budget or on none (``crewline.budget.reserve_all``): the
    engine's own path, for code that reserves outside a run."""
    accounts = tuple(BudgetAccount(budget, run_id) for budget in budgets)
    return list(Holds.take(accounts, amount).reservations)
