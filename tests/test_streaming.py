"""Streaming (``crew.stream`` / ``crew.astream``), checked against the fake server's counts.

Every test goes through litellm's real HTTP path to the fake server on 127.0.0.1, which
streams word by word and records what it sent, including streams the client cut off.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import pytest

from crewline import LLM, Agent, Budget, Crew, Task, tool
from crewline.errors import ProviderError
from crewline.events import Event, KickoffFinished, LLMCallStarted, TextDelta
from crewline.testing import FakeLLMServer, ScriptedModel
from crewline.testing.server import Reply, ToolCall

IN, OUT = Decimal("0.000001"), Decimal("0.000002")


def _llm(server: FakeLLMServer, **kw: Any) -> LLM:
    return LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test",
               input_cost_per_token=IN, output_cost_per_token=OUT, **kw)


def _billed(served: Any) -> Decimal:
    return Decimal(served.prompt_tokens * IN + served.completion_tokens * OUT)


def _picky(output: Any) -> tuple[bool, Any]:
    """Rejects every first attempt, so each task has a rejected attempt's deltas too."""
    return (output.raw.startswith("Accepted"), "start with Accepted")


def _two_task_crew(server: FakeLLMServer, tag: str = "") -> Crew:
    server.add_rule("second try", Reply(content="Accepted answer number two"))
    server.add_rule(None, Reply(content="First answer that will be rejected"))
    agent = Agent(role="Writer", goal="write", llm=_llm(server))
    return Crew(agents=[agent], tasks=[
        Task(name="draft", description=f"[[{tag}draft]] Draft {{topic}}.",
             expected_output="text", agent=agent, guardrail=_picky),
        Task(name="polish", description=f"[[{tag}polish]] Polish it.", expected_output="text",
             agent=agent, guardrail=_picky),
    ])


def _second_try(served: Any) -> bool:
    return any("rejected" in str(m.get("content")) for m in served.messages)


def _text_by_attempt(seen: list[Event]) -> dict[tuple[str | None, int | None], str]:
    text: dict[tuple[str | None, int | None], str] = defaultdict(str)
    for event in seen:
        if isinstance(event, TextDelta) and event.purpose == "agent":
            text[(event.task, event.attempt)] += event.text
    return dict(text)


def _check_streamed_kickoff(server: FakeLLMServer, out: Any, seen: list[Event]) -> None:
    by_attempt = _text_by_attempt(seen)
    expected = {(t.name, a.number): a.raw for t in out.tasks_output for a in t.attempts}
    assert by_attempt == expected
    assert len(expected) == 4  # two tasks, each with a rejected and an accepted attempt
    for t in out.tasks_output:
        served = server.totals(marker=t.name)
        assert (t.usage.requests, t.usage.prompt_tokens, t.usage.completion_tokens) == (
            served.requests, served.prompt_tokens, served.completion_tokens)
    assert all(s.stream and s.body["stream_options"] == {"include_usage": True}
               for s in server.served)
    assert all(r.priced for r in out.usage_records)


def _rules_for_retry(server: FakeLLMServer) -> None:
    server.add_rule(_second_try, Reply(content="Accepted answer number two"))
    server.add_rule(None, Reply(content="First answer that will be rejected"))


def _crew(server: FakeLLMServer, tag: str = "", **llm: Any) -> Crew:
    agent = Agent(role="Writer", goal="write", llm=_llm(server, **llm))
    return Crew(agents=[agent], tasks=[
        Task(name=f"{tag}draft", description=f"[[{tag}draft]] Draft {{topic}}.",
             expected_output="text", agent=agent, guardrail=_picky),
        Task(name=f"{tag}polish", description=f"[[{tag}polish]] Polish it.",
             expected_output="text", agent=agent, guardrail=_picky),
    ])


def test_sync_stream_deltas_equal_each_attempts_output_and_usage_is_exact(
        server: FakeLLMServer) -> None:
    _rules_for_retry(server)
    crew = _crew(server)
    with crew.stream(inputs={"topic": "tides"}) as stream:
        seen = list(stream)
    out = stream.result
    _check_streamed_kickoff(server, out, seen)
    assert isinstance(seen[-1], KickoffFinished) and seen[-1].ok


