"""The direct transport: OpenAI-compatible providers through the openai SDK, no litellm.

Most requests go to servers that speak the Chat Completions API themselves (OpenAI, vLLM,
Ollama, LM Studio, most gateways). litellm in front of them costs seconds of import and
milliseconds of CPU per request (a response cost crewline throws away, since it prices
every record itself), so for those crewline talks to the SDK directly.

* One client per ``LLM`` and event loop: an ``httpx`` connection pool belongs to the loop
  that opened its connections, and kickoffs may run on many loops (``asyncio.run`` after
  ``asyncio.run``, a loop per thread). The sync client is shared by every thread.
* ``max_retries=0``, as on the litellm path: crewline owns retries, so every try is
  recorded.
* Failures become ``ProviderError`` through the very classification the litellm path
  uses (``crewline.transport.litellm.provider_error``): same kinds, ``retryable``, ``sent``.
* The reply is read by the same ``_read`` as litellm's, so usage is handed through the
  same way (no usage block: ``usage_reported=False``). A streamed reply is put together by
  the same ``_Assembly``; the SDK never makes a usage chunk up, so the usage it yields is
  the provider's own, or none.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal, Protocol

from crewline.errors import ProviderError
from crewline.transport.litellm import (
    ChatResponse,
    _read,
    aread_stream,
    provider_error,
    read_stream,
)

if TYPE_CHECKING:
    import asyncio

    import openai
    from pydantic import SecretStr

__all__ = ["OpenAITransport", "TransportChoice", "direct_model_name", "uses_direct"]

TransportChoice = Literal["auto", "litellm", "openai"]

_OPENAI_PREFIX = "openai/"
_NOT_SENT_TO_SDK = frozenset({"model", "api_base", "api_key", "max_retries", "timeout"})


@functools.lru_cache(maxsize=1)
def _fast_sdk() -> bool:
    """Whether the installed openai SDK is one the direct path pays off with (3 or later).

    Measured here, 200 crews x 3 tasks: with openai 3 (httpx2) the direct path is 0.62x bare
    litellm's makespan; with openai 2 (httpx) it is 1.8x, at 15 ms of CPU per request and 50
    requests in flight. So ``"auto"`` keeps litellm where the SDK is the slower one."""
    try:
        return int(metadata.version("openai").split(".")[0]) >= 3
    except (metadata.PackageNotFoundError, ValueError):
        return False


def uses_direct(model: str, choice: TransportChoice) -> bool:
    """Whether requests for ``model`` go through the direct transport under ``choice``.

    ``"auto"`` picks it for ``openai/...`` models, the names litellm sends to any
    OpenAI-compatible ``base_url`` (its Chat Completions route), when the installed openai
    SDK is 3 or later; every other provider prefix, a bare model name litellm would have to
    route, and any model under openai 2, stays with litellm.
    ``CREWLINE_TRANSPORT=litellm`` in the environment turns ``"auto"`` into ``"litellm"``
    process-wide (an escape hatch, and how the suite runs on both transports).
    """
    if choice == "openai":
        return True
    if choice == "litellm":
        return False
    if os.environ.get("CREWLINE_TRANSPORT") == "litellm":
        return False
    return model.startswith(_OPENAI_PREFIX) and _fast_sdk()


def direct_model_name(model: str) -> str:
    """The name the provider knows: ``openai/gpt-4o-mini`` is ``gpt-4o-mini`` on the wire."""
    return model[len(_OPENAI_PREFIX):] if model.startswith(_OPENAI_PREFIX) else model


def _arguments(request: dict[str, Any]) -> dict[str, Any]:
    """The SDK's keyword arguments for ``chat.completions.create`` from a crewline request."""
    kwargs = {k: v for k, v in request.items() if k not in _NOT_SENT_TO_SDK}
    kwargs["model"] = direct_model_name(request["model"])
    if request.get("timeout") is not None:
        kwargs["timeout"] = request["timeout"]
    return kwargs


