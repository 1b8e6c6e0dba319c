"""OpenTelemetry spans and metrics for crewline runs (``pip install 'crewline[otel]'``).

``instrument()`` registers one process-wide listener on ``crewline.events``; everything it
reports is built from crewline's own events and usage records, so a span's token counts
are the ``UsageRecord``'s and sum to what the provider served. Nothing is emitted before
``instrument()``, and ``import crewline`` never imports OpenTelemetry.

Events are emitted inline, in the context of the work (the thread or asyncio task doing
it), so a span started on a "started" event and made current there is the parent of what
runs in that context afterwards, and parents follow the rules crewline keeps for context
variables under threads, asyncio and delegation::

    crewline.kickoff                        (a child of the caller's current span)
      invoke_agent {role}                   one per task attempt
        chat {model}                        one per try at a request (CLIENT)
        execute_tool {name}                 one per tool call; the tool's spans nest here
          ...

Open spans live in a context variable of this module, a stack per context: an end event
finds the span its start event opened in the very same context, so concurrent runs,
attempts and requests never mix, and every ``attach`` is undone by a ``detach`` in the
``Context`` that made it.

Prompts and completions are recorded only with ``capture_content=True`` (they may hold
personal data); API keys never.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from crewline import events
from crewline._accounting.usage import UsageRecord

__all__ = ["instrument", "instrumented", "uninstrument"]

_SCOPE = "crewline"
_TOKEN_BUCKETS = [4.0 ** i for i in range(14)]  # 1 .. 67M, as the GenAI conventions advise
_DURATION_BUCKETS = [0.01 * 2 ** i for i in range(14)]  # 0.01 s .. 81.92 s

# litellm's provider names where the GenAI conventions spell them differently.
_PROVIDERS = {
    "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai", "vertex_ai_beta": "gcp.vertex_ai",
    "watsonx": "ibm.watsonx.ai", "xai": "x_ai", "mistral": "mistral_ai",
    "text-completion-openai": "openai",
}


@dataclass(slots=True)
class _Open:
    kind: str
    key: Any
    span: Span
    token: Token[otel_context.Context]
    started: float = field(default_factory=time.perf_counter)
    labels: dict[str, Any] = field(default_factory=dict)


_open: ContextVar[tuple[_Open, ...]] = ContextVar("crewline_otel_open", default=())


@functools.lru_cache(maxsize=256)
def _route(model: str) -> tuple[str, str]:
    """(provider name per the GenAI conventions, the model name sent on the wire).

    ``openai/...`` is answered without litellm (the direct path never imports it); other
    models ask litellm, which their requests import anyway."""
    from crewline.transport.openai import direct_model_name

    if model.startswith("openai/"):
        return "openai", direct_model_name(model)
    try:
        from crewline.transport.litellm import litellm_module

        wire, provider, _, _ = litellm_module().get_llm_provider(model)
    except Exception:
        provider, _, wire = model.rpartition("/")
        provider = provider or "unknown"
    return _PROVIDERS.get(provider, provider), str(wire)


def _error_type(text: str | None) -> str:
    """``GuardrailError('...')`` or ``GuardrailError: ...`` -> ``GuardrailError``."""
    if not text:
        return "error"
    head = re.split(r"[(:]", text, maxsplit=1)[0].strip()
    return head if head.isidentifier() else "error"


def _parts(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message in the conventions' ``gen_ai.input.messages`` shape."""
    role = message.get("role", "user")
    parts: list[dict[str, Any]] = []
    if role == "tool":
        parts.append({"type": "tool_call_response", "id": message.get("tool_call_id"),
                      "response": message.get("content")})
    elif message.get("content"):
        parts.append({"type": "text", "content": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function", {})
        parts.append({"type": "tool_call", "id": call.get("id"),
                      "name": function.get("name"), "arguments": function.get("arguments")})
    return {"role": role, "parts": parts}


class _Instrumentation:
    """The listener: turns crewline's events into spans and metric points."""

    def __init__(self, tracer_provider: Any, meter_provider: Any,
                 capture_content: bool) -> None:
        from crewline import __version__

        self.tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self.capture_content = capture_content
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Tokens used per request, by token type (input, output)",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s",
            description="Duration of each try at an LLM request",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        self.cost = meter.create_counter(
            "crewline.cost", unit="USD",
            description="Money spent on LLM requests (a float here; spans and usage "
                        "records carry the exact decimal)")
        handlers: dict[type[events.Event], Callable[[Any], None]] = {
            events.KickoffStarted: self._kickoff_started,
            events.KickoffFinished: self._kickoff_finished,
            events.AttemptStarted: self._attempt_started,
            events.AttemptFinished: self._attempt_finished,
            events.LLMCallStarted: self._call_started,
            events.LLMCallFinished: self._call_finished,
            events.LLMCallNotSent: self._call_not_sent,
            events.ToolStarted: self._tool_started,
            events.ToolCalled: self._tool_finished,
        }
        started = getattr(events, "DelegationStarted", None)
        finished = getattr(events, "DelegationFinished", None)
        if started is not None and finished is not None:
            handlers[started] = self._delegation_started
            handlers[finished] = self._delegation_finished
        self.handlers = handlers

    def __call__(self, event: events.Event) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    # -- the stack of open spans, one per context -----------------------------------------

    def _start(self, kind: str, key: Any, name: str, attributes: dict[str, Any],
               span_kind: SpanKind = SpanKind.INTERNAL) -> _Open:
        span = self.tracer.start_span(name, kind=span_kind, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        entry = _Open(kind, key, span, token)
        _open.set((*_open.get(), entry))
        return entry

    def _finish(self, kind: str, key: Any) -> _Open | None:
        """Take the open span ``(kind, key)`` off this context's stack and detach it.

        Spans opened above it and never ended (their end event was never emitted: a
        cancellation between two events) are ended first, marked as such. The caller ends
        the returned span once it has set its last attributes.
        """
        stack = _open.get()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].kind == kind and stack[i].key == key:
                break
        else:
            return None  # started before instrument(), or ended already
        for stale in reversed(stack[i + 1:]):
            otel_context.detach(stale.token)
            stale.span.set_status(Status(StatusCode.ERROR, "not finished"))
            stale.span.set_attribute("error.type", "unfinished")
            stale.span.end()
        entry = stack[i]
        otel_context.detach(entry.token)
        _open.set(stack[:i])
        return entry

    @staticmethod
    def _failed(span: Span, error_type: str, message: str | None) -> None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, (message or error_type)[:1000]))

    # -- kickoffs and attempts -------------------------------------------------------------

    def _kickoff_started(self, event: events.KickoffStarted) -> None:
        self._start("kickoff", event.run_id, "crewline.kickoff", {
            "gen_ai.operation.name": "invoke_workflow",
            "crewline.run_id": event.run_id,
            "crewline.tasks": event.tasks,
        })

    def _kickoff_finished(self, event: events.KickoffFinished) -> None:
        entry = self._finish("kickoff", event.run_id)
        if entry is None:
            return
        usage = event.usage
        entry.span.set_attributes({
            "crewline.usage.requests": usage.requests,
            "crewline.usage.failed_requests": usage.failed_requests,
            "crewline.usage.input_tokens": usage.prompt_tokens,
            "crewline.usage.output_tokens": usage.completion_tokens,
            "crewline.usage.cost": str(usage.cost),
        })
        if not event.ok:
            self._failed(entry.span, _error_type(event.error), event.error)
        entry.span.end()

    def _attempt_started(self, event: events.AttemptStarted) -> None:
        role = event.agent or "agent"
        self._start("attempt", (event.run_id, event.task, event.attempt),
                    f"invoke_agent {role}", {
                        "gen_ai.operation.name": "invoke_agent",
                        "gen_ai.agent.name": role,
                        "crewline.run_id": event.run_id,
                        "crewline.task": event.task,
                        "crewline.attempt": event.attempt,
                    })

    def _attempt_finished(self, event: events.AttemptFinished) -> None:
        entry = self._finish("attempt", (event.run_id, event.task, event.attempt))
        if entry is None:
            return
        if not event.ok:
            self._failed(entry.span, event.error_type or "error", event.error)
        entry.span.end()

    def _delegation_started(self, event: Any) -> None:
        self._start("delegation", (event.run_id, event.to, event.depth),
                    f"invoke_agent {event.to}", {
                        "gen_ai.operation.name": "invoke_agent",
                        "gen_ai.agent.name": event.to,
                        "crewline.run_id": event.run_id,
                        "crewline.task": event.task,
                        "crewline.delegated_by": event.by,
                        "crewline.delegation_depth": event.depth,
                    })

    def _delegation_finished(self, event: Any) -> None:
        entry = self._finish("delegation", (event.run_id, event.to, event.depth))
        if entry is None:
            return
        if not getattr(event, "ok", True):
            error = getattr(event, "error", None)
            self._failed(entry.span, _error_type(error), error)
        entry.span.end()

    # -- requests ------------------------------------------------------------------------

    def _call_started(self, event: events.LLMCallStarted) -> None:
        provider, wire = _route(event.model)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": wire,
            "crewline.purpose": event.purpose,
        }
        if event.task is not None:
            attributes["crewline.task"] = event.task
        if event.attempt is not None:
            attributes["crewline.attempt"] = event.attempt
        if event.agent is not None:
            attributes["gen_ai.agent.name"] = event.agent
        if self.capture_content and event.messages:
            attributes["gen_ai.input.messages"] = json.dumps(
                [_parts(m) for m in event.messages], default=str, ensure_ascii=False)
        entry = self._start("chat", event.run_id, f"chat {wire}", attributes, SpanKind.CLIENT)
        entry.labels = {k: v for k, v in attributes.items()
                        if k in ("gen_ai.operation.name", "gen_ai.provider.name",
                                 "gen_ai.request.model", "crewline.purpose",
                                 "gen_ai.agent.name")}

    def _call_finished(self, event: events.LLMCallFinished) -> None:
        entry = self._finish("chat", event.run_id)
        if entry is None:
            return
        record: UsageRecord = event.record
        span, labels = entry.span, entry.labels
        response = event.response
        if response is not None and response.response_model:
            span.set_attribute("gen_ai.response.model", response.response_model)
            labels["gen_ai.response.model"] = response.response_model
        if record.outcome == "ok":
            span.set_attributes({
                "gen_ai.usage.input_tokens": record.prompt_tokens,
                "gen_ai.usage.output_tokens": record.completion_tokens,
                "crewline.cost": str(record.cost),
                "crewline.priced": record.priced,
            })
            if record.cached_prompt_tokens:
                span.set_attribute("gen_ai.usage.cache_read.input_tokens",
                                   record.cached_prompt_tokens)
            if record.reasoning_tokens:
                span.set_attribute("gen_ai.usage.reasoning.output_tokens",
                                   record.reasoning_tokens)
            if response is not None:
                self._response_attributes(span, response)
            self.tokens.record(record.prompt_tokens, {**labels, "gen_ai.token.type": "input"})
            self.tokens.record(record.completion_tokens,
                               {**labels, "gen_ai.token.type": "output"})
            if record.priced and record.cost:
                self.cost.add(float(record.cost), labels)
        else:
            error_type = event.error_type or record.outcome
            self._failed(span, error_type, event.error)
            labels = {**labels, "error.type": error_type}
        self.duration.record(record.latency_s, labels)
        span.end()

    def _response_attributes(self, span: Span, response: Any) -> None:
        if response.response_id:
            span.set_attribute("gen_ai.response.id", response.response_id)
        if response.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", (response.finish_reason,))
        if self.capture_content:
            message: dict[str, Any] = {"role": "assistant", "content": response.content,
                                       "tool_calls": [
                                           {"id": c.id, "function": {"name": c.name,
                                                                     "arguments": c.arguments}}
                                           for c in response.tool_calls]}
            output = {**_parts(message), "finish_reason": response.finish_reason}
            span.set_attribute("gen_ai.output.messages",
                               json.dumps([output], default=str, ensure_ascii=False))

    def _call_not_sent(self, event: events.LLMCallNotSent) -> None:
        entry = self._finish("chat", event.run_id)
        if entry is None:
            return
        self._failed(entry.span, event.error_type, event.error)
        self.duration.record(time.perf_counter() - entry.started,
                             {**entry.labels, "error.type": event.error_type})
        entry.span.end()

    # -- tools ---------------------------------------------------------------------------

    def _tool_started(self, event: events.ToolStarted) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": event.tool,
            "gen_ai.tool.type": "function",
        }
        if event.call_id:
            attributes["gen_ai.tool.call.id"] = event.call_id
        if event.task is not None:
            attributes["crewline.task"] = event.task
        if event.attempt is not None:
            attributes["crewline.attempt"] = event.attempt
        if self.capture_content and event.arguments is not None:
            attributes["gen_ai.tool.call.arguments"] = event.arguments
        self._start("tool", (event.run_id, event.tool), f"execute_tool {event.tool}",
                    attributes)

    def _tool_finished(self, event: events.ToolCalled) -> None:
        entry = self._finish("tool", (event.run_id, event.tool))
        if entry is None:
            return
        if self.capture_content and event.result is not None:
            entry.span.set_attribute("gen_ai.tool.call.result", event.result)
        if not event.ok:
            self._failed(entry.span, "tool_error", event.error)
        entry.span.end()


_lock = threading.Lock()
_active: _Instrumentation | None = None


def instrument(tracer_provider: Any = None, *, meter_provider: Any = None,
               capture_content: bool = False) -> None:
    """Report every run from now on as OpenTelemetry spans and metrics.

    ``tracer_provider`` / ``meter_provider`` default to the global ones. Idempotent: a
    second call while instrumented changes nothing (``uninstrument()`` first to change
    providers). ``capture_content=True`` records prompts, completions and tool arguments
    and results on the spans; leave it off where they may hold personal data.
    """
    global _active
    with _lock:
        if _active is not None:
            return
        _active = _Instrumentation(tracer_provider, meter_provider, capture_content)
        events.on(events.Event)(_active)


def uninstrument() -> None:
    """Stop reporting; spans of runs in flight that have not ended are left unended."""
    global _active
    with _lock:
        if _active is None:
            return
        events.off(events.Event, _active)
        _active = None


def instrumented() -> bool:
    """Whether ``instrument()`` is in force."""
    return _active is not None
