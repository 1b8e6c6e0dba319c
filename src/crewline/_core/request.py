"""One LLM request, start to finish: rate limits, budget reservation, sending, recording,
settling and provider retries. Written once as a step; every driver runs this same code.

Each request the provider saw, or may have seen, becomes exactly one ``UsageRecord`` in
the scope current where the request was made: successes with the reported tokens,
failures and cancellations with ``outcome="error"``.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from crewline import events
from crewline._accounting.pricing import Price, price_of
from crewline._accounting.ratelimit import RateLimiter
from crewline._accounting.usage import Purpose, UsageRecord, UsageScope, current_scope
from crewline._core.effects import Send, Sleep, Step
from crewline.budget.amount import Amount
from crewline.errors import BudgetExceededError, DefinitionError, ProviderError
from crewline.log import get_logger
from crewline.transport.litellm import DEFAULT_TRANSPORT, ChatResponse, litellm_module

if TYPE_CHECKING:
    from crewline._definitions.llm import LLM
    from crewline.budget import Budget, Reservation

__all__ = ["build_request", "llm_call"]

_MAX_BACKOFF = 60.0
_log = get_logger("crewline._definitions.llm")


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


def _count_prompt(llm: LLM, request: dict[str, Any]) -> int:
    litellm = litellm_module()
    return int(litellm.token_counter(model=llm.model, messages=request["messages"],
                                     tools=request.get("tools")))


def worst_case(llm: LLM, request: dict[str, Any], price: Price) -> Amount:
    """The most this request can cost while its output stays within ``max_tokens``."""
    prompt = _count_prompt(llm, request)
    output = llm.max_tokens if llm.max_tokens is not None else llm.reserve_output_tokens
    return Amount(cost=price.cost(prompt, output), tokens=prompt + output, requests=1)


def _reserve(budgets: tuple[tuple[Budget, str], ...], llm: LLM, request: dict[str, Any],
             price: Price, run_id: str) -> list[Reservation]:
    """Hold the worst case on every budget in scope, all or nothing."""
    if not price.known:
        for budget, _ in budgets:
            if budget.requires_price:
                raise DefinitionError(
                    f"budget {budget.name!r} caps cost, but model {llm.model!r} has no known "
                    "price: set LLM(input_cost_per_token=..., output_cost_per_token=...)")
    amount = worst_case(llm, request, price)
    reservations: list[Reservation] = []
    seen: set[int] = set()
    try:
        for budget, key in budgets:
            if id(budget) in seen:  # one Budget in two scopes is one cap, charged once
                continue
            seen.add(id(budget))
            reservations.append(budget.reserve(amount, run_id=key))
    except BudgetExceededError as exc:
        for r in reservations:
            r.release()
        if events.listening():
            events.emit(events.BudgetExceeded(run_id=run_id, budget=exc.budget,
                                              message=exc.message))
        raise
    if events.listening():
        for r in reservations:
            events.emit(events.BudgetReserved(run_id=run_id, budget=r.budget.name,
                                              cost=str(amount.cost), tokens=amount.tokens,
                                              requests=amount.requests))
    return reservations


def _record(scope: UsageScope, llm: LLM, purpose: Purpose, price: Price,
            response: ChatResponse | None, started_at: datetime, latency: float
            ) -> UsageRecord:
    if response is None:
        prompt = completion = cached = reasoning = 0
        cost, priced = Decimal(0), price.known
    else:
        prompt, completion = response.prompt_tokens, response.completion_tokens
        cached, reasoning = response.cached_prompt_tokens, response.reasoning_tokens
        cost = price.cost(prompt, completion, cached)
        priced = price.known and response.usage_reported
    record = UsageRecord(
        id=uuid.uuid4().hex, run_id=scope.run_id, task=scope.task, attempt=scope.attempt,
        agent=scope.agent, purpose=purpose, model=llm.model, prompt_tokens=prompt,
        completion_tokens=completion, cached_prompt_tokens=cached,
        reasoning_tokens=reasoning, cost=cost, priced=priced, latency_s=latency,
        started_at=started_at, outcome="ok" if response is not None else "error")
    scope.add(record)
    return record


def _backoff(llm: LLM, retry: int, error: ProviderError) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, _MAX_BACKOFF)
    base: float = llm.retry_backoff * (2 ** (retry - 1))
    return min(base * random.uniform(0.5, 1.0), _MAX_BACKOFF)


def llm_call(llm: LLM, messages: list[dict[str, Any]], *, purpose: Purpose,
             tools: list[dict[str, Any]] | None = None,
             response_format: dict[str, Any] | None = None) -> Step[ChatResponse]:
    """Send one request (retrying what is retryable) and record every attempt at it."""
    scope = current_scope()
    if scope is None:
        raise RuntimeError("crewline: LLM request made outside any usage scope (engine bug)")
    request = build_request(llm, messages, tools=tools, response_format=response_format)
    price = price_of(llm)
    budgets: tuple[tuple[Budget, str], ...] = scope.all_budgets()  # type: ignore[assignment]
    transport = llm.transport or DEFAULT_TRANSPORT
    limiters: list[RateLimiter] = [*scope.all_limiters()]  # type: ignore[list-item]
    if llm.limiter is not None:
        limiters.append(llm.limiter)
    retry = 0
    while True:
        if limiters:
            needs_tokens = any(lim.tokens is not None for lim in limiters)
            estimate = _count_prompt(llm, request) + (llm.max_tokens or 0) if needs_tokens else 0
            wait = max(lim.acquire(estimate) for lim in limiters)
            if wait > 0:
                yield Sleep(wait)
        reservations = _reserve(budgets, llm, request, price, scope.run_id) if budgets else []
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            response: ChatResponse = yield Send(transport, request)
        except ProviderError as exc:
            record = _record(scope, llm, purpose, price, None, started_at,
                             time.perf_counter() - t0)
            for r in reservations:
                r.release()
            if events.listening():
                events.emit(events.LLMCallFinished(run_id=scope.run_id, record=record,
                                                   error=exc.message))
            if exc.retryable and retry < llm.num_retries:
                retry += 1
                delay = _backoff(llm, retry, exc)
                _log.warning("provider error, retrying", model=llm.model, status=exc.status,
                             kind=exc.kind, retry=retry, delay_s=round(delay, 3))
                yield Sleep(delay)
                continue
            raise
        except BaseException:
            # Cancelled or interrupted mid-request: the provider may have served it, so
            # it is a failed request on record; the hold on every budget is released.
            _record(scope, llm, purpose, price, None, started_at, time.perf_counter() - t0)
            for r in reservations:
                r.release()
            raise
        record = _record(scope, llm, purpose, price, response, started_at,
                         time.perf_counter() - t0)
        if reservations:
            actual = Amount(cost=record.cost, tokens=record.total_tokens, requests=1)
            for r in reservations:
                # A reply without usage was still served: charge the budget its hold.
                r.settle(actual if response.usage_reported else r.amount)
        if events.listening():
            events.emit(events.LLMCallFinished(run_id=scope.run_id, record=record))
        return response
