"""crewline owns provider retries: every attempt is a record, and errors carry usage."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time

import pytest

from crewline import LLM, Agent, Crew, CrewlineError, ProviderError, Task
from crewline._accounting.ratelimit import TokenBucket
from crewline.testing import FakeLLMServer, Reply, Served


def _crew(server: FakeLLMServer, marker: str = "r", **llm_kw: object) -> Crew:
    llm_kw.setdefault("retry_backoff", 0.01)
    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-secret-xyz",
              **llm_kw)
    agent = Agent(role="A", llm=llm)
    return Crew(agents=[agent], tasks=[Task(description=f"[[{marker}]] go", agent=agent)])


def test_429_is_retried_after_retry_after(server: FakeLLMServer) -> None:
    server.add_rule("[[r]]", Reply(status=429, retry_after=0.3), "fine", times=2)
    t0 = time.monotonic()
    out = _crew(server).kickoff()
    assert time.monotonic() - t0 >= 0.3
    assert [r.outcome for r in out.usage_records] == ["error", "ok"]
    assert out.usage.requests == 1 and out.usage.failed_requests == 1
    assert out.raw == "fine"
    assert server.totals().failed_requests == 1


@pytest.mark.parametrize("mode", ["sync", "asyncio"])
def test_5xx_retried_then_exhausted(server: FakeLLMServer, mode: str) -> None:
    server.add_rule("[[r]]", Reply(status=503, content="overloaded"))
    crew = _crew(server, num_retries=2)
    with pytest.raises(ProviderError) as info:
        if mode == "sync":
            crew.kickoff()
        else:
            asyncio.run(crew.kickoff_async())
    err = info.value
    assert err.status == 503 and err.retryable
    assert "openai/gpt-4o-mini" in str(err) and "503" in str(err)
    assert err.usage.failed_requests == 3 and err.usage.requests == 0
    assert len(err.usage_records) == server.totals().failed_requests == 3


def test_non_retryable_fails_fast_with_the_providers_message(server: FakeLLMServer) -> None:
    server.add_rule("[[r]]", Reply(status=401, content="Incorrect API key provided"))
    with pytest.raises(ProviderError) as info:
        _crew(server, num_retries=5).kickoff()
    err = info.value
    assert err.status == 401 and not err.retryable
    assert "Incorrect API key provided" in str(err)
    assert "sk-secret-xyz" not in str(err) and "sk-secret-xyz" not in repr(err)
    assert len(err.usage_records) == 1 == server.totals().failed_requests


def test_timeouts_are_retried_and_recorded(server: FakeLLMServer) -> None:
    server.add_rule("[[r]]", Reply(content="late", delay=3), times=1)
    out = _crew(server, timeout=0.5, num_retries=1).kickoff()
    assert [r.outcome for r in out.usage_records] == ["error", "ok"]
    assert out.raw != "late"


def test_malformed_body_is_a_provider_error_with_usage(server: FakeLLMServer) -> None:
    server.add_rule("[[r]]", Reply(raw_body="this is not json"))
    with pytest.raises(CrewlineError) as info:
        _crew(server, num_retries=0).kickoff()
    assert info.value.usage.failed_requests == 1


def test_injected_5xx_across_100_concurrent_tasks(server: FakeLLMServer) -> None:
    rng = random.Random(7)
    lock = threading.Lock()

    def flaky(s: Served) -> bool:
        with lock:
            return rng.random() < 0.2

    server.add_rule(flaky, Reply(status=500, content="boom"))
    server.latency = 0.01

    async def main() -> list[object]:
        crews = [_crew(server, marker=f"m{i}", num_retries=1) for i in range(100)]
        return await asyncio.gather(*(c.kickoff_async() for c in crews),
                                    return_exceptions=True)

    results = asyncio.run(main())
    records = []
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, ProviderError), repr(result)
            records.extend(result.usage_records)
        else:
            records.extend(result.usage_records)  # type: ignore[attr-defined]
    served = server.totals()
    assert len(records) == served.requests + served.failed_requests
    assert sum(r.outcome == "ok" for r in records) == served.requests
    assert sum(r.total_tokens for r in records) == served.total_tokens
    assert any(isinstance(r, BaseException) for r in results) or served.failed_requests > 0


def test_token_bucket_books_debt_without_waiting() -> None:
    now = [0.0]
    bucket = TokenBucket(60, clock=lambda: now[0])  # one per second
    waits = [bucket.book(1) for _ in range(62)]
    assert waits[:60] == [0.0] * 60
    assert waits[60] == pytest.approx(1.0) and waits[61] == pytest.approx(2.0)
    now[0] = 2.0
    assert bucket.book(1) == pytest.approx(1.0)


def test_max_rpm_holds_under_load_without_stalling_other_crews(server: FakeLLMServer) -> None:
    free = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="k")
    small = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="k",
                max_rpm=30)  # burst 30, then one per 2 s
    a, b = Agent(role="limited", llm=small), Agent(role="free", llm=free)
    slow = Crew(agents=[a], tasks=[Task(description=f"[[lim{i}]] x", agent=a,
                                        async_execution=i < 49) for i in range(50)])
    fast = Crew(agents=[b], tasks=[Task(description="[[free]] y", agent=b)])

    async def main() -> tuple[float, int, float]:
        t0 = time.monotonic()
        slow_run = asyncio.create_task(slow.kickoff_async())
        await asyncio.sleep(0.05)
        await fast.kickoff_async()
        fast_done = time.monotonic() - t0
        await asyncio.sleep(0.3)
        sent_while_limited = server.totals().requests - 1
        elapsed = time.monotonic() - t0
        slow_run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow_run
        return fast_done, sent_while_limited, elapsed

    _, sent, elapsed = asyncio.run(main())
    # Order, not wall time, so it holds on a loaded machine too: the unrelated crew's request
    # reached the server before any limited request that had to wait for the bucket. Queued
    # behind the limited crew (or behind a limiter that sleeps holding the loop), it would
    # come after all 49 of them.
    free = next(s for s in server.served if s.marker == "free")
    ahead = [s for s in server.served
             if (s.marker or "").startswith("lim") and s.received_at < free.received_at]
    assert len(ahead) <= 30
    assert 30 <= sent <= 30 + int(elapsed / 2) + 1  # the burst, then one per 2 s at most
