"""Robot keywords for the delegation suite: a hierarchical crew run in this process
through litellm's real HTTP path, against ``delegating_server.py`` (started with
``Start Fake Server    script=delegating_server.py``)."""

from __future__ import annotations

import asyncio
import os
import threading
from decimal import Decimal
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from crewline import LLM, Agent, Budget, Crew, CrewlineError, Process, Task, Usage

FIELDS = ("requests", "failed_requests", "prompt_tokens", "completion_tokens", "total_tokens")


def _usage(usage: Usage) -> dict[str, Any]:
    return {**{f: getattr(usage, f) for f in FIELDS}, "cost": str(usage.cost)}


class DelegationLibrary:
    ROBOT_LIBRARY_SCOPE = "SUITE"

    def _crew(self, base_url: str, max_requests: int | None) -> Crew:
        llm = LLM(model="openai/custom-model", base_url=base_url, api_key="sk-test",
                  num_retries=0, input_cost_per_token=Decimal("0.000001"),
                  output_cost_per_token=Decimal("0.000002"))
        budget = Budget(max_requests=max_requests, name="team") if max_requests else None
        return Crew(agents=[Agent(role="Researcher", goal="find facts", llm=llm),
                            Agent(role="Writer", goal="write", llm=llm)],
                    tasks=[Task(name="report", description="[[{run}]] Write a report")],
                    process=Process.hierarchical, manager_llm=llm, budget=budget)

    def run_delegating_crew(self, base_url: str, mode: str, *runs: str,
                            max_requests: int = 0) -> dict[str, Any]:
        """Kick the crew off once per run (``kickoff``: one thread each; ``kickoff_async``:
        gathered); return each run's usage, its task's and its agents', or the error."""
        crew = self._crew(base_url, int(max_requests) or None)
        results: dict[str, Any] = {}

        def report(run: str, out: Any) -> None:
            results[run] = {
                "usage": _usage(out.usage), "task": _usage(out.tasks_output[0].usage),
                "agents": {role: _usage(u) for role, u in out.usage_by_agent.items()},
                "delegated_by": sorted({str(r.delegated_by) for r in out.usage_records}),
                "error": None}

        def failed(run: str, exc: CrewlineError) -> None:
            results[run] = {"usage": _usage(exc.usage), "error": type(exc).__name__}

        if mode == "kickoff":
            def one(run: str) -> None:
                try:
                    report(run, crew.kickoff({"run": run}))
                except CrewlineError as exc:
                    failed(run, exc)

            threads = [threading.Thread(target=one, args=(run,)) for run in runs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elif mode == "kickoff_async":
            async def main() -> list[Any]:
                return await asyncio.gather(*(crew.kickoff_async({"run": r}) for r in runs),
                                            return_exceptions=True)

            for run, out in zip(runs, asyncio.run(main()), strict=True):
                if isinstance(out, CrewlineError):
                    failed(run, out)
                elif isinstance(out, BaseException):
                    raise out
                else:
                    report(run, out)
        else:
            raise ValueError(f"mode must be kickoff or kickoff_async, got {mode!r}")
        return results

    def cost_of(self, totals: dict[str, int]) -> str:
        """What the server's tokens cost at the suite model's prices."""
        return str(totals["prompt_tokens"] * Decimal("0.000001")
                   + totals["completion_tokens"] * Decimal("0.000002"))
