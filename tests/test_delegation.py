"""Delegation and the hierarchical process, checked against the fake server's own counts.

A manager's hand-offs are scripted on the wire (``crewline.testing.delegate``); every
figure the engine reports is compared with what the server says it served, per marker
(each coworker's delegated text carries its own ``[[marker]]``).
"""

from __future__ import annotations

import asyncio
import threading
from contextvars import ContextVar
from decimal import Decimal

import pytest

from crewline import (
    LLM,
    Agent,
    Budget,
    BudgetExceededError,
    Crew,
    DefinitionError,
    Process,
    Task,
    Usage,
    events,
    tool,
)
from crewline.testing import (
    FakeLLMServer,
    Reply,
    Served,
    ToolCall,
    agent_is,
    agent_turn,
    ask,
    delegate,
)
from naive import NaiveCounter

IN, OUT = Decimal("0.0000011"), Decimal("0.0000023")


def _llm(server: FakeLLMServer) -> LLM:
    return LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test",
               input_cost_per_token=IN, output_cost_per_token=OUT)


def _cost(served: list[Served]) -> Decimal:
    return sum((s.prompt_tokens * IN + s.completion_tokens * OUT for s in served), Decimal(0))


def _team(server: FakeLLMServer, **crew: object) -> Crew:
    llm = _llm(server)
    researcher = Agent(role="Researcher", goal="find facts", backstory="curious", llm=llm)
    writer = Agent(role="Writer", goal="write well", backstory="clear", llm=llm)
    return Crew(agents=[researcher, writer], process=Process.hierarchical, manager_llm=llm,
                tasks=[Task(name="report", description="[[{run}-m]] Write a report on {topic}",
                            expected_output="a report")], **crew)  # type: ignore[arg-type]


def _script_manager(server: FakeLLMServer, run: str) -> None:
    """Run ``run``'s manager: hand two pieces out in one reply, then answer."""
    def first(s: Served) -> bool:
        return s.marker == f"{run}-m" and agent_turn("Crew Manager", 1)(s)

    server.add_rule(first, Reply(tool_calls=[
        delegate("researcher", f"[[{run}-r]] Find three facts about the topic",
                 "they are for a report"),
        delegate(" Writer ", f"[[{run}-w]] Draft an introduction " + "please " * 5)]))
    server.add_rule(lambda s: s.marker == f"{run}-m" and agent_turn("Crew Manager", 2)(s),
                    f"Final report of {run}.")


def _check_run(out, server: FakeLLMServer, run: str) -> None:  # type: ignore[no-untyped-def]
    """The run's task, agents and records against what the server served for it."""
    by_marker = {m: [s for s in server.served if s.marker == f"{run}-{m}"] for m in "mrw"}
    assert [len(by_marker[m]) for m in "mrw"] == [2, 1, 1]
    task = out.tasks_output[0]
    everything = [s for group in by_marker.values() for s in group]
    assert task.usage.requests == len(everything) == 4
    assert task.usage.prompt_tokens == sum(s.prompt_tokens for s in everything)
    assert task.usage.completion_tokens == sum(s.completion_tokens for s in everything)
    assert task.usage.cost == _cost(everything)
    assert out.usage == task.usage
    roles = {"m": "Crew Manager", "r": "Researcher", "w": "Writer"}
    assert set(out.usage_by_agent) == set(roles.values())
    for m, role in roles.items():
        usage = out.usage_by_agent[role]
        assert (usage.requests, usage.total_tokens, usage.cost) == (
            len(by_marker[m]), sum(s.total_tokens for s in by_marker[m]), _cost(by_marker[m]))
    for r in out.usage_records:
        assert r.task == "report"
        if r.agent == "Crew Manager":
            assert (r.purpose, r.delegated_by) == ("manager", None)
        else:
            assert (r.purpose, r.delegated_by) == ("agent", "Crew Manager")


def _overlapped(a: Served, b: Served) -> bool:
    return a.received_at < b.answered_at and b.received_at < a.answered_at