class OpenAITransport:
    """Chat Completions through the openai SDK, for one ``LLM``'s endpoint and key.

    Built by ``for_llm`` (one per ``LLM`` object); the clients are created on first use,
    so an ``LLM`` whose key is missing fails at its first request, as a ``ProviderError``
    of kind ``"auth"`` that was never sent, exactly like the litellm path.
    """

    def __init__(self, *, base_url: str | None, api_key: str | None) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._lock = threading.Lock()
        self._sync: openai.OpenAI | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary())

    def _sync_client(self) -> openai.OpenAI:
        client = self._sync
        if client is None:
            import openai

            with self._lock:
                if self._sync is None:
                    self._sync = openai.OpenAI(base_url=self._base_url, api_key=self._api_key,
                                               max_retries=0)
                client = self._sync
        return client

    def _async_client(self) -> openai.AsyncOpenAI:
        import asyncio

        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            import openai

            with self._lock:
                client = self._async.get(loop)
                if client is None:
                    client = openai.AsyncOpenAI(base_url=self._base_url,
                                                api_key=self._api_key, max_retries=0)
                    self._async[loop] = client
        return client

    def complete(self, request: dict[str, Any]) -> ChatResponse:
        try:
            response = self._sync_client().chat.completions.create(**_arguments(request))
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        else:
            return _read(response, model=request["model"])
        raise error  # outside the except block: the SDK's exception (and key) is not chained

    async def acomplete(self, request: dict[str, Any]) -> ChatResponse:
        try:
            client = self._async_client()
            response = await client.chat.completions.create(**_arguments(request))
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        else:
            return _read(response, model=request["model"])
        raise error  # outside the except block: the SDK's exception (and key) is not chained

    def stream(self, request: dict[str, Any], on_delta: Callable[[str], None]) -> ChatResponse:
        """``create(stream=True)``, each text delta to ``on_delta`` as it comes; a stream
        left early (``on_delta`` raised) is closed, so the provider sees the client go."""
        error: ProviderError | None = None
        try:
            chunks = self._sync_client().chat.completions.create(**_arguments(request))
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        if error is not None:
            raise error
        return read_stream(chunks, on_delta, request, chunks.close).response(True)

    async def astream(self, request: dict[str, Any],
                      on_delta: Callable[[str], Awaitable[None]]) -> ChatResponse:
        """``create(stream=True)`` on the loop's client; cancelling it closes the stream."""
        error: ProviderError | None = None
        try:
            client = self._async_client()
            chunks = await client.chat.completions.create(**_arguments(request))
        except Exception as exc:
            error = provider_error(exc, model=request["model"], secret=request.get("api_key"))
        if error is not None:
            raise error
        return (await aread_stream(chunks, on_delta, request, chunks.close)).response(True)


_per_llm: dict[int, OpenAITransport] = {}
_per_llm_lock = threading.Lock()


def _forget(key: int) -> Callable[[], None]:
    def drop() -> None:
        _per_llm.pop(key, None)
    return drop


class Endpoint(Protocol):
    """What the direct transport reads of an ``LLM`` (typed here so that this layer, below
    the definitions, does not import them)."""

    @property
    def base_url(self) -> str | None: ...
    @property
    def api_key(self) -> SecretStr | None: ...


def for_llm(llm: Endpoint) -> OpenAITransport:
    """The direct transport of ``llm``: one per ``LLM`` object, dropped with it.

    Keyed by identity (an ``LLM`` is frozen, so its endpoint and key never change), which
    keeps the per-request lookup a dict hit instead of hashing the whole definition.
    """
    key = id(llm)
    transport = _per_llm.get(key)
    if transport is None:
        with _per_llm_lock:
            transport = _per_llm.get(key)
            if transport is None:
                secret = llm.api_key.get_secret_value() if llm.api_key is not None else None
                transport = OpenAITransport(base_url=llm.base_url, api_key=secret)
                _per_llm[key] = transport
                weakref.finalize(llm, _forget(key))
    return transport