def test_async_stream_deltas_equal_each_attempts_output_and_usage_is_exact(
        server: FakeLLMServer) -> None:
    _rules_for_retry(server)
    crew = _crew(server)

    async def main() -> tuple[Any, list[Event]]:
        async with crew.astream(inputs={"topic": "tides"}) as stream:
            seen = [event async for event in stream]
        return stream.result, seen

    out, seen = asyncio.run(main())
    _check_streamed_kickoff(server, out, seen)


def test_listeners_of_a_streamed_kickoff_receive_text_deltas(server: FakeLLMServer) -> None:
    _rules_for_retry(server)
    heard: list[Event] = []
    with _crew(server).stream(inputs={"topic": "x"}, listeners=[heard.append]) as stream:
        seen = list(stream)
    assert [e for e in heard if isinstance(e, TextDelta)] == [
        e for e in seen if isinstance(e, TextDelta)]
    assert any(isinstance(e, TextDelta) for e in heard)


@tool
def lookup(city: str) -> str:
    """Look up a city's weather."""
    return f"sunny in {city}"


def test_streamed_tool_calls_are_assembled_and_run(server: FakeLLMServer) -> None:
    server.add_rule(lambda s: any(m.get("role") == "tool" for m in s.messages),
                    Reply(content="It is sunny in Oslo."))
    server.add_rule(None, Reply(tool_calls=[ToolCall("lookup", {"city": "Oslo"})]))
    agent = Agent(role="Forecaster", goal="forecast", llm=_llm(server), tools=[lookup])
    crew = Crew(agents=[agent], tasks=[Task(description="[[w]] Weather in Oslo?",
                                            expected_output="a sentence", agent=agent)])
    with crew.stream() as stream:
        seen = list(stream)
    out = stream.result
    assert out.raw == "It is sunny in Oslo."
    tool_message = next(m for m in server.served[1].messages if m.get("role") == "tool")
    assert tool_message["content"] == "sunny in Oslo"
    assert "".join(e.text for e in seen if isinstance(e, TextDelta)) == out.raw
    assert out.usage.total_tokens == server.totals().total_tokens
    assert all(s.stream for s in server.served)


def _one_task(server: FakeLLMServer, words: int, gap: float) -> Crew:
    """A one-task crew the server answers with ``words`` words, ``gap`` seconds apart."""
    server.stream_gap = gap
    server.add_rule(None, " ".join(f"w{i}" for i in range(words)))
    agent = Agent(role="Writer", goal="write", llm=_llm(server))
    return Crew(agents=[agent], tasks=[Task(description="[[s]] go", expected_output="x",
                                            agent=agent)])


def test_deltas_reach_the_consumer_as_they_arrive(server: FakeLLMServer) -> None:
    crew = _one_task(server, 12, 0.05)
    arrivals: list[float] = []
    with crew.stream() as stream:
        for event in stream:
            if isinstance(event, TextDelta):
                arrivals.append(time.perf_counter())
    assert len(arrivals) == 12
    # 50 ms between words: buffered to the end of the reply, they would arrive together.
    # (The first few may come together: a cold process's first stream starts slowly.)
    assert arrivals[-1] - arrivals[3] > 0.3


def test_a_stalled_consumer_holds_the_kickoff_back(server: FakeLLMServer) -> None:
    server.add_rule(None, " ".join(f"w{i}" for i in range(300)))  # more than the buffer (256)
    agent = Agent(role="Writer", goal="write", llm=_llm(server))
    crew = Crew(agents=[agent], tasks=[Task(description="[[s]] go", expected_output="x",
                                            agent=agent)])
    heard = threading.Condition()
    seen: list[Event] = []

    def count(event: Event) -> None:  # runs before the stream's own listener
        with heard:
            seen.append(event)
            heard.notify_all()

    with crew.stream(listeners=[count]) as stream:
        # The consumer stalls: 256 events fill the buffer (the kickoff's events before the
        # reply, then deltas); the 257th waits to be handed over, and so does the kickoff.
        with heard:
            assert heard.wait_for(lambda: len(seen) >= 257, timeout=120)
        time.sleep(0.3)
        assert len(seen) == 257
        assert sum(isinstance(e, TextDelta) for e in seen) < 300  # the reply is held back
        texts = [e.text for e in stream if isinstance(e, TextDelta)]
    assert len(texts) == 300
    assert stream.result.usage.completion_tokens == 300 == server.totals().completion_tokens