@pytest.mark.parametrize("mode", ["kickoff", "kickoff_async"])
def test_two_coworkers_in_one_reply_exact_and_concurrent(server: FakeLLMServer,
                                                         mode: str) -> None:
    server.latency = 0.2
    crew = _team(server)
    _script_manager(server, "a")
    inputs = {"run": "a", "topic": "bees"}
    out = crew.kickoff(inputs) if mode == "kickoff" else asyncio.run(crew.kickoff_async(inputs))
    assert out.raw == "Final report of a."
    _check_run(out, server, "a")
    (res,), (wri,) = ([s for s in server.served if s.marker == m] for m in ("a-r", "a-w"))
    assert _overlapped(res, wri), "the two coworkers' requests should run at the same time"
    # the coworker's prompt is its own role and the text the manager wrote, nothing else
    system, user = res.messages
    assert system["content"].startswith("You are Researcher. curious")
    assert "Find three facts" in user["content"] and "they are for a report" in user["content"]
    assert "bees" not in user["content"] and "Crew Manager" not in str(res.messages)
    assert res.tools is None, "a coworker that may not delegate holds no delegation tools"
    # the manager got each coworker's answer back, not an echo of what it asked
    last = [s for s in server.served if s.marker == "a-m"][-1]
    answers = {m["tool_call_id"]: m["content"] for m in last.messages if m["role"] == "tool"}
    assert sorted(answers.values()) == sorted([res.content, wri.content])


def _many_runs(server: FakeLLMServer, n: int, prefix: str) -> list[str]:
    runs = [f"{prefix}{i}" for i in range(n)]
    for run in runs:
        _script_manager(server, run)
    return runs


def _check_naive_is_wrong(naive: NaiveCounter, outs) -> None:  # type: ignore[no-untyped-def]
    truth = {out.run_id: out.tasks_output[0].usage.total_tokens for out in outs}
    by_run = {run_id: n for (run_id, _task), n in naive.per_task.items()}
    assert by_run != truth, "a shared counter diffed around each task must be wrong here"


def test_fifty_hierarchical_kickoffs_under_gather(server: FakeLLMServer) -> None:
    server.latency = 0.05
    crew = _team(server)
    runs = _many_runs(server, 50, "g")
    naive = NaiveCounter(key="agent")

    async def main() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(
            crew.kickoff_async({"run": run, "topic": "x " * (i + 1)}, listeners=[naive])
            for i, run in enumerate(runs)))

    outs = asyncio.run(main())
    for run, out in zip(runs, outs, strict=True):
        _check_run(out, server, run)
    assert sum((o.usage for o in outs), Usage()).total_tokens == server.totals().total_tokens
    _check_naive_is_wrong(naive, outs)


def test_eight_threads_of_hierarchical_kickoffs(server: FakeLLMServer,
                                                fast_switching: None) -> None:
    server.latency = 0.02
    crew = _team(server)
    runs = _many_runs(server, 8, "t")
    naive = NaiveCounter(key="agent")
    outs: list = [None] * 8  # type: ignore[type-arg]
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        outs[i] = crew.kickoff({"run": runs[i], "topic": "y " * (i + 1)}, listeners=[naive])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for run, out in zip(runs, outs, strict=True):
        _check_run(out, server, run)
    _check_naive_is_wrong(naive, outs)


def test_naive_per_agent_counter_misses_delegated_work(server: FakeLLMServer) -> None:
    """Even one kickoff: diffing the manager's counter leaves the coworkers' work out."""
    crew = _team(server)
    _script_manager(server, "n")
    naive = NaiveCounter(key="agent")
    out = crew.kickoff({"run": "n", "topic": "z"}, listeners=[naive])
    _check_run(out, server, "n")
    assert naive.per_task[(out.run_id, "report")] != server.totals().total_tokens
    assert out.tasks_output[0].usage.total_tokens == server.totals().total_tokens


