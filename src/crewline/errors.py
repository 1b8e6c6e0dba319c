"""The exception tree of crewline.

Every exception that leaves a run is a ``CrewlineError`` and carries what the run spent
before it failed, so a failure never hides money::

    CrewlineError                  .usage, .usage_records, .other_errors
    ├── DefinitionError            a crew, agent or task that cannot run as defined
    ├── InputError                 a {placeholder} with no input, a bad input value
    ├── ProviderError              the LLM provider failed (.model, .status, .retryable)
    ├── BudgetExceededError        a reservation did not fit a budget (.budget, .asked, .left)
    ├── GuardrailError             guardrail retries exhausted (.feedback, .attempts)
    ├── ConversionError            no attempt's reply became the requested model (.attempts)
    ├── MaxIterationsError         an agent's tool loop ran past max_iter
    ├── CallbackError              a task callback or guardrail raised (.output)
    └── WorkerLostError            the worker process running a kickoff died (.index, .worker)

Every one of them pickles with its fields and its usage records, so an error raised on a
worker process reaches the driver with its type and what was spent (``CrewlineError``
implements ``__reduce__`` once, for every subclass).

Cancellation is the one exception to the rule: an ``asyncio.CancelledError`` is never
converted (asyncio and anyio rely on its exact type), but the one re-raised out of a
cancelled ``kickoff_async`` carries ``.usage`` and ``.usage_records`` all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crewline._accounting.usage import Usage, UsageRecord

__all__ = [
    "BudgetExceededError",
    "CallbackError",
    "ConversionError",
    "CrewlineError",
    "DefinitionError",
    "GuardrailError",
    "InputError",
    "MaxIterationsError",
    "ProviderError",
    "WorkerLostError",
]


class CrewlineError(Exception):
    """Root of every error crewline raises.

    ``usage_records`` is everything the failing kickoff spent before it failed; ``usage`` is
    their sum. ``other_errors`` holds further failures of concurrent tasks of the same run.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage_records: tuple[UsageRecord, ...] = ()
        self.other_errors: tuple[BaseException, ...] = ()

    @property
    def usage(self) -> Usage:
        from crewline._accounting.usage import Usage

        return Usage.from_records(self.usage_records)

    def attach_spend(self, records: Sequence[UsageRecord]) -> None:
        """Record what the run spent; called by the engine as the error leaves a run."""
        self.usage_records = tuple(records)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuild from the class, ``args`` and the instance's attributes, without calling
        ``__init__``: Exception's own reduce calls ``cls(*args)``, which cannot pass the
        keyword-only fields of ``ProviderError`` and the like, and a subclass added later
        with any signature needs no code of its own to cross a process boundary."""
        return _restore_error, (type(self), self.args, dict(self.__dict__))


def _restore_error(cls: type[CrewlineError], args: tuple[Any, ...],
                   state: dict[str, Any]) -> CrewlineError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class DefinitionError(CrewlineError):
    """A crew, agent or task definition that cannot run."""


class InputError(CrewlineError, KeyError):
    """A template placeholder without an input, or an input that cannot be used."""

    def __init__(self, message: str, *, placeholder: str | None = None,
                 where: str | None = None) -> None:
        CrewlineError.__init__(self, message)
        self.placeholder = placeholder
        self.where = where

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.message


class ProviderError(CrewlineError):
    """The LLM provider answered with an error, or could not be reached.

    ``kind`` says what failed: ``"auth"`` (a key refused, or none to send), ``"connection"``
    (no connection, or one that broke), ``"timeout"``, ``"rate_limit"`` (429),
    ``"malformed"`` (a reply crewline cannot read), ``"status"`` (any other HTTP error
    status, in ``status``) or ``"error"``. ``status`` is the HTTP status the provider
    answered, ``None`` when no answer came.

    ``sent`` is ``False`` only when the request certainly never reached a server: missing
    credentials the SDK refused before sending, a refused connection, a name that did not
    resolve. Such a request cannot have been served or billed, so the engine need not
    count it as a failed request sent. When in doubt (a connection broken mid-request, a
    timeout while reading) it is ``True``.

    ``mid_stream`` is ``True`` when the error broke off a streamed reply the provider had
    begun to send: it accepted the request and generated output, which it bills, so the
    engine charges such a try its full budget hold instead of releasing it.
    """

    def __init__(self, message: str, *, model: str, status: int | None = None,
                 retryable: bool = False, retry_after: float | None = None,
                 kind: str = "error", sent: bool = True, mid_stream: bool = False) -> None:
        super().__init__(message)
        self.model = model
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind = kind
        self.sent = sent
        self.mid_stream = mid_stream


class BudgetExceededError(CrewlineError):
    """A request's worst-case cost did not fit a budget, so it was never sent."""

    def __init__(self, message: str, *, budget: str, dimension: str = "cost",
                 asked: Decimal | int = 0, left: Decimal | int = 0,
                 limit: Decimal | int = 0) -> None:
        super().__init__(message)
        self.budget = budget
        self.dimension = dimension
        self.asked = asked
        self.left = left
        self.limit = limit


class GuardrailError(CrewlineError):
    """A task's guardrails rejected every attempt the retry budget allowed."""

    def __init__(self, message: str, *, task: str, feedback: Any = None,
                 attempts: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.task = task
        self.feedback = feedback
        self.attempts = tuple(attempts)


class ConversionError(CrewlineError):
    """A reply could not be parsed into the task's output model."""

    def __init__(self, message: str, *, task: str, raw: str = "",
                 attempts: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.task = task
        self.raw = raw
        self.attempts = tuple(attempts)


class MaxIterationsError(CrewlineError):
    """An agent kept calling tools past its ``max_iter`` turns."""


class CallbackError(CrewlineError):
    """A task callback or a guardrail raised; the task's output (if any) is kept."""

    def __init__(self, message: str, *, output: Any = None) -> None:
        super().__init__(message)
        self.output = output


class WorkerLostError(CrewlineError):
    """The worker process running a kickoff of a batch died before the kickoff ended.

    ``usage_records`` holds what the kickoff's requests spent up to the last record the
    worker streamed back: requests it completed still count. ``index`` is the kickoff's
    position in the batch's inputs; ``worker`` names the lost worker.
    """

    def __init__(self, message: str, *, index: int | None = None,
                 worker: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.worker = worker
