"""Three execution modes, one core: context follows the work and nothing leaks.

A ``ContextVar`` probe is read in a tool, a task callback and a guardrail, in every mode.
The control at the top shows the probe can fail: a bare ``threading.Thread`` does not
carry the caller's context.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from crewline import LLM, Agent, Crew, Task, TaskOutput, tool
from crewline.testing import FakeLLMServer, Reply, Served, ToolCall

tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


class Probe:
    """Collects (where, value of the ContextVar) from every place it is called."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, str | None]] = []
        self.lock = threading.Lock()

    def note(self, where: str) -> None:
        run_id = structlog.contextvars.get_contextvars().get("run_id")
        with self.lock:
            self.seen.append((where, tenant.get(), run_id))


def test_control_bare_thread_loses_the_context() -> None:
    probe = Probe()
    tenant.set("acme")
    t = threading.Thread(target=probe.note, args=("bare",))
    t.start()
    t.join()
    copied = contextvars.copy_context()
    t2 = threading.Thread(target=copied.run, args=(probe.note, "copied"))
    t2.start()
    t2.join()
    assert probe.seen[0][1] is None  # what the engine users know did for years
    assert probe.seen[1][1] == "acme"
    tenant.set(None)


def _crew(server: FakeLLMServer, probe: Probe, *, background: bool) -> Crew:
    for i in range(3):
        server.add_rule(f"[[t{i}]]", Reply(tool_calls=[ToolCall("look", {"topic": "x"})]),
                        "done after tool")

    @tool
    def look(topic: str) -> str:
        """Look a topic up."""
        probe.note("tool")
        return f"facts about {topic}"

    def guard(output: TaskOutput) -> tuple[bool, Any]:
        probe.note("guardrail")
        return True, output.raw

    def callback(output: TaskOutput) -> None:
        probe.note("callback")

    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")
    agent = Agent(role="Prober", goal="probe", llm=llm, tools=[look])
    tasks = [Task(name=f"t{i}", description=f"[[t{i}]] Please use the tool {i}",
                  agent=agent, async_execution=background and i < 2, guardrail=guard,
                  callback=callback) for i in range(3)]
    return Crew(agents=[agent], tasks=tasks)


def _assert_probe(probe: Probe, value: str, run_id: str) -> None:
    places = {where for where, _, _ in probe.seen}
    assert places == {"tool", "guardrail", "callback"}
    assert len(probe.seen) == 9
    assert {v for _, v, _ in probe.seen} == {value}
    assert {r for _, _, r in probe.seen} == {run_id}


@pytest.mark.parametrize("background", [False, True], ids=["calling-thread", "worker-threads"])
def test_sync_kickoff_carries_context(server: FakeLLMServer, background: bool) -> None:
    probe = Probe()
    crew = _crew(server, probe, background=background)
    ctx = contextvars.copy_context()
    ctx.run(tenant.set, "acme")
    out = ctx.run(crew.kickoff)
    _assert_probe(probe, "acme", out.run_id)
    assert tenant.get() is None
    assert "run_id" not in structlog.contextvars.get_contextvars()


@pytest.mark.parametrize("background", [False, True], ids=["main-line", "asyncio-tasks"])
def test_kickoff_async_carries_context(server: FakeLLMServer, background: bool) -> None:
    probe = Probe()
    crew = _crew(server, probe, background=background)

    async def main() -> str:
        tenant.set("globex")
        out = await crew.kickoff_async()
        assert "run_id" not in structlog.contextvars.get_contextvars()
        return out.run_id

    run_id = asyncio.run(main())
    _assert_probe(probe, "globex", run_id)


def test_async_tools_guardrails_and_callbacks_are_awaited(server: FakeLLMServer) -> None:
    probe = Probe()
    call = Reply(tool_calls=[ToolCall("alook", {"q": "x"})])
    server.add_rule("[[async-tools]]", call, "final", call, "final")

    @tool
    async def alook(q: str) -> str:
        """Look up, asynchronously."""
        await asyncio.sleep(0)
        probe.note("tool")
        return "ok"

    async def aguard(output: TaskOutput) -> tuple[bool, Any]:
        probe.note("guardrail")
        return True, None

    async def acallback(output: TaskOutput) -> None:
        probe.note("callback")

    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")
    agent = Agent(role="A", llm=llm, tools=[alook])
    crew = Crew(agents=[agent], tasks=[Task(description="[[async-tools]] go", agent=agent,
                                            guardrail=aguard, callback=acallback)])

    async def main() -> None:
        tenant.set("initech")
        await crew.kickoff_async()

    asyncio.run(main())
    ctx = contextvars.copy_context()
    ctx.run(tenant.set, "initech")
    ctx.run(crew.kickoff)  # the sync driver runs async user code to completion too
    assert [w for w, _, _ in probe.seen] == ["tool", "guardrail", "callback"] * 2
    assert {v for _, v, _ in probe.seen} == {"initech"}


def test_concurrent_kickoffs_each_see_their_own_value(server: FakeLLMServer) -> None:
    seen: dict[str, set[str | None]] = {}
    lock = threading.Lock()

    @tool
    def whoami() -> str:
        """Say who is asking."""
        with lock:
            seen.setdefault(run_name.get(), set()).add(tenant.get())
        return "me"

    run_name: contextvars.ContextVar[str] = contextvars.ContextVar("run_name")
    server.add_rule(lambda s: s.marker == "who" and s.messages[-1]["role"] == "user",
                    Reply(tool_calls=[ToolCall("whoami", {})]))
    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")
    agent = Agent(role="A", llm=llm, tools=[whoami])
    crew = Crew(agents=[agent], tasks=[
        Task(description="[[who]] a", agent=agent, async_execution=True),
        Task(description="[[who]] b", agent=agent)])

    async def one(i: int) -> None:
        tenant.set(f"tenant-{i}")
        run_name.set(f"run-{i}")
        await crew.kickoff_async()

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(30)))

    asyncio.run(main())
    assert seen == {f"run-{i}": {f"tenant-{i}"} for i in range(30)}


