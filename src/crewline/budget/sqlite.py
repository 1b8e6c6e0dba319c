"""A ledger in a SQLite file: shared by the threads and processes of one host, kept across
restarts.

Every check-and-hold runs inside ``BEGIN IMMEDIATE``, which takes SQLite's write lock
before reading, so two writers can never both see room that only one of them may take.
Money is stored as decimal TEXT and summed in Python: SQLite's own arithmetic is binary
floating point and would lose cents.

A process that dies while holding a reservation must not shrink the budget forever. Each
hold stores its owner's pid and host and an expiry; ``reserve`` first deletes holds whose
owner is gone from this host (checked with ``os.kill(pid, 0)``), so ``kill -9`` frees the
hold at the next reservation, and sets aside ("lapses") holds past their expiry, whoever
owns them. A lapsed hold no longer counts against the limit, but settling it still
records the spend: a request that outlived its TTL was paid for all the same.

Token and request counts are decimal TEXT too, added in Python: SQLite's INTEGER stops at
2**63 - 1, and a provider reporting 10**19 tokens must be charged, not refuse to settle.
Files made before that (``PRAGMA user_version`` 0, INTEGER columns) are converted in place
the first time this version opens them.

Every write waits for other writers up to ``busy_timeout``, opening included: SQLite
answers some lock conflicts (switching a fresh file to WAL while another connection
does the same) with an immediate "database is locked" that its own busy handler never
retries, so those are retried here with backoff until the same deadline.
"""

from __future__ import annotations

import os
import pickle
import random
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

from crewline.budget.amount import Amount, Limit
from crewline.budget.ledger import (
    LimitExceeded,
    check_fits,
    checked_amount,
    exact_arithmetic,
    new_reservation_id,
)

__all__ = ["SQLiteLedger"]

_T = TypeVar("_T")

# PRAGMA user_version of the files this code writes; 0 is the INTEGER-count layout.
_SCHEMA_VERSION = 1

_TABLES = {
    "spend": """
CREATE TABLE spend (
    account  TEXT PRIMARY KEY,
    cost     TEXT NOT NULL,
    tokens   TEXT NOT NULL,
    requests TEXT NOT NULL
)""",
    "reservations": """
CREATE TABLE reservations (
    id       TEXT PRIMARY KEY,
    account  TEXT NOT NULL,
    cost     TEXT NOT NULL,
    tokens   TEXT NOT NULL,
    requests TEXT NOT NULL,
    host     TEXT NOT NULL,
    pid      INTEGER NOT NULL,
    expires  REAL NOT NULL,
    lapsed   INTEGER NOT NULL DEFAULT 0
)""",
}
_INDEX = "CREATE INDEX IF NOT EXISTS reservations_account ON reservations (account, lapsed)"

# A lapsed hold is kept this long so a late settle can still record its spend.
_LAPSED_KEEP_SECONDS = 7 * 24 * 3600.0


class _Connection(sqlite3.Connection):
    """A plain connection that can be weakly referenced, so a thread's connection is
    closed when the thread ends instead of living as long as the ledger."""


def _text(cost: Decimal) -> str:
    """Fixed-point text ("0.00000015", not "1.5E-7"), exact and readable in the database."""
    return format(cost, "f")


