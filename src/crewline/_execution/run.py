"""A run: everything one kickoff owns, and nothing a definition does.

The run prepares its tasks (templates filled, agents and context resolved) before any
request is sent, holds the run usage scope and the outputs as tasks finish, and turns
failures into the one exception a kickoff raises. Two concurrent kickoffs of one ``Crew``
have two runs and share nothing mutable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from structlog.contextvars import bound_contextvars

from crewline import events
from crewline._accounting.usage import UsageScope
from crewline._core.attempts import run_task
from crewline._core.effects import Step
from crewline._core.outputs import CrewOutput, TaskOutput
from crewline._core.prepared import PreparedTask
from crewline._core.templates import checked_inputs, fill
from crewline.errors import CrewlineError, DefinitionError, InputError
from crewline.log import get_logger

if TYPE_CHECKING:
    from crewline._crew.crew import Crew
    from crewline.budget import Budget

__all__ = ["Run", "prepare_tasks", "task_name"]

_log = get_logger("crewline._execution.run")


def task_name(index: int, explicit: str | None) -> str:
    """A task's name: its own, else a stable default from its position (``task_3``)."""
    return explicit if explicit else f"task_{index + 1}"


def prepare_tasks(crew: Crew, inputs: Mapping[str, Any]) -> tuple[PreparedTask, ...]:
    """Resolve every task for one run, or raise before anything is spent."""
    tasks = crew.tasks
    position = {id(t): i for i, t in enumerate(tasks)}
    prepared: list[PreparedTask] = []
    pending: list[int] = []  # background tasks started since the main line last joined
    for i, task in enumerate(tasks):
        name = task_name(i, task.name)
        agent = task.agent or (crew.agents[0] if len(crew.agents) == 1 else None)
        if agent is None:  # Crew validation makes this unreachable; kept as a guard
            raise DefinitionError(f"task {name!r} has no agent")
        llm = agent.llm or crew.llm
        if llm is None:
            raise DefinitionError(f"agent {agent.role!r} (task {name!r}) has no llm")
        role = fill(agent.role, inputs, where=f"agent {agent.role!r} role")
        where = f"task {name!r}"
        if task.context is not None:
            context_from = tuple(sorted(position[id(t)] for t in task.context))
        else:
            context_from = tuple(j for j in range(i) if j not in pending)
        if task.async_execution:
            waits_for = tuple(j for j in context_from if j in pending)
        else:
            waits_for = tuple(pending)
            context_from = context_from if task.context is not None else tuple(range(i))
        prepared.append(PreparedTask(
            index=i, name=name, task=task, agent=agent, llm=llm,
            description=fill(task.description, inputs, where=f"{where} description"),
            expected_output=fill(task.expected_output, inputs,
                                 where=f"{where} expected_output"),
            role=role,
            goal=fill(agent.goal, inputs, where=f"agent {agent.role!r} goal"),
            backstory=fill(agent.backstory, inputs, where=f"agent {agent.role!r} backstory"),
            background=task.async_execution, context_from=context_from, waits_for=waits_for))
        if task.async_execution:
            pending.append(i)
        else:
            pending.clear()
    return tuple(prepared)


