"""One process of the shared-budget race: ``python budget_worker.py URL DB NAME LIMIT DIR``.

Kicks off a one-task crew again and again against a daily budget of LIMIT dollars kept in
the SQLite ledger DB (``memory`` instead of a path: a budget of its own, in this process
only, which is the control), until the budget refuses. The task's prompt is marked
``[[NAME]]`` so the server can count this process's requests. It warms up first, creates
``DIR/ready-NAME``, and waits for ``DIR/go`` so that all workers start together. At the end
it prints one JSON object: what its kickoffs spent, by crewline's own records.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from crewline import LLM, Agent, Budget, BudgetExceededError, Crew, Task, Usage
from crewline.budget import InMemoryLedger, SQLiteLedger
from crewline.transport.litellm import litellm_module


def main(base_url: str, db: str, name: str, limit: str, sync_dir: str) -> int:
    llm = LLM(model="openai/custom-model", base_url=base_url, api_key="sk-test",
              input_cost_per_token="0.000001", output_cost_per_token="0.000002",
              max_tokens=20)
    agent = Agent(role="Spender", goal="spend", llm=llm)
    crew = Crew(agents=[agent], tasks=[
        Task(name="job", description=f"[[{name}]] job {{i}} " + "pad " * 20, agent=agent)])
    ledger = InMemoryLedger() if db == "memory" else SQLiteLedger(db)
    budget = Budget(max_cost=limit, period="day", ledger=ledger, name="daily")
    litellm_module()  # import litellm before the start line, not inside the race
    Path(sync_dir, f"ready-{name}").touch()
    go = Path(sync_dir, "go")
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            print(json.dumps({"name": name, "error": "no go signal"}))
            return 2
        time.sleep(0.01)
    spent = Usage()
    kickoffs = 0
    stopped_by = None
    while True:
        try:
            spent += crew.kickoff({"i": kickoffs}, budget=budget).usage
        except BudgetExceededError as exc:
            spent += exc.usage
            stopped_by = exc.budget
            break
        kickoffs += 1
    print(json.dumps({"name": name, "kickoffs": kickoffs, "stopped_by": stopped_by,
                      **spent.to_dict()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
