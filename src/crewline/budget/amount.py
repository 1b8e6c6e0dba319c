"""What a budget counts: money, tokens and requests, added and compared together."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = ["Amount", "Limit"]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Amount:
    """A quantity of spend. ``cost`` is US dollars as a ``Decimal``, never a float."""

    cost: Decimal = _ZERO
    tokens: int = 0
    requests: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.cost + other.cost, self.tokens + other.tokens,
                      self.requests + other.requests)

    def __sub__(self, other: Amount) -> Amount:
        return Amount(self.cost - other.cost, self.tokens - other.tokens,
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
