"""A fake OpenAI-compatible chat-completions server that counts exactly what it served.

crewline promises that every token it reports is right under concurrency. The only way to
check such a promise is against an independent count, so this server answers
deterministically, records every request it receives as a `Served`, and sums the usage it
reported in `FakeLLMServer.totals`. It runs on aiohttp and never blocks its event loop
(latency is an ``asyncio.sleep``), so one process can hold thousands of concurrent requests.

Usage is counted in whitespace-separated words (``str.split``). Every word is at least one
tiktoken token and every message costs 3 tokens in OpenAI's own accounting, so these numbers
never exceed tiktoken's count of the same messages; budget code relies on that:

* ``prompt_tokens``: over all messages, the words of its text content (the ``content``
  string, or its text parts joined by spaces) plus 3; for assistant messages, also the words
  of each tool call's name and arguments string. Tool definitions offered do not count.
* ``completion_tokens``: the words of the reply content, plus the words of each tool call's
  name and arguments JSON, plus ``Reply.reasoning_tokens`` (OpenAI counts reasoning inside
  completion tokens). With ``max_tokens`` (or ``max_completion_tokens``) the visible output is
  cut to fit what reasoning left, ``finish_reason`` becomes ``"length"``, and so the counted
  completion never exceeds the limit (unless reasoning alone does).
* ``total_tokens`` = prompt + completion; ``Reply`` overrides win over counting.
* Failed answers (any status but 200) report nothing and count 0 tokens. A request the
  client abandoned (it closed the connection before the answer) is recorded with status 499.
* A streamed answer (``"stream": true``) goes out word by word, one server-sent event per
  word, ``stream_gap`` seconds apart (server-wide, or ``Reply.stream_gap``), then a usage
  chunk when ``stream_options.include_usage`` asked for one (``Reply(stream_usage=False)``
  plays a provider that never sends it). A stream the client cuts off is recorded with
  status 499 and what a provider bills for it: the prompt and the words sent so far.
  ``Reply(stream_break_after=k)`` plays a provider whose stream breaks off after ``k`` words
  (the connection drops, no usage chunk): recorded with status 502, billed the same way.

Without a script answer or a matching rule, the reply is a minimal instance of a requested
``json_schema``, ``{}`` for ``json_object``, else ``"Result <digest> for the request."``: it
depends only on the messages and never echoes the ``[[marker]]`` tests put in their prompts.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from types import TracebackType
from typing import Any, Final

from aiohttp import web

__all__ = ["FakeLLMServer", "Reply", "Served", "ServedTotals", "ToolCall"]

MARKER_PATTERN: Final = re.compile(r"\[\[([A-Za-z0-9_.:\-]+)\]\]")
_TOKENS_PER_MESSAGE: Final = 3
_CLIENT_CLOSED: Final = 499
_STREAM_BROKEN: Final = 502
_FORMAT_EXAMPLES: Final = {
    "date-time": "2000-01-01T00:00:00Z",
    "date": "2000-01-01",
    "time": "00:00:00",
    "email": "x@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


@dataclass(frozen=True)
class ToolCall:
    """One tool call the server answers with; ``id`` defaults to ``call_<index>_<n>``."""

    name: str
    arguments: Mapping[str, Any] | str
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        """The arguments as sent: a string is sent verbatim, so tests can send broken JSON."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request.

    A bare ``Reply()`` (no content, tool calls or raw body, status 200) answers the default
    reply, so ``Reply(delay=5)`` delays the ordinary answer. A status other than 200 answers
    an OpenAI-style error whose message is ``content``. ``raw_body`` is sent verbatim with
    ``status`` and reports no usage, to provoke parse errors in the client.
    """

    content: str | None = None
    tool_calls: Sequence[ToolCall] | None = None
    status: int = 200
    retry_after: float | None = None
    delay: float | None = None
    raw_body: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    stream_gap: float | None = None
    """Seconds between the words of a streamed answer; ``None``: the server's ``stream_gap``."""
    stream_usage: bool = True
    """False: a streamed answer ends without the usage chunk, even when it was asked for."""
    stream_break_after: int | None = None
    """A streamed answer that breaks off: the server sends this many words (all of them if
    there are fewer), then drops the connection without finishing (a provider failing
    mid-stream). Recorded with status 502, billed the prompt and the words sent."""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"Reply status must be an HTTP status, got {self.status}")
        if self.stream_gap is not None and self.stream_gap < 0:
            raise ValueError(f"Reply stream_gap must be >= 0 seconds, got {self.stream_gap}")
        if self.stream_break_after is not None and self.stream_break_after < 0:
            raise ValueError("Reply stream_break_after must be >= 0 words, got "
                             f"{self.stream_break_after}")