def test_a_stalled_async_consumer_holds_the_kickoff_back(server: FakeLLMServer) -> None:
    """``astream``'s back-pressure: with the consumer not reading, the kickoff stops reading
    the reply once its buffer (256 events) is full, instead of holding all of it."""
    server.add_rule(None, " ".join(f"w{i}" for i in range(300)))  # more than the buffer
    agent = Agent(role="Writer", goal="write", llm=_llm(server))
    crew = Crew(agents=[agent], tasks=[Task(description="[[sa]] go", expected_output="x",
                                            agent=agent)])
    seen: list[Event] = []

    async def main() -> tuple[int, int, list[str], int]:
        async with crew.astream(listeners=[seen.append]) as stream:
            for _ in range(400):  # the consumer stalls until the kickoff stops handing over
                await asyncio.sleep(0.01)
                before = len(seen)
                await asyncio.sleep(0.05)
                if len(seen) == before and any(isinstance(e, TextDelta) for e in seen):
                    break
            held, deltas = len(seen), sum(isinstance(e, TextDelta) for e in seen)

            async def drain() -> list[str]:
                return [e.text async for e in stream if isinstance(e, TextDelta)]

            # Reading again must wake the held kickoff: one never woken for room would hang.
            texts = await asyncio.wait_for(drain(), 30)
        return held, deltas, texts, stream.result.usage.completion_tokens

    held, deltas, texts, completion = asyncio.run(main())
    assert held == 256 and deltas < 300  # the buffer's worth, and the reply held back
    assert len(texts) == 300 and "".join(texts).split() == [f"w{i}" for i in range(300)]
    assert completion == 300 == server.totals(marker="sa").completion_tokens

# -- concurrency ---------------------------------------------------------------------------


def _check_isolated(server: FakeLLMServer, results: list[tuple[str, Any, list[Event]]]) -> None:
    for tag, out, seen in results:
        assert {e.run_id for e in seen} == {out.run_id}
        for t in out.tasks_output:
            served = server.totals(marker=f"{tag}-{t.name}")
            assert (t.usage.prompt_tokens, t.usage.completion_tokens) == (
                served.prompt_tokens, served.completion_tokens), tag
        texts = _text_by_attempt(seen)
        assert texts == {(t.name, a.number): a.raw for t in out.tasks_output
                         for a in t.attempts}
    total = server.totals()
    assert sum(out.usage.total_tokens for _, out, _ in results) == total.total_tokens


def _tagged_crew(server: FakeLLMServer) -> Crew:
    agent = Agent(role="Writer", goal="write", llm=_llm(server))
    return Crew(agents=[agent], tasks=[
        Task(name="a", description="[[{tag}-a]] Draft about {tag}.", expected_output="x",
             agent=agent),
        Task(name="b", description="[[{tag}-b]] Polish about {tag}.", expected_output="x",
             agent=agent),
    ])


def test_100_concurrent_astreams_of_one_crew_stay_apart(server: FakeLLMServer) -> None:
    server.stream_gap = 0.002
    crew = _tagged_crew(server)

    async def one(tag: str) -> tuple[str, Any, list[Event]]:
        async with crew.astream(inputs={"tag": tag}) as stream:
            seen = [event async for event in stream]
        return tag, stream.result, seen

    async def main() -> list[tuple[str, Any, list[Event]]]:
        return list(await asyncio.gather(*(one(f"k{i}") for i in range(100))))

    results = asyncio.run(main())
    assert len({out.run_id for _, out, _ in results}) == 100
    assert server.peak_in_flight > 1
    _check_isolated(server, results)


