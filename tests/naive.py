"""The accounting crewline replaces, kept here to prove the tests can fail.

``NaiveCounter`` is what the engine users know does: one running token counter per agent
(or per LLM object), and a task's usage taken as the counter after the task minus the
counter before it. Fed by crewline's own events, it sees exactly the same requests; the
tests check that their comparison with the server's truth rejects its figures.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from crewline import events


class NaiveCounter:
    def __init__(self, key: str = "agent") -> None:
        self.key = key
        self.counter: dict[str, int] = defaultdict(int)  # agent -> lifetime tokens
        self.before: dict[tuple[str, str], int] = {}
        self.per_task: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def __call__(self, event: events.Event) -> None:
        with self.lock:
            if isinstance(event, events.LLMCallFinished):
                who = event.record.agent if self.key == "agent" else self.key
                self.counter[who or ""] += event.record.total_tokens
            elif isinstance(event, events.TaskStarted):
                who = event.agent if self.key == "agent" else self.key
                self.before[(event.run_id, event.task)] = self.counter[who]
            elif isinstance(event, events.TaskFinished):
                who = event.agent if self.key == "agent" else self.key
                start = self.before[(event.run_id, event.task)]
                self.per_task[(event.run_id, event.task)] = self.counter[who] - start

    def lifetime(self) -> int:
        with self.lock:
            return sum(self.counter.values())
