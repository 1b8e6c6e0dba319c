"""Robot Framework keywords for streaming.robot: crew.stream against the fake server.

The server runs in this process on 127.0.0.1 (started by the suite), streaming word by
word; crews go through litellm's real HTTP path to it.
"""

from __future__ import annotations

import asyncio
import os
from decimal import Decimal
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from crewline import LLM, Agent, Budget, Crew, Task
from crewline.events import TextDelta
from crewline.testing import FakeLLMServer

IN, OUT = Decimal("0.000001"), Decimal("0.000002")


class StreamingLibrary:
    ROBOT_LIBRARY_SCOPE = "SUITE"

    def __init__(self) -> None:
        self._server: FakeLLMServer | None = None

    def start_streaming_server(self, gap_ms: int = 5) -> None:
        self._server = FakeLLMServer(stream_gap=int(gap_ms) / 1000).start()

    def stop_streaming_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def server(self) -> FakeLLMServer:
        assert self._server is not None, "start the streaming server first"
        return self._server

    def _crew(self, words: int) -> Crew:
        self.server.reset()
        if words:
            self.server.add_rule(None, " ".join(f"w{i}" for i in range(words)))
        llm = LLM(model="openai/gpt-4o-mini", base_url=self.server.base_url, api_key="sk-test",
                  input_cost_per_token=IN, output_cost_per_token=OUT, max_tokens=500)
        agent = Agent(role="Writer", goal="write", llm=llm)
        return Crew(agents=[agent], tasks=[
            Task(name="first", description="[[first]] Draft.", expected_output="x", agent=agent),
            Task(name="second", description="[[second]] Polish.", expected_output="x",
                 agent=agent)])

    def stream_crew_to_its_end(self, mode: str = "sync") -> dict[str, Any]:
        """Stream a two-task crew; return the joined text per task and the usage per task."""
        crew = self._crew(0)
        if mode == "async":
            async def main() -> tuple[Any, list[Any]]:
                async with crew.astream() as stream:
                    seen = [e async for e in stream]
                return stream.result, seen
            out, seen = asyncio.run(main())
        else:
            with crew.stream() as stream:
                seen = list(stream)
            out = stream.result
        text: dict[str, str] = {}
        for e in seen:
            if isinstance(e, TextDelta):
                text[e.task] = text.get(e.task, "") + e.text
        return {"text": text, "raw": {t.name: t.raw for t in out.tasks_output},
                "usage": {t.name: t.usage.total_tokens for t in out.tasks_output},
                "run_ids": sorted({e.run_id for e in seen}), "run_id": out.run_id}

    def served_tokens(self, marker: str) -> int:
        return self.server.totals(marker).total_tokens

    def every_request_was_streamed(self) -> None:
        served = self.server.served
        assert served and all(s.stream for s in served), served

    def leave_a_long_stream_after(self, words: int) -> dict[str, Any]:
        """Stream a long reply, leave after ``words`` deltas; return what each side saw."""
        crew = self._crew(300)
        budget = Budget(max_cost="1", name="robot")
        outcomes: list[str] = []
        seen = 0
        with crew.stream(budget=budget) as stream:
            for event in stream:
                seen += isinstance(event, TextDelta)
                if seen == int(words):
                    break
        try:
            _ = stream.result
            error = ""
        except BaseException as exc:  # the cancellation is the expected outcome
            error = type(exc).__name__
            outcomes = [r.outcome for r in getattr(exc, "usage_records", ())]
        assert self.server.wait_idle()
        [served] = self.server.served
        billed = served.prompt_tokens * IN + served.completion_tokens * OUT
        return {"error": error, "outcomes": outcomes, "status": served.status,
                "spent": budget.spent(run_id=stream.run_id).cost, "billed": billed,
                "reserved": budget.reserved(run_id=stream.run_id).requests}
