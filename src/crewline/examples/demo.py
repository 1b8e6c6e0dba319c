"""``crewline demo``: the example crew, offline, many at once, with its usage checked.

The demo starts crewline's fake OpenAI-compatible server in this process, points the
example crew (``research.yaml``) at it, and runs one crew per topic concurrently on one
event loop. The server is scripted to ask for the crew's tools, so the tool loop really
runs. At the end the usage crewline recorded is compared with what the server says it
served: they must be equal, request for request and token for token.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from importlib import resources
from typing import Any, TextIO

from crewline import Crew, CrewlineError, CrewOutput, Usage
from crewline._crew.crewfile import crew_from_mapping, parse_yaml
from crewline._surface.report import dollars, usage_table
from crewline.events import ToolCalled
from crewline.examples.tools import FACTS
from crewline.testing.server import FakeLLMServer, Reply, Served, ToolCall

__all__ = ["demo_crew", "run_demo"]

MODEL = "openai/gpt-4o-mini"
"""litellm knows this model's price, so the demo's costs are real numbers."""

TOPICS = tuple(FACTS)


def demo_crew(base_url: str, *, api_key: str = "sk-demo") -> Crew:
    """The example crew from ``research.yaml``, sending its requests to ``base_url``."""
    text = resources.files("crewline.examples").joinpath("research.yaml").read_text("utf-8")
    data = parse_yaml(text, source="research.yaml")
    llm = {k: v for k, v in data["llm"].items() if k != "api_key_env"}
    data["llm"] = {**llm, "base_url": base_url, "api_key": api_key}
    return crew_from_mapping(data, crew_type=Crew, source="research.yaml", model=MODEL)


def _topic_of(messages: list[dict[str, Any]]) -> str | None:
    """The topic the task's description names: the earliest known topic in the prompt."""
    user = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    if not isinstance(user, str):
        return None
    found = [(match.start(), topic) for topic in TOPICS
             if (match := re.search(rf"\b{re.escape(topic)}\b", user, re.IGNORECASE))]
    return min(found)[1] if found else None


def _paragraph(topic: str) -> str:
    return f"{topic[0].upper()}{topic[1:]}: {' '.join(FACTS[topic])}"


def script(request: Served) -> Reply | None:
    """The fake model: call the agent's tool first, then answer from its result."""
    offered = {tool.get("function", {}).get("name") for tool in request.tools or ()
               if isinstance(tool, dict)}
    topic = _topic_of(request.messages)
    if topic is None:
        return None
    answered = request.messages[-1].get("role") == "tool"
    if "lookup" in offered:
        if answered:
            return Reply(content=f"Three facts about {topic}:\n"
                                 f"{request.messages[-1].get('content', '')}")
        return Reply(tool_calls=[ToolCall("lookup", {"topic": topic})])
    if "word_count" in offered:
        if answered:
            return Reply(content=_paragraph(topic))
        return Reply(tool_calls=[ToolCall("word_count", {"text": _paragraph(topic)})])
    return None


class _ToolTally:
    """Counts tool calls; events arrive from worker threads, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def __call__(self, event: object) -> None:
        if isinstance(event, ToolCalled) and event.ok:
            with self._lock:
                self.calls[event.tool] += 1


async def _run_all(crew: Crew, topics: list[str], tally: _ToolTally,
                   *extra: Callable[[object], None]) -> list[CrewOutput]:
    return list(await asyncio.gather(*(
        crew.kickoff_async(inputs={"topic": topic}, listeners=[tally, *extra])
        for topic in topics)))


def _live_on(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def run_demo(*, crews: int = 20, out: TextIO = sys.stdout, latency: float = 0.05) -> int:
    """Run ``crews`` example crews concurrently; 0 if the usage check passes, else 1."""
    topics = [TOPICS[i % len(TOPICS)] for i in range(crews)]
    tally = _ToolTally()
    with FakeLLMServer(latency=latency, script=script) as server:
        crew = demo_crew(server.base_url)
        print(f"crewline demo: {crews} crews of the example research crew, concurrently, "
              f"against a fake OpenAI-compatible server at {server.base_url}\n"
              f"(model {MODEL}, {latency:g} s per request)\n", file=out)
        started = time.perf_counter()
        try:
            if _live_on(out):  # live progress on a terminal; plain output otherwise
                from crewline._surface.live import LiveTally

                with LiveTally(out, title="crewline demo") as live:
                    outputs = asyncio.run(_run_all(crew, topics, tally, live))
            else:
                outputs = asyncio.run(_run_all(crew, topics, tally))
        except CrewlineError as exc:
            print(f"error: a crew failed: {exc}", file=out)
            return 1
        elapsed = time.perf_counter() - started
        served = server.totals()

    width = max(len(topic) for topic in topics)
    for i, (topic, output) in enumerate(zip(topics, outputs, strict=True), start=1):
        first = (output.raw.strip().splitlines() or [""])[0]
        first = first if len(first) <= 90 else first[:87] + "..."
        print(f"{i:>3}  {topic:<{width}}  {first}", file=out)
    tools = ", ".join(f"{name} x{n}" for name, n in sorted(tally.calls.items())) or "none"
    print(f"\n{crews} crews finished in {elapsed:.2f} s (importing litellm included); "
          f"tools called: {tools}\n", file=out)

    one = outputs[0]
    print(f"usage of crew 1 ({topics[0]}):", file=out)
    print(usage_table([("task", [(t.name, t.usage) for t in one.tasks_output]),
                       ("agent", sorted(one.usage_by_agent.items()))], one.usage), file=out)
    by_agent: dict[str, Usage] = {}
    for output in outputs:
        for agent, usage in output.usage_by_agent.items():
            by_agent[agent] = by_agent.get(agent, Usage()) + usage
    total = sum((output.usage for output in outputs), Usage())
    print(f"\nusage of all {crews} crews:", file=out)
    print(usage_table([("agent", sorted(by_agent.items()))], total), file=out)
    print(file=out)

    engine = (total.requests, total.failed_requests, total.prompt_tokens,
              total.completion_tokens)
    server_side = (served.requests, served.failed_requests, served.prompt_tokens,
                   served.completion_tokens)
    if engine != server_side:
        print("usage check: MISMATCH between engine totals and server totals "
              "(requests, failed, prompt, completion): "
              f"engine {engine} != server {server_side}", file=out)
        return 1
    print(f"usage check: engine totals == server totals ({total.requests} requests, "
          f"{total.prompt_tokens} prompt + {total.completion_tokens} completion tokens, "
          f"{dollars(total.cost)}) OK", file=out)
    return 0


if __name__ == "__main__":
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline, as crewline demo
    raise SystemExit(run_demo())
