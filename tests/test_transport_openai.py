"""The direct transport (openai SDK, no litellm) against litellm's, on the same fake server.

Everything above the transport is the same code, so the same crew must leave the same
usage records on both, field by field; the direct path must never import litellm; and
its one client per ``LLM`` must be reused, not rebuilt per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crewline import LLM, Agent, Budget, Crew, ProviderError, Task, tool
from crewline._accounting.pricing import count_prompt_tokens, price_of, shipped_price_table
from crewline._core.request import transport_for
from crewline.testing import FakeLLMServer, Reply, ToolCall
from crewline.transport import DEFAULT_TRANSPORT
from crewline.transport.openai import OpenAITransport, for_llm

SRC = str(Path(__file__).resolve().parents[1] / "src")
TRANSPORTS = ["litellm", "openai"]


def _llm(server: FakeLLMServer, transport: str, **kw: Any) -> LLM:
    return LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test",
               transport=transport, retry_backoff=0.01, **kw)  # type: ignore[arg-type]


# -- which transport ----------------------------------------------------------------------

def test_auto_picks_the_direct_transport_for_openai_models_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREWLINE_TRANSPORT", raising=False)
    monkeypatch.setattr("crewline.transport.openai._fast_sdk", lambda: True)
    direct = LLM(model="openai/gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    assert isinstance(transport_for(direct), OpenAITransport)
    assert transport_for(direct) is transport_for(direct)  # one per LLM object
    other = LLM(model="openai/gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    assert transport_for(other) is not transport_for(direct)
    assert transport_for(LLM(model="anthropic/claude-3-5-haiku-latest")) is DEFAULT_TRANSPORT
    assert transport_for(LLM(model="gpt-4o-mini")) is DEFAULT_TRANSPORT
    assert transport_for(LLM(model="openai/gpt-4o-mini", transport="litellm")) \
        is DEFAULT_TRANSPORT
    assert isinstance(transport_for(LLM(model="my-local-model", transport="openai")),
                      OpenAITransport)


def test_auto_keeps_litellm_when_the_openai_sdk_is_the_slower_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREWLINE_TRANSPORT", raising=False)
    monkeypatch.setattr("crewline.transport.openai._fast_sdk", lambda: False)  # openai 2
    assert transport_for(LLM(model="openai/gpt-4o-mini")) is DEFAULT_TRANSPORT
    assert isinstance(transport_for(LLM(model="openai/x", transport="openai")),
                      OpenAITransport)


def test_the_sdk_rule_reads_the_installed_major_version() -> None:
    from importlib import metadata

    from crewline.transport.openai import _fast_sdk

    major = int(metadata.version("openai").split(".")[0])
    assert _fast_sdk() is (major >= 3)


def test_crewline_transport_litellm_in_the_environment_turns_auto_into_litellm(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREWLINE_TRANSPORT", "litellm")
    assert transport_for(LLM(model="openai/gpt-4o-mini")) is DEFAULT_TRANSPORT
    assert isinstance(transport_for(LLM(model="openai/x", transport="openai")),
                      OpenAITransport)


def test_an_unknown_transport_name_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="transport"):
        LLM(model="openai/gpt-4o-mini", transport="openia")  # type: ignore[arg-type]


def test_one_sync_client_per_llm_and_one_async_client_per_event_loop(
        server: FakeLLMServer) -> None:
    llm = _llm(server, "openai")
    agent = Agent(role="A", llm=llm)
    crew = Crew(agents=[agent], tasks=[Task(description="go", agent=agent)])
    crew.kickoff()
    crew.kickoff()
    transport = for_llm(llm)
    sync_client = transport._sync
    assert sync_client is not None and transport._sync_client() is sync_client

    async def twice() -> set[int]:
        await crew.kickoff_async()
        await crew.kickoff_async()
        return {id(c) for c in transport._async.values()}

    first, second = asyncio.run(twice()), asyncio.run(twice())
    assert len(first) == 1 and len(second) <= 2  # a new loop gets its own pool
    assert server.totals().requests == 6


# -- the same records on both transports ----------------------------------------------------

@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def _scenario(server: FakeLLMServer, transport: str, *, garbled: bool = True) -> Crew:
    """Plain, retried (429), tool-calling, malformed (not for streams: a body that is not
    server-sent events is an empty stream to both) and cached-prompt requests."""
    server.add_rule("[[retry]]", Reply(status=429, retry_after=0.01), "fine at last", times=2)
    server.add_rule("[[tool]]", Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 3})]),
                    "the sum is 5", times=2)
    server.add_rule("[[garbled]]", Reply(raw_body="this is not json"), "readable now",
                    times=2)
    server.add_rule("[[cached]]", Reply(content="from cache", prompt_tokens=40,
                                        completion_tokens=7, cached_prompt_tokens=32))
    llm = _llm(server, transport)
    agent = Agent(role="Analyst", goal="analyse", llm=llm, tools=[add])
    tasks = [Task(name=m, description=f"[[{m}]] do the {m} part", expected_output="text",
                  agent=agent)
             for m in ("plain", "retry", "tool", "garbled", "cached") if garbled or m != "garbled"]
    return Crew(agents=[agent], tasks=tasks)


def _fields(records: Any) -> list[tuple[Any, ...]]:
    return [(r.task, r.attempt, r.agent, r.purpose, r.model, r.prompt_tokens,
             r.completion_tokens, r.cached_prompt_tokens, r.reasoning_tokens, r.cost,
             r.priced, r.outcome, r.delegated_by) for r in records]


def _kickoff(crew: Crew, mode: str) -> Any:
    if mode == "sync":
        return crew.kickoff()
    if mode == "asyncio":
        return asyncio.run(crew.kickoff_async())
    if mode == "stream":
        with crew.stream() as stream:
            for _ in stream:
                pass
        return stream.result

    async def consume() -> Any:
        async with crew.astream() as stream:
            async for _ in stream:
                pass
        return stream.result

    return asyncio.run(consume())


@pytest.mark.parametrize("mode", ["sync", "asyncio", "stream", "astream"])
def test_the_same_crew_leaves_the_same_records_on_both_transports(
        server: FakeLLMServer, mode: str) -> None:
    seen: dict[str, list[tuple[Any, ...]]] = {}
    for transport in TRANSPORTS:
        server.reset()
        streamed = mode.endswith("stream")
        crew = _scenario(server, transport, garbled=not streamed)
        out = _kickoff(crew, mode)
        server.wait_idle()  # a stream is on the server's record once its handler has ended
        seen[transport] = _fields(out.usage_records)
        assert {s.stream for s in server.served} == {streamed}
        served = server.totals()
        # a garbled body is a 200 to the server, a failed request to crewline
        assert out.usage.requests + out.usage.failed_requests == len(server.served)
        assert out.usage.failed_requests == served.failed_requests + (0 if streamed else 1)
        assert out.usage.prompt_tokens == served.prompt_tokens
        assert out.usage.completion_tokens == served.completion_tokens
        assert out.usage.cached_prompt_tokens == served.cached_prompt_tokens
    assert seen["litellm"] == seen["openai"]
    outcomes = [row[11] for row in seen["openai"]]
    assert outcomes.count("error") == (1 if mode.endswith("stream") else 2)  # each on record
    assert all(row[10] and row[9] > 0 for row in seen["openai"] if row[11] == "ok")


def test_an_exhausted_failure_carries_the_same_records_on_both_transports(
        server: FakeLLMServer) -> None:
    seen = {}
    for transport in TRANSPORTS:
        server.reset()
        server.add_rule(None, Reply(status=503, content="overloaded"))
        agent = Agent(role="A", llm=_llm(server, transport, num_retries=2))
        crew = Crew(agents=[agent], tasks=[Task(name="t", description="go", agent=agent)])
        with pytest.raises(ProviderError) as info:
            crew.kickoff()
        err = info.value
        seen[transport] = (err.kind, err.status, err.retryable, err.sent,
                           _fields(err.usage_records))
        assert len(err.usage_records) == server.totals().failed_requests == 3
    assert seen["litellm"] == seen["openai"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_budgets_hold_and_settle_exactly_on_both_transports(
        server: FakeLLMServer, transport: str) -> None:
    budget = Budget(name="b", max_cost=Decimal("1"), period="day")
    agent = Agent(role="A", llm=_llm(server, transport))
    crew = Crew(agents=[agent], budget=budget,
                tasks=[Task(name=f"t{i}", description=f"part {i} " + "word " * 50,
                            agent=agent) for i in range(3)])
    out = crew.kickoff()
    price = price_of(agent.llm)
    served = server.totals()
    assert out.usage.cost == price.cost(served.prompt_tokens, served.completion_tokens) > 0
    assert budget.spent().cost == out.usage.cost
    assert budget.reserved().cost == 0


# -- prices and token counts without litellm -------------------------------------------------

def test_the_shipped_price_table_gives_litellms_own_prices() -> None:
    from crewline.transport.litellm import litellm_module

    for model in ("openai/gpt-4o-mini", "openai/gpt-4.1-nano", "gpt-4o"):
        direct = price_of(LLM(model=model, transport="openai"))
        via_litellm = price_of(LLM(model=model, transport="litellm"))
        assert direct == via_litellm and direct.known, model
        info = litellm_module().get_model_info(model)
        assert direct.input == Decimal(repr(info["input_cost_per_token"]))
    assert not price_of(LLM(model="openai/no-such-model-anywhere", transport="openai")).known
    assert "gpt-4o-mini" in shipped_price_table()


def test_tiktoken_counts_stay_close_to_litellms_and_never_under_the_fake_servers(
        server: FakeLLMServer) -> None:
    messages = [{"role": "system", "content": "You are careful. " * 20},
                {"role": "user", "content": "Summarise the following: " + "alpha beta " * 200}]
    tools = [{"type": "function", "function": {"name": "add", "description": "Add.",
                                               "parameters": {"type": "object"}}}]
    for model in ("openai/gpt-4o-mini", "openai/custom-model"):
        mine = count_prompt_tokens(model, messages, tools, with_litellm=False)
        theirs = count_prompt_tokens(model, messages, tools, with_litellm=True)
        assert abs(mine - theirs) <= 0.1 * theirs, (model, mine, theirs)
        words = sum(len(m["content"].split()) + 3 for m in messages)
        assert mine >= words


# -- the direct path never imports litellm ---------------------------------------------------

_NO_LITELLM = textwrap.dedent("""
    import asyncio, json, sys
    from decimal import Decimal
    from crewline import LLM, Agent, Budget, Crew, Task, tool
    from crewline.testing import FakeLLMServer, Reply, ToolCall

    @tool
    def add(a: int, b: int) -> int:
        "Add two numbers."
        return a + b

    with FakeLLMServer() as server:
        server.add_rule("[[tool]]", Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]),
                        "three", times=2)
        llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test",
                  transport="openai")
        agent = Agent(role="A", llm=llm, tools=[add])
        crew = Crew(agents=[agent], budget=Budget(name="b", max_cost=Decimal("1")),
                    tasks=[Task(description="[[tool]] add", agent=agent),
                           Task(description="then write", agent=agent)])
        sync = crew.kickoff()
        asyn = asyncio.run(crew.kickoff_async())
        print(json.dumps({"litellm": sorted(m for m in sys.modules if m.startswith("litellm")),
                          "cost": str(sync.usage.cost),
                          "requests": [sync.usage.requests, asyn.usage.requests]}))