@dataclass(frozen=True)
class Served:
    """One request as received and the answer it got, with the usage the server reported.

    A script or a rule's callable sees the request before it is answered: ``status`` 0,
    ``prompt_tokens`` as counted, and no completion yet.
    """

    index: int
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    max_tokens: int | None
    response_format: dict[str, Any] | None
    marker: str | None
    status: int
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    reasoning_tokens: int
    content: str | None
    tool_calls: tuple[ToolCall, ...] | None
    finish_reason: str | None = None
    stream: bool = False
    body: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    received_at: float = 0.0
    """``time.monotonic()`` when the server read the request (0 when never read)."""
    answered_at: float = 0.0
    """``time.monotonic()`` when the answer was ready to send, after any delay: two requests
    overlapped in time when each was received before the other was answered."""
    usage_sent: bool = True
    """Whether the answer reported usage (a stream without the usage chunk did not)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ServedTotals:
    """Sums over served requests, in the shape of the engine's ``Usage`` to compare with it."""

    requests: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def of(cls, served: Sequence[Served]) -> ServedTotals:
        prompt = sum(s.prompt_tokens for s in served)
        completion = sum(s.completion_tokens for s in served)
        ok = sum(1 for s in served if s.status == 200)
        return cls(
            requests=ok,
            failed_requests=len(served) - ok,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cached_prompt_tokens=sum(s.cached_prompt_tokens for s in served),
            reasoning_tokens=sum(s.reasoning_tokens for s in served),
        )


Script = Callable[[Served], Reply | str | None]
Condition = str | Callable[[Served], bool] | None


@dataclass
class _Rule:
    when: Condition
    replies: tuple[Reply, ...]
    times: int | None
    matched: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.matched >= self.times

    def accepts(self, request: Served, texts: list[str]) -> bool:
        if self.when is None:
            return True
        if isinstance(self.when, str):
            return any(self.when in text for text in texts)
        return bool(self.when(request))


@dataclass(frozen=True)
class _Answer:
    served: Served
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    wait: float = 0.0
    chunks: tuple[tuple[bytes, int], ...] | None = None
    """A streamed answer: each event with the completion tokens it carries."""
    gap: float = 0.0
    break_at: int | None = None
    """A streamed answer that breaks off: the index of the first event never sent."""

    def broken(self) -> Served:
        """The record of a stream that broke off at ``break_at``: billed what was sent."""
        assert self.chunks is not None and self.break_at is not None
        sent = sum(tokens for _, tokens in self.chunks[:self.break_at])
        return replace(self.served, status=_STREAM_BROKEN, completion_tokens=sent,
                       cached_prompt_tokens=0, reasoning_tokens=0, usage_sent=False)


