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

import functools
import gc
import os
import socket
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from crewline.errors import DefinitionError, ProviderError

__all__ = ["ChatResponse", "LiteLLMTransport", "ToolCallRequest", "Transport", "check_route",
           "litellm_module", "provider_error"]


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
    response_model: str | None = None
    """The model the provider says answered (for tracing; ``None`` when not reported)."""
    response_id: str | None = None


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


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from or during, outermost first.

    litellm wraps every failure in an exception of its own (a missing key and a refused
    connection both become ``InternalServerError`` with status 500); the SDK's and the
    socket's exceptions underneath say what really happened.
    """
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in out):
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _http_status(chain: list[BaseException]) -> int | None:
    """The status an HTTP server actually answered, if an exception below litellm's has it."""
    import httpx
    import openai

    for exc in chain:
        if isinstance(exc, httpx.HTTPStatusError):
            return exc.response.status_code
        if (isinstance(exc, openai.APIStatusError)
                and not type(exc).__module__.startswith("litellm")):
            return exc.status_code
    return None


def _classify(exc: Exception) -> tuple[str, int | None, bool, bool]:
    """``(kind, status, retryable, sent)`` from the exception *types* in ``exc``'s chain."""
    import json

    import httpx
    import openai

    chain = _chain(exc)
    answered = _http_status(chain)

    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(e, types) for e in chain)

    if has(openai.APITimeoutError, httpx.TimeoutException, TimeoutError):
        return "timeout", None, True, not has(httpx.ConnectTimeout)
    if any(type(e) is openai.OpenAIError for e in chain):
        # The SDK's bare base class is what it raises while building a client, before any
        # request: missing credentials (or a credential setup it cannot use).
        return "auth", None, False, False
    if answered is None and has(openai.APIConnectionError, httpx.TransportError,
                                ConnectionError):
        refused = has(httpx.ConnectError, ConnectionRefusedError, socket.gaierror)
        return "connection", None, True, not refused
    if has(openai.AuthenticationError, openai.PermissionDeniedError):
        # With no HTTP answer underneath, litellm refused before sending (a provider whose
        # key it checks itself, e.g. a missing ANTHROPIC_API_KEY).
        return "auth", answered, False, answered is not None
    if has(openai.RateLimitError) or answered == 429:
        return "rate_limit", 429, True, True
    if answered is None and (has(json.JSONDecodeError, openai.APIResponseValidationError)
                             or any(type(e).__name__ == "APIError"
                                    and type(e).__module__.startswith("litellm")
                                    for e in chain[1:])):
        # The server answered, but not with a chat completion litellm could read.
        return "malformed", None, True, True
    status = answered
    if status is None:
        raw = getattr(exc, "status_code", None)
        status = raw if isinstance(raw, int) else None
    if status is not None:
        return "status", status, status in _RETRYABLE_STATUS, True
    return "error", None, False, True


def provider_error(exc: Exception, *, model: str, secret: str | None = None) -> ProviderError:
    """Translate a litellm/SDK exception into a ``ProviderError`` naming model and cause.

    The kind is read from exception types, never from message text (messages change from
    one litellm release to the next); the one exception is the SDK's lazy-model race below.
    A key echoed back in the message is masked as a whole token.
    """
    from crewline.log import mask_secrets

    text = mask_secrets(str(getattr(exc, "message", None) or exc).strip(), [secret])
    if "should inherit from BaseModel" in text:
        # The openai SDK's lazy model race on concurrent first responses, seen elsewhere:
        # a client-side fault on a good response, so the request is worth retrying.
        kind, status, retryable, sent = "client", None, True, True
    else:
        kind, status, retryable, sent = _classify(exc)
    where = f"status {status}" if status is not None else kind
    if not sent:
        where += ", never sent"
    message = f"model {model!r}: provider request failed ({where}): {text[:500]}"
    return ProviderError(message, model=model, status=status, retryable=retryable,
                         retry_after=_retry_after(exc), kind=kind, sent=sent)


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _read(response: Any, *, model: str) -> ChatResponse:
    """The reply's parts, its token counts handed through as reported.

    litellm fills a missing ``usage`` with zeros, and every real request has a prompt, so
    0 prompt tokens means the provider reported no usage (``usage_reported=False``).
    Negative or absurd counts are passed on unchanged: judging them is the engine's job.
    """
    choices = getattr(response, "choices", None)
    if not choices:
        raise ProviderError(
            f"model {model!r}: provider request failed (malformed): the reply had no choices",
            model=model, retryable=True, kind="malformed")
    choice = choices[0]
    message = choice.message
    calls = tuple(
        ToolCallRequest(id=str(c.id), name=str(c.function.name),
                        arguments=str(c.function.arguments or "{}"))
        for c in (getattr(message, "tool_calls", None) or ())
    )
    usage = getattr(response, "usage", None)
    prompt = _count(getattr(usage, "prompt_tokens", 0))
    if usage is None or prompt == 0:
        return ChatResponse(content=message.content, tool_calls=calls,
                            completion_tokens=_count(getattr(usage, "completion_tokens", 0)),
                            finish_reason=choice.finish_reason, usage_reported=False,
                            response_model=_text(response, "model"),
                            response_id=_text(response, "id"))
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return ChatResponse(
        content=message.content,
        tool_calls=calls,
        prompt_tokens=prompt,
        completion_tokens=_count(getattr(usage, "completion_tokens", 0)),
        cached_prompt_tokens=_count(getattr(prompt_details, "cached_tokens", 0)),
        reasoning_tokens=_count(getattr(completion_details, "reasoning_tokens", 0)),
        finish_reason=choice.finish_reason,
        response_model=_text(response, "model"),
        response_id=_text(response, "id"),
    )


def _text(response: Any, name: str) -> str | None:
    value = getattr(response, name, None)
    return value if isinstance(value, str) and value else None


@functools.lru_cache(maxsize=1024)
def _route_problem(model: str, api_base: str | None) -> str | None:
    try:
        litellm_module().get_llm_provider(model, api_base=api_base)
    except Exception as exc:
        return type(exc).__name__
    return None


def check_route(model: str, api_base: str | None = None) -> None:
    """Raise ``DefinitionError`` if litellm cannot tell which provider serves ``model``.

    litellm would refuse such a request only when sending it, as a status-400 error that
    looks like the provider's; asked here, once per model, it is a definition problem
    named as such before anything is held or sent.
    """
    if _route_problem(model, api_base) is not None:
        raise DefinitionError(
            f"model {model!r}: litellm cannot tell which provider serves it; name the "
            f"provider as 'provider/model' (e.g. 'openai/{model}' for an OpenAI-compatible "
            "server at base_url)")


class LiteLLMTransport:
    """The default transport: ``litellm.completion`` / ``litellm.acompletion``."""

    def complete(self, request: dict[str, Any]) -> ChatResponse:
        litellm = litellm_module()
        try:
            response = litellm.completion(**request)
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        else:
            return _read(response, model=request["model"])
        raise error  # outside the except block: the SDK's exception (and key) is not chained

    async def acomplete(self, request: dict[str, Any]) -> ChatResponse:
        litellm = litellm_module()
        try:
            response = await litellm.acompletion(**request)
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        else:
            return _read(response, model=request["model"])
        raise error  # outside the except block: the SDK's exception (and key) is not chained


DEFAULT_TRANSPORT = LiteLLMTransport()