""")


def test_a_full_kickoff_on_the_direct_path_never_imports_litellm() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CREWLINE_TRANSPORT"}
    env["PYTHONPATH"] = SRC
    done = subprocess.run([sys.executable, "-c", _NO_LITELLM], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["litellm"] == []
    assert Decimal(result["cost"]) > 0 and result["requests"] == [3, 2]


def test_choosing_litellm_by_name_still_asks_litellm_about_structured_output() -> None:
    """``transport="litellm"`` is not a custom transport: whether the model takes a JSON
    schema is litellm's answer, as with the default, not assumed."""
    from crewline._core.conversion import _supports_schema

    for model in ("anthropic/claude-2.1", "ollama/llama2"):
        assert _supports_schema(LLM(model=model, transport="litellm")) \
            is _supports_schema(LLM(model=model)) is False
    assert _supports_schema(LLM(model="openai/custom-model", transport="openai"))


def test_crewline_price_table_replaces_the_shipped_table(tmp_path: Path) -> None:
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"my-model": {"input_cost_per_token": 1e-06,
                                              "output_cost_per_token": 3e-06,
                                              "litellm_provider": "openai"}}))
    code = ("from crewline import LLM; from crewline._accounting.pricing import price_of; "
            "p = price_of(LLM(model='openai/my-model', transport='openai')); "
            "q = price_of(LLM(model='openai/gpt-4o-mini', transport='openai')); "
            "print(p.input, p.output, q.known)")
    env = {**os.environ, "PYTHONPATH": SRC, "CREWLINE_PRICE_TABLE": str(table)}
    env.pop("CREWLINE_TRANSPORT", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.000001", "0.000003", "False"]


def test_tracing_on_the_direct_path_does_not_import_litellm_either() -> None:
    traced = ("import crewline.otel\n"
              "from opentelemetry.sdk.trace import TracerProvider\n"
              "crewline.otel.instrument(TracerProvider())\n") + _NO_LITELLM
    env = {k: v for k, v in os.environ.items() if k != "CREWLINE_TRANSPORT"}
    env["PYTHONPATH"] = SRC
    done = subprocess.run([sys.executable, "-c", traced], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["litellm"] == []
