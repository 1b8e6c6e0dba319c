"""Robot Framework keywords for crewline's end-to-end suites.

The fake OpenAI-compatible server runs as a separate process (``python -m crewline.testing``,
or ``tool_calling_server.py`` beside this file when the crew's tools must be called); the
keywords read its count of what it served over HTTP (``/_crewline/totals``), and run crews in
this process through litellm's real HTTP path, returning what crewline reported so the
suites can compare the two.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Processes the suites start may run in another directory (the CLI runs beside its crew
# file): a relative PYTHONPATH such as "src" must keep pointing at the same place.
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        os.path.abspath(p) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p)

from crewline import LLM, Agent, Crew, Task, Usage, tool
from crewline.budget import Amount, Budget, SQLiteLedger

HERE = Path(__file__).resolve().parent
READY_PREFIX = "CREWLINE_FAKE_SERVER"
USAGE_FIELDS = ("requests", "failed_requests", "prompt_tokens", "completion_tokens",
                "total_tokens")


class CrewlineLibrary:
    ROBOT_LIBRARY_SCOPE = "SUITE"

    def __init__(self) -> None:
        self._server: subprocess.Popen[str] | None = None
        self._log: Any = None
        self.base_url = ""
        self._tool_calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    # -- the server process ----------------------------------------------------------------

    def start_fake_server(self, latency: float = 0.0, tools: bool = False,
                          script: str = "") -> str:
        """Start the fake server process; return its base URL (``http://127.0.0.1:N/v1``).

        With ``tools=True`` the server asks for the first tool a request offers (see
        ``tool_calling_server.py``); ``script`` names another server script beside this
        file; otherwise it is ``python -m crewline.testing``.
        """
        if self._server is not None:
            raise RuntimeError(f"a fake server is already running at {self.base_url}")
        command = ([sys.executable, str(HERE / "tool_calling_server.py")] if _truthy(tools)
                   else [sys.executable, "-m", "crewline.testing"])
        if script:
            command = [sys.executable, str(HERE / script)]
        command += ["--port", "0", "--latency", str(float(latency))]
        self._log = open(os.devnull, "w")  # noqa: SIM115 - closed in stop_fake_server
        self._server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log,
                                        text=True, env=_child_env())
        line = _read_line(self._server, timeout=60)
        if not line.startswith(READY_PREFIX + " "):
            self.stop_fake_server()
            raise RuntimeError(f"the fake server said {line!r} instead of its URL")
        self.base_url = line.split(" ", 1)[1].strip()
        return self.base_url

    def stop_fake_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.terminate()
        try:
            code = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise RuntimeError("the fake server ignored SIGTERM and was killed") from None
        finally:
            if self._log is not None:
                self._log.close()
        if code != 0:
            raise RuntimeError(f"the fake server exited with {code}")

    def server_totals(self, *markers: str) -> dict[str, int]:
        """What the server served: everything, or the sum over the given markers."""
        if not markers:
            return self._totals(None)
        summed = dict.fromkeys(USAGE_FIELDS, 0)
        for marker in markers:
            for key, value in self._totals(marker).items():
                if key in summed:
                    summed[key] += value
        return summed

    def _totals(self, marker: str | None) -> dict[str, int]:
        root = self.base_url.removesuffix("/v1")
        query = "" if marker is None else "?" + urllib.parse.urlencode({"marker": marker})
        with urllib.request.urlopen(f"{root}/_crewline/totals{query}", timeout=10) as answer:
            totals: dict[str, int] = json.loads(answer.read())
        return totals

    def python_executable(self) -> str:
        """The interpreter running the suite, for the processes it starts."""
        return sys.executable

    # -- money -----------------------------------------------------------------------------

    def served_cost(self, totals: dict[str, int], input_cost: str = "0.000001",
                    output_cost: str = "0.000002") -> str:
        """The server's count of tokens in dollars, at exact per-token prices."""
        cost = (int(totals["prompt_tokens"]) * Decimal(input_cost)
                + int(totals["completion_tokens"]) * Decimal(output_cost))
        return str(cost)

    def price_table_cost(self, totals: dict[str, int], model: str) -> str:
        """The server's count of tokens in dollars, at litellm's price for ``model``."""
        from crewline.transport.litellm import litellm_module

        info = litellm_module().get_model_info(model)
        return self.served_cost(totals, repr(info["input_cost_per_token"]),
                                repr(info["output_cost_per_token"]))

    def amount_should_be_at_most(self, amount: str, limit: str) -> None:
        if Decimal(str(amount)) > Decimal(str(limit)):
            raise AssertionError(f"${amount} is more than the limit of ${limit}")

    def amount_should_be_more_than(self, amount: str, floor: str) -> None:
        if not Decimal(str(amount)) > Decimal(str(floor)):
            raise AssertionError(f"${amount} is not more than ${floor}")

    def amounts_should_be_equal(self, first: str, second: str) -> None:
        if Decimal(str(first)) != Decimal(str(second)):
            raise AssertionError(f"${first} != ${second}")

    def add_amounts(self, *amounts: str) -> str:
        return str(sum((Decimal(str(a)) for a in amounts), Decimal(0)))

    def daily_spend_on_ledger(self, path: str, name: str = "daily",
                              limit: str = "1") -> str:
        """Today's settled spend of the daily budget ``name`` kept in the SQLite file."""
        with SQLiteLedger(path) as ledger:
            budget = Budget(max_cost=limit, period="day", ledger=ledger, name=name)
            return str(budget.spent().cost)

    def remainder_of_daily_budget_should_be_reservable(self, path: str, limit: str,
                                                       name: str = "daily") -> None:
        """Nothing is held by a dead process: all that is left can be reserved at once."""
        with SQLiteLedger(path) as ledger:
            budget = Budget(max_cost=limit, period="day", ledger=ledger, name=name)
            left = Decimal(limit) - budget.spent().cost
            budget.reserve(Amount(cost=left), run_id="robot-check").release()

    # -- the research crew -----------------------------------------------------------------

    def run_research_crew(self, mode: str, run: str, topic: str = "octopuses"
                          ) -> dict[str, Any]:
        """Run the research crew in ``mode`` and return what crewline reported.

        Modes: ``kickoff`` (every task on the calling thread), ``threads`` (kickoff, the two
        research tasks as ``async_execution`` tasks on worker threads), ``asyncio``
        (``kickoff_async``, the research tasks as asyncio tasks). Every task names its
        context, so the prompts, and so the usage, are the same in every mode. Each prompt
        is marked ``[[RUN-TASK]]``.
        """
        crew = self._research_crew(background=mode in ("threads", "asyncio"))
        inputs = {"run": run, "topic": topic}
        with self._lock:
            self._tool_calls.clear()
        if mode in ("kickoff", "threads"):
            out = crew.kickoff(inputs)
        elif mode == "asyncio":
            out = asyncio.run(crew.kickoff_async(inputs))
        else:
            raise ValueError(f"unknown mode {mode!r}: use kickoff, threads or asyncio")
        with self._lock:
            calls = sorted(self._tool_calls)
        return {
            "run_id": out.run_id,
            "usage": _usage(out.usage),
            "cost": str(out.usage.cost),
            "tasks": {t.name: _usage(t.usage) for t in out.tasks_output},
            "agents": {role: _usage(u) for role, u in out.usage_by_agent.items()},
            "outputs": {t.name: t.raw for t in out.tasks_output},
            "tool_calls": calls,
            "record_runs": sorted({r.run_id for r in out.usage_records}),
        }

    def _research_crew(self, *, background: bool) -> Crew:
        calls, lock = self._tool_calls, self._lock

        @tool
        def lookup(topic: str) -> str:
            """Look up reference facts about a topic.

            Args:
                topic: what to look up
            """
            with lock:
                calls.append(("lookup", threading.current_thread().name))
            return f"Facts about {topic}: three hearts, blue blood, eight arms."

        @tool
        def word_count(text: str) -> int:
            """Count the words in a text.

            Args:
                text: the text to count
            """
            with lock:
                calls.append(("word_count", threading.current_thread().name))
            return len(text.split())

        llm = LLM(model="openai/gpt-4o-mini", base_url=self.base_url, api_key="sk-test")
        researcher = Agent(role="Researcher", goal="Find facts about {topic}",
                           backstory="You check every claim.", llm=llm, tools=[lookup])
        writer = Agent(role="Writer", goal="Explain {topic} plainly",
                       backstory="You write short paragraphs.", llm=llm, tools=[word_count])
        anatomy = Task(name="anatomy", agent=researcher, context=[],
                       async_execution=background,
                       description="[[{run}-anatomy]] Collect facts on the anatomy of {topic}.",
                       expected_output="three facts")
        habits = Task(name="habits", agent=researcher, context=[],
                      async_execution=background,
                      description="[[{run}-habits]] Collect facts on how {topic} live, "
                                  "where they hunt, and what they eat.",
                      expected_output="three facts")
        write = Task(name="write", agent=writer, context=[anatomy, habits],
                     description="[[{run}-write]] Write one paragraph about {topic}.",
                     expected_output="one paragraph")
        review = Task(name="review", agent=writer, context=[write],
                      description="[[{run}-review]] Check the paragraph's length.",
                      expected_output="the paragraph, at most 80 words")
        return Crew(agents=[researcher, writer], tasks=[anatomy, habits, write, review])


def _usage(usage: Usage) -> dict[str, int]:
    return {field: int(getattr(usage, field)) for field in USAGE_FIELDS}


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "on")
    return bool(value)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _read_line(process: subprocess.Popen[str], *, timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            return process.stdout.readline()
        if process.poll() is not None:
            raise RuntimeError(f"the fake server exited with {process.returncode} before "
                               "printing its URL")
    process.kill()
    raise RuntimeError(f"the fake server printed nothing in {timeout} s")