@pytest.mark.parametrize("mode", ["kickoff", "kickoff_async"])
def test_crew_budget_caps_delegated_work(server: FakeLLMServer, mode: str) -> None:
    server.latency = 0.05
    crew = _team(server, budget=Budget(max_requests=2, name="team"))
    _script_manager(server, "b")
    inputs = {"run": "b", "topic": "bees"}
    with pytest.raises(BudgetExceededError) as caught:
        if mode == "kickoff":
            crew.kickoff(inputs)
        else:
            asyncio.run(crew.kickoff_async(inputs))
    assert len(server.served) == 2, "the manager and one coworker fit; nothing more is sent"
    assert caught.value.usage.requests == server.totals().requests == 2
    assert caught.value.usage.total_tokens == server.totals().total_tokens
    assert caught.value.budget == "team"


tenant: ContextVar[str] = ContextVar("tenant", default="unset")


@tool
def lookup(topic: str) -> str:
    """Look a topic up in the tenant's notes."""
    return f"notes of tenant {tenant.get()} on {topic}"


def _tool_crew(server: FakeLLMServer, *, background: bool) -> Crew:
    llm = _llm(server)
    researcher = Agent(role="Researcher", goal="find facts", llm=llm, tools=[lookup])
    writer = Agent(role="Writer", goal="write", llm=llm, tools=[lookup])
    tasks = [Task(name="report", description="[[ctx-m]] Write a report",
                  async_execution=background)]
    if background:
        tasks.append(Task(name="after", description="[[ctx-after]] Sum up", context=tasks[:1]))
    return Crew(agents=[researcher, writer], tasks=tasks, process=Process.hierarchical,
                manager_llm=llm)


@pytest.mark.parametrize("mode", ["kickoff", "kickoff_async", "async_execution"])
def test_callers_context_var_reaches_the_coworkers_tools(server: FakeLLMServer,
                                                         mode: str) -> None:
    crew = _tool_crew(server, background=mode == "async_execution")
    server.add_rule(agent_turn("Crew Manager", 1), Reply(tool_calls=[
        delegate("Researcher", "[[ctx-r]] Look it up"), delegate("Writer", "[[ctx-w]] Same")]))
    for role in ("Researcher", "Writer"):
        server.add_rule(agent_turn(role, 1), Reply(tool_calls=[
            ToolCall("lookup", {"topic": "bees"})]))
    token = tenant.set("acme")
    try:
        out = asyncio.run(crew.kickoff_async()) if mode == "kickoff_async" else crew.kickoff()
    finally:
        tenant.reset(token)
    tool_results = [m["content"] for s in server.served for m in s.messages
                    if m["role"] == "tool" and m.get("name") == "lookup"]
    assert len(tool_results) == 2 * len(crew.tasks)  # each task's manager delegates twice
    assert all(r == "notes of tenant acme on bees" for r in tool_results), tool_results
    assert out.usage.requests == server.totals().requests


def test_planning_is_one_request_in_the_crew_and_in_no_task(server: FakeLLMServer) -> None:
    llm = _llm(server)
    agent = Agent(role="Analyst", goal="analyse", llm=llm)
    first = Task(name="first", description="[[p1]] Study {topic}", agent=agent)
    second = Task(name="second", description="[[p2]] Sum up", agent=agent)
    crew = Crew(agents=[agent], tasks=[first, second], planning=True)
    server.add_rule(lambda s: "Task Execution Planner" in str(s.messages[0]),
                    "### Task 1\nRead the sources.\n### Task 2\nWrite three lines.")
    out = crew.kickoff({"topic": "ants"})
    planning = [r for r in out.usage_records if r.purpose == "planning"]
    assert len(planning) == 1 and planning[0].task is None
    assert planning[0].agent == "Task Execution Planner"
    planner = [s for s in server.served if "Task Execution Planner" in str(s.messages[0])]
    assert len(planner) == 1 and len(server.served) == 3
    assert planning[0].total_tokens == planner[0].total_tokens
    assert out.usage.requests == 3 and out.usage.total_tokens == server.totals().total_tokens
    for t in out.tasks_output:
        assert all(r.purpose != "planning" for r in t.usage_records)
    assert sum((t.usage for t in out.tasks_output), Usage()) + Usage.from_records(planning) \
        == out.usage
    workers = [s for s in server.served if s not in planner]
    p1, p2 = (next(s for s in workers if s.marker == m) for m in ("p1", "p2"))
    assert "Read the sources." in p1.messages[1]["content"]
    assert "Write three lines." not in p1.messages[1]["content"]
    assert "Write three lines." in p2.messages[1]["content"]
    assert first.description == "[[p1]] Study {topic}"  # definitions are never touched


