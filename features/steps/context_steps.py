"""Steps for context.feature: a ContextVar probe in every place user code runs."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import structlog
from behave import given, then, when
from crew_world import gather, llm, outcome, require_output

from crewline import Agent, Crew, Task, TaskOutput, events, tool
from crewline.testing import Reply, ToolCall

tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


class Probe:
    """Collects where it was read, the tenant it saw, the run id bound, and the thread."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, str | None, str | None, str]] = []
        self.lock = threading.Lock()

    def read(self, where: str, task: str | None = None) -> None:
        run_id = structlog.contextvars.get_contextvars().get("run_id")
        with self.lock:
            self.seen.append((where, task, tenant.get(), run_id,
                              threading.current_thread().name))


@given('the caller sets the tenant to "{value}"')
def given_tenant(context: Any, value: str) -> None:
    context.caller = contextvars.copy_context()
    context.caller.run(tenant.set, value)
    context.tenant = value
    context.probe = Probe()


@when("the probe is read on a bare threading.Thread")
def when_bare_thread(context: Any) -> None:
    def start_bare() -> None:
        thread = threading.Thread(target=context.probe.read, args=("bare",))
        thread.start()
        thread.join()

    context.caller.run(start_bare)


@then("the probe saw no tenant")
def then_no_tenant(context: Any) -> None:
    assert [(w, v) for w, _t, v, _r, _n in context.probe.seen] == [("bare", None)]


@then('read on a thread started in a copy of the caller\'s context, the probe saw "{value}"')
def then_copied_thread(context: Any, value: str) -> None:
    def start_copied() -> None:
        copied = contextvars.copy_context()
        thread = threading.Thread(target=copied.run, args=(context.probe.read, "copied"))
        thread.start()
        thread.join()

    context.caller.run(start_copied)
    assert [(w, v) for w, _t, v, _r, _n in context.probe.seen][1:] == [("copied", value)]


@given("a crew of 3 tasks whose tool, callback, guardrail and event handler each read the probe")
def given_probing_crew(context: Any) -> None:
    probe = context.probe
    for i in range(3):
        context.server.add_rule(f"[[t{i}]]", Reply(tool_calls=[ToolCall("look", {"n": i})]),
                                f"done {i} after the tool")

    @tool
    def look(n: int) -> str:
        """Look something up."""
        probe.read("tool", f"t{n}")
        return f"fact {n}"

    def guard(output: TaskOutput) -> tuple[bool, Any]:
        probe.read("guardrail", output.name)
        return True, output.raw

    def callback(output: TaskOutput) -> None:
        probe.read("callback", output.name)

    def handler(event: events.Event) -> None:
        if isinstance(event, events.TaskFinished):
            probe.read("event handler", event.task)

    context.listeners = [handler]

    def make(background: bool) -> Crew:
        agent = Agent(role="Prober", goal="probe", llm=llm(context.server), tools=[look])
        return Crew(agents=[agent], tasks=[
            Task(name=f"t{i}", description=f"[[t{i}]] Please use the tool, {i}.", agent=agent,
                 async_execution=background and i < 2, guardrail=guard, callback=callback)
            for i in range(3)])

    context.make_crew = make


@when("the crew runs {how}")
def when_crew_runs(context: Any, how: str) -> None:
    modes = {
        "with kickoff, on the calling thread": ("sync", False),
        "with kickoff, two tasks on worker threads": ("sync", True),
        "with kickoff_async": ("async", False),
        "with kickoff_async, two tasks as asyncio tasks": ("async", True),
    }
    mode, background = modes[how]
    crew = context.make_crew(background)
    listeners = context.listeners
    context.caller_thread = threading.current_thread().name
    context.before = dict(context.caller.run(structlog.contextvars.get_contextvars))
    if mode == "sync":
        outcome(context, lambda: context.caller.run(crew.kickoff, listeners=listeners))
    else:
        outcome(context, lambda: context.caller.run(
            asyncio.run, crew.kickoff_async(listeners=listeners)))


@then('every task\'s tool, callback, guardrail and event handler saw "{value}" '
      "and the run's id")
def then_probe_everywhere(context: Any, value: str) -> None:
    out = require_output(context)
    places = sorted((where, task) for where, task, _v, _r, _n in context.probe.seen)
    expected = sorted((where, f"t{i}") for i in range(3)
                      for where in ("tool", "callback", "guardrail", "event handler"))
    assert places == expected, places
    wrong = [s for s in context.probe.seen if s[2] != value or s[3] != out.run_id]
    assert not wrong, f"probe readings without {value!r} / run {out.run_id}: {wrong}"


@then("the tools of the first two tasks ran on {where}")
def then_tool_threads(context: Any, where: str) -> None:
    threads = {task: name for w, task, _v, _r, name in context.probe.seen if w == "tool"}
    first_two = {threads["t0"], threads["t1"]}
    if where == "the caller's thread":
        assert first_two == {context.caller_thread}, threads
    else:
        assert context.caller_thread not in first_two, threads


@then("the caller's context is as it was before the kickoff")
def then_caller_unchanged(context: Any) -> None:
    after = context.caller.run(structlog.contextvars.get_contextvars)
    assert after == context.before and "run_id" not in after, after
    assert context.caller.run(tenant.get) == context.tenant


@given("a crew whose two tasks each call a tool that reads the probe, one of them in parallel")
def given_whoami_crew(context: Any) -> None:
    context.probe = Probe()
    run_name: contextvars.ContextVar[str | None] = contextvars.ContextVar("run", default=None)
    context.run_name = run_name
    probe = context.probe

    @tool
    def whoami() -> str:
        """Say who is asking."""
        probe.read("tool", run_name.get())
        return "you"

    context.server.add_rule(
        lambda s: s.marker == "who" and s.messages[-1]["role"] == "user",
        Reply(tool_calls=[ToolCall("whoami", {})]))
    agent = Agent(role="Asker", llm=llm(context.server), tools=[whoami])
    context.crew = Crew(agents=[agent], tasks=[
        Task(name="a", description="[[who]] first", agent=agent, async_execution=True),
        Task(name="b", description="[[who]] second", agent=agent)])


@when("{n:d} kickoff_async calls of it are gathered, each after setting its own tenant")
def when_many_tenants(context: Any, n: int) -> None:
    async def one(i: int) -> Any:
        tenant.set(f"tenant-{i}")
        context.run_name.set(f"run-{i}")
        return await context.crew.kickoff_async()

    context.runs = gather(one(i) for i in range(n))
    context.n = n


@then("the tools of every kickoff saw that kickoff's tenant and no other")
def then_own_tenant(context: Any) -> None:
    seen: dict[str | None, list[str | None]] = {}
    for _w, run, value, _r, _n in context.probe.seen:
        seen.setdefault(run, []).append(value)
    expected = {f"run-{i}": [f"tenant-{i}"] * 2 for i in range(context.n)}
    assert seen == expected, {k: v for k, v in seen.items() if expected.get(k) != v}
