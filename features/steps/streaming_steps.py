"""Steps for streaming.feature: crew.stream / crew.astream against the fake server."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal
from typing import Any

from behave import given, then, when

from crewline import LLM, Agent, Budget, Crew, Task
from crewline.events import TextDelta
from crewline.testing.server import Reply
from crewline.transport.litellm import litellm_module

IN, OUT = Decimal("0.000001"), Decimal("0.000002")


def _llm(context: Any, **kw: Any) -> LLM:
    return LLM(model="openai/gpt-4o-mini", base_url=context.server.base_url, api_key="sk-test",
               input_cost_per_token=IN, output_cost_per_token=OUT, **kw)


def _gap(context: Any, seconds: float) -> None:
    context.server.stream_gap = seconds
    context.cleanups.append(lambda: setattr(context.server, "stream_gap", 0.0))


@given("the server streams word by word, {ms:d} ms apart")
def given_gap(context: Any, ms: int) -> None:
    _gap(context, ms / 1000)


@given("a crew whose two tasks are marked with the kickoff's tag")
def given_tagged_crew(context: Any) -> None:
    agent = Agent(role="Writer", goal="write", llm=_llm(context))
    context.crew = Crew(agents=[agent], tasks=[
        Task(name="a", description="[[{tag}-a]] Draft {tag}.", expected_output="x", agent=agent),
        Task(name="b", description="[[{tag}-b]] Polish {tag}.", expected_output="x",
             agent=agent)])


@when("{n:d} kickoffs of that one crew are streamed at once with astream")
def when_many_astreams(context: Any, n: int) -> None:
    async def one(tag: str) -> tuple[str, Any, list[Any]]:
        async with context.crew.astream(inputs={"tag": tag}) as stream:
            seen = [event async for event in stream]
        return tag, stream.result, seen

    async def main() -> list[tuple[str, Any, list[Any]]]:
        return list(await asyncio.gather(*(one(f"s{i}") for i in range(n))))

    context.streams = asyncio.run(main())


@then("every stream yielded events of its own kickoff only")
def then_own_events(context: Any) -> None:
    for _, out, seen in context.streams:
        assert {e.run_id for e in seen} == {out.run_id}


@then("each stream's text deltas, joined per task and attempt, are that attempt's answer")
def then_deltas_join(context: Any) -> None:
    for _, out, seen in context.streams:
        text: dict[tuple[Any, Any], str] = defaultdict(str)
        for e in seen:
            if isinstance(e, TextDelta):
                text[(e.task, e.attempt)] += e.text
        assert dict(text) == {(t.name, a.number): a.raw for t in out.tasks_output
                              for a in t.attempts}


@then("every task's usage equals what the server served for it, and every request was "
      "streamed")
def then_usage_exact(context: Any) -> None:
    for tag, out, _ in context.streams:
        for t in out.tasks_output:
            served = context.server.totals(marker=f"{tag}-{t.name}")
            assert (t.usage.prompt_tokens, t.usage.completion_tokens) == (
                served.prompt_tokens, served.completion_tokens)
    assert all(s.stream for s in context.server.served)


@given("a crew with a long first task and a second task, under a budget of ${limit}")
def given_long_crew(context: Any, limit: str) -> None:
    context.server.add_rule(None, " ".join(f"w{i}" for i in range(200)))
    agent = Agent(role="Writer", goal="write", llm=_llm(context, max_tokens=500))
    context.budget = Budget(max_cost=limit, name="stream-budget")
    context.crew = Crew(agents=[agent], tasks=[
        Task(name="long", description="[[long]] Write at length.", expected_output="x",
             agent=agent),
        Task(name="never", description="[[never]] Never reached.", expected_output="x",
             agent=agent)])


@when("the consumer leaves the stream after {n:d} words")
def when_leave_early(context: Any, n: int) -> None:
    words = 0
    with context.crew.stream(budget=context.budget) as stream:
        for event in stream:
            words += isinstance(event, TextDelta)
            if words == n:
                break
    context.stream = stream
    try:
        context.output = stream.result
    except BaseException as exc:  # the cancellation is what this scenario expects
        context.error = exc


@then("the server saw the connection closed before the reply ended")
def then_closed(context: Any) -> None:
    assert context.server.wait_idle()
    [served] = context.server.served
    assert served.status == 499 and 0 < served.completion_tokens < 200


@then("the request is on record as cancelled, and the result raises the cancellation")
def then_cancelled(context: Any) -> None:
    assert isinstance(context.error, asyncio.CancelledError), context.error
    assert [r.outcome for r in context.error.usage_records] == ["cancelled"]


@then("the budget was charged at least what the server billed, and nothing stays reserved")
def then_charged(context: Any) -> None:
    [served] = context.server.served
    billed = served.prompt_tokens * IN + served.completion_tokens * OUT
    run_id = context.stream.run_id
    assert context.budget.spent(run_id=run_id).cost >= billed
    assert context.budget.reserved(run_id=run_id).requests == 0


@then("the second task never ran")
def then_second_never(context: Any) -> None:
    assert context.server.totals(marker="never").requests == 0
    assert all(s.marker != "never" for s in context.server.served)


@given("the server streams replies that end without a usage chunk")
def given_no_usage(context: Any) -> None:
    context.server.add_rule(None, Reply(content="an answer with no usage", stream_usage=False))


@given("a crew with one task, under a budget of ${limit}")
def given_one_task(context: Any, limit: str) -> None:
    agent = Agent(role="Writer", goal="write", llm=_llm(context, max_tokens=100))
    context.budget = Budget(max_cost=limit, name="no-usage")
    context.crew = Crew(agents=[agent], tasks=[Task(description="[[u]] go",
                                                    expected_output="x", agent=agent)])


@when("the crew is streamed to its end")
def when_streamed(context: Any) -> None:
    with context.crew.stream(budget=context.budget) as stream:
        list(stream)
    context.stream = stream
    context.output = stream.result


@then("the request is on record as unpriced, with no tokens")
def then_unpriced(context: Any) -> None:
    [record] = context.output.usage_records
    assert (record.priced, record.total_tokens, record.cost) == (False, 0, 0)


@then("the budget was charged the full hold of the request")
def then_full_hold(context: Any) -> None:
    spent = context.budget.spent(run_id=context.stream.run_id)
    assert spent.tokens > 100 and spent.cost > 0  # prompt as counted + max_tokens


@then("litellm itself reports usage for that same reply, made up from its own count "
      "(the control)")
def then_litellm_guesses(context: Any) -> None:
    chunks = list(litellm_module().completion(
        model="openai/gpt-4o-mini", api_base=context.server.base_url, api_key="sk-test",
        messages=[{"role": "user", "content": "go"}], stream=True, max_retries=0,
        stream_options={"include_usage": True}))
    usage = next(c.usage for c in reversed(chunks) if getattr(c, "usage", None))
    assert usage.prompt_tokens > 0 and context.server.served[-1].usage_sent is False