def test_delegation_events_carry_the_contract_fields(server: FakeLLMServer) -> None:
    from crewline._accounting.usage import current_scope

    crew = _team(server)
    _script_manager(server, "e")
    seen: list[tuple[str, str | None]] = []

    def listener(event: events.Event) -> None:
        if isinstance(event, events.DelegationStarted | events.DelegationFinished):
            scope = current_scope()
            seen.append((type(event).__name__, scope.agent if scope else None))

    got: list[events.Event] = []
    out = crew.kickoff({"run": "e", "topic": "t"}, listeners=[got.append, listener])
    started = [e for e in got if isinstance(e, events.DelegationStarted)]
    finished = [e for e in got if isinstance(e, events.DelegationFinished)]
    assert sorted((e.task, e.by, e.to, e.depth) for e in started) == [
        ("report", "Crew Manager", "Researcher", 1), ("report", "Crew Manager", "Writer", 1)]
    for e in finished:
        assert (e.task, e.by, e.depth, e.ok) == ("report", "Crew Manager", 1, True)
        assert e.usage == out.usage_by_agent[e.to]
    # emitted in the coworker's own context (its usage scope is current)
    assert sorted(seen) == sorted([("DelegationStarted", "Researcher"),
                                   ("DelegationStarted", "Writer"),
                                   ("DelegationFinished", "Researcher"),
                                   ("DelegationFinished", "Writer")])
    order = [type(e).__name__ for e in got if isinstance(
        e, events.DelegationStarted | events.DelegationFinished | events.LLMCallFinished)]
    assert order.index("DelegationStarted") < order.index("LLMCallFinished", 1)


def _tool_messages(served: list[Served]) -> list[str]:
    return [m["content"] for s in served for m in s.messages if m["role"] == "tool"]


def test_impossible_delegations_are_tool_errors_that_list_the_roles(
        server: FakeLLMServer) -> None:
    llm = _llm(server)
    lead = Agent(role="Lead", goal="lead", llm=llm, allow_delegation=True)
    helper = Agent(role="Helper", goal="help", llm=llm, allow_delegation=True)
    quiet = Agent(role="Quiet", goal="listen", llm=llm)
    crew = Crew(agents=[lead, helper, quiet], max_delegation_depth=2,
                tasks=[Task(name="job", description="[[job]] Do the job", agent=lead)])
    server.add_rule(agent_turn("Lead", 1), Reply(tool_calls=[
        delegate("Nobody", "x"), delegate("lead", "do it yourself"),
        ask("Helper", "[[h]] What do you think?")]))
    server.add_rule(agent_turn("Lead", 2), "done")
    # the helper (depth 1) tries to go back up the chain, then to delegate onward
    server.add_rule(agent_turn("Helper", 1), Reply(tool_calls=[delegate("Lead", "back")]))
    server.add_rule(agent_turn("Helper", 2), Reply(tool_calls=[delegate("Quiet", "[[q]] go")]))
    server.add_rule(agent_turn("Helper", 3), "helper's answer")
    server.add_rule(agent_turn("Quiet", 1), Reply(tool_calls=[delegate("Lead", "z")]))
    server.add_rule(agent_turn("Quiet", 2), "quiet's answer")
    out = crew.kickoff()
    assert out.raw == "done"
    texts = _tool_messages(server.served)
    unknown = next(t for t in texts if "no coworker 'Nobody'" in t)
    assert "'Helper', 'Quiet'" in unknown and "'Lead'" not in unknown
    assert any("cannot delegate to yourself" in t for t in texts)
    assert any("'Lead', who is already in this chain of delegation (Lead -> Helper)" in t
               for t in texts)
    # the quiet agent may not delegate: it holds no delegation tools at all
    quiet_requests = [s for s in server.served if agent_is("Quiet")(s)]
    assert quiet_requests[0].tools is None
    assert any("unknown tool 'delegate_work_to_coworker'" in t for t in texts)
    assert out.usage.requests == server.totals().requests
    depth = [r for r in out.usage_records if r.agent == "Quiet"]
    assert {r.delegated_by for r in depth} == {"Helper"}