class FakeLLMServer:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint for tests, demos and benchmarks.

    Run it on a background thread (``with FakeLLMServer() as server``) for sync tests, or on
    the caller's loop (``async with``). All shared state is behind one lock, so tests read
    ``served``, ``totals()`` and the in-flight counters from any thread.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        script: Script | None = None,
        stream_gap: float = 0.0,
    ) -> None:
        self.latency = latency
        self.stream_gap = stream_gap
        self._host = host
        self._port = port
        self._script = script
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._rules: list[_Rule] = []
        self._served: list[Served] = []
        self._next_index = 0
        self._epoch = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {seconds}")
        self._latency = float(seconds)

    @property
    def stream_gap(self) -> float:
        """Seconds between the words of a streamed answer (a reply's own gap wins)."""
        return self._stream_gap

    @stream_gap.setter
    def stream_gap(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"stream_gap must be >= 0 seconds, got {seconds}")
        self._stream_gap = float(seconds)

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("FakeLLMServer has not been started")
        return self._bound_port

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Serve on a daemon thread with its own loop; returns once the port accepts."""
        if self._runner is not None or self._thread is not None:
            raise RuntimeError(f"FakeLLMServer is already running at {self.base_url}")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                try:
                    loop.run_until_complete(self._open())
                except BaseException as exc:
                    failure.append(exc)
                    return
                finally:
                    ready.set()
                loop.run_forever()
                loop.run_until_complete(self._close())
            finally:
                loop.close()

        thread = threading.Thread(target=serve, name="crewline-fake-llm-server", daemon=True)
        self._thread, self._thread_loop = thread, loop
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._thread = self._thread_loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; harmless when not running."""
        thread, loop = self._thread, self._thread_loop
        if thread is None or loop is None:
            if self._runner is not None:
                raise RuntimeError("FakeLLMServer was started with astart(); use astop()")
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = self._thread_loop = None

    async def astart(self) -> FakeLLMServer:
        """Serve on the running loop; returns once the port accepts."""
        if self._runner is not None or self._thread is not None:
            raise RuntimeError(f"FakeLLMServer is already running at {self.base_url}")
        await self._open()
        return self

    async def astop(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FakeLLMServer was started with start(); use stop()")
        await self._close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeLLMServer:
        return await self.astart()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    async def _open(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        for path in ("/v1/chat/completions", "/chat/completions"):
            app.router.add_post(path, self._handle)
        app.router.add_get("/_crewline/totals", self._handle_totals)
        # handler_cancellation: an abandoned request is recorded at once, not after its delay.
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=0.25,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port, backlog=4096).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._bound_port = int(runner.addresses[0][1])
        self._runner = runner

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- configuration and inspection ------------------------------------------------------

    def add_rule(self, when: Condition, *replies: Reply | str, times: int | None = None) -> None:
        """Answer requests matching ``when`` with ``replies`` in turn, repeating the last.

        A string ``when`` matches if it occurs in any message's text; ``None`` matches all.
        Rules are tried in insertion order after the script; ``times`` caps the matches.
        """
        if not replies:
            raise ValueError("add_rule needs at least one reply")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        rule = _Rule(when, tuple(_as_reply(r) for r in replies), times)
        with self._lock:
            self._rules.append(rule)

    @property
    def served(self) -> list[Served]:
        """A copy of every answered request, in arrival order."""
        with self._lock:
            return list(self._served)

    def totals(self, marker: str | None = None) -> ServedTotals:
        served = self.served
        if marker is not None:
            served = [s for s in served if s.marker == marker]
        return ServedTotals.of(served)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        with self._lock:
            return self._peak_in_flight

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no request is in flight; for tests whose client gave up on a request.

        Call it from another thread than the server's loop (the ``start()`` mode).
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def reset(self) -> None:
        """Forget served requests, counters, peak and rules; requests in flight go unrecorded."""
        with self._lock:
            self._served.clear()
            self._rules.clear()
            self._next_index = 0
            self._epoch += 1
            self._peak_in_flight = self._in_flight

    # -- serving ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            index, epoch = self._next_index, self._epoch
            self._next_index += 1
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        served = _blank(index)
        received = time.monotonic()
        try:
            answer = self._answer(index, await request.read())
            served = replace(answer.served, received_at=received)
            if answer.wait > 0:
                await asyncio.sleep(answer.wait)
            served = replace(served, answered_at=time.monotonic())
            if answer.chunks is not None:
                answer = replace(answer, served=served)
                served = replace(served, status=0)  # from here on it records itself
                return await self._send_stream(request, answer, epoch)
            self._record(served, epoch)
            return web.Response(
                status=served.status,
                body=answer.body,
                headers=answer.headers,
                content_type=answer.content_type,
            )
        except asyncio.CancelledError:
            if not (served.stream and served.status == 0):
                self._record(_abandoned(served), epoch)
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.notify_all()

    async def _send_stream(self, request: web.Request, answer: _Answer, epoch: int
                           ) -> web.StreamResponse:
        """Write the events one by one; a client that leaves is billed what it was sent.

        The stream is on record before its last event (``[DONE]``) goes out, so a client
        that has read it to the end always finds it in ``served`` and ``totals()``."""
        assert answer.chunks is not None
        response = web.StreamResponse(status=200, headers={"Cache-Control": "no-cache"})
        response.content_type = answer.content_type
        sent_tokens = 0
        recorded = False
        last = len(answer.chunks) - 1
        try:
            await response.prepare(request)
            for n, (data, tokens) in enumerate(answer.chunks):
                if n and answer.gap > 0:
                    await asyncio.sleep(answer.gap)
                if n == answer.break_at:
                    self._record(answer.broken(), epoch)
                    recorded = True
                    if request.transport is not None:
                        request.transport.abort()  # no last chunk: the client sees a broken body
                    return response
                if n == last:
                    self._record(answer.served, epoch)
                    recorded = True
                await response.write(data)
                sent_tokens += tokens
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            if not recorded:
                self._record(_cut_off(answer.served, sent_tokens), epoch)
            raise
        if not recorded:
            self._record(answer.served, epoch)
        return response

    def serve_locally(self, raw: bytes) -> tuple[Served, float, bytes, Mapping[str, str]]:
        """Answer one request body in-process, without HTTP, counting it as served.

        Returns the record, the wait the server would apply, the body and the headers.
        ``ScriptedModel`` uses this so in-process tests count exactly as the server does.
        """
        answer = self.answer_locally(raw)
        return answer.served, answer.wait, answer.body, answer.headers

    def answer_locally(self, raw: bytes) -> _Answer:
        """``serve_locally``'s whole answer, streamed events and gap included."""
        with self._lock:
            index, epoch = self._next_index, self._epoch
            self._next_index += 1
        now = time.monotonic()
        answer = self._answer(index, raw)
        answer = replace(answer, served=replace(answer.served, received_at=now,
                                                answered_at=now + answer.wait))
        self._record(answer.broken() if answer.break_at is not None else answer.served, epoch)
        return answer

    async def _handle_totals(self, request: web.Request) -> web.Response:
        totals = self.totals(request.query.get("marker"))
        return web.json_response(asdict(totals))

    def _record(self, served: Served, epoch: int) -> None:
        with self._lock:
            if epoch != self._epoch:
                return
            if not self._served or self._served[-1].index < served.index:
                self._served.append(served)
            else:
                bisect.insort(self._served, served, key=lambda s: s.index)

    def _answer(self, index: int, raw: bytes) -> _Answer:
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return _error(_blank(index, status=400), f"Request body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _error(_blank(index, status=400), "Request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _error(_blank(index, status=400), "'messages' must be a list of objects")
        texts = [_text_of(m.get("content")) for m in messages]
        limit = body.get("max_completion_tokens")
        limit = body.get("max_tokens") if limit is None else limit
        request = Served(
            index=index,
            model=str(body.get("model", "")),
            messages=messages,
            tools=body.get("tools"),
            max_tokens=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
            response_format=body.get("response_format"),
            marker=_marker_of(messages, texts),
            status=0,
            prompt_tokens=_count_prompt(messages, texts),
            completion_tokens=0,
            cached_prompt_tokens=0,
            reasoning_tokens=0,
            content=None,
            tool_calls=None,
            stream=body.get("stream") is True,
            body=body,
        )
        try:
            reply = self._choose(request, texts)
        except Exception as exc:  # a test's own script failing must reach the test as an error
            reply = Reply(status=500, content=f"fake server script or rule raised {exc!r}")
        wait = self._latency + (reply.delay or 0.0)
        if reply.raw_body is not None:
            served = replace(request, status=reply.status, prompt_tokens=0, content=reply.raw_body)
            return _Answer(served, reply.raw_body.encode(), wait=wait)
        if reply.status != 200:
            headers = {}
            if reply.retry_after is not None:
                headers["Retry-After"] = f"{reply.retry_after:g}"
                headers["retry-after-ms"] = str(round(reply.retry_after * 1000))
            message = reply.content or f"The fake server answers {reply.status}"
            return _error(
                replace(request, status=reply.status, prompt_tokens=0),
                message,
                headers=headers,
                wait=wait,
            )
        served = _complete(request, reply)
        stream_options = body.get("stream_options")
        if served.stream:
            include_usage = (isinstance(stream_options, dict)
                             and bool(stream_options.get("include_usage")) and reply.stream_usage)
            served = replace(served, usage_sent=include_usage)
            chunks = _stream_chunks(served, include_usage)
            gap = self._stream_gap if reply.stream_gap is None else reply.stream_gap
            words = len(re.findall(r"\s*\S+", served.content or ""))
            break_at = (None if reply.stream_break_after is None
                        else 1 + min(reply.stream_break_after, words))  # after the role event
            return _Answer(served, b"".join(data for data, _ in chunks), "text/event-stream",
                           wait=wait, chunks=chunks, gap=gap, break_at=break_at)
        return _Answer(served, json.dumps(_completion_json(served)).encode(), wait=wait)

    def _choose(self, request: Served, texts: list[str]) -> Reply:
        if self._script is not None:
            scripted = self._script(request)
            if scripted is not None:
                return _as_reply(scripted)
        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            if rule.exhausted or not rule.accepts(request, texts):
                continue
            with self._lock:
                if rule.exhausted:
                    continue
                reply = rule.replies[min(rule.matched, len(rule.replies) - 1)]
                rule.matched += 1
            return reply
        return Reply()


def _as_reply(reply: Reply | str) -> Reply:
    return Reply(content=reply) if isinstance(reply, str) else reply


def _blank(index: int, *, status: int = 0) -> Served:
    return Served(index, "", [], None, None, None, None, status, 0, 0, 0, 0, None, None)


def _abandoned(served: Served) -> Served:
    return replace(
        served,
        status=_CLIENT_CLOSED,
        prompt_tokens=0,
        completion_tokens=0,
        cached_prompt_tokens=0,
        reasoning_tokens=0,
        content=None,
        tool_calls=None,
        finish_reason=None,
    )


def _error(
    served: Served, message: str, *, headers: Mapping[str, str] | None = None, wait: float = 0.0
) -> _Answer:
    status = served.status
    kind = (
        "rate_limit_error"
        if status == 429
        else ("server_error" if status >= 500 else "invalid_request_error")
    )
    code = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}.get(status)
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return _Answer(
        replace(served, content=message),
        json.dumps(body).encode(),
        headers=headers or {},
        wait=wait,
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _count_prompt(messages: list[dict[str, Any]], texts: list[str]) -> int:
    total = 0
    for message, text in zip(messages, texts, strict=True):
        total += _words(text) + _TOKENS_PER_MESSAGE
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                arguments = function.get("arguments", "")
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments)
                total += _words(str(function.get("name", ""))) + _words(arguments)
    return total


def _marker_of(messages: list[dict[str, Any]], texts: list[str]) -> str | None:
    for message, text in zip(messages, texts, strict=True):
        if message.get("role") == "user":
            found = MARKER_PATTERN.search(text)
            return found.group(1) if found else None
    return None


def _complete(request: Served, reply: Reply) -> Served:
    """Fill in the 200 answer: default content, call ids, truncation and counted usage."""
    content, calls = reply.content, tuple(reply.tool_calls or ())
    if content is None and not calls:
        content = _default_content(request)
    calls = tuple(
        call if call.id else replace(call, id=f"call_{request.index}_{n}")
        for n, call in enumerate(calls)
    )
    truncated = False
    if request.max_tokens is not None:
        content, calls, truncated = _fit(
            content, calls, max(0, request.max_tokens - reply.reasoning_tokens)
        )
    counted = (
        _words(content or "")
        + sum(_words(c.name) + _words(c.arguments_json) for c in calls)
        + reply.reasoning_tokens
    )
    finish = "length" if truncated else ("tool_calls" if calls else "stop")
    return replace(
        request,
        status=200,
        prompt_tokens=request.prompt_tokens if reply.prompt_tokens is None else reply.prompt_tokens,
        completion_tokens=counted if reply.completion_tokens is None else reply.completion_tokens,
        cached_prompt_tokens=reply.cached_prompt_tokens,
        reasoning_tokens=reply.reasoning_tokens,
        content=content,
        tool_calls=calls or None,
        finish_reason=finish,
    )


def _fit(
    content: str | None, calls: tuple[ToolCall, ...], budget: int
) -> tuple[str | None, tuple[ToolCall, ...], bool]:
    """Cut the output to ``budget`` words, the way a provider stops mid-output at the limit."""
    words = content.split() if content else []
    if len(words) > budget:
        return " ".join(words[:budget]), (), True
    budget -= len(words)
    kept: list[ToolCall] = []
    for call in calls:
        name, arguments = _words(call.name), call.arguments_json.split()
        if name + len(arguments) <= budget:
            kept.append(call)
            budget -= name + len(arguments)
            continue
        if name <= budget:
            kept.append(replace(call, arguments=" ".join(arguments[: budget - name])))
        return content, tuple(kept), True
    return content, calls, False


def _default_content(request: Served) -> str:
    response_format = request.response_format or {}
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return json.dumps(schema_instance(schema)) if isinstance(schema, dict) else "{}"
    if kind == "json_object":
        return "{}"
    digest = hashlib.sha256(json.dumps(request.messages, sort_keys=True).encode()).hexdigest()
    return f"Result {digest[:8]} for the request."


def schema_instance(
    schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, depth: int = 0
) -> Any:
    """A minimal JSON value valid for ``schema``, so structured-output paths get parseable data."""
    root = schema if root is None else root
    if depth > 32:
        return None
    if isinstance(schema.get("$ref"), str):
        return schema_instance(_resolve(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or () if o.get("type") != "null"]
        if options or schema.get(key):
            return schema_instance(options[0] if options else {"type": "null"}, root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            while isinstance(part.get("$ref"), str):
                part = _resolve(root, part["$ref"])
            merged = {
                **part,
                **merged,
                "properties": {**part.get("properties", {}), **merged.get("properties", {})},
                "required": [*part.get("required", []), *merged.get("required", [])],
            }
        return schema_instance(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: schema_instance(properties.get(name, {}), root, depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        prefix = [schema_instance(s, root, depth + 1) for s in schema.get("prefixItems", [])]
        items = schema.get("items")
        extra = max(0, schema.get("minItems", 0) - len(prefix))
        filler = schema_instance(items, root, depth + 1) if isinstance(items, dict) else "x"
        return prefix + [filler] * extra
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if schema.get("format") in _FORMAT_EXAMPLES:
        return _FORMAT_EXAMPLES[schema["format"]]
    return "x" * max(1, schema.get("minLength", 1)) if schema.get("maxLength") != 0 else ""


def _resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node if isinstance(node, Mapping) else {}


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    value: float = 0
    if "minimum" in schema and value < schema["minimum"]:
        value = math.ceil(schema["minimum"]) if integer else schema["minimum"]
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        value = math.floor(schema["exclusiveMinimum"]) + 1
    if "maximum" in schema and value > schema["maximum"]:
        value = math.floor(schema["maximum"]) if integer else schema["maximum"]
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        value = math.ceil(schema["exclusiveMaximum"]) - 1
    return int(value) if integer else value


def _message_json(served: Served) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": served.content}
    if served.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json},
            }
            for c in served.tool_calls
        ]
    return message


def _usage_json(served: Served) -> dict[str, Any]:
    return {
        "prompt_tokens": served.prompt_tokens,
        "completion_tokens": served.completion_tokens,
        "total_tokens": served.total_tokens,
        "prompt_tokens_details": {"cached_tokens": served.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": served.reasoning_tokens},
    }


def _completion_json(served: Served) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake-{served.index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served.model,
        "choices": [
            {
                "index": 0,
                "message": _message_json(served),
                "finish_reason": served.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage_json(served),
    }


def _cut_off(served: Served, sent_tokens: int) -> Served:
    """A stream the client left: status 499, billed its prompt and the output it was sent."""
    return replace(served, status=_CLIENT_CLOSED, completion_tokens=sent_tokens,
                   cached_prompt_tokens=0, reasoning_tokens=0, usage_sent=False)


def _stream_body(served: Served, include_usage: bool) -> bytes:
    """The whole answer as server-sent events; usage comes last and only when asked for."""
    return b"".join(data for data, _ in _stream_chunks(served, include_usage))


def _stream_chunks(served: Served, include_usage: bool) -> tuple[tuple[bytes, int], ...]:
    """The answer as server-sent events, one word each, with the tokens each carries."""
    head = {
        "id": f"chatcmpl-fake-{served.index}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": served.model,
    }
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    pieces = re.findall(r"\s*\S+", served.content or "")
    deltas += [{"content": piece} for piece in pieces]
    tokens = [0] + [1] * len(pieces)
    for n, call in enumerate(served.tool_calls or ()):
        tokens.append(_words(call.name) + _words(call.arguments_json))
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": n,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments_json},
                    }
                ]
            }
        )
    chunks = [
        {**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    chunks.append(
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": served.finish_reason}]}
    )
    # Reasoning is billed but never shown: it counts with the first event.
    tokens = [tokens[0] + served.reasoning_tokens, *tokens[1:], 0]
    if include_usage:
        chunks.append({**head, "choices": [], "usage": _usage_json(served)})
        tokens.append(0)
    events = [(f"data: {json.dumps(chunk)}\n\n".encode(), n)
              for chunk, n in zip(chunks, tokens, strict=True)]
    return (*events, (b"data: [DONE]\n\n", 0))
