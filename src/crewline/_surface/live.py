"""Live progress on a terminal, drawn with ``rich``: tasks done, requests, tokens and cost
so far, for ``crewline run`` and ``crewline demo``.

A ``LiveTally`` is an event listener. Events arrive from whichever thread or task does the
work, so every change happens under one lock; ``rich.live.Live`` redraws from its own
thread a few times a second, reading a snapshot under the same lock. Nothing here is
imported unless a terminal is there to draw on, and every figure is a sum of the
``UsageRecord``s the events carry: the same numbers the final table shows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, TextIO

from crewline._surface.report import dollars

__all__ = ["LiveTally"]


@dataclass
class _Totals:
    runs_started: int = 0
    runs_done: int = 0
    tasks_started: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    requests: int = 0
    failed_requests: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)
    running: dict[str, str] = field(default_factory=dict)
    """task key -> what it is doing now (the latest line of news)."""


class LiveTally:
    """Counts a kickoff's (or a batch's) events and draws them live on ``stream``."""

    def __init__(self, stream: TextIO, *, title: str = "crewline") -> None:
        self._stream = stream
        self._title = title
        self._lock = threading.Lock()
        self._totals = _Totals()
        self._live: Any = None

    # -- the listener ---------------------------------------------------------------------

    def __call__(self, event: object) -> None:
        from crewline import events

        with self._lock:
            t = self._totals
            if isinstance(event, events.KickoffStarted):
                t.runs_started += 1
            elif isinstance(event, events.KickoffFinished):
                t.runs_done += 1
            elif isinstance(event, events.TaskStarted):
                t.tasks_started += 1
                t.running[self._key(event)] = f"{event.task} ({event.agent}): started"
            elif isinstance(event, events.AttemptFailed):
                t.running[self._key(event)] = (f"{event.task}: attempt {event.attempt} "
                                               "rejected")
            elif isinstance(event, events.TaskFinished):
                t.running.pop(self._key(event), None)
                if event.ok:
                    t.tasks_done += 1
                else:
                    t.tasks_failed += 1
            elif isinstance(event, events.LLMCallFinished):
                record = event.record
                if record.outcome == "ok":
                    t.requests += 1
                else:
                    t.failed_requests += 1
                t.tokens += record.total_tokens
                t.cost += record.cost
                if record.task is not None:
                    key = f"{event.run_id}:{record.task}"
                    if key in t.running:
                        t.running[key] = (f"{record.task} ({record.agent or ''}): "
                                          f"{record.purpose} request done, "
                                          f"{record.total_tokens} tokens")

    @staticmethod
    def _key(event: Any) -> str:
        return f"{event.run_id}:{event.task}"

    # -- drawing --------------------------------------------------------------------------

    def summary(self) -> str:
        """One line of what was done and spent so far."""
        with self._lock:
            t = self._totals
            runs = (f"crews {t.runs_done}/{t.runs_started} · " if t.runs_started > 1 else "")
            failed = f" ({t.failed_requests} failed)" if t.failed_requests else ""
            return (f"{runs}tasks done {t.tasks_done}/{t.tasks_started}"
                    f"{f' ({t.tasks_failed} failed)' if t.tasks_failed else ''} · "
                    f"requests {t.requests}{failed} · tokens {t.tokens:,} · "
                    f"cost {dollars(t.cost)}")

    def _renderable(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        with self._lock:
            lines = list(self._totals.running.values())[-8:]
        body = [Text(f"  {line}", overflow="ellipsis", no_wrap=True) for line in lines]
        return Group(Text(f"{self._title}: {self.summary()}", style="bold"), *body)

    def __enter__(self) -> LiveTally:
        from rich.console import Console
        from rich.live import Live

        class _Redraw:
            def __rich__(inner) -> Any:
                return self._renderable()

        console = Console(file=self._stream, force_terminal=True)
        self._live = Live(_Redraw(), console=console, refresh_per_second=8, transient=True)
        self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(kind, exc, tb)
            self._live = None
        self._stream.write(f"{self._title}: {self.summary()}\n")
        self._stream.flush()

