"""The I/O a task step asks its driver to perform.

The task core (``calls``, ``turns``, ``attempts``) is written as generators that yield
these effects and receive their results, the way h11 keeps HTTP logic free of sockets.
A driver performs each effect with its own kind of I/O and sends back the result, or
throws the exception the effect raised into the generator. No retry, usage, budget or
guardrail logic lives in a driver, so the sync and asyncio paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from crewline.transport.litellm import ChatResponse, Transport

__all__ = ["Call", "Effect", "Send", "Sleep", "Step"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Send:
    """Send one chat request through ``transport``; result: ``ChatResponse``."""

    transport: Transport
    request: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """Call user code (a tool, guardrail or callback), sync or async; result: its return."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait without holding anything (retry backoff, rate limits); result: None."""

    seconds: float


Effect = Send | Call | Sleep
Step = Generator[Effect, Any, T]
"""A piece of task logic that yields effects and finally returns a ``T``."""

_ = ChatResponse  # re-exported for drivers' type hints
