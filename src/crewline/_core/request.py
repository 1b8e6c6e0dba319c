"""One LLM request, start to finish: rate limits, budget holds, sending, recording,
settling and provider retries. Written once as a step; every driver runs this same code.

Each try the provider saw, or may have seen, becomes exactly one ``UsageRecord`` in the
scope current where the request was made: successes with the tokens reported, failures
with ``outcome="error"``, tries cut off in flight with ``outcome="cancelled"``. A try that
never left this process (no credentials, connection refused) is not a request the provider
saw: it is retried or raised, and recorded nowhere.

Budgets: a reply whose usage can be trusted settles its holds to the actual spend; a reply
without usage, with usage that cannot be right (negative, absurdly large, no prompt), or a
try cut off in flight settles at the full hold, since the provider may have billed it; a
provider error releases the holds, unless it broke off a stream the provider had begun to
send (``ProviderError.mid_stream``, or text already delivered): the provider billed what it
generated, so that try is on record as an error with ``priced=False`` and settles at the
full hold too. Its text reached the consumer as ``TextDelta`` events stamped with the try's
``retry`` number, so the retry's text is told apart from the broken one.
"""

from __future__ import annotations

import random
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from crewline import events
from crewline._accounting.ids import new_id
from crewline._accounting.policy import Holds, RequestPolicy
from crewline._accounting.pricing import Price, count_prompt_tokens, price_of
from crewline._accounting.usage import Outcome, Purpose, UsageRecord, UsageScope, current_scope
from crewline._core.effects import Reserve, Send, Settle, Sleep, Step
from crewline.budget.amount import Amount
from crewline.errors import BudgetExceededError, DefinitionError, ProviderError
from crewline.log import get_logger
from crewline.transport import openai as direct
from crewline.transport.litellm import DEFAULT_TRANSPORT, ChatResponse, Transport

if TYPE_CHECKING:
    from crewline._accounting.ratelimit import RateLimiter
    from crewline._definitions.llm import LLM

__all__ = ["build_request", "llm_call", "transport_for", "trusted_usage", "worst_case"]

_MAX_BACKOFF = 60.0
_MAX_TRUSTED_TOKENS = 100_000_000
"""More tokens than any model's context and output together: a count above it is noise."""
_log = get_logger("crewline.llm")


def build_request(llm: LLM, messages: list[dict[str, Any]], *,
                  tools: list[dict[str, Any]] | None = None,
                  response_format: dict[str, Any] | None = None) -> dict[str, Any]:
    """litellm keyword arguments for one request (never prices, never callbacks)."""
    request: dict[str, Any] = {"model": llm.model, "messages": messages, "max_retries": 0}
    if llm.base_url is not None:
        request["api_base"] = llm.base_url
    if llm.api_key is not None:
        request["api_key"] = llm.api_key.get_secret_value()
    if llm.temperature is not None:
        request["temperature"] = llm.temperature
    if llm.max_tokens is not None:
        request["max_tokens"] = llm.max_tokens
    if llm.timeout is not None:
        request["timeout"] = llm.timeout
    if tools:
        request["tools"] = tools
    if response_format is not None:
        request["response_format"] = response_format
    return request


def transport_for(llm: LLM) -> Transport:
    """Where ``llm``'s requests go: its own transport object, else the direct openai-SDK
    transport (one per ``LLM``) where it applies, else litellm."""
    chosen = llm.transport
    if chosen is not None and not isinstance(chosen, str):
        return chosen
    if llm.uses_litellm():
        return DEFAULT_TRANSPORT
    return direct.for_llm(llm)


def _count_prompt(llm: LLM, request: dict[str, Any]) -> int:
    return count_prompt_tokens(llm.model, request["messages"], request.get("tools"),
                               with_litellm=llm.uses_litellm())


def worst_case(llm: LLM, request: dict[str, Any], price: Price) -> Amount:
    """The most this request can cost while its output stays within ``max_tokens``."""
    prompt = _count_prompt(llm, request)
    output = llm.max_tokens if llm.max_tokens is not None else llm.reserve_output_tokens
    return Amount(cost=price.cost(prompt, output), tokens=prompt + output, requests=1)


