"""Sending one chat request: the ``Transport`` protocol and its litellm implementation.

This is the only module that talks to litellm's request functions. It imports litellm
lazily (``import litellm`` costs seconds and ~165 MB), once, under a lock, and it
deliberately leaves litellm's process-global state alone:

* no ``callbacks=``, no ``input_cost_per_token=`` (both register globally; usage and cost
  are read from each response instead);
* ``max_retries=0``: the SDK under litellm would otherwise retry where nobody sees it;
  crewline owns retries so every attempt is recorded;
* at import, litellm would load a ``.env`` file from the working directory into
  ``os.environ`` and print provider banners. An application embedding crewline owns its
  environment, so crewline imports litellm with ``LITELLM_MODE=PRODUCTION`` unless the
  application set ``LITELLM_MODE`` itself, and sets ``litellm.suppress_debug_info``;
* once, right after that import, ``gc.freeze()`` moves the objects alive then (litellm's
  ~300k) out of the garbage collector's generations, so full collections stop re-walking
  them; ``CREWLINE_GC_FREEZE=0`` turns that off.
"""

from __future__ import annotations

import gc
import os
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from crewline.errors import ProviderError

__all__ = ["ChatResponse", "LiteLLMTransport", "ToolCallRequest", "Transport", "litellm_module"]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """The parts of a chat completion the engine uses, with the usage the provider reported."""

    content: str | None
    tool_calls: tuple[ToolCallRequest, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: str | None = None
    usage_reported: bool = True


@runtime_checkable
class Transport(Protocol):
    """Sends one request (litellm-style keyword arguments) and returns the reply.

    Raises ``ProviderError`` for every failure, with ``retryable`` set for the ones worth
    retrying (429, 5xx, timeouts, connection errors).
    """

    def complete(self, request: dict[str, Any]) -> ChatResponse: ...

    async def acomplete(self, request: dict[str, Any]) -> ChatResponse: ...


_import_lock = threading.Lock()
_litellm: ModuleType | None = None


def litellm_imported() -> bool:
    return _litellm is not None


def litellm_module() -> ModuleType:
    """litellm, imported once on first use (see the module docstring for what is set)."""
    global _litellm
    if _litellm is not None:
        return _litellm
    with _import_lock:
        if _litellm is None:
            set_mode = "LITELLM_MODE" not in os.environ
            if set_mode:
                os.environ["LITELLM_MODE"] = "PRODUCTION"
            try:
                import litellm
            finally:
                if set_mode:
                    os.environ.pop("LITELLM_MODE", None)
            litellm.suppress_debug_info = True
            if os.environ.get("CREWLINE_GC_FREEZE", "1") != "0":
                # litellm leaves ~300k long-lived objects; every full collection would walk
                # them again. Frozen once, they stay out of the collector's way (measured:
                # fan-out of 1000 crews from 1.08x to 1.01x of bare litellm).
                gc.collect()
                gc.freeze()
            _litellm = litellm
    return _litellm


_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def _retry_after(exc: BaseException) -> float | None:
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def provider_error(exc: Exception, *, model: str, secret: str | None = None) -> ProviderError:
    """Translate a litellm/SDK exception into a ``ProviderError`` naming model and status."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        status = None
    name = type(exc).__name__
    text = str(getattr(exc, "message", None) or exc).strip()
    if secret:
        text = text.replace(secret, "***")
    kind = "error"
    if "should inherit from BaseModel" in text:
        # The openai SDK's lazy model race on concurrent first responses, seen elsewhere:
        # a client-side fault on a good response, so the request is worth retrying.
        kind, retryable = "client", True
    elif "Timeout" in name or "timed out" in text.lower():
        kind, retryable = "timeout", True
    elif "Connection" in name:
        kind, retryable = "connection", True
    elif status is not None:
        retryable = status in _RETRYABLE_STATUS
    else:
        retryable = False
    where = f"status {status}" if status is not None else kind
    message = f"model {model!r}: provider request failed ({where}): {text[:500]}"
    return ProviderError(message, model=model, status=status, retryable=retryable,
                         retry_after=_retry_after(exc), kind=kind)


def _read(response: Any) -> ChatResponse:
    choice = response.choices[0]
    message = choice.message
    calls = tuple(
        ToolCallRequest(id=str(c.id), name=str(c.function.name),
                        arguments=str(c.function.arguments or "{}"))
        for c in (getattr(message, "tool_calls", None) or ())
    )
    usage = getattr(response, "usage", None)
    if usage is None:
        return ChatResponse(content=message.content, tool_calls=calls,
                            finish_reason=choice.finish_reason, usage_reported=False)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return ChatResponse(
        content=message.content,
        tool_calls=calls,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cached_prompt_tokens=int(getattr(prompt_details, "cached_tokens", 0) or 0),
        reasoning_tokens=int(getattr(completion_details, "reasoning_tokens", 0) or 0),
        finish_reason=choice.finish_reason,
    )


class LiteLLMTransport:
    """The default transport: ``litellm.completion`` / ``litellm.acompletion``."""

    def complete(self, request: dict[str, Any]) -> ChatResponse:
        litellm = litellm_module()
        try:
            response = litellm.completion(**request)
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        else:
            return _read(response)
        raise error  # outside the except block: the SDK's exception (and key) is not chained

    async def acomplete(self, request: dict[str, Any]) -> ChatResponse:
        litellm = litellm_module()
        try:
            response = await litellm.acompletion(**request)
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        else:
            return _read(response)
        raise error  # outside the except block: the SDK's exception (and key) is not chained


DEFAULT_TRANSPORT = LiteLLMTransport()
