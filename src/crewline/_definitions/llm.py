"""The ``LLM`` definition: which model, where, at what price, under which rate limits.

An ``LLM`` holds no usage. The same object may serve any number of concurrent crews; the
only state it carries is its rate limiter, which is meant to be shared by everything that
uses that object (``max_rpm`` / ``max_tpm`` are per ``LLM`` object in the process).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    field_serializer,
    field_validator,
)

from crewline._definitions.base import RateLimitedDefinition
from crewline.transport.openai import TransportChoice, uses_direct

if TYPE_CHECKING:
    from crewline.transport.litellm import Transport

__all__ = ["LLM", "to_decimal"]


def to_decimal(value: Decimal | str | float | int, *, field: str) -> Decimal:
    """A price as an exact Decimal: a float goes through its shortest repr (0.1 -> 0.1)."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected a number, got a bool")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{field}: {value!r} is not a finite number")
        result = Decimal(repr(value))
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except ArithmeticError:
            raise ValueError(f"{field}: {value!r} is not a decimal number") from None
    else:
        raise ValueError(f"{field}: expected a Decimal, str or float, got {type(value).__name__}")
    if not result.is_finite() or result < 0:
        raise ValueError(f"{field}: {value!r} must be a finite number >= 0")
    return result


class LLM(RateLimitedDefinition):
    """A model reached through litellm. Frozen: running work never changes it."""

    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key: SecretStr | None = Field(default=None, repr=False)
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    num_retries: int = Field(default=2, ge=0)
    retry_backoff: float = Field(default=0.5, ge=0)
    """First retry waits about this many seconds, doubling each time (with jitter)."""
    input_cost_per_token: Decimal | None = None
    output_cost_per_token: Decimal | None = None
    reserve_output_tokens: int = Field(default=4096, gt=0)
    """Output a budget reservation assumes when ``max_tokens`` is not set."""
    transport: Transport | TransportChoice | None = Field(default=None, exclude=True, repr=False)
    """Where requests go. ``None`` or ``"auto"``: the direct openai-SDK transport for
    ``openai/...`` models (any OpenAI-compatible ``base_url``), litellm for the rest;
    ``"litellm"``: litellm for everything; ``"openai"``: the direct transport whatever the
    name; or a ``Transport`` object (tests pass ``crewline.testing`` models)."""

    _routed: bool = PrivateAttr(default=False)
    """litellm has routed this model (``check_route``): it is not asked again."""

    @field_validator("input_cost_per_token", "output_cost_per_token", mode="before")
    @classmethod
    def _exact_price(cls, value: Any, info: Any) -> Decimal | None:
        if value is None:
            return None
        return to_decimal(value, field=str(info.field_name))

    @field_serializer("api_key")
    def _hide_key(self, value: SecretStr | None) -> str | None:
        return None if value is None else "**********"

    def check_route(self) -> None:
        """Refuse (``DefinitionError``) a model litellm cannot route, before any request.

        Not checked at construction: asking litellm means importing it (seconds), and a
        definition is often built at import time. A custom ``transport`` routes itself, and
        the direct transport sends the name as given to a server that speaks the API.
        """
        if not self.uses_litellm():
            return
        private = self.__pydantic_private__
        if private is not None and private.get("_routed"):
            return  # litellm routed this (frozen) model and base_url already
        from crewline.transport.litellm import check_route

        check_route(self.model, self.base_url)
        if private is not None:
            private["_routed"] = True

    def uses_litellm(self) -> bool:
        """Whether this LLM's requests go through litellm (which must then be imported)."""
        choice = self.transport
        if choice is None:
            return not uses_direct(self.model, "auto")
        if isinstance(choice, str):
            return not uses_direct(self.model, choice)
        return False


def _rebuild() -> None:
    from crewline.transport.litellm import Transport

    LLM.model_rebuild(_types_namespace={"Transport": Transport})


_rebuild()
