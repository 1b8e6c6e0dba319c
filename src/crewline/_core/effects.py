"""The I/O a task step asks its driver to perform.

The task core (``request``, ``turns``, ``attempts``) is written as generators that yield
these effects and receive their results, the way h11 keeps HTTP logic free of sockets.
A driver performs each effect with its own kind of I/O and sends back the result, or
throws the exception the effect raised into the generator. No retry, usage, budget or
guardrail logic lives in a driver, so the sync and asyncio paths cannot drift apart.

Ledger operations are effects too (``Reserve``, ``Settle``): a ledger shared across
processes (SQLite, Redis) may wait on a lock or the network, so the asyncio driver
performs them on crewline's worker threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from crewline._accounting.policy import BudgetAccount, Closing, Holds
from crewline.budget.amount import Amount
from crewline.transport.litellm import Transport

__all__ = ["Call", "Effect", "Parallel", "Reserve", "Send", "Settle", "Sleep", "Step"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Send:
    """Send one chat request through ``transport``; result: ``ChatResponse``.

    With ``on_delta`` the request is streamed and each piece of text is handed to it as it
    arrives; the result is the same ``ChatResponse``, assembled from the chunks.
    """

    transport: Transport
    request: dict[str, Any]
    on_delta: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """Call user code (a tool, guardrail or callback), sync or async; result: its return."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait without holding anything (retry backoff, rate limits); result: None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Reserve:
    """Hold ``amount`` on every account, all or nothing; result: ``Holds``.

    ``blocking`` says whether a ledger may wait on I/O; ``undo`` gives back holds taken
    by a reservation whose result could not be delivered (its caller was cancelled).
    """

    accounts: tuple[BudgetAccount, ...]
    amount: Amount
    blocking: bool

    def perform(self) -> Holds:
        return Holds.take(self.accounts, self.amount)

    @staticmethod
    def undo(holds: Holds) -> None:
        holds.close("release")


@dataclass(frozen=True, slots=True)
class Settle:
    """Close a request's holds (to ``actual``, at the full hold, or released); result: None."""

    holds: Holds
    how: Closing
    actual: Amount | None
    blocking: bool

    def perform(self) -> None:
        self.holds.close(self.how, self.actual)

    @staticmethod
    def undo(_: None) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Parallel:
    """Run several sub-steps at once; result: a tuple with each one's outcome, in order.

    An outcome is the sub-step's return value, or the exception it raised (returned, not
    raised, so one coworker's failure never hides its siblings' work). Each sub-step runs
    in its own copy of the context that yielded this, and the effect completes only when
    every sub-step has ended: cancelling it cancels and waits for all of them.
    """

    steps: tuple[Generator[Any, Any, Any], ...]


Ledgered = Reserve | Settle
Effect = Send | Call | Sleep | Reserve | Settle | Parallel
Step = Generator[Effect, Any, T]
"""A piece of task logic that yields effects and finally returns a ``T``."""
