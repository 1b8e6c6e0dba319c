"""Definitions, tools and usage values pickle, so a crew can be shipped to another process.

Tools pickle by reference to their module, as functions do: on the other side the tool is
the module's own, and a ``ContextVar`` it reads is that process's real module global.
"""

from __future__ import annotations

import contextvars
import os
import pickle
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from crewline import LLM, Agent, Crew, Task, Usage, tool
from crewline._accounting.usage import UsageRecord
from crewline._definitions.tools import Tool
from crewline.testing import FakeLLMServer, Reply
from crewline.testing.server import ToolCall

KEY = "sk-pickle-SECRET-0123456789"
TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="nobody")


@tool
def lookup(key: str) -> str:
    """Look a key up for the current tenant.

    Args:
        key: what to look up.
    """
    return f"{key} for tenant={TENANT.get()}"


@tool(name="shout", description="Upper-cases a text.")
def _shout(text: str) -> str:
    return text.upper()


def plain_helper(n: int) -> int:
    """Doubles a number."""
    return 2 * n


def accept_all(output: Any) -> tuple[bool, Any]:
    return True, output


class Answer(BaseModel):
    text: str


def _roundtrip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


def _llm(base_url: str | None = None, **kw: Any) -> LLM:
    return LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key=KEY, **kw)


def test_llm_roundtrips_with_its_key_and_a_fresh_limiter() -> None:
    llm = _llm(max_rpm=30, temperature=0.2, input_cost_per_token="0.000001",
               output_cost_per_token="0.000002")
    back = _roundtrip(llm)
    assert back is not llm
    assert back.model_dump() == llm.model_dump()
    assert back.api_key is not None and back.api_key.get_secret_value() == KEY
    assert back.input_cost_per_token == Decimal("0.000001")
    assert back.limiter is not None and back.limiter is not llm.limiter
    assert back.model_fields_set == llm.model_fields_set
    assert KEY not in repr(back)


def test_tools_pickle_by_reference_to_their_module() -> None:
    assert _roundtrip(lookup) is lookup
    assert _roundtrip(_shout) is _shout
    assert isinstance(lookup, Tool) and b"lookup" in pickle.dumps(lookup)


def test_a_tool_made_from_a_plain_function_is_rebuilt_from_it() -> None:
    agent = Agent(role="A", llm=_llm(), tools=[plain_helper, lookup])
    back = _roundtrip(agent)
    helper = back.tools[0]
    assert isinstance(helper, Tool) and helper.fn is plain_helper
    assert (helper.name, helper.description) == ("plain_helper", "Doubles a number.")
    assert back.tools[1] is lookup


def test_a_local_tool_refuses_to_pickle_with_its_name() -> None:
    @tool
    def local_tool(x: int) -> int:
        return x

    with pytest.raises(pickle.PicklingError, match="local_tool"):
        pickle.dumps(local_tool)


def test_crew_roundtrips_with_its_task_graph() -> None:
    agent = Agent(role="Researcher", llm=_llm(max_tpm=10_000), tools=[lookup, _shout])
    first = Task(description="find {topic}", agent=agent, name="find",
                 guardrail=accept_all, output_pydantic=Answer)
    second = Task(description="write", agent=agent, context=[first], name="write")
    crew = Crew(agents=[agent], tasks=[first, second], max_rpm=100, name="c")
    back = _roundtrip(crew)
    assert [t.name for t in back.tasks] == ["find", "write"]
    assert back.tasks[1].context == (back.tasks[0],)
    assert back.tasks[0].agent is back.agents[0] is back.tasks[1].agent
    assert back.tasks[0].guardrail is accept_all and back.tasks[0].output_pydantic is Answer
    assert back.agents[0].tools == (lookup, _shout)
    assert back.limiter is not None and back.limiter is not crew.limiter
    llm = back.agents[0].llm
    assert llm is not None and llm.limiter is not None and llm.api_key is not None
    assert llm.api_key.get_secret_value() == KEY


def test_usage_values_roundtrip() -> None:
    usage = Usage(requests=2, failed_requests=1, prompt_tokens=10, completion_tokens=5,
                  cached_prompt_tokens=3, reasoning_tokens=1, cost=Decimal("0.0000123"))
    assert _roundtrip(usage) == usage and _roundtrip(usage).total_tokens == 15
    record = UsageRecord(
        id="r1", run_id="run", task="find", attempt=1, agent="Researcher", purpose="agent",
        model="openai/gpt-4o-mini", prompt_tokens=10, completion_tokens=5,
        cached_prompt_tokens=0, reasoning_tokens=0, cost=Decimal("0.0000123"), priced=True,
        latency_s=0.25, started_at=datetime(2026, 11, 1, tzinfo=UTC), outcome="ok")
    assert _roundtrip(record) == record


CHILD = """
import pickle, sys
import test_pickling_definitions as here
here.TENANT.set("acme")
crew = pickle.load(sys.stdin.buffer)
out = crew.kickoff()
print(out.raw)
print(out.usage.requests)
"""


def test_an_unpickled_crew_runs_in_another_process(server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(tool_calls=[ToolCall("lookup", {"key": "plan"})]), "done",
                    times=2)
    agent = Agent(role="A", llm=_llm(server.base_url, num_retries=0), tools=[lookup])
    crew = Crew(agents=[agent], tasks=[Task(description="[[pickled]] go", agent=agent)])
    here = Path(__file__).resolve().parent
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PYTHONPATH": os.pathsep.join([str(here.parent / "src"), str(here)])}
    done = subprocess.run([sys.executable, "-c", CHILD], input=pickle.dumps(crew), env=env,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split() == ["done", "2"]
    tool_messages = [m for m in server.served[1].messages if m.get("role") == "tool"]
    # the tool ran in the child and read the child's own module global
    assert tool_messages and "plan for tenant=acme" in str(tool_messages[0]["content"])
