"""An in-process model for fast unit tests: no HTTP, no litellm, the same counting.

``ScriptedModel`` is a ``Transport``: pass it as ``LLM(model=..., transport=model)``. It
answers with the fake server's own logic (rules, scripted replies, injected failures,
deterministic word-count usage), so a figure checked against ``model.totals()`` means the
same as one checked against a ``FakeLLMServer``. It streams as the server does: word by
word, ``stream_gap`` seconds apart, with a usage chunk unless ``Reply(stream_usage=False)``;
``Reply(stream_break_after=k)`` breaks off after ``k`` words with a retryable
``ProviderError`` of kind ``"connection"``, as a dropped connection does on the real path.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from crewline.errors import ProviderError
from crewline.testing.server import Condition, FakeLLMServer, Reply, Served, ServedTotals
from crewline.transport.litellm import ChatResponse, ToolCallRequest

__all__ = ["ScriptedModel"]

_RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


class ScriptedModel:
    """Replies in order (the last repeats), or by rule; counts what it answered."""

    def __init__(self, *replies: Reply | str,
                 script: Callable[[Served], Reply | str | None] | None = None,
                 latency: float = 0.0, stream_gap: float = 0.0) -> None:
        self._core = FakeLLMServer(script=script, stream_gap=stream_gap)  # logic, no socket
        self.latency = latency
        if replies:
            self._core.add_rule(None, *replies)

    def add_rule(self, when: Condition, *replies: Reply | str, times: int | None = None
                 ) -> None:
        self._core.add_rule(when, *replies, times=times)

    @property
    def served(self) -> list[Served]:
        return self._core.served

    def totals(self, marker: str | None = None) -> ServedTotals:
        return self._core.totals(marker)

    def reset(self) -> None:
        self._core.reset()

    def _answer(self, request: dict[str, Any]) -> tuple[float, Served, bytes, dict[str, str]]:
        payload = {k: v for k, v in request.items()
                   if k not in ("api_key", "api_base", "max_retries", "timeout")}
        served, wait, body, headers = self._core.serve_locally(json.dumps(payload).encode())
        return self.latency + wait, served, body, dict(headers)

    def _response(self, served: Served, body: bytes, headers: dict[str, str]) -> ChatResponse:
        if served.status != 200:
            retry_after = headers.get("Retry-After")
            raise ProviderError(
                f"model {served.model!r}: provider request failed (status {served.status}): "
                f"{served.content or ''}", model=served.model, status=served.status,
                retryable=served.status in _RETRYABLE,
                retry_after=float(retry_after) if retry_after else None)
        try:
            data = json.loads(body)
        except ValueError:
            raise ProviderError(
                f"model {served.model!r}: provider request failed (malformed response): "
                f"{body[:200]!r}", model=served.model, status=served.status,
                retryable=False) from None
        message = data["choices"][0]["message"]
        calls = tuple(ToolCallRequest(id=c["id"], name=c["function"]["name"],
                                      arguments=c["function"]["arguments"])
                      for c in message.get("tool_calls") or ())
        usage = data["usage"]
        return ChatResponse(
            content=message.get("content"), tool_calls=calls,
            prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"],
            cached_prompt_tokens=usage["prompt_tokens_details"]["cached_tokens"],
            reasoning_tokens=usage["completion_tokens_details"]["reasoning_tokens"],
            finish_reason=data["choices"][0].get("finish_reason"))

    def _stream_answer(self, request: dict[str, Any]
                       ) -> tuple[float, float, Served, list[dict[str, Any]] | None, bytes,
                                  dict[str, str], bool]:
        """The answer, its events (up to the break, for one that breaks off) and whether it
        breaks off."""
        payload = {k: v for k, v in request.items()
                   if k not in ("api_key", "api_base", "max_retries", "timeout")}
        answer = self._core.answer_locally(json.dumps(payload).encode())
        chunks = None
        if answer.chunks is not None:
            sent = answer.chunks[:answer.break_at]
            chunks = [json.loads(data[len(b"data: "):]) for data, _ in sent
                      if data.startswith(b"data: {")]
        return (self.latency + answer.wait, answer.gap, answer.served, chunks, answer.body,
                dict(answer.headers), answer.break_at is not None)

    @staticmethod
    def _broken(request: dict[str, Any]) -> ProviderError:
        model = request["model"]
        return ProviderError(f"model {model!r}: provider request failed (connection): the "
                             "stream broke off", model=model, retryable=True,
                             kind="connection", sent=True, mid_stream=True)

    @staticmethod
    def _pieces(chunks: list[dict[str, Any]]) -> Iterator[str]:
        for chunk in chunks:
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text

    @staticmethod
    def _assembled(served: Served) -> ChatResponse:
        calls = tuple(ToolCallRequest(id=c.id or "", name=c.name, arguments=c.arguments_json)
                      for c in served.tool_calls or ())
        if not served.usage_sent:
            return ChatResponse(content=served.content, tool_calls=calls,
                                finish_reason=served.finish_reason, usage_reported=False)
        return ChatResponse(
            content=served.content, tool_calls=calls, prompt_tokens=served.prompt_tokens,
            completion_tokens=served.completion_tokens,
            cached_prompt_tokens=served.cached_prompt_tokens,
            reasoning_tokens=served.reasoning_tokens, finish_reason=served.finish_reason)

    def stream(self, request: dict[str, Any], on_delta: Callable[[str], None]) -> ChatResponse:
        """Answer as a stream: each word to ``on_delta``, ``stream_gap`` apart."""
        wait, gap, served, chunks, body, headers, breaks = self._stream_answer(request)
        if wait > 0:
            time.sleep(wait)
        if chunks is None:
            return self._response(served, body, headers)
        for n, text in enumerate(self._pieces(chunks)):
            if n and gap > 0:
                time.sleep(gap)
            on_delta(text)
        if breaks:
            raise self._broken(request)
        return self._assembled(served)

    async def astream(self, request: dict[str, Any],
                      on_delta: Callable[[str], Awaitable[None]]) -> ChatResponse:
        wait, gap, served, chunks, body, headers, breaks = self._stream_answer(request)
        if wait > 0:
            await asyncio.sleep(wait)
        if chunks is None:
            return self._response(served, body, headers)
        for n, text in enumerate(self._pieces(chunks)):
            if n and gap > 0:
                await asyncio.sleep(gap)
            await on_delta(text)
        if breaks:
            raise self._broken(request)
        return self._assembled(served)

    def complete(self, request: dict[str, Any]) -> ChatResponse:
        wait, served, body, headers = self._answer(request)
        if wait > 0:
            time.sleep(wait)
        return self._response(served, body, headers)

    async def acomplete(self, request: dict[str, Any]) -> ChatResponse:
        wait, served, body, headers = self._answer(request)
        if wait > 0:
            await asyncio.sleep(wait)
        return self._response(served, body, headers)