def trusted_usage(response: ChatResponse) -> bool:
    """Whether the reply's usage can be billed as reported.

    litellm fills a missing ``usage`` with zeros, so 0 prompt tokens means no usage: every
    real request has a prompt. Negative or absurd counts are not a provider's bill either.
    """
    counts = (response.prompt_tokens, response.completion_tokens,
              response.cached_prompt_tokens, response.reasoning_tokens)
    return (response.usage_reported and response.prompt_tokens > 0
            and all(0 <= n <= _MAX_TRUSTED_TOKENS for n in counts))


def _record(scope: UsageScope, llm: LLM, purpose: Purpose, price: Price,
            response: ChatResponse | None, outcome: Outcome, started_at: datetime,
            latency: float, *, billed: bool = False) -> UsageRecord:
    """``billed``: an error the provider still charged for (a stream broken mid-way), at a
    cost nobody reported, so not priced."""
    prompt = completion = cached = reasoning = 0
    cost, priced = Decimal(0), price.known and outcome == "error" and not billed
    if response is not None:
        prompt, completion = max(response.prompt_tokens, 0), max(response.completion_tokens, 0)
        cached = max(response.cached_prompt_tokens, 0)
        reasoning = max(response.reasoning_tokens, 0)
        priced = price.known and trusted_usage(response)
        if priced:
            cost = price.cost(prompt, completion, cached)
    record = UsageRecord(
        id=new_id(), run_id=scope.run_id, task=scope.task, attempt=scope.attempt,
        agent=scope.agent, purpose=purpose, model=llm.model, prompt_tokens=prompt,
        completion_tokens=completion, cached_prompt_tokens=cached,
        reasoning_tokens=reasoning, cost=cost, priced=priced, latency_s=latency,
        started_at=started_at, outcome=outcome, delegated_by=scope.delegated_by)
    scope.add(record)
    return record


def _backoff(llm: LLM, retry: int, error: ProviderError) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, _MAX_BACKOFF)
    base: float = llm.retry_backoff * (2 ** (retry - 1))
    return min(base * random.uniform(0.5, 1.0), _MAX_BACKOFF)


def _check_priced(policy: RequestPolicy, llm: LLM, price: Price) -> None:
    capped = policy.requires_price
    if capped and not price.known:
        raise DefinitionError(
            f"budget {capped[0]!r} caps cost, but model {llm.model!r} has no known price: "
            "set LLM(input_cost_per_token=..., output_cost_per_token=...)")


def _admit(llm: LLM, request: dict[str, Any], limiters: tuple[RateLimiter, ...]) -> Step[None]:
    """Book the request on every rate limiter, then wait what the slowest one asks."""
    if not limiters:
        return
    needs_tokens = any(lim.tokens is not None for lim in limiters)
    estimate = _count_prompt(llm, request) + (llm.max_tokens or 0) if needs_tokens else 0
    wait = max(lim.acquire(estimate) for lim in limiters)
    if wait > 0:
        yield Sleep(wait)


def _hold(policy: RequestPolicy, llm: LLM, request: dict[str, Any], price: Price,
          run_id: str) -> Step[Holds | None]:
    """Reserve the worst case on every budget in force, all or nothing."""
    if not policy.budgets:
        return None
    amount = worst_case(llm, request, price)
    try:
        holds: Holds = yield Reserve(policy.budgets, amount, policy.blocking)
    except BudgetExceededError as exc:
        if events.listening():
            events.emit(events.make(events.BudgetExceeded, run_id=run_id, budget=exc.budget,
                                    message=exc.message))
        raise
    if events.listening():
        for r in holds.reservations:
            events.emit(events.make(events.BudgetReserved, run_id=run_id, budget=r.budget.name,
                                    cost=str(amount.cost), tokens=amount.tokens,
                                    requests=amount.requests))
    return holds


def _settle(holds: Holds | None, blocking: bool, record: UsageRecord | None,
            trusted: bool) -> Step[None]:
    if holds is None:
        return
    if record is None:
        yield Settle(holds, "release", None, blocking)
    elif trusted:
        actual = Amount(cost=record.cost, tokens=record.total_tokens, requests=1)
        yield Settle(holds, "actual", actual, blocking)
    else:
        yield Settle(holds, "full", None, blocking)


def _closing(holds: Holds | None) -> AbstractContextManager[object]:
    """Leave no hold open: one the try did not close is settled at the full hold."""
    return holds.guarded() if holds is not None else nullcontext()


