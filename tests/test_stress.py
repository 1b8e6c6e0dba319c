"""Many crews at once: no global state touched, real concurrency, a cold start that holds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from crewline import LLM, Agent, Crew, Task
from crewline.testing import FakeLLMServer
from crewline.transport.litellm import litellm_module

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _crew(base_url: str, n_tasks: int = 3) -> Crew:
    llm = LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="sk-test")
    agent = Agent(role="Worker {i}", goal="work", llm=llm)
    return Crew(agents=[agent], tasks=[
        Task(name=f"s{j}", description=f"[[c{{i}}-s{j}]] step {j} for crew {{i}}", agent=agent)
        for j in range(n_tasks)])


def _litellm_lists() -> dict[str, list[object]]:
    litellm = litellm_module()
    names = ["callbacks", "success_callback", "failure_callback", "input_callback",
             "_async_success_callback", "_async_failure_callback", "_async_input_callback",
             "service_callback"]
    return {n: list(getattr(litellm, n, [])) for n in names}


def test_thirty_two_crews_five_rounds_leave_litellm_alone(fast_switching: None) -> None:
    litellm = litellm_module()
    calls: list[str] = []

    def user_callback(kwargs, response, start, end):  # type: ignore[no-untyped-def]
        calls.append("seen")

    litellm.success_callback.append(user_callback)
    try:
        before = _litellm_lists()
        env_before = dict(os.environ)
        with FakeLLMServer() as server:
            crew = _crew(server.base_url, n_tasks=2)
            for _round in range(5):
                outs: list[object] = [None] * 32
                errors: list[BaseException] = []
                barrier = threading.Barrier(16)

                def work(i: int, outs: list[object] = outs,
                         barrier: threading.Barrier = barrier,
                         errors: list[BaseException] = errors) -> None:
                    try:
                        barrier.wait()
                        outs[i] = crew.kickoff({"i": i})
                    except BaseException as exc:
                        errors.append(exc)

                async def gathered(outs: list[object] = outs) -> None:
                    results = await asyncio.gather(
                        *(crew.kickoff_async({"i": i}) for i in range(16, 32)))
                    outs[16:] = results

                threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
                for t in threads:
                    t.start()
                asyncio.run(gathered())
                for t in threads:
                    t.join()
                assert errors == []
                assert all(o is not None for o in outs)
            assert server.totals().requests == 5 * 32 * 2
            assert _litellm_lists() == before
            assert dict(os.environ) == env_before
    finally:
        litellm.success_callback.remove(user_callback)


def test_kickoff_async_is_really_concurrent() -> None:
    async def main() -> int:
        async with FakeLLMServer(latency=0.5) as server:
            crew = _crew(server.base_url)
            outs = await asyncio.gather(*(crew.kickoff_async({"i": i}) for i in range(200)))
            assert sum(o.usage.requests for o in outs) == server.totals().requests == 600
            return server.peak_in_flight

    peak = asyncio.run(main())
    assert peak > 100, f"only {peak} requests were ever in flight at once"


COLD_START = textwrap.dedent("""
    import asyncio, sys
    from crewline import LLM, Agent, Crew, Task
    from crewline.testing import FakeLLMServer

    async def main():
        async with FakeLLMServer(latency=0.01) as server:
            llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="k")
            agent = Agent(role="R", llm=llm)
            crew = Crew(agents=[agent], tasks=[Task(description="[[c{i}]] go {i}")])
            outs = await asyncio.gather(*(crew.kickoff_async({"i": i}) for i in range(48)),
                                        return_exceptions=True)
            bad = [o for o in outs if isinstance(o, BaseException)]
            engine = sum(o.usage.total_tokens for o in outs if not isinstance(o, BaseException))
            served = server.totals().total_tokens
            print("errors", len(bad), [repr(b) for b in bad[:3]])
            print("tokens", engine, served)
            sys.exit(1 if bad or engine != served else 0)

    asyncio.run(main())
""")


COLD_START_THREADS = textwrap.dedent("""
    import sys, threading
    sys.setswitchinterval(1e-6)
    from crewline import LLM, Agent, Crew, Task
    from crewline.testing import FakeLLMServer

    with FakeLLMServer(latency=0.01) as server:
        llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="k")
        crew = Crew(agents=[Agent(role="R", llm=llm)],
                    tasks=[Task(description="[[c{i}]] go {i}")])
        errors, outs, gate = [], [], threading.Barrier(40)

        def work(i):
            gate.wait()
            try:
                outs.append(crew.kickoff({"i": i}))
            except BaseException as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        engine = sum(o.usage.total_tokens for o in outs)
        print("errors", len(errors), errors[:3], "tokens", engine, server.totals().total_tokens)
        sys.exit(1 if errors or engine != server.totals().total_tokens else 0)
""")


@pytest.mark.slow
@pytest.mark.parametrize("script", [COLD_START, COLD_START_THREADS], ids=["asyncio", "threads"])
def test_cold_start_of_many_crews_in_a_fresh_process(script: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
