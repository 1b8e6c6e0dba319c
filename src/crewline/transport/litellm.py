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

import contextlib
import functools
import gc
import os
import socket
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from crewline.errors import DefinitionError, ProviderError

__all__ = ["ChatResponse", "LiteLLMTransport", "StreamingTransport", "ToolCallRequest",
           "Transport", "check_route", "litellm_module", "provider_error"]


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


@runtime_checkable
class StreamingTransport(Transport, Protocol):
    """A transport that can stream: the same request (with ``stream=True``), each piece of
    text handed to ``on_delta`` as it arrives, and the same ``ChatResponse`` at the end,
    assembled from the chunks, with ``usage_reported`` true only if the provider itself
    sent usage. An exception ``on_delta`` raises (the consumer went away) closes the
    connection and propagates unchanged. A transport without these methods still works
    in a streamed kickoff: its whole reply is one delta."""

    def stream(self, request: dict[str, Any], on_delta: Callable[[str], None]
               ) -> ChatResponse: ...

    async def astream(self, request: dict[str, Any],
                      on_delta: Callable[[str], Awaitable[None]]) -> ChatResponse: ...


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


def provider_error(exc: Exception, *, model: str, secret: str | None = None,
                   mid_stream: bool = False) -> ProviderError:
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
                         retry_after=_retry_after(exc), kind=kind, sent=sent,
                         mid_stream=mid_stream)


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


_IN_STORE: dict[type, bool] = {}
"""Per chunk class: is its ``usage`` only ever in the pydantic stores? (A cache: the answer
depends on the class alone, so threads that race to fill it write the same value.)"""


def _usage_in_store(kind: type) -> bool:
    known = _IN_STORE.get(kind)
    if known is None:
        known = _IN_STORE[kind] = (hasattr(kind, "__pydantic_fields__")
                                   and not hasattr(kind, "usage"))
    return known


def _usage_of(chunk: Any) -> Any:
    """``getattr(chunk, "usage", None)``, without its cost on a pydantic chunk that lacks it.

    litellm deletes ``usage`` from every streamed chunk but the one that carries it, and a
    pydantic model asked for a missing attribute formats and raises an ``AttributeError``
    in its ``__getattr__``: 4-5 us a chunk warm, several times that with cold caches. On a
    pydantic model whose class has no ``usage`` attribute of its own, the value can only be
    a field's (in the instance ``__dict__``) or an extra's (in ``__pydantic_extra__``, where
    litellm keeps it), so it is read from those; any other object is asked as usual.
    """
    if not _usage_in_store(type(chunk)):
        return getattr(chunk, "usage", None)
    fields = chunk.__dict__
    if "usage" in fields:
        return fields["usage"]
    extra = chunk.__pydantic_extra__
    return extra.get("usage") if extra else None


class _Assembly:
    """A streamed reply put back together: text, tool calls by index, finish, usage."""

    __slots__ = ("calls", "finish", "text", "usage")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, list[str]] = {}
        self.finish: str | None = None
        self.usage: Any = None

    def add(self, chunk: Any) -> str | None:
        """Take in one chunk; return its text, if any."""
        usage = _usage_of(chunk)
        if usage is not None:
            self.usage = usage
        choices = getattr(chunk, "choices", None)
        if not choices:
            return None
        choice = choices[0]
        if getattr(choice, "finish_reason", None):
            self.finish = choice.finish_reason
        delta = getattr(choice, "delta", None)
        if delta is None:
            return None
        for call in getattr(delta, "tool_calls", None) or ():
            index = int(getattr(call, "index", 0) or 0)
            parts = self.calls.setdefault(index, ["", "", ""])
            function = getattr(call, "function", None)
            if getattr(call, "id", None):
                parts[0] = str(call.id)
            if function is not None:
                if getattr(function, "name", None):
                    parts[1] = str(function.name)
                parts[2] += str(getattr(function, "arguments", None) or "")
        text = getattr(delta, "content", None)
        if text:
            self.text.append(str(text))
            return str(text)
        return None

    def response(self, provider_usage: bool) -> ChatResponse:
        """The reply; its usage counts only if the provider sent it (``provider_usage``)."""
        calls = tuple(ToolCallRequest(id=i, name=n, arguments=a or "{}")
                      for i, n, a in (self.calls[k] for k in sorted(self.calls)))
        content = "".join(self.text) if self.text or not calls else None
        usage = self.usage if provider_usage else None
        prompt = _count(getattr(usage, "prompt_tokens", 0))
        if usage is None or prompt == 0:
            return ChatResponse(content=content, tool_calls=calls,
                                completion_tokens=_count(getattr(usage, "completion_tokens", 0)),
                                finish_reason=self.finish, usage_reported=False)
        prompt_details = getattr(usage, "prompt_tokens_details", None)
        completion_details = getattr(usage, "completion_tokens_details", None)
        return ChatResponse(
            content=content, tool_calls=calls, prompt_tokens=prompt,
            completion_tokens=_count(getattr(usage, "completion_tokens", 0)),
            cached_prompt_tokens=_count(getattr(prompt_details, "cached_tokens", 0)),
            reasoning_tokens=_count(getattr(completion_details, "reasoning_tokens", 0)),
            finish_reason=self.finish)