def test_delegation_beyond_the_depth_limit_is_a_tool_error(server: FakeLLMServer) -> None:
    llm = _llm(server)
    lead = Agent(role="Lead", llm=llm, allow_delegation=True)
    helper = Agent(role="Helper", llm=llm, allow_delegation=True)
    other = Agent(role="Other", llm=llm)
    crew = Crew(agents=[lead, helper, other], max_delegation_depth=1,
                tasks=[Task(description="[[d]] job", agent=lead)])
    server.add_rule(agent_turn("Lead", 1), Reply(tool_calls=[delegate("Helper", "[[h]] go")]))
    server.add_rule(agent_turn("Helper", 1), Reply(tool_calls=[delegate("Other", "go on")]))
    out = crew.kickoff()
    texts = _tool_messages(server.served)
    assert any("cannot delegate any further" in t and "at most 1 (max_delegation_depth)" in t
               for t in texts)
    assert not [s for s in server.served if agent_is("Other")(s)]
    assert out.usage.requests == server.totals().requests


def test_failed_coworker_is_a_tool_error_with_its_usage_kept(server: FakeLLMServer) -> None:
    crew = _team(server)
    server.add_rule(agent_turn("Crew Manager", 1), Reply(tool_calls=[
        delegate("Researcher", "[[f-r]] facts"), delegate("Writer", "[[f-w]] draft")]))
    server.add_rule(agent_turn("Crew Manager", 2), "managed anyway")
    server.add_rule(agent_is("Writer"), Reply(status=400, content="bad request"))
    out = crew.kickoff({"run": "f", "topic": "t"})
    assert out.raw == "managed anyway"
    texts = _tool_messages(server.served)
    assert any(t.startswith("Error: coworker 'Writer' could not finish the work: "
                            "ProviderError") for t in texts)
    writer = out.usage_by_agent["Writer"]
    assert (writer.requests, writer.failed_requests) == (0, 1)
    assert out.usage.requests == server.totals().requests
    assert out.usage.failed_requests == server.totals().failed_requests == 1


def test_managers_final_answer_goes_through_guardrail_and_structured_output(
        server: FakeLLMServer) -> None:
    from pydantic import BaseModel

    class Report(BaseModel):
        title: str

    llm = _llm(server)
    crew = Crew(agents=[Agent(role="Writer", llm=llm)], process=Process.hierarchical,
                manager_llm=llm,
                tasks=[Task(description="[[s]] Report", output_pydantic=Report,
                            guardrail=lambda o: (o.pydantic.title == "ok", "title must be ok"))])
    server.add_rule(agent_turn("Crew Manager", 1), '{"title": "no"}', '{"title": "ok"}')
    out = crew.kickoff()
    assert out.pydantic == Report(title="ok")
    assert len(out.tasks_output[0].attempts) == 2
    assert {r.purpose for r in out.usage_records} == {"manager"}


