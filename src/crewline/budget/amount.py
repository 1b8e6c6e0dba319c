"""What a budget counts: money, tokens and requests, added and compared together."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)

__all__ = ["MONEY", "Amount", "Limit"]

MONEY = Context(prec=60, rounding=ROUND_HALF_EVEN,
                traps=[InvalidOperation, DivisionByZero, Overflow])
"""The one ``decimal`` context crewline does money arithmetic in.

Decimal operators round to the *calling thread's* context, which belongs to the
application: under ``decimal.localcontext(prec=6)`` a cost or a budget total would come out
rounded, and differently from one thread to the next. Every sum and product of money goes
through this context's methods instead (``MONEY.add``, ``MONEY.multiply``); 60 digits keep
any realistic cost exact (a per-token price of 12 digits times 10^12 tokens is 24 digits).
"""

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Amount:
    """A quantity of spend. ``cost`` is US dollars as a ``Decimal``, never a float."""

    cost: Decimal = _ZERO
    tokens: int = 0
    requests: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(MONEY.add(self.cost, other.cost), self.tokens + other.tokens,
                      self.requests + other.requests)

    def __sub__(self, other: Amount) -> Amount:
        return Amount(MONEY.subtract(self.cost, other.cost), self.tokens - other.tokens,
                      self.requests - other.requests)


@dataclass(frozen=True, slots=True)
class Limit:
    """The caps of a budget; ``None`` leaves that dimension uncapped."""

    cost: Decimal | None = None
    tokens: int | None = None
    requests: int | None = None

    def first_exceeded(self, total: Amount) -> str | None:
        """The first dimension (``cost``, ``tokens``, ``requests``) that ``total`` exceeds."""
        if self.cost is not None and total.cost > self.cost:
            return "cost"
        if self.tokens is not None and total.tokens > self.tokens:
            return "tokens"
        if self.requests is not None and total.requests > self.requests:
            return "requests"
        return None
