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
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

from crewline._accounting.usage import Usage, UsageRecord

__all__ = [
    "AttemptFailed",
    "AttemptFinished",
    "AttemptStarted",
    "BudgetExceeded",
    "BudgetReserved",
    "DelegationFinished",
    "DelegationStarted",
    "Event",
    "GuardrailChecked",
    "KickoffFinished",
    "KickoffStarted",
    "LLMCallFinished",
    "LLMCallNotSent",
    "LLMCallStarted",
    "TaskFinished",
    "TaskStarted",
    "TextDelta",
    "ToolCalled",
    "ToolStarted",
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
    agent: str | None = None
    """The role working the attempt."""


class AttemptFailed(Event):
    task: str
    attempt: int
    reason: str


class AttemptFinished(Event):
    """An attempt ended: accepted (``ok``), rejected, or raised.

    Emitted in the context the matching ``AttemptStarted`` was, so a listener can end
    there whatever it began (a tracing span made current, for one).
    """

    task: str
    attempt: int
    agent: str | None = None
    ok: bool
    error: str | None = None
    error_type: str | None = None
    """``"guardrail"``, ``"conversion"``, or the name of the exception raised."""


class LLMCallStarted(Event):
    """One try at an LLM request is about to be sent (after its budget holds).

    Every ``LLMCallStarted`` is followed, in the same context, by an ``LLMCallFinished``
    (the try is on record: ok, error or cancelled) or an ``LLMCallNotSent``.
    """

    task: str | None = None
    attempt: int | None = None
    agent: str | None = None
    purpose: str
    model: str
    messages: Any = None
    """The request's messages as sent (a list of dicts); read, never modify."""


class LLMCallFinished(Event):
    record: UsageRecord
    error: str | None = None
    error_type: str | None = None
    """The ``ProviderError.kind`` of a failed try, ``"cancelled"`` for one cut off."""
    response: Any = None
    """The ``ChatResponse`` of a successful try."""


class LLMCallNotSent(Event):
    """A try that never left this process (see ``ProviderError.sent``): on no record."""

    error: str
    error_type: str


class ToolStarted(Event):
    """A tool call the model asked for is about to run; ``ToolCalled`` ends it."""

    task: str | None
    attempt: int | None
    tool: str
    call_id: str | None = None
    arguments: str | None = None


class ToolCalled(Event):
    task: str | None
    attempt: int | None
    tool: str
    ok: bool
    error: str | None = None
    result: str | None = None
    """What the model was given back."""


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


class DelegationStarted(Event):
    """An agent handed a piece of its task to a coworker (``depth`` 1 is first-level).

    Emitted in the coworker's own context, before its first request, so a listener that
    opens a span here parents every request the coworker makes."""

    task: str
    by: str
    to: str
    depth: int


class DelegationFinished(Event):
    """The coworker's piece ended: ``usage`` is the coworker's own requests (and those of
    anyone it delegated to in turn), ``ok`` False when it failed (``error`` says how)."""

    task: str
    by: str
    to: str
    depth: int
    ok: bool
    usage: Usage
    error: str | None = None


class TextDelta(Event):
    """A piece of a streamed reply's text, as it arrived (``crew.stream``/``astream``).

    ``task`` is the task's name, ``agent`` the role, ``attempt`` 1-based and ``purpose`` the
    request's (``agent``, ``conversion``, ...): the deltas of one attempt's agent requests,
    concatenated, are the text of that attempt's replies.

    ``retry`` is 0 for a request's first try. A stream the provider breaks off mid-way is
    retried from the start, its text coming again with ``retry`` one higher: a consumer
    showing text live starts that request's text over when ``retry`` changes, and the text
    of the last retry is the one in the output.
    """

    task: str | None
    agent: str | None
    attempt: int | None
    purpose: str
    text: str
    retry: int = 0


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Any]


_Layout = tuple[tuple[str, Any, Callable[[], Any] | None], ...]