def read_stream(chunks: Iterable[Any], on_delta: Callable[[str], None],
                request: dict[str, Any], close: Callable[[], None]) -> _Assembly:
    """Read a streamed reply to its end, each text delta to ``on_delta`` as it comes.

    A failure while reading is the provider's: a ``ProviderError`` with ``mid_stream`` set
    (it had begun the reply). Leaving before the end for any reason (that, or ``on_delta``
    raising because the stream was closed) calls ``close``, so the provider sees the
    client go. Shared by every transport that streams; ``aread_stream`` is its async twin.
    """
    assembly, error, finished = _Assembly(), None, False
    try:
        iterator = iter(chunks)
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                break
            except Exception as exc:
                error = provider_error(exc, model=request["model"],
                                       secret=request.get("api_key"), mid_stream=True)
                break
            text = assembly.add(chunk)
            if text:
                on_delta(text)
        finished = error is None
    finally:
        if not finished:
            close()
    if error is not None:
        raise error  # outside the except block: the SDK's exception (and key) is not chained
    return assembly


async def aread_stream(chunks: AsyncIterable[Any], on_delta: Callable[[str], Awaitable[None]],
                       request: dict[str, Any], aclose: Callable[[], Awaitable[None]]
                       ) -> _Assembly:
    """``read_stream`` on the event loop; cancelling it closes the stream."""
    assembly, error, finished = _Assembly(), None, False
    try:
        iterator = aiter(chunks)
        while True:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                break
            except Exception as exc:
                error = provider_error(exc, model=request["model"],
                                       secret=request.get("api_key"), mid_stream=True)
                break
            text = assembly.add(chunk)
            if text:
                await on_delta(text)
        finished = error is None
    finally:
        if not finished:
            await aclose()
    if error is not None:
        raise error  # outside the except block: the SDK's exception (and key) is not chained
    return assembly


def _provider_sent_usage(wrapper: Any) -> bool:
    """Whether usage came from the provider, not from litellm.

    Asked for usage (``include_usage``) and sent none, litellm 1.106.2 makes up a usage
    chunk at the end of the stream from its own token count. The chunks it received from
    the provider are kept on the stream wrapper (``chunks``); the made-up one is not among
    them. A wrapper without that list tells nothing, and then the usage is not trusted.
    The provider sends usage last, so the search starts from the end.
    """
    received = getattr(wrapper, "chunks", None)
    if not isinstance(received, list):
        return False
    return any(_usage_of(chunk) is not None for chunk in reversed(received))


def _close_sync(wrapper: Any) -> None:
    """Close the connection of a stream left before its end (the provider sees it go)."""
    raw = getattr(wrapper, "completion_stream", None)
    close = getattr(raw, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):  # a broken connection is closed either way
            close()


class _OneIterator:
    """The provider's async stream behind a single iterator for its whole life.

    litellm's stream wrapper takes each chunk with a fresh ``async for`` over the provider's
    stream, left after one item; the openai SDK's stream answers every ``async for`` with a
    new async generator, so each chunk leaves one behind, and the event loop closes each in
    a task of its own (seven per short reply, measured on litellm 1.106.2): work queued on
    the loop ahead of the consumer of the very delta that made it. Through this object every
    ``async for`` continues the one iterator, which ends with the stream or is closed with it.
    """

    __slots__ = ("_iterator", "_stream")

    def __init__(self, stream: AsyncIterable[Any]) -> None:
        self._stream = stream
        self._iterator = aiter(stream)

    def __aiter__(self) -> _OneIterator:
        return self

    def __anext__(self) -> Awaitable[Any]:
        return anext(self._iterator)

    async def aclose(self) -> None:
        iterator, stream = self._iterator, self._stream
        if iterator is not stream and hasattr(iterator, "aclose"):
            await iterator.aclose()
        close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
        if callable(close):
            result = close()
            if result is not None:
                await result


def _iterate_once(wrapper: Any) -> None:
    """Put the provider's stream of litellm's ``wrapper`` behind ``_OneIterator`` (when it
    is an async iterable: litellm leaves other kinds, and a stream it has yet to open,
    alone)."""
    raw = getattr(wrapper, "completion_stream", None)
    if raw is not None and hasattr(raw, "__aiter__") and not isinstance(raw, _OneIterator):
        wrapper.completion_stream = _OneIterator(raw)


async def _close_async(wrapper: Any) -> None:
    aclose = getattr(wrapper, "aclose", None)
    if callable(aclose):
        with contextlib.suppress(Exception):
            await aclose()


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

    def stream(self, request: dict[str, Any], on_delta: Callable[[str], None]) -> ChatResponse:
        """``litellm.completion(stream=True)``, each text delta to ``on_delta`` as it comes."""
        litellm = litellm_module()
        error: ProviderError | None = None
        try:
            wrapper = litellm.completion(**request)
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        if error is not None:
            raise error
        assembly = read_stream(wrapper, on_delta, request, lambda: _close_sync(wrapper))
        return assembly.response(_provider_sent_usage(wrapper))

    async def astream(self, request: dict[str, Any],
                      on_delta: Callable[[str], Awaitable[None]]) -> ChatResponse:
        """``litellm.acompletion(stream=True)``; cancelling it closes the connection."""
        litellm = litellm_module()
        error: ProviderError | None = None
        try:
            wrapper = await litellm.acompletion(**request)
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        if error is not None:
            raise error
        _iterate_once(wrapper)
        assembly = await aread_stream(wrapper, on_delta, request,
                                      lambda: _close_async(wrapper))
        return assembly.response(_provider_sent_usage(wrapper))


DEFAULT_TRANSPORT = LiteLLMTransport()