def test_many_async_tasks_of_one_agent(server: FakeLLMServer) -> None:
    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")
    agent = Agent(role="Busy", llm=llm)
    tasks = [Task(description=f"job {i}", agent=agent, async_execution=True)
             for i in range(8)]
    tasks.append(Task(description="gather", agent=agent))
    crew = Crew(agents=[agent], tasks=tasks)
    out = crew.kickoff()
    assert len(out.tasks_output) == 9
    out2 = asyncio.run(crew.kickoff_async())
    assert out2.usage == out.usage


def _leftover_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate()
            if t not in before and t.name.startswith("crewline-") and
            not t.name.startswith("crewline-worker")]


def _failing_crew(server: FakeLLMServer, started: list[str]) -> Callable[..., Crew]:
    def make(fail_after: float = 0.0) -> Crew:
        server.add_rule("[[boom]]", Reply(status=401, content="bad key"))
        llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test",
                  num_retries=0)
        agent = Agent(role="A", llm=llm)
        return Crew(agents=[agent], tasks=[
            Task(name="slow", description="[[slow]] slow one", agent=agent,
                 async_execution=True),
            Task(name="boom", description="[[boom]] fails", agent=agent,
                 async_execution=True),
            Task(name="after", description="never runs", agent=agent,
                 callback=lambda o: started.append("after")),
        ])
    return make


def test_sync_failure_surfaces_after_in_flight_tasks_finish(server: FakeLLMServer) -> None:
    from crewline import ProviderError

    started: list[str] = []
    crew = _failing_crew(server, started)()
    server.add_rule("[[slow]]", Reply(content="slow done", delay=0.3))
    before = set(threading.enumerate())
    with pytest.raises(ProviderError) as info:
        crew.kickoff()
    err = info.value
    assert err.status == 401 and "bad key" in str(err)
    assert started == []
    # the slow task finished and its request is on the error's record
    tasks = sorted(r.task or "" for r in err.usage_records)
    assert tasks == ["boom", "slow"]
    assert err.usage.requests == 1 and err.usage.failed_requests == 1
    assert _leftover_threads(before) == []


def test_asyncio_failure_cancels_siblings(server: FakeLLMServer) -> None:
    from crewline import ProviderError

    started: list[str] = []
    crew = _failing_crew(server, started)()
    server.add_rule("[[slow]]", Reply(content="slow done", delay=5))

    async def main() -> None:
        await crew.kickoff_async()

    loop_time = []

    async def timed() -> None:
        t0 = asyncio.get_running_loop().time()
        try:
            await main()
        finally:
            loop_time.append(asyncio.get_running_loop().time() - t0)

    with pytest.raises(ProviderError) as info:
        asyncio.run(timed())
    assert loop_time[0] < 2.0  # the 5 s sibling was cancelled, not awaited
    records = info.value.usage_records
    slow = [r for r in records if r.task == "slow"]
    assert len(slow) == 1 and slow[0].outcome == "cancelled"  # cut off mid-request: on record
    assert not isinstance(info.value, BaseExceptionGroup)


def test_cancelling_kickoff_async_cancels_requests_and_keeps_spend(
        server: FakeLLMServer) -> None:
    arrived = threading.Event()

    def hang_arrives(served: Served) -> bool:
        if served.marker == "hang":
            arrived.set()
            return True
        return False

    server.add_rule(hang_arrives, Reply(content="late", delay=10))
    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")
    agent = Agent(role="A", llm=llm)
    crew = Crew(agents=[agent], tasks=[
        Task(name="quick", description="[[quick]] fast", agent=agent),
        Task(name="hang", description="[[hang]] slow", agent=agent)])

    async def main() -> None:
        task = asyncio.create_task(crew.kickoff_async())
        await asyncio.to_thread(arrived.wait, 10)  # the 'hang' request is at the server
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        records = info.value.usage_records  # type: ignore[attr-defined]
        assert [(r.task, r.outcome) for r in records] == [("quick", "ok"), ("hang", "cancelled")]
        assert info.value.usage.requests == 1  # type: ignore[attr-defined]

    asyncio.run(main())


def test_sync_kickoff_inside_a_running_loop_still_awaits_async_tools(
        server: FakeLLMServer) -> None:
    server.add_rule(lambda s: s.marker == "inloop" and s.messages[-1]["role"] == "user",
                    Reply(tool_calls=[ToolCall("aping", {})]))
    results: list[str] = []

    @tool
    async def aping() -> str:
        """Answer pong, asynchronously."""
        await asyncio.sleep(0)
        return f"pong for {tenant.get()}"

    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")
    agent = Agent(role="A", llm=llm, tools=[aping])
    crew = Crew(agents=[agent], tasks=[Task(description="[[inloop]] go", agent=agent)])

    async def notebook_cell() -> None:
        tenant.set("notebook")
        crew.kickoff()  # blocking call from async code, as notebooks do
        results.extend(m["content"] for m in server.served[-1].messages
                       if m["role"] == "tool")

    asyncio.run(notebook_cell())
    assert results == ["pong for notebook"]
