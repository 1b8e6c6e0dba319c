"""A separate process sharing a SQLiteLedger with the tests in ``test_ledgers.py``.

    ledger_worker.py DB spend LIMIT AMOUNT DAY
        print READY, wait for a line on stdin, then reserve AMOUNT on the daily budget,
        keep it in flight for a millisecond (the request it would pay for) and settle it,
        until the budget refuses; print ``SETTLED <n>``. Without the request's time in
        flight, one process would take the write lock back-to-back while the others sit in
        SQLite's busy backoff, and the processes would hardly interleave.
    ledger_worker.py DB hold LIMIT AMOUNT DAY SETTLES
        settle AMOUNT SETTLES times, reserve AMOUNT once more, print HELD, then block on
        stdin until killed (or until the test's end of stdin).

The budget's clock is pinned to noon UTC of DAY so every process agrees on the account.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, date, datetime
from datetime import time as daytime
from decimal import Decimal

from crewline.budget import Amount, Budget, SQLiteLedger
from crewline.errors import BudgetExceededError


def main(argv: list[str]) -> int:
    path, mode, limit, cost, day = argv[:5]
    noon = datetime.combine(date.fromisoformat(day), daytime(12), tzinfo=UTC)
    amount = Amount(Decimal(cost), 1, 1)
    with SQLiteLedger(path) as ledger:
        budget = Budget(max_cost=limit, period="day", ledger=ledger, name="daily",
                        clock=lambda: noon)
        if mode == "spend":
            print("READY", flush=True)
            sys.stdin.readline()
            settled = 0
            while True:
                try:
                    reservation = budget.reserve(amount, run_id="worker")
                except BudgetExceededError:
                    break
                time.sleep(0.001)  # the request this reservation pays for, in flight
                reservation.settle(amount)
                settled += 1
            print(f"SETTLED {settled}", flush=True)
            return 0
        if mode == "hold":
            for _ in range(int(argv[5])):
                budget.reserve(amount, run_id="worker").settle(amount)
            budget.reserve(amount, run_id="worker")
            print("HELD", flush=True)
            sys.stdin.readline()
            return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
