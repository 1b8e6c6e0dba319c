"""Typed events, and the listeners that receive them.

Handlers run synchronously, in the context of the code that emitted the event: on the
thread or asyncio task doing the work, so they see the caller's context variables and
the run's log context. A handler that raises is logged and ignored; it never breaks a run.

Register process-wide with ``@crewline.events.on(TaskFinished)`` (``Event`` receives
everything), or per kickoff with ``crew.kickoff(listeners=[handler, ...])``. Registering
and removing is thread-safe: the handler lists are copied on write, and emitting reads a
snapshot without taking a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from crewline._accounting.usage import Usage, UsageRecord

__all__ = [
    "AttemptFailed",
    "AttemptStarted",
    "BudgetExceeded",
    "BudgetReserved",
    "Event",
    "GuardrailChecked",
    "KickoffFinished",
    "KickoffStarted",
    "LLMCallFinished",
    "TaskFinished",
    "TaskStarted",
    "TextDelta",
    "ToolCalled",
    "emit",
    "off",
    "on",
]

_log = logging.getLogger("crewline.events")


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    run_id: str
    at: datetime = Field(default_factory=_now)


class KickoffStarted(Event):
    tasks: int
    inputs: tuple[str, ...] = ()


class KickoffFinished(Event):
    usage: Usage
    ok: bool
    error: str | None = None


class TaskStarted(Event):
    task: str
    agent: str


class TaskFinished(Event):
    task: str
    agent: str
    ok: bool
    attempts: int
    usage: Usage
    error: str | None = None


class AttemptStarted(Event):
    task: str
    attempt: int


class AttemptFailed(Event):
    task: str
    attempt: int
    reason: str


class LLMCallFinished(Event):
    record: UsageRecord
    error: str | None = None


class ToolCalled(Event):
    task: str | None
    attempt: int | None
    tool: str
    ok: bool
    error: str | None = None


class GuardrailChecked(Event):
    task: str
    attempt: int
    guardrail: str
    passed: bool
    feedback: str | None = None


class BudgetReserved(Event):
    budget: str
    cost: str
    tokens: int
    requests: int


class BudgetExceeded(Event):
    budget: str
    message: str


class TextDelta(Event):
    """A piece of a streamed reply's text, as it arrived (``crew.stream``/``astream``).

    ``task`` is the task's name, ``agent`` the role, ``attempt`` 1-based and ``purpose`` the
    request's (``agent``, ``conversion``, ...): the deltas of one attempt's agent requests,
    concatenated, are the text of that attempt's replies.
    """

    task: str | None
    agent: str | None
    attempt: int | None
    purpose: str
    text: str


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Any]

_lock = threading.Lock()
_handlers: dict[type[Event], tuple[Handler, ...]] = {}


def on(event_type: type[E]) -> Callable[[Callable[[E], Any]], Callable[[E], Any]]:
    """Register a process-wide handler for ``event_type`` and its subclasses."""

    def register(handler: Callable[[E], Any]) -> Callable[[E], Any]:
        with _lock:
            _handlers[event_type] = (*_handlers.get(event_type, ()), handler)
        return handler

    return register


def off(event_type: type[Event], handler: Handler) -> None:
    """Remove a handler registered with ``on``; removing an unknown one is a no-op."""
    with _lock:
        remaining = tuple(h for h in _handlers.get(event_type, ()) if h is not handler)
        if remaining:
            _handlers[event_type] = remaining
        else:
            _handlers.pop(event_type, None)


_run_listeners: ContextVar[tuple[Handler, ...]] = ContextVar("crewline_listeners", default=())


@contextmanager
def run_listeners(listeners: Sequence[Handler]) -> Iterator[None]:
    """Make ``listeners`` receive every event emitted in this context (one kickoff's)."""
    token = _run_listeners.set(tuple(listeners))
    try:
        yield
    finally:
        _run_listeners.reset(token)


def listening() -> bool:
    """Whether any handler would receive an event (lets the engine skip building one)."""
    return bool(_handlers) or bool(_run_listeners.get())


def emit(event: Event) -> None:
    """Deliver ``event`` to matching process-wide handlers, then to the run's listeners."""
    snapshot = _handlers
    targets: list[Handler] = []
    for cls in type(event).__mro__:
        targets.extend(snapshot.get(cls, ()))
    targets.extend(_run_listeners.get())
    for handler in targets:
        try:
            handler(event)
        except Exception:
            _log.exception("crewline event handler %r failed on %s", handler,
                           type(event).__name__)
