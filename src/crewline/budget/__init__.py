"""Budgets that cap what crews spend, and the ledgers that keep their accounts.

``Budget`` is the definition a user writes; ``Reservation`` is one held request; a ``Ledger``
(``InMemoryLedger`` in this process, ``SQLiteLedger`` across processes and restarts,
``RedisLedger`` across hosts) is where spend and holds are counted. Amounts are ``Decimal``
dollars plus token and request counts.
"""

from crewline.budget.amount import Amount, Limit
from crewline.budget.budget import Budget, Reservation
from crewline.budget.ledger import InMemoryLedger, Ledger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from crewline._accounting.policy import reserve_all
    from crewline.budget.redis import RedisLedger
    from crewline.budget.sqlite import SQLiteLedger


def __getattr__(name: str) -> object:
    # sqlite3 is only imported by those who use the SQLite ledger.
    if name == "SQLiteLedger":
        from crewline.budget.sqlite import SQLiteLedger

        return SQLiteLedger
    if name == "RedisLedger":  # and the redis client only by those who use Redis
        from crewline.budget.redis import RedisLedger

        return RedisLedger
    if name == "reserve_all":  # the engine's one reservation path, all or nothing
        from crewline._accounting.policy import reserve_all

        return reserve_all
    raise AttributeError(f"module 'crewline.budget' has no attribute {name!r}")

__all__ = [
    "Amount",
    "Budget",
    "InMemoryLedger",
    "Ledger",
    "Limit",
    "RedisLedger",
    "Reservation",
    "SQLiteLedger",
    "reserve_all",
]
