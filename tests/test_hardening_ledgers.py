"""Ledgers under hostile conditions: absurd amounts, failures mid-operation, files made by
an older crewline, and many processes opening one fresh file at the same instant."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crewline.budget import Amount, InMemoryLedger, Ledger, Limit, SQLiteLedger
from crewline.budget.ledger import LimitExceeded

ACCOUNT = "team:run:r1"
HUGE_TOKENS = 10**19  # past SQLite's INTEGER (2**63 - 1)
HUGE_COST = Decimal("1" + "0" * 30 + ".000000000000000001")  # $10**30 and 49 digits


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "memory":
        yield InMemoryLedger()
    else:
        with SQLiteLedger(tmp_path / "ledger.db") as sqlite_ledger:
            yield sqlite_ledger


# -- opening a fresh file from many processes at once ------------------------------------


def _open_in_rounds(directory: str, rounds: int, barrier: Any, start: Any,
                   results: Any) -> None:
    """One process of the race: open round r's fresh file the instant the others do.

    Waking from a barrier takes longer than opening a file, so the barrier only agrees on
    a start instant a few milliseconds ahead, and every process spins until it.
    """
    failures: list[str] = []
    for round_ in range(rounds):
        if barrier.wait() == 0:
            start.value = time.time() + 0.005
        barrier.wait()
        while time.time() < start.value:
            pass
        try:
            with SQLiteLedger(Path(directory) / f"round{round_}.db", busy_timeout=10) as ledger:
                ledger.record(ACCOUNT, Amount(Decimal("0.001"), 1, 1))
        except Exception as exc:
            failures.append(f"round {round_}: {type(exc).__name__}: {exc}")
    results.put(failures)


@pytest.mark.slow
def test_processes_opening_one_fresh_file_together_all_succeed(tmp_path: Path) -> None:
    processes, rounds = 2, 200
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    start = context.Value("d", 0.0)
    results = context.Queue()
    workers = [context.Process(target=_open_in_rounds,
                               args=(str(tmp_path), rounds, barrier, start, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        failures = [failure for _ in workers for failure in results.get(timeout=120)]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert failures == [], f"{len(failures)} of {processes * rounds} opens failed: {failures[:3]}"
    for round_ in range(rounds):
        with SQLiteLedger(tmp_path / f"round{round_}.db") as ledger:
            assert ledger.spent(ACCOUNT) == Amount(Decimal("0.001") * processes, processes,
                                                   processes)


def _hold_the_fresh_file(path: Path, seconds: float, locked: threading.Event) -> None:
    """Another connection setting up a brand-new file: a write transaction before WAL."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE setting_up (x)")
        locked.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_opening_waits_for_a_connection_that_is_setting_the_file_up(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    locked = threading.Event()
    holder = threading.Thread(target=_hold_the_fresh_file, args=(path, 0.3, locked))
    holder.start()
    try:
        assert locked.wait(5)
        started = time.monotonic()
        with SQLiteLedger(path, busy_timeout=10) as ledger:
            waited = time.monotonic() - started
            ledger.record(ACCOUNT, Amount(Decimal("0.5"), 5, 1))
            assert ledger.spent(ACCOUNT) == Amount(Decimal("0.5"), 5, 1)
    finally:
        holder.join()
    assert 0.2 < waited < 5


def test_opening_gives_up_once_busy_timeout_has_passed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    locked = threading.Event()
    holder = threading.Thread(target=_hold_the_fresh_file, args=(path, 2.0, locked))
    holder.start()
    try:
        assert locked.wait(5)
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            SQLiteLedger(path, busy_timeout=0.3)
        waited = time.monotonic() - started
    finally:
        holder.join()
    assert 0.25 < waited < 1.5


# -- amounts of any size -----------------------------------------------------------------


def test_a_hold_settles_with_absurd_usage_exactly(ledger: Ledger) -> None:
    rid = ledger.reserve(ACCOUNT, Amount(Decimal("0.01"), 1_000, 1), Limit(cost=Decimal(1)))
    ledger.settle(rid, Amount(HUGE_COST, HUGE_TOKENS, 1))
    ledger.record(ACCOUNT, Amount(HUGE_COST, HUGE_TOKENS, HUGE_TOKENS))
    twice = Amount(Decimal("2" + "0" * 30 + ".000000000000000002"), HUGE_TOKENS * 2,
                   HUGE_TOKENS + 1)
    assert ledger.spent(ACCOUNT) == twice
    assert ledger.reserved(ACCOUNT) == Amount()


def test_sqlite_absurd_usage_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with SQLiteLedger(path) as first:
        rid = first.reserve(ACCOUNT, Amount(Decimal("0.01"), 1_000, 1), Limit(tokens=10**6))
        first.settle(rid, Amount(HUGE_COST, HUGE_TOKENS, 1))
    with SQLiteLedger(path) as second:
        assert second.spent(ACCOUNT) == Amount(HUGE_COST, HUGE_TOKENS, 1)
        assert second.reserved(ACCOUNT) == Amount()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT cost, tokens FROM spend").fetchall() == [
            (format(HUGE_COST, "f"), str(HUGE_TOKENS))]
    raw.close()


