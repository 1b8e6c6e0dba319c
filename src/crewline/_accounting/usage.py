"""Usage is recorded, never diffed.

Each LLM request yields one immutable ``UsageRecord``, appended to the usage scope that is
current where the request was made. Scopes nest run > task > attempt and live in a
``ContextVar``, so a record lands in the right place whether the request was made on the
calling thread, a worker thread or an asyncio task. Every total is a sum of records: no
figure is ever a before/after difference of a counter that concurrent work can move.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from crewline.budget.amount import MONEY

__all__ = ["Purpose", "Usage", "UsageRecord", "UsageScope", "current_scope"]

Purpose = Literal["agent", "conversion", "guardrail", "tool", "manager", "planning"]
Outcome = Literal["ok", "error", "cancelled"]
"""``error``: the provider answered with an error. ``cancelled``: cut off in flight, so the
provider may have served it; crewline knows no tokens for it and its budget holds are
settled in full."""

ScopeKind = Literal["run", "task", "attempt", "delegation", "planning"]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One LLM request, as the provider reported it and crewline priced it."""

    id: str
    run_id: str
    task: str | None
    attempt: int | None
    agent: str | None
    purpose: Purpose
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    reasoning_tokens: int
    cost: Decimal
    priced: bool
    latency_s: float
    started_at: datetime
    outcome: Outcome
    delegated_by: str | None = None
    """The role of the agent that delegated this work (``None`` when not delegated)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """A sum of usage records. ``requests`` counts successful requests only.

    ``total_tokens`` is derived (prompt + completion), never stored, so a ``Usage`` cannot
    disagree with itself; it is still in ``to_dict()``. Fields are keyword-only: eight
    positional numbers are too easy to put in the wrong order. Costs are summed in
    crewline's own decimal context (``MONEY``), whatever context the caller set.
    """

    requests: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = field(default=_ZERO)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            requests=self.requests + other.requests,
            failed_requests=self.failed_requests + other.failed_requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost=MONEY.add(self.cost, other.cost),
        )

    def __radd__(self, other: object) -> Usage:
        if other == 0:  # lets sum() start from its default 0
            return self
        return NotImplemented

    @classmethod
    def from_records(cls, records: Iterable[UsageRecord]) -> Usage:
        requests = failed = prompt = completion = cached = reasoning = 0
        cost = _ZERO
        for r in records:
            if r.outcome == "ok":
                requests += 1
            else:
                failed += 1
            prompt += r.prompt_tokens
            completion += r.completion_tokens
            cached += r.cached_prompt_tokens
            reasoning += r.reasoning_tokens
            cost = MONEY.add(cost, r.cost)
        return cls(requests=requests, failed_requests=failed, prompt_tokens=prompt,
                   completion_tokens=completion, cached_prompt_tokens=cached,
                   reasoning_tokens=reasoning, cost=cost)

    def to_dict(self) -> dict[str, int | str]:
        """JSON-friendly: the cost as a decimal string, so no float ever touches it."""
        return {"requests": self.requests, "failed_requests": self.failed_requests,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens,
                "reasoning_tokens": self.reasoning_tokens, "cost": str(self.cost)}


class UsageScope:
    """A node of the run > task > attempt tree that collects records.

    A record added to a scope is added to each of its ancestors too, under the run's one
    lock, so the run scope always holds every record of the run, in completion order.
    """

    __slots__ = ("_lock", "_records", "agent", "attempt", "delegated_by", "kind", "parent",
                 "run_id", "task")

    def __init__(self, kind: ScopeKind, *, run_id: str,
                 parent: UsageScope | None = None, task: str | None = None,
                 attempt: int | None = None, agent: str | None = None,
                 delegated_by: str | None = None) -> None:
        self.kind = kind
        self.run_id = run_id
        self.parent = parent
        self.task: str | None = task if task is not None else (
            parent.task if parent else None)
        self.attempt: int | None = attempt if attempt is not None else (
            parent.attempt if parent else None)
        self.agent: str | None = agent if agent is not None else (
            parent.agent if parent else None)
        # Delegation is never inherited implicitly: a coworker's scope names its delegator.
        self.delegated_by: str | None = delegated_by if delegated_by is not None else (
            parent.delegated_by if parent and kind != "delegation" else None)
        self._lock: threading.Lock = parent._lock if parent is not None else threading.Lock()
        self._records: list[UsageRecord] = []

    def child(self, kind: Literal["task", "attempt"], *, task: str | None = None,
              attempt: int | None = None, agent: str | None = None) -> UsageScope:
        return UsageScope(kind, run_id=self.run_id, parent=self, task=task, attempt=attempt,
                          agent=agent)

    def delegated(self, *, agent: str, by: str) -> UsageScope:
        """The scope of work ``agent`` does for ``by`` inside this one (a delegation).

        Its records name the coworker and its delegator and keep this scope's run, task
        and attempt, and they reach every ancestor like any other: the delegating task's
        usage includes them with no accounting of its own."""
        return UsageScope("delegation", run_id=self.run_id, parent=self, agent=agent,
                          delegated_by=by)

    def planning(self, *, agent: str) -> UsageScope:
        """The scope of a run-level request made before any task (the crew's plan)."""
        return UsageScope("planning", run_id=self.run_id, parent=self, agent=agent)

    def add(self, record: UsageRecord) -> None:
        with self._lock:
            scope: UsageScope | None = self
            while scope is not None:
                scope._records.append(record)
                scope = scope.parent

    @property
    def records(self) -> tuple[UsageRecord, ...]:
        with self._lock:
            return tuple(self._records)

    @property
    def usage(self) -> Usage:
        return Usage.from_records(self.records)

    def entered(self) -> _Entered:
        """Make this the current scope until the block ends (in this context only)."""
        return _Entered(self)

    def __repr__(self) -> str:
        return (f"UsageScope({self.kind}, run_id={self.run_id!r}, task={self.task!r}, "
                f"attempt={self.attempt!r}, records={len(self._records)})")


_current: ContextVar[UsageScope | None] = ContextVar("crewline_usage_scope", default=None)


class _Entered:
    """``with scope.entered():`` (a class: entered per run, task and attempt)."""

    __slots__ = ("_scope", "_token")

    def __init__(self, scope: UsageScope) -> None:
        self._scope = scope

    def __enter__(self) -> UsageScope:
        self._token = _current.set(self._scope)
        return self._scope

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def current_scope() -> UsageScope | None:
    """The usage scope that an LLM request made here would be recorded in."""
    return _current.get()
