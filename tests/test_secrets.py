"""An API key never shows in logs, events, reprs or error texts, even when a run fails."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crewline import LLM, Agent, Crew, CrewlineError, Task, log
from crewline.testing import FakeLLMServer, Reply

SECRET = "sk-live-THIS-MUST-NEVER-LEAK-1234567890"


@pytest.mark.parametrize("renderer", ["json", "console"])
def test_failing_run_leaks_no_secret(renderer: str) -> None:
    stream = io.StringIO()
    logger = logging.getLogger("crewline")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    log.configure(renderer, "DEBUG", stream=stream)
    seen_events: list[str] = []
    try:
        with FakeLLMServer() as server:
            # a provider that echoes the key back in its error message, as some do
            server.add_rule(None, Reply(status=401, content=f"Invalid key {SECRET}"))
            llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key=SECRET,
                      num_retries=0)
            agent = Agent(role="A", llm=llm)
            crew = Crew(agents=[agent], llm=llm, tasks=[Task(description="go", agent=agent)])
            with pytest.raises(CrewlineError) as info:
                crew.kickoff(listeners=[lambda e: seen_events.append(
                    repr(e) + e.model_dump_json())])
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    err = info.value
    texts = [stream.getvalue(), *seen_events, repr(crew), str(crew), repr(llm),
             llm.model_dump_json(), str(err), repr(err), repr(err.usage_records),
             repr(err.__cause__), repr(err.__context__)]
    assert stream.getvalue().strip(), "the run must have logged something"
    assert "kickoff failed" in stream.getvalue()
    assert seen_events, "the run must have emitted events"
    for text in texts:
        assert SECRET not in text
    assert "Invalid key ***" in str(err)  # the provider's message kept, the key masked


UNCONFIGURED = """
from crewline import LLM, Agent, Crew, CrewlineError, Task
from crewline.testing import FakeLLMServer, Reply
with FakeLLMServer() as server:
    server.add_rule(None, Reply(status=500, content="down"))
    llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="k",
              num_retries=1, retry_backoff=0.01)
    agent = Agent(role="A", llm=llm)
    try:
        Crew(agents=[agent], tasks=[Task(description="go", agent=agent)]).kickoff()
    except CrewlineError:
        print("failed as expected")
"""


def test_unconfigured_library_writes_nothing_to_stderr() -> None:
    # In a fresh process: pytest's own log capture would hide Python's last-resort handler.
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-c", UNCONFIGURED], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "failed as expected", done.stderr
    assert "kickoff failed" not in done.stderr and "retrying" not in done.stderr