def _amount(cost: str, tokens: str | int, requests: str | int) -> Amount:
    return Amount(Decimal(cost), int(tokens), int(requests))


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` is another connection's lock, which waiting can resolve."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _reopen(path: str, reservation_ttl: float, busy_timeout: float,
            clock: Callable[[], float]) -> SQLiteLedger:
    return SQLiteLedger(path, reservation_ttl=reservation_ttl, busy_timeout=busy_timeout,
                        clock=clock)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a live process on this host (an unreaped zombie is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


class SQLiteLedger:
    """A ``Ledger`` in a SQLite database file, for budgets that span processes or days.

    Each thread gets its own connection (SQLite connections are not to be shared between
    threads mid-transaction); a forked child opens fresh ones. ``reservation_ttl`` bounds how
    long a hold can block others when its owner hangs rather than dies; ``busy_timeout`` is
    how long an operation waits for another writer before ``sqlite3.OperationalError``.
    ``clock`` (seconds since the epoch) exists so tests can expire holds without sleeping.

    Pickled, a ledger travels as its path and options and reopens the same file on the other
    side (which must see the same file system), so workers share its accounts.
    """

    shared_across_processes: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str], *, reservation_ttl: float = 900.0,
                 busy_timeout: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        if reservation_ttl <= 0:
            raise ValueError(f"reservation_ttl must be > 0 seconds, got {reservation_ttl}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout}")
        self.path = os.fspath(path)
        self.reservation_ttl = reservation_ttl
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._host = socket.gethostname()
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._registry_lock = threading.Lock()
        self._closed = False
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def reserve(self, account: str, amount: Amount, limit: Limit) -> str:
        checked_amount(amount)
        reservation_id = new_reservation_id()
        refusal: LimitExceeded | None = None
        with self._write() as conn:
            self._reclaim(conn)
            spent = self._spent(conn, account)
            reserved = self._reserved(conn, account)
            try:
                check_fits(account, spent, reserved, amount, limit)
            except LimitExceeded as exc:
                refusal = exc  # commit the reclaim, then refuse
            else:
                conn.execute(
                    "INSERT INTO reservations (id, account, cost, tokens, requests, host, pid,"
                    " expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (reservation_id, account, _text(amount.cost), str(amount.tokens),
                     str(amount.requests), self._host, os.getpid(),
                     self._clock() + self.reservation_ttl))
        if refusal is not None:
            raise refusal
        return reservation_id

    def settle(self, reservation_id: str, actual: Amount) -> None:
        checked_amount(actual, "actual")
        with self._write() as conn:
            row = conn.execute("SELECT account FROM reservations WHERE id = ?",
                               (reservation_id,)).fetchone()
            if row is None:
                return
            conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            self._add_spend(conn, row[0], actual)

    def release(self, reservation_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

    def record(self, account: str, amount: Amount) -> None:
        checked_amount(amount)
        with self._write() as conn:
            self._add_spend(conn, account, amount)

    def spent(self, account: str) -> Amount:
        return self._retrying(lambda: self._spent(self._connection(), account))

    def reserved(self, account: str) -> Amount:
        """Open holds on ``account``, after reclaiming dead and expired ones, so the answer
        matches what the next ``reserve`` will count."""
        with self._write() as conn:
            self._reclaim(conn)
            return self._reserved(conn, account)

    def close(self) -> None:
        """Close every connection this ledger opened; call it when no operation is running."""
        with self._registry_lock:
            self._closed = True
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            conn.close()

    def __enter__(self) -> SQLiteLedger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r}, reservation_ttl={self.reservation_ttl})"

    def __reduce__(self) -> tuple[Callable[..., SQLiteLedger],
                                  tuple[str, float, float, Callable[[], float]]]:
        try:
            pickle.dumps(self._clock)
        except Exception as exc:
            raise pickle.PicklingError(
                f"SQLiteLedger {self.path!r} cannot be pickled: its clock {self._clock!r} "
                f"cannot ({exc}); pass a module-level function as clock=") from exc
        return _reopen, (self.path, self.reservation_ttl, self.busy_timeout, self._clock)

    def _open(self) -> None:
        """Switch the file to WAL and bring its schema to this version, waiting for others
        doing the same."""
        self._retrying(lambda: self._connection().execute("PRAGMA journal_mode=WAL"))
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"SQLiteLedger {self.path!r} has schema version {version}, written by a "
                    f"newer crewline; this one reads up to version {_SCHEMA_VERSION}")
            if version < _SCHEMA_VERSION:
                self._migrate(conn)
            conn.execute(_INDEX)

    @staticmethod
    def _migrate(conn: _Connection) -> None:
        """Create the tables, or rebuild version-0 ones whose counts are INTEGER columns
        (which would turn a count past 2**63 - 1 into a rounded REAL) as TEXT."""
        existing = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, create in _TABLES.items():
            if table not in existing:
                conn.execute(create)
                continue
            conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v0")
            conn.execute(create)
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table}_v0)")]
            selected = ", ".join(f"CAST({c} AS TEXT)" if c in ("tokens", "requests") else c
                                 for c in columns)
            conn.execute(f"INSERT INTO {table} ({', '.join(columns)})"
                         f" SELECT {selected} FROM {table}_v0")
            conn.execute(f"DROP TABLE {table}_v0")
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _retrying(self, operation: Callable[[], _T]) -> _T:
        """Run ``operation``, retrying "database is locked" with jittered backoff until
        ``busy_timeout`` has passed; SQLite's busy handler does not cover every conflict."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                left = deadline - time.monotonic()
                if not _busy(exc) or left <= 0:
                    raise
                time.sleep(min(left, random.uniform(delay / 2, delay)))
                delay = min(delay * 2, 0.1)

    def _connection(self) -> _Connection:
        if self._closed:
            raise sqlite3.ProgrammingError(f"SQLiteLedger {self.path!r} is closed")
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        with self._registry_lock:
            if self._closed:
                raise sqlite3.ProgrammingError(f"SQLiteLedger {self.path!r} is closed")
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False, factory=_Connection)
            self._connections.add(conn)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    @contextmanager
    def _write(self) -> Iterator[_Connection]:
        """A transaction that holds the write lock from its first read to its commit, and
        that either commits whole or is rolled back whole, whatever interrupts it."""
        conn = self._connection()
        if conn.in_transaction:  # left open by an interrupted rollback
            conn.execute("ROLLBACK")
        self._retrying(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _reclaim(self, conn: _Connection) -> None:
        """Free holds whose owner died on this host; lapse holds past their expiry."""
        now = self._clock()
        me = os.getpid()
        pids = [pid for (pid,) in conn.execute(
            "SELECT DISTINCT pid FROM reservations WHERE host = ?", (self._host,))]
        for pid in pids:
            if pid != me and not _pid_alive(pid):
                conn.execute("DELETE FROM reservations WHERE host = ? AND pid = ?",
                             (self._host, pid))
        conn.execute("UPDATE reservations SET lapsed = 1 WHERE lapsed = 0 AND expires < ?",
                     (now,))
        conn.execute("DELETE FROM reservations WHERE lapsed = 1 AND expires < ?",
                     (now - _LAPSED_KEEP_SECONDS,))

    @staticmethod
    def _spent(conn: _Connection, account: str) -> Amount:
        row = conn.execute("SELECT cost, tokens, requests FROM spend WHERE account = ?",
                           (account,)).fetchone()
        if row is None:
            return Amount()
        return _amount(*row)

    @staticmethod
    def _reserved(conn: _Connection, account: str) -> Amount:
        total = Amount()
        with exact_arithmetic():
            for row in conn.execute(
                    "SELECT cost, tokens, requests FROM reservations"
                    " WHERE account = ? AND lapsed = 0", (account,)):
                total += _amount(*row)
        return total

    def _add_spend(self, conn: _Connection, account: str, amount: Amount) -> None:
        with exact_arithmetic():
            total = self._spent(conn, account) + amount
        conn.execute(
            "INSERT INTO spend (account, cost, tokens, requests) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (account) DO UPDATE SET cost = excluded.cost,"
            " tokens = excluded.tokens, requests = excluded.requests",
            (account, _text(total.cost), str(total.tokens), str(total.requests)))