def test_hierarchical_crews_need_a_manager_that_is_not_a_crew_agent() -> None:
    llm = LLM(model="openai/gpt-4o-mini")
    agent = Agent(role="A", llm=llm)
    with pytest.raises(DefinitionError, match="needs a manager: set manager_llm"):
        Crew(agents=[agent], tasks=[Task(description="x")], process=Process.hierarchical)
    with pytest.raises(DefinitionError, match="manager_agent 'A' is also one of the crew"):
        Crew(agents=[agent], tasks=[Task(description="x")], process=Process.hierarchical,
             manager_agent=agent)
    boss = Agent(role="Boss", llm=llm)
    crew = Crew(agents=[agent, Agent(role="B", llm=llm)], tasks=[Task(description="x")],
                process=Process.hierarchical, manager_agent=boss)
    assert crew.tasks[0].agent is None


def test_sequential_agent_with_allow_delegation_holds_tools_over_the_others(
        server: FakeLLMServer) -> None:
    llm = _llm(server)
    lead = Agent(role="Lead", llm=llm, allow_delegation=True)
    crew = Crew(agents=[lead, Agent(role="Aide", llm=llm)],
                tasks=[Task(description="[[seq]] job", agent=lead)])
    crew.kickoff()
    (request,) = server.served
    names = [t["function"]["name"] for t in request.tools or []]
    assert names == ["delegate_work_to_coworker", "ask_question_to_coworker"]
    described = request.tools[0]["function"]["description"]  # type: ignore[index]
    assert "coworkers: Aide\n" in described and "Lead" not in described
    params = request.tools[0]["function"]["parameters"]  # type: ignore[index]
    assert list(params["properties"]) == ["task", "context", "coworker"]


def test_cancelling_kickoff_async_cancels_every_coworker(server: FakeLLMServer) -> None:
    crew = _team(server)
    _script_manager(server, "c")
    server.add_rule(lambda s: s.marker in ("c-r", "c-w"), Reply(delay=30))

    async def main() -> BaseException:
        run = asyncio.create_task(crew.kickoff_async({"run": "c", "topic": "t"}))
        # both coworkers' requests are on the server (a count kept on the server's thread)
        while len([s for s in server.served if s.marker == "c-m"]) < 1 or server.in_flight < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        run.cancel()
        try:
            await run
        except BaseException as exc:  # the cancellation is what we check
            mine = [t for t in asyncio.all_tasks() if "drive_async" in repr(t.get_coro())]
            assert mine == [], "no coworker task outlives the kickoff"
            return exc
        raise AssertionError("the kickoff should have been cancelled")

    exc = asyncio.run(main())
    assert isinstance(exc, asyncio.CancelledError)
    assert server.wait_idle(5)
    cancelled = [r for r in exc.usage_records if r.outcome == "cancelled"]  # type: ignore[attr-defined]
    assert sorted(r.agent for r in cancelled) == ["Researcher", "Writer"]


def test_interrupting_parallel_sub_steps_on_threads_leaves_no_thread() -> None:
    """The blocking driver: an interrupt while waiting cancels each sub-step at its next
    effect, and returns only once every thread has ended."""
    import signal

    from crewline._core.effects import Parallel, Sleep
    from crewline._execution.drivers import drive

    ended: list[str] = []
    running = {"a": threading.Event(), "b": threading.Event()}

    def sub(name: str):  # type: ignore[no-untyped-def]
        try:
            for _ in range(2000):
                running[name].set()
                yield Sleep(0.01)
        finally:
            ended.append(name)

    def parent():  # type: ignore[no-untyped-def]
        return (yield Parallel((sub("a"), sub("b"))))

    main = threading.main_thread().ident
    assert main is not None

    def interrupt_once_both_run() -> None:  # once both run, not after a guessed delay
        for event in running.values():
            event.wait(60)
        signal.pthread_kill(main, signal.SIGINT)

    timer = threading.Thread(target=interrupt_once_both_run)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        drive(parent())
    timer.join()
    assert sorted(ended) == ["a", "b"]
    assert not [t for t in threading.enumerate() if t.name.startswith("crewline-parallel")]