class _TextSink:
    """Where a streamed try's text goes: ``TextDelta`` events stamped with the request's
    place in the run (so deltas of a rejected attempt, a conversion or a retried try are told
    apart), remembering whether any text arrived."""

    __slots__ = ("deltas", "texts")

    def __init__(self, scope: UsageScope, purpose: Purpose, retry: int) -> None:
        self.deltas = events.TextDeltas(run_id=scope.run_id, task=scope.task, agent=scope.agent,
                                        attempt=scope.attempt, purpose=purpose, retry=retry)
        self.texts = 0

    def __call__(self, text: str) -> None:
        self.texts += 1
        if events.listening():
            events.emit(self.deltas(text))


def _try(scope: UsageScope, llm: LLM, purpose: Purpose, price: Price, policy: RequestPolicy,
         request: dict[str, Any], retry: int) -> Step[ChatResponse]:
    """One try: hold, send, record, settle."""
    transport = transport_for(llm)
    on_delta = _TextSink(scope, purpose, retry) if request.get("stream") else None
    holds = (yield from _hold(policy, llm, request, price, scope.run_id)) if policy.budgets \
        else None
    with _closing(holds):
        started_at, t0 = datetime.now(UTC), time.perf_counter()
        if events.listening():
            events.emit(events.make(events.LLMCallStarted, run_id=scope.run_id, task=scope.task,
                                    attempt=scope.attempt, agent=scope.agent, purpose=purpose,
                                    model=llm.model, messages=request["messages"]))
        try:
            response: ChatResponse = yield Send(transport, request, on_delta)
        except ProviderError as exc:
            record = None
            # A stream broken off after the provider began it is billed for what it sent.
            broken = exc.mid_stream or (on_delta is not None and on_delta.texts > 0)
            if exc.sent:
                record = _record(scope, llm, purpose, price, None, "error", started_at,
                                 time.perf_counter() - t0, billed=broken)
            if holds is not None:
                yield from _settle(holds, policy.blocking, record if broken else None, False)
            if record is not None and events.listening():
                events.emit(events.make(events.LLMCallFinished, run_id=scope.run_id, record=record,
                                        error=exc.message, error_type=exc.kind))
            elif events.listening():
                events.emit(events.make(events.LLMCallNotSent, run_id=scope.run_id,
                                        error=exc.message, error_type=exc.kind))
            raise
        except BaseException as exc:
            # Cut off in flight (cancelled, interrupted): the provider may have served and
            # billed it, so it is on record, and leaving the block settles its holds in full.
            cut = _record(scope, llm, purpose, price, None, "cancelled", started_at,
                          time.perf_counter() - t0)
            if events.listening():
                events.emit(events.make(events.LLMCallFinished, run_id=scope.run_id, record=cut,
                                        error=repr(exc), error_type="cancelled"))
            raise
        record = _record(scope, llm, purpose, price, response, "ok", started_at,
                         time.perf_counter() - t0)
        if holds is not None:
            yield from _settle(holds, policy.blocking, record, trusted_usage(response))
    if events.listening():
        events.emit(events.make(events.LLMCallFinished, run_id=scope.run_id, record=record,
                                response=response))
    return response


def llm_call(llm: LLM, messages: list[dict[str, Any]], *, policy: RequestPolicy,
             purpose: Purpose, tools: list[dict[str, Any]] | None = None,
             response_format: dict[str, Any] | None = None) -> Step[ChatResponse]:
    """Send one request (retrying what is retryable) and record every try at it."""
    scope = current_scope()
    if scope is None:
        raise RuntimeError("crewline: LLM request made outside any usage scope (engine bug)")
    request = build_request(llm, messages, tools=tools, response_format=response_format)
    if policy.stream:
        # Usage of a streamed reply comes only in a last chunk, and only when asked for.
        request.update(stream=True, stream_options={"include_usage": True})
    price = price_of(llm)
    _check_priced(policy, llm, price)
    limiters = (*policy.limiters, *((llm.limiter,) if llm.limiter is not None else ()))
    retry = 0
    while True:
        if policy.stream:
            yield Sleep(0)  # checkpoint: a closed sync stream stops here, before it holds or sends
        yield from _admit(llm, request, limiters)
        try:
            return (yield from _try(scope, llm, purpose, price, policy, request, retry))
        except ProviderError as exc:
            if not exc.retryable or retry >= llm.num_retries:
                raise
            retry += 1
            delay = _backoff(llm, retry, exc)
            _log.warning("provider error, retrying", model=llm.model, status=exc.status,
                         kind=exc.kind, retry=retry, delay_s=round(delay, 3))
            yield Sleep(delay)