def _layout(event_type: type[Event]) -> _Layout:
    return tuple((name, field.default, field.default_factory)  # type: ignore[misc]
                 for name, field in event_type.model_fields.items())


_LAYOUTS: dict[type[Event], _Layout] = {cls: _layout(cls) for cls in (
    KickoffStarted, KickoffFinished, TaskStarted, TaskFinished, AttemptStarted, AttemptFailed,
    AttemptFinished, LLMCallStarted, LLMCallFinished, LLMCallNotSent, ToolStarted, ToolCalled,
    GuardrailChecked, BudgetReserved, BudgetExceeded, DelegationStarted, DelegationFinished,
    TextDelta)}
"""Each event type's fields in order, with their defaults, made once at import."""


def make(event_type: type[E], /, **values: Any) -> E:
    """``event_type(**values)`` for the engine's own events (internal).

    The engine fills every field from values of the declared types, so validating them again
    is pure cost, and on the way to a request it is not a small one: a pydantic validation
    run with cold caches (the process has just been waiting on the network) takes tens of
    microseconds, for each event before a streamed request is sent and for each delta.
    The event is built as ``model_construct`` builds one; a test checks that every event
    of full kickoffs validates to itself. A type without a known layout is validated."""
    layout = _LAYOUTS.get(event_type)
    if layout is None:
        return event_type(**values)
    data: dict[str, Any] = {}
    for name, default, factory in layout:
        if name in values:
            data[name] = values[name]
        elif factory is not None:
            data[name] = factory()
        elif default is PydanticUndefined:
            raise TypeError(f"{event_type.__name__} needs {name!r} (engine bug)")
        else:
            data[name] = default
    unknown = values.keys() - data.keys()
    if unknown:
        raise TypeError(f"{event_type.__name__} has no field(s) {sorted(unknown)} (engine bug)")
    return _built(event_type, data, set(values))


def _built(event_type: type[E], data: dict[str, Any], given: set[str]) -> E:
    event = event_type.__new__(event_type)
    object.__setattr__(event, "__dict__", data)
    object.__setattr__(event, "__pydantic_fields_set__", given)
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


class TextDeltas:
    """Makes the ``TextDelta`` events of one request (internal): ``make``'s work on the
    fields they share (all but ``text`` and ``at``) is done once, not for every delta."""

    __slots__ = ("_given", "_template")

    def __init__(self, **fixed: Any) -> None:
        first = make(TextDelta, **fixed, text="")
        self._template = first.__dict__
        self._given = frozenset(first.__pydantic_fields_set__)

    def __call__(self, text: str) -> TextDelta:
        data = self._template.copy()  # the fields in their declared order
        data["at"] = _now()
        data["text"] = text
        return _built(TextDelta, data, set(self._given))


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


class run_listeners:
    """Make ``listeners`` receive every event emitted in this context (one kickoff's)."""

    __slots__ = ("_listeners", "_token")

    def __init__(self, listeners: Sequence[Handler]) -> None:
        self._listeners = tuple(listeners)

    def __enter__(self) -> None:
        self._token = _run_listeners.set(self._listeners)

    def __exit__(self, *exc: object) -> None:
        _run_listeners.reset(self._token)


def listening() -> bool:
    """Whether any handler would receive an event (lets the engine skip building one)."""
    return bool(_handlers) or bool(_run_listeners.get())


def emit(event: Event) -> None:
    """Deliver ``event`` to matching process-wide handlers, then to the run's listeners."""
    snapshot = _handlers
    targets: Sequence[Handler]
    if snapshot:
        found: list[Handler] = []
        for cls in type(event).__mro__:
            found.extend(snapshot.get(cls, ()))
        found.extend(_run_listeners.get())
        targets = found
    else:
        targets = _run_listeners.get()
    for handler in targets:
        try:
            handler(event)
        except Exception:
            _log.exception("crewline event handler %r failed on %s", handler,
                           type(event).__name__)
