"""The web-app example of docs/streaming.md runs: server-sent events from ``crew.astream``."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from crewline import LLM, Agent, Crew, Task
from crewline.testing import FakeLLMServer

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "sse_app.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sse_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _parse(body: str) -> list[tuple[str, dict[str, object]]]:
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


@pytest.mark.parametrize("tasks", [2])
def test_the_sse_example_streams_a_crew_to_a_web_client(server: FakeLLMServer,
                                                        tasks: int) -> None:
    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test")
    agent = Agent(role="Writer", goal="write", llm=llm)
    crew = Crew(agents=[agent], tasks=[
        Task(name=f"t{i}", description=f"[[t{i}]] Part {i} about {{topic}}.",
             expected_output="x", agent=agent) for i in range(tasks)])
    app = _example().make_app(crew)

    async def main() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            answer = await client.get("/report", params={"topic": "tides"})
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            return answer.text

    events = _parse(asyncio.run(main()))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and "delta" in kinds and kinds.count("task") == tasks
    done = events[-1][1]
    per_task: dict[object, str] = {}
    for kind, data in events:
        if kind == "delta":
            per_task[data["task"]] = per_task.get(data["task"], "") + str(data["text"])
    assert per_task["t1"] == done["raw"]
    assert done["usage"]["total_tokens"] == server.totals().total_tokens  # type: ignore[index]
    assert all(s.stream for s in server.served)
