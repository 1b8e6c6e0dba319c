"""The accounting crewline replaces, kept to show the scenarios can fail.

A copy of ``tests/naive.py``: one running token counter per agent (or per LLM, or one for
everything), and a task's usage taken as the counter after the task minus the counter
before it. Fed by crewline's own events, it sees exactly the requests crewline saw; the
scenarios check that the comparison with the server's count rejects its figures.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from crewline import events


class NaiveCounter:
    def __init__(self, key: str = "agent") -> None:
        self.key = key
        self.counter: dict[str, int] = defaultdict(int)
        self.before: dict[tuple[str, str], int] = {}
        self.per_task: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def _who(self, agent: str | None) -> str:
        return (agent or "") if self.key == "agent" else self.key

    def __call__(self, event: events.Event) -> None:
        with self.lock:
            if isinstance(event, events.LLMCallFinished):
                self.counter[self._who(event.record.agent)] += event.record.total_tokens
            elif isinstance(event, events.TaskStarted):
                self.before[(event.run_id, event.task)] = self.counter[self._who(event.agent)]
            elif isinstance(event, events.TaskFinished):
                start = self.before[(event.run_id, event.task)]
                self.per_task[(event.run_id, event.task)] = (
                    self.counter[self._who(event.agent)] - start)

    def lifetime(self) -> int:
        with self.lock:
            return sum(self.counter.values())