def test_8_threads_streaming_one_crew_stay_apart(server: FakeLLMServer,
                                                 fast_switching: None) -> None:
    server.stream_gap = 0.002
    crew = _tagged_crew(server)
    results: list[tuple[str, Any, list[Event]]] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def one(tag: str) -> None:
        barrier.wait()
        with crew.stream(inputs={"tag": tag}) as stream:
            seen = list(stream)
        with lock:
            results.append((tag, stream.result, seen))

    threads = [threading.Thread(target=one, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    _check_isolated(server, results)


# -- leaving early, failures, unpriced usage -----------------------------------------------


def _long_crew(server: FakeLLMServer, **llm: Any) -> Crew:
    server.stream_gap = 0.02
    server.add_rule(None, " ".join(f"w{i}" for i in range(200)))
    agent = Agent(role="Writer", goal="write", llm=_llm(server, max_tokens=500, **llm))
    return Crew(agents=[agent], tasks=[
        Task(name="long", description="[[long]] Write at length.", expected_output="x",
             agent=agent),
        Task(name="never", description="[[never]] Never reached.", expected_output="x",
             agent=agent)])


def _check_cut_off(server: FakeLLMServer, budget: Budget, error: BaseException) -> None:
    assert server.wait_idle()
    [served] = server.served
    assert served.marker == "long" and served.status == 499  # the server saw it go
    assert 0 < served.completion_tokens < 200
    records = error.usage_records  # type: ignore[attr-defined]
    assert [r.outcome for r in records] == ["cancelled"]
    spent, held = budget.spent(), budget.reserved()
    assert spent.cost >= _billed(served) and spent.requests == 1
    assert held.cost == 0 and held.requests == 0  # nothing stays reserved


def test_leaving_a_stream_early_cancels_the_kickoff_and_settles_the_full_hold(
        server: FakeLLMServer) -> None:
    budget = Budget(max_cost="1", period="day", name="streams")
    crew = _long_crew(server)
    before = {t.name for t in threading.enumerate()}
    with crew.stream(budget=budget) as stream:
        for n, _ in enumerate(e for e in stream if isinstance(e, TextDelta)):
            if n == 5:
                break
    assert {t.name for t in threading.enumerate()} - before == set()  # no thread left
    with pytest.raises(asyncio.CancelledError) as info:
        _ = stream.result
    _check_cut_off(server, budget, info.value)


def test_closing_an_async_stream_cancels_the_kickoff(server: FakeLLMServer) -> None:
    budget = Budget(max_cost="1", period="day", name="astreams")
    crew = _long_crew(server)

    async def main() -> BaseException:
        async with crew.astream(budget=budget) as stream:
            count = 0
            async for event in stream:
                count += isinstance(event, TextDelta)
                if count == 5:
                    await stream.close()
        with pytest.raises(asyncio.CancelledError) as info:
            _ = stream.result
        return info.value

    error = asyncio.run(main())
    _check_cut_off(server, budget, error)


def test_a_second_task_reading_an_async_stream_is_refused(server: FakeLLMServer) -> None:
    """An ``astream`` has one consumer: a second task reading it while the first waits gets
    an error that says so (it would otherwise wait for ever), and the first reads it all."""
    crew = _one_task(server, 5, 0.0)
    server.latency = 0.3  # the first reader is parked, waiting for the first token

    async def main() -> tuple[list[str], str, int]:
        sent = asyncio.Event()

        async def read_all(stream: Any) -> list[str]:
            texts = []
            async for event in stream:
                if isinstance(event, LLMCallStarted):
                    sent.set()
                elif isinstance(event, TextDelta):
                    texts.append(event.text)
            return texts

        async with crew.astream() as stream:
            first = asyncio.create_task(read_all(stream))
            await sent.wait()
            await asyncio.sleep(0.01)  # the first reader is back waiting, for the first token
            with pytest.raises(RuntimeError) as refused:
                await anext(aiter(stream))
            texts = await asyncio.wait_for(first, 30)
        return texts, str(refused.value), stream.result.usage.completion_tokens

    texts, message, completion = asyncio.run(main())
    assert "another task" in message
    assert "".join(texts).split() == [f"w{i}" for i in range(5)]
    assert completion == 5 == server.totals(marker="s").completion_tokens


def test_cancelling_the_consumer_cancels_the_kickoff(server: FakeLLMServer) -> None:
    budget = Budget(max_cost="1", period="day", name="consumer")
    crew = _long_crew(server)
    streams: list[Any] = []

    async def consume(reading: asyncio.Event) -> None:
        async with crew.astream(budget=budget) as stream:
            streams.append(stream)
            deltas = 0
            async for event in stream:
                deltas += isinstance(event, TextDelta)
                if deltas == 5:
                    reading.set()

    async def main() -> BaseException:
        reading = asyncio.Event()
        task = asyncio.create_task(consume(reading))
        await reading.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(asyncio.CancelledError) as info:
            _ = streams[0].result
        return info.value

    error = asyncio.run(main())
    _check_cut_off(server, budget, error)


def test_a_provider_error_ends_the_stream_and_result_raises_it(server: FakeLLMServer) -> None:
    server.add_rule("[[second]]", Reply(status=400, content="bad request"))
    agent = Agent(role="Writer", goal="write", llm=_llm(server))
    crew = Crew(agents=[agent], tasks=[
        Task(name="first", description="[[first]] ok", expected_output="x", agent=agent),
        Task(name="second", description="[[second]] fails", expected_output="x", agent=agent)])
    with crew.stream() as stream:
        seen = list(stream)
    assert isinstance(seen[-1], KickoffFinished) and not seen[-1].ok
    with pytest.raises(ProviderError, match="status 400") as info:
        _ = stream.result
    assert info.value.usage.requests == 1 and info.value.usage.failed_requests == 1
    assert info.value.usage.total_tokens == server.totals().total_tokens


def test_a_stream_without_a_usage_chunk_is_unpriced_and_charged_the_full_hold(
        server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(content="an answer without usage", stream_usage=False))
    budget = Budget(max_cost="1", period="day", name="no-usage")
    agent = Agent(role="Writer", goal="write", llm=_llm(server, max_tokens=100))
    crew = Crew(agents=[agent], tasks=[Task(description="[[u]] go", expected_output="x",
                                            agent=agent)])
    with crew.stream(budget=budget) as stream:
        list(stream)
    out = stream.result
    [record] = out.usage_records
    server.wait_idle()  # a stream records itself after its last byte, which a fast client may beat
    assert server.served[0].usage_sent is False
    # litellm made up an estimate; it is not the provider's bill.
    assert record.priced is False and record.prompt_tokens == 0 and record.cost == 0
    spent = budget.spent()
    assert spent.cost > 0 and spent.tokens > 100  # the full hold: prompt + max_tokens
    assert budget.reserved().cost == 0


def _broken_then_whole(server: FakeLLMServer) -> Crew:
    """The first try's stream breaks off after two words; the retry streams in full."""
    server.add_rule(None, Reply(content="one two three four five", stream_break_after=2),
                    times=1)
    server.add_rule(None, "alpha beta gamma")
    agent = Agent(role="Writer", goal="write",
                  llm=_llm(server, max_tokens=50, num_retries=2, retry_backoff=0.01))
    return Crew(agents=[agent], tasks=[Task(name="only", description="[[broken]] go",
                                            expected_output="x", agent=agent)])


def _check_broken_then_whole(server: FakeLLMServer, budget: Budget, out: Any,
                             seen: list[Event]) -> None:
    text: dict[int, str] = defaultdict(str)
    for event in seen:
        if isinstance(event, TextDelta):
            assert (event.task, event.attempt, event.purpose) == ("only", 1, "agent")
            text[event.retry] += event.text
    # The broken try's text and the retry's are told apart; the last is the output.
    assert dict(text) == {0: "one two", 1: "alpha beta gamma"} and out.raw == text[1]
    assert server.wait_idle()
    broken, whole = server.served
    assert (broken.status, broken.completion_tokens, whole.status) == (502, 2, 200)
    first, second = out.usage_records
    # The provider billed the broken stream; nobody reported what: on record, unpriced.
    assert (first.outcome, first.priced, second.outcome, second.priced) == (
        "error", False, "ok", True)
    assert (second.prompt_tokens, second.completion_tokens) == (
        whole.prompt_tokens, whole.completion_tokens)
    spent, held = budget.spent(), budget.reserved()
    assert spent.cost >= _billed(broken) + _billed(whole) and spent.requests == 2
    assert held.cost == 0 and held.requests == 0


def test_a_stream_broken_off_and_retried_tells_its_tries_apart_and_pays_both(
        server: FakeLLMServer) -> None:
    budget = Budget(max_cost="1", period="day", name="broken")
    crew = _broken_then_whole(server)
    with crew.stream(budget=budget) as stream:
        seen = list(stream)
    _check_broken_then_whole(server, budget, stream.result, seen)


def test_an_async_stream_broken_off_and_retried_tells_its_tries_apart_and_pays_both(
        server: FakeLLMServer) -> None:
    budget = Budget(max_cost="1", period="day", name="abroken")
    crew = _broken_then_whole(server)

    async def main() -> tuple[Any, list[Event]]:
        async with crew.astream(budget=budget) as stream:
            seen = [event async for event in stream]
        return stream.result, seen

    out, seen = asyncio.run(main())
    _check_broken_then_whole(server, budget, out, seen)


def _retrying_crew(server: FakeLLMServer, marker: str) -> Crew:
    """One task whose model retries once, quickly."""
    agent = Agent(role="Writer", goal="write",
                  llm=_llm(server, max_tokens=50, num_retries=1, retry_backoff=0.01))
    return Crew(agents=[agent], tasks=[Task(description=f"[[{marker}]] go",
                                            expected_output="x", agent=agent)])


def test_a_stream_broken_off_before_any_text_is_still_billed(server: FakeLLMServer) -> None:
    # The provider accepted the request and began its reply (the role chunk), then the
    # connection dropped: no text reached anyone, but the provider bills the prompt.
    server.add_rule(None, Reply(content="never shown", stream_break_after=0), times=1)
    server.add_rule(None, "shown")
    budget = Budget(max_cost="1", period="day", name="broken-early")
    crew = _retrying_crew(server, "b0")
    with crew.stream(budget=budget) as stream:
        deltas = [(e.retry, e.text) for e in stream if isinstance(e, TextDelta)]
    assert deltas == [(1, "shown")]
    first, second = stream.result.usage_records
    assert (first.outcome, first.priced, second.outcome) == ("error", False, "ok")
    assert server.wait_idle()
    broken, whole = server.served
    assert (broken.status, broken.completion_tokens) == (502, 0)
    assert budget.spent().cost >= _billed(broken) + _billed(whole) > second.cost
    assert budget.reserved().cost == 0


def test_a_provider_error_before_any_text_still_releases_the_hold(
        server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(status=503, content="busy"), times=1)
    server.add_rule(None, "fine")
    budget = Budget(max_cost="1", period="day", name="early-error")
    crew = _retrying_crew(server, "e")
    with crew.stream(budget=budget) as stream:
        deltas = [e for e in stream if isinstance(e, TextDelta)]
    first, second = stream.result.usage_records
    assert (first.outcome, first.priced, first.cost) == ("error", True, Decimal(0))
    assert [d.retry for d in deltas] == [1]  # only the retry streamed text
    assert budget.spent().cost == second.cost and budget.reserved().cost == 0


# -- ScriptedModel -------------------------------------------------------------------------


def test_scripted_model_streams_word_by_word_with_its_gap() -> None:
    model = ScriptedModel("one two three four", stream_gap=0.03)
    llm = LLM(model="scripted", transport=model)
    agent = Agent(role="Writer", goal="write", llm=llm)
    crew = Crew(agents=[agent], tasks=[Task(description="go", expected_output="x",
                                            agent=agent)])
    stamps: list[tuple[float, str]] = []
    with crew.stream() as stream:
        for event in stream:
            if isinstance(event, TextDelta):
                stamps.append((time.perf_counter(), event.text))
    assert [t for _, t in stamps] == ["one", " two", " three", " four"]
    assert stamps[-1][0] - stamps[0][0] >= 0.08
    assert stream.result.usage.total_tokens == model.totals().total_tokens

    async def main() -> list[str]:
        async with crew.astream() as s:
            return [e.text async for e in s if isinstance(e, TextDelta)]

    assert asyncio.run(main()) == ["one", " two", " three", " four"]


def test_scripted_model_breaks_a_stream_off_like_a_dropped_connection() -> None:
    model = ScriptedModel(Reply(content="one two three", stream_break_after=1), "four five")
    llm = LLM(model="scripted", transport=model, num_retries=1, retry_backoff=0.01)
    agent = Agent(role="Writer", goal="write", llm=llm)
    crew = Crew(agents=[agent], tasks=[Task(description="go", expected_output="x",
                                            agent=agent)])
    with crew.stream() as stream:
        deltas = [(e.retry, e.text) for e in stream if isinstance(e, TextDelta)]
    assert deltas == [(0, "one"), (1, "four"), (1, " five")]
    assert [r.outcome for r in stream.result.usage_records] == ["error", "ok"]
    broken, whole = model.served
    assert (broken.status, broken.completion_tokens) == (502, 1)
    assert stream.result.usage.completion_tokens == whole.completion_tokens


# -- the CLI -------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    """``crewline ARGV`` in this process, leaving the ``crewline`` logger as it found it."""
    import logging

    from crewline._surface.cli import main

    logger = logging.getLogger("crewline")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        return main(argv)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def test_cli_run_stream_prints_each_agents_text_live_labelled(
        server: FakeLLMServer, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "crew.yaml"
    path.write_text(
        "llm: {model: openai/gpt-4o-mini, base_url: " + server.base_url + ", api_key: sk-test}\n"
        "agents:\n  researcher: {role: Researcher}\n  writer: {role: Writer}\n"
        "tasks:\n  research: {description: '[[research]] Research {topic}.', agent: researcher}\n"
        "  write: {description: '[[write]] Write.', agent: writer, context: [research]}\n")
    code = _cli(["run", str(path), "--stream", "-i", "topic=owls"])
    out = capsys.readouterr().out
    assert code == 0
    research, write = (s.content for s in server.served)
    assert out.startswith(f"[research · Researcher]\n{research}\n\n[write · Writer]\n{write}\n")
    assert all(s.stream for s in server.served)


def test_cli_run_stream_labels_the_retry_of_a_stream_broken_off(
        server: FakeLLMServer, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server.add_rule(None, Reply(content="one two three", stream_break_after=2), times=1)
    server.add_rule(None, "alpha beta")
    path = tmp_path / "crew.yaml"
    path.write_text(
        "llm: {model: openai/gpt-4o-mini, base_url: " + server.base_url + ", api_key: sk-test,"
        " retry_backoff: 0.01}\n"
        "agents:\n  writer: {role: Writer}\n"
        "tasks:\n  write: {description: '[[write]] Write.', agent: writer}\n")
    code = _cli(["run", str(path), "--stream"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("[write · Writer]\none two\n\n[write · Writer · retry 1]\nalpha beta\n")


def test_a_litellm_stream_leaves_no_async_generator_per_chunk_for_the_loop(
        server: FakeLLMServer) -> None:
    """litellm takes each chunk with a new ``async for`` over the SDK's stream, and the SDK
    answers each with a new async generator; left after one chunk, each was closed by the
    event loop in a task of its own, queued ahead of the consumer of that chunk's delta.
    Through the litellm transport the stream is now read through one iterator."""
    server.add_rule("[[gen]]", " ".join(f"w{i}" for i in range(12)))
    agent = Agent(role="Writer", goal="write", llm=_llm(server, transport="litellm"))
    crew = Crew(agents=[agent], tasks=[Task(description="[[gen]] Write {i}.",
                                            expected_output="text", agent=agent)])
    finalized: list[str] = []

    async def main() -> str:
        hooks = sys.get_asyncgen_hooks()
        loop_finalizer = hooks.finalizer
        assert loop_finalizer is not None

        def finalizer(agen: Any) -> None:
            finalized.append(agen.__qualname__)
            loop_finalizer(agen)

        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
        try:
            text = ""
            for i in range(3):
                async with crew.astream(inputs={"i": i}) as stream:
                    text = "".join([e.text async for e in stream if isinstance(e, TextDelta)])
            return text
        finally:
            sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=loop_finalizer)

    assert asyncio.run(main()) == " ".join(f"w{i}" for i in range(12))
    assert server.totals(marker="gen").requests == 3
    # What the SDK leaves when a stream ends (one chain per request) is not per chunk.
    per_kind = Counter(finalized)
    assert max(per_kind.values(), default=0) <= 3, per_kind


def test_async_deltas_reach_the_consumer_as_they_arrive(server: FakeLLMServer) -> None:
    crew = _one_task(server, 12, 0.05)

    async def main() -> list[float]:
        arrivals: list[float] = []
        async with crew.astream() as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    arrivals.append(time.perf_counter())
        return arrivals

    arrivals = asyncio.run(main())
    assert len(arrivals) == 12
    assert arrivals[-1] - arrivals[3] > 0.3  # 50 ms between words, not one batch at the end


def test_the_first_delta_of_a_buffered_reply_is_not_held_back(server: FakeLLMServer) -> None:
    """A reply whose chunks all arrive at once: the consumer gets its first delta before
    the kickoff has read the rest of it."""
    crew = _one_task(server, 200, 0.0)
    emitted: list[str] = []

    def count(event: Event) -> None:  # a listener: runs in the kickoff, as it emits
        if isinstance(event, TextDelta):
            emitted.append(event.text)

    async def main() -> int:
        async with crew.astream(listeners=[count]) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    return len(emitted)
        raise AssertionError("no delta")

    assert asyncio.run(main()) < 10  # 1 when it is handed over at once; 200 if held back