def test_limits_compare_exactly_past_28_digits(ledger: Ledger) -> None:
    """Decimal's default 28 digits would round $10**30 + 10**-18 down to the cap itself."""
    ledger.record(ACCOUNT, Amount(HUGE_COST))
    with pytest.raises(LimitExceeded) as refused:
        ledger.reserve(ACCOUNT, Amount(), Limit(cost=Decimal(10**30)))
    assert refused.value.left == 0


# -- all or nothing ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    Amount(Decimal("NaN")), Amount(Decimal("Infinity")), Amount(Decimal("-0.01")),
    Amount(tokens=-1), Amount(requests=-1),
])
def test_an_amount_that_cannot_be_counted_is_refused_and_changes_nothing(
        ledger: Ledger, bad: Amount) -> None:
    limit = Limit(cost=Decimal(1))
    rid = ledger.reserve(ACCOUNT, Amount(Decimal("0.3"), 3, 1), limit)
    with pytest.raises(ValueError, match=r"amount|actual"):
        ledger.settle(rid, bad)
    with pytest.raises(ValueError, match="amount"):
        ledger.record(ACCOUNT, bad)
    with pytest.raises(ValueError, match="amount"):
        ledger.reserve(ACCOUNT, bad, limit)
    assert ledger.spent(ACCOUNT) == Amount()
    assert ledger.reserved(ACCOUNT) == Amount(Decimal("0.3"), 3, 1)
    ledger.settle(rid, Amount(Decimal("0.2"), 2, 1))  # the hold is still there to settle
    assert ledger.spent(ACCOUNT) == Amount(Decimal("0.2"), 2, 1)
    assert ledger.reserved(ACCOUNT) == Amount()


def test_sqlite_a_failed_commit_rolls_back_and_the_ledger_keeps_working(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteLedger(tmp_path / "ledger.db") as ledger:
        rid = ledger.reserve(ACCOUNT, Amount(Decimal("0.3"), 3, 1), Limit(cost=Decimal(1)))
        conn = ledger._connection()
        execute = conn.execute

        def failing_commit(sql: str, *args: Any) -> sqlite3.Cursor:
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return execute(sql, *args)

        monkeypatch.setattr(conn, "execute", failing_commit, raising=False)
        with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
            ledger.settle(rid, Amount(Decimal("0.2"), 2, 1))
        monkeypatch.undo()

        assert ledger.spent(ACCOUNT) == Amount()
        assert ledger.reserved(ACCOUNT) == Amount(Decimal("0.3"), 3, 1)
        ledger.settle(rid, Amount(Decimal("0.2"), 2, 1))
        assert ledger.spent(ACCOUNT) == Amount(Decimal("0.2"), 2, 1)
        assert ledger.reserved(ACCOUNT) == Amount()


# -- files made by the previous schema ---------------------------------------------------

_VERSION_0_SCHEMA = """
CREATE TABLE spend (account TEXT PRIMARY KEY, cost TEXT NOT NULL, tokens INTEGER NOT NULL,
                    requests INTEGER NOT NULL);
CREATE TABLE reservations (id TEXT PRIMARY KEY, account TEXT NOT NULL, cost TEXT NOT NULL,
    tokens INTEGER NOT NULL, requests INTEGER NOT NULL, host TEXT NOT NULL,
    pid INTEGER NOT NULL, expires REAL NOT NULL, lapsed INTEGER NOT NULL DEFAULT 0);
CREATE INDEX reservations_account ON reservations (account, lapsed);
"""


def test_a_file_of_the_previous_schema_is_read_and_then_takes_any_size(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(_VERSION_0_SCHEMA)
    raw.execute("INSERT INTO spend VALUES (?, '0.25', 2500, 3)", (ACCOUNT,))
    raw.execute("INSERT INTO reservations VALUES ('old-hold', ?, '0.10', 100, 1, ?, ?, ?, 0)",
                (ACCOUNT, socket.gethostname(), os.getpid(), time.time() + 3600))
    raw.commit()
    raw.close()

    with SQLiteLedger(path) as ledger:
        assert ledger.spent(ACCOUNT) == Amount(Decimal("0.25"), 2500, 3)
        assert ledger.reserved(ACCOUNT) == Amount(Decimal("0.10"), 100, 1)
        ledger.settle("old-hold", Amount(HUGE_COST, HUGE_TOKENS, 1))
        total = Amount(Decimal("1" + "0" * 30 + ".250000000000000001"), HUGE_TOKENS + 2500, 4)
        assert ledger.spent(ACCOUNT) == total
        assert ledger.reserved(ACCOUNT) == Amount()
    with SQLiteLedger(path) as again:  # converted once, opened as a current file after
        assert again.spent(ACCOUNT) == total


def test_a_file_of_a_newer_schema_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteLedger(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(sqlite3.DatabaseError, match=r"schema version 99.*newer crewline"):
        SQLiteLedger(path)