class Run:
    """The state of one kickoff."""

    def __init__(self, crew: Crew, inputs: Mapping[str, Any] | None = None, *,
                 budget: Budget | None = None, listeners: Sequence[Any] = (),
                 budget_key: str | None = None) -> None:
        if inputs is not None and not isinstance(inputs, Mapping):
            raise InputError(f"inputs must be a mapping of names to values, got "
                             f"{type(inputs).__name__}")
        self.id = uuid.uuid4().hex
        self.crew = crew
        self.inputs = checked_inputs(inputs)
        self.tasks = prepare_tasks(crew, self.inputs)
        self.listeners = tuple(listeners)
        # A kickoff's own budget spans its batch (kickoff_for_each); the crew's and the
        # tasks' budgets are definitions, so period "run" means each run.
        budgets: tuple[tuple[Budget, str], ...] = ()
        if budget is not None:
            budgets += ((budget, budget_key or self.id),)
        if crew.budget is not None:
            budgets += ((crew.budget, self.id),)
        limiters = (crew.limiter,) if crew.limiter is not None else ()
        self.scope = UsageScope("run", run_id=self.id, budgets=budgets, limiters=limiters)
        self._outputs: dict[int, TaskOutput] = {}
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()

    def step(self, task: PreparedTask) -> Step[TaskOutput]:
        """The step that runs ``task``; its context tasks are finished by construction."""
        with self._lock:
            context = "\n\n".join(self._outputs[j].raw for j in task.context_from
                                  if j in self._outputs)
        budgets: tuple[object, ...] = ()
        if task.task.budget is not None:
            budgets = ((task.task.budget, f"{self.id}:{task.name}"),)
        try:
            output = yield from run_task(task, context, self.scope, budgets)
        except BaseException as exc:
            self.failed(exc)
            raise
        with self._lock:
            self._outputs[task.index] = output
        return output

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            return
        with self._lock:
            if not any(f is exc for f in self._failures):
                self._failures.append(exc)

    @property
    def failures(self) -> tuple[BaseException, ...]:
        with self._lock:
            return tuple(self._failures)

    @contextmanager
    def active(self) -> Iterator[None]:
        """The run's scope, listeners and log context, for the duration of the kickoff."""
        with self.scope.entered(), events.run_listeners(self.listeners), \
                bound_contextvars(run_id=self.id):
            if events.listening():
                events.emit(events.KickoffStarted(run_id=self.id, tasks=len(self.tasks),
                                                  inputs=tuple(sorted(self.inputs))))
            if _log.isEnabledFor(logging.INFO):
                _log.info("kickoff started", tasks=len(self.tasks))
            try:
                yield
            except BaseException as raised:
                usage = self.scope.usage
                exc = self.failures[0] if self.failures else raised
                _log.warning("kickoff failed", error=str(exc)[:300], error_type=type(exc).__name__,
                             requests=usage.requests, failed_requests=usage.failed_requests,
                             total_tokens=usage.total_tokens, cost=str(usage.cost))
                if events.listening():
                    events.emit(events.KickoffFinished(run_id=self.id, usage=usage,
                                                       ok=False, error=repr(exc)))
                raise
            if _log.isEnabledFor(logging.INFO):
                usage = self.scope.usage
                _log.info("kickoff finished", requests=usage.requests,
                          total_tokens=usage.total_tokens, cost=str(usage.cost))
            if events.listening():
                events.emit(events.KickoffFinished(run_id=self.id, usage=self.scope.usage,
                                                   ok=True))

    def error(self, fallback: BaseException | None = None) -> BaseException:
        """The one exception the kickoff raises: the first failure, carrying the spend."""
        failures = list(self.failures)
        if not failures and fallback is not None:
            failures = [fallback]
        first = failures[0]
        if not isinstance(first, CrewlineError) and isinstance(first, Exception):
            wrapped = CrewlineError(f"run {self.id} failed: {type(first).__name__}: {first}")
            wrapped.__cause__ = first
            first = wrapped
        records = self.scope.records
        if isinstance(first, CrewlineError):
            first.attach_spend(records)
            first.other_errors = tuple(failures[1:])
        else:  # cancellation and interrupts keep their type; the spend rides along
            first.usage_records = records  # type: ignore[attr-defined]
            from crewline._accounting.usage import Usage

            first.usage = Usage.from_records(records)  # type: ignore[attr-defined]
        return first

    def output(self) -> CrewOutput:
        with self._lock:
            outputs = tuple(self._outputs[i] for i in sorted(self._outputs))
        return CrewOutput(run_id=self.id, raw=outputs[-1].raw if outputs else "",
                          tasks_output=outputs, usage_records=self.scope.records)
