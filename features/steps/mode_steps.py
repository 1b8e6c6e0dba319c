"""Steps for modes.feature: real concurrency, no global state, failures as one error."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from behave import given, then, when
from crew_world import assert_same_usage, gather, llm, outcome

from crewline import Agent, Crew, ProviderError, Task
from crewline.testing import Reply
from crewline.transport.litellm import litellm_module

LITELLM_LISTS = ("callbacks", "success_callback", "failure_callback", "input_callback",
                 "service_callback", "_async_success_callback", "_async_failure_callback",
                 "_async_input_callback")


def _litellm_lists() -> dict[str, list[Any]]:
    litellm = litellm_module()
    return {name: list(getattr(litellm, name, [])) for name in LITELLM_LISTS}


@given("a crew of one task marked with the crew's number")
def given_numbered_crew(context: Any) -> None:
    agent = Agent(role="Worker {i}", goal="work", llm=llm(context.server))
    context.crew = Crew(agents=[agent], tasks=[
        Task(name="only", description="[[c{i}]] Do job {i} for crew {i}.", agent=agent)])
    context.numbered = {}


@when("{n:d} kickoffs of it are gathered with kickoff_async")
def when_many_async(context: Any, n: int) -> None:
    outs = gather(context.crew.kickoff_async({"i": i}) for i in range(n))
    context.numbered = dict(enumerate(outs))


@then("every kickoff's usage equals the server's count for its marker")
def then_numbered_exact(context: Any) -> None:
    assert context.numbered
    for i, out in context.numbered.items():
        served = context.server.totals(marker=f"c{i}")
        assert served.requests == 1, (i, served)
        assert_same_usage(out.usage, served, f"kickoff {i}")
        assert out.tasks_output[0].usage == out.usage


@then("the server had more than {n:d} requests in flight at once")
def then_peak_above(context: Any, n: int) -> None:
    peak = context.server.peak_in_flight
    assert peak > n, f"only {peak} requests were ever in flight at once"


@then("the same {n:d} kickoffs as asyncio.to_thread(kickoff), answered after {ms:d} ms, never "
      "had more than {cap:d} in flight")
def then_to_thread_control(context: Any, n: int, ms: int, cap: int) -> None:
    context.server.reset()
    context.server.latency = ms / 1000
    outs = gather(asyncio.to_thread(context.crew.kickoff, {"i": i}) for i in range(n))
    assert len(outs) == n
    peak = context.server.peak_in_flight
    assert peak <= cap, f"to_thread(kickoff) reached {peak} in flight; the control is void"


@given("the user registered a callback of their own in litellm's success_callback")
def given_user_callback(context: Any) -> None:
    litellm = litellm_module()

    def users_own_callback(kwargs: Any, response: Any, start: Any, end: Any) -> None:
        pass

    litellm.success_callback.append(users_own_callback)
    context.user_callback = users_own_callback
    context.cleanups.append(lambda: litellm.success_callback.remove(users_own_callback))
    context.litellm_before = _litellm_lists()


@when("{threads:d} kickoffs on threads and {tasks:d} gathered kickoff_async run together, "
      "twice over")
def when_mixed(context: Any, threads: int, tasks: int) -> None:
    crew = context.crew
    results: dict[int, Any] = {}
    for round_ in range(2):
        base = round_ * (threads + tasks)
        barrier = threading.Barrier(threads)

        def work(i: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                results[i] = crew.kickoff({"i": i})
            except BaseException as exc:
                results[i] = exc

        async def gathered(base: int = base) -> None:
            outs = await asyncio.gather(
                *(crew.kickoff_async({"i": i}) for i in range(base + threads,
                                                             base + threads + tasks)),
                return_exceptions=True)
            results.update(zip(range(base + threads, base + threads + tasks), outs,
                               strict=True))

        started = [threading.Thread(target=work, args=(base + i,)) for i in range(threads)]
        for t in started:
            t.start()
        asyncio.run(gathered())
        for t in started:
            t.join()
    context.numbered = results


@then("no kickoff failed and each reported the server's count for its marker")
def then_mixed_ok(context: Any) -> None:
    failed = {i: r for i, r in context.numbered.items() if isinstance(r, BaseException)}
    assert not failed, failed
    then_numbered_exact(context)


@then("litellm's callback lists are exactly as before, the user's callback still in place")
def then_litellm_untouched(context: Any) -> None:
    assert _litellm_lists() == context.litellm_before
    assert context.user_callback in litellm_module().success_callback


@then("one litellm call made with callbacks= does change those lists (the control)")
def then_callbacks_control(context: Any) -> None:
    litellm = litellm_module()
    saved = _litellm_lists()

    def per_call(kwargs: Any, response: Any, start: Any, end: Any) -> None:
        pass

    try:
        litellm.completion(model="openai/gpt-4o-mini", api_base=context.server.base_url,
                           api_key="sk-test", max_retries=0, callbacks=[per_call],
                           messages=[{"role": "user", "content": "[[control]] hello"}])
        assert _litellm_lists() != saved, "callbacks= left the lists alone; the check is void"
    finally:
        for name, items in saved.items():
            if hasattr(litellm, name):
                getattr(litellm, name)[:] = items
    assert _litellm_lists() == saved


# -- failures ------------------------------------------------------------------------------

SLOW_DELAY = 3.0


def _failing_crew(context: Any, slow_delay: float) -> None:
    context.server.add_rule("[[slow]]", Reply(content="slow done", delay=slow_delay))
    context.server.add_rule("[[boom]]", Reply(status=401, content="bad key"))
    context.last_ran = []
    model = llm(context.server, num_retries=0)
    agent = Agent(role="Worker", llm=model)
    context.crew = Crew(agents=[agent], tasks=[
        Task(name="slow", description="[[slow]] the slow one", agent=agent,
             async_execution=True),
        Task(name="boom", description="[[boom]] the failing one", agent=agent,
             async_execution=True),
        Task(name="last", description="[[last]] after both", agent=agent,
             callback=lambda output: context.last_ran.append(output.name)),
    ])
    context.slow_delay = slow_delay


@given("a crew with a slow parallel task, a parallel task the server rejects with 401, "
       "and a last task")
def given_failing_async(context: Any) -> None:
    _failing_crew(context, SLOW_DELAY)


@given("a crew with a parallel task answered after {ms:d} ms, a parallel task the server "
       "rejects with 401, and a last task")
def given_failing_sync(context: Any, ms: int) -> None:
    _failing_crew(context, ms / 1000)


@when("the crew is kicked off with kickoff_async")
def when_kickoff_async(context: Any) -> None:
    started = time.monotonic()
    outcome(context, lambda: asyncio.run(context.crew.kickoff_async()))
    context.elapsed = time.monotonic() - started


@then("the kickoff raises a ProviderError with status {status:d}, not an exception group")
def then_provider_error(context: Any, status: int) -> None:
    error = context.error
    assert isinstance(error, ProviderError), f"expected a ProviderError, got {error!r}"
    assert not isinstance(error, BaseExceptionGroup)
    assert error.status == status and "bad key" in str(error), str(error)


@then("it raised well before the slow task's answer was due")
def then_fast(context: Any) -> None:
    assert context.elapsed < context.slow_delay / 2, (
        f"the kickoff took {context.elapsed:.2f}s: the slow sibling was awaited, not cancelled")


@then("the slow task's request was abandoned, so nothing is left in flight")
def then_abandoned(context: Any) -> None:
    assert context.server.wait_idle(timeout=1.0), "a request is still in flight"
    statuses = {s.marker: s.status for s in context.server.served}
    assert statuses == {"slow": 499, "boom": 401}, statuses
    slow = [r for r in context.error.usage_records if r.task == "slow"]
    assert [r.outcome for r in slow] == ["cancelled"], slow


@then("the error carries the usage spent, equal to the server's count")
def then_error_usage(context: Any) -> None:
    context.server.wait_idle(timeout=5.0)
    assert_same_usage(context.error.usage, context.server.totals(), "the failed kickoff")
    assert context.error.usage_records, "the error carries no records"


@then("the last task never ran")
def then_last_never_ran(context: Any) -> None:
    assert context.last_ran == []
    assert context.server.totals(marker="last").requests == 0


@then("a plain asyncio.gather of the same two requests leaves the slow one in flight "
      "(the control)")
def then_gather_control(context: Any) -> None:
    context.server.reset()
    context.server.add_rule("[[slow]]", Reply(content="slow done", delay=SLOW_DELAY))
    context.server.add_rule("[[boom]]", Reply(status=401, content="bad key"))
    litellm = litellm_module()

    def ask(marker: str) -> Any:
        return litellm.acompletion(
            model="openai/gpt-4o-mini", api_base=context.server.base_url, api_key="sk-test",
            max_retries=0, messages=[{"role": "user", "content": f"[[{marker}]] go"}])

    async def main() -> bool:
        slow = asyncio.create_task(ask("slow"))
        boom = asyncio.create_task(ask("boom"))
        with contextlib.suppress(Exception):  # the 401 is what ends the gather
            await asyncio.gather(slow, boom)
        left_running = not slow.done()
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        return left_running

    assert asyncio.run(main()), "gather cancelled the sibling after all; the control is void"


@then("the slow task finished first: its answer is on the error's usage records")
def then_slow_settled(context: Any) -> None:
    slow = [(r.task, r.outcome) for r in context.error.usage_records if r.task == "slow"]
    assert slow == [("slow", "ok")], slow
    assert context.server.totals(marker="slow").requests == 1


# -- for each ------------------------------------------------------------------------------


@when("it is kicked off for each of {n:d} inputs with kickoff_for_each_async, "
      "at most {cap:d} at once")
def when_for_each_async(context: Any, n: int, cap: int) -> None:
    context.inputs = [{"i": i} for i in range(n)]
    outs = asyncio.run(context.crew.kickoff_for_each_async(context.inputs, max_concurrency=cap))
    context.numbered = dict(enumerate(outs))


@then("the outputs come back in input order")
def then_input_order(context: Any) -> None:
    outs = [context.numbered[i] for i in range(len(context.inputs))]
    roles = [o.tasks_output[0].agent for o in outs]
    assert roles == [f"Worker {i}" for i in range(len(context.inputs))], roles


@then("the server never had more than {n:d} requests in flight")
def then_peak_at_most(context: Any, n: int) -> None:
    peak = context.server.peak_in_flight
    assert 1 <= peak <= n, f"{peak} requests were in flight at once"
