"""A run: everything one kickoff owns, and nothing a definition does.

A run is built from the plan its crew's process made (templates filled, agents and
context resolved before any request is sent); it holds the run's usage scope, the policy
every request obeys (budgets and rate limits), the outputs as tasks finish, and it turns
failures into the one exception a kickoff raises. Two concurrent kickoffs of one ``Crew``
have two runs and share nothing mutable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from crewline import events
from crewline._accounting.ids import new_id
from crewline._accounting.policy import NO_POLICY, STREAMED, BudgetAccount
from crewline._accounting.usage import Usage, UsageScope
from crewline._core.attempts import run_task
from crewline._core.effects import Step
from crewline._core.outputs import CrewOutput, TaskOutput
from crewline._core.planning import plan_tasks
from crewline._core.prepared import PreparedTask, RunPlan
from crewline.errors import CrewlineError
from crewline.log import get_logger, log_context

if TYPE_CHECKING:
    from crewline._definitions.llm import LLM
    from crewline.budget import Budget

__all__ = ["Run"]

_log = get_logger("crewline.run")


class Run:
    """The state of one kickoff."""

    def __init__(self, plan: RunPlan, *, budget: Budget | None = None,
                 listeners: Sequence[Any] = (), budget_key: str | None = None,
                 stream: bool = False) -> None:
        """``stream``: every request of the run is streamed (``crew.stream``)."""
        self.id = new_id()
        self.plan = plan
        self.inputs = plan.inputs
        self.tasks = plan.tasks
        self.listeners = tuple(listeners)
        # A kickoff's own budget spans its batch (kickoff_for_each); the crew's and the
        # tasks' budgets are definitions, so period "run" means each run.
        accounts = []
        if budget is not None:
            accounts.append(BudgetAccount(budget, budget_key or self.id))
        if plan.budget is not None:
            accounts.append(BudgetAccount(plan.budget, self.id))
        self.policy = (STREAMED if stream else NO_POLICY).extended(
            budgets=accounts, limiters=(plan.limiter,) if plan.limiter is not None else ())
        self.scope = UsageScope("run", run_id=self.id)
        self._outputs: dict[int, TaskOutput] = {}
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()
        self._plans: dict[int, str] = {}
        self._llms: tuple[LLM, ...] | None = None

    @property
    def plans_first(self) -> bool:
        """Whether the run makes the crew's plan before its first task (``before_tasks``)."""
        return self.plan.planning_llm is not None

    def before_tasks(self) -> Step[None]:
        """The run-level work before the first task: the crew's plan, when it plans.

        Recorded in the run's scope and in no task's; a failure here is the run's."""
        if self.plan.planning_llm is None:
            return
        try:
            plans = yield from plan_tasks(self.plan.planning_llm, self.tasks, self.scope,
                                          self.policy)
        except BaseException as exc:
            self.failed(exc)
            raise
        with self._lock:
            self._plans = plans

    def llms(self) -> tuple[LLM, ...]:
        """Every model this run may call: the tasks', the coworkers' and the planner's."""
        if self._llms is None:
            self._llms = self._find_llms()
        return self._llms

    def _find_llms(self) -> tuple[LLM, ...]:
        found = {id(t.llm): t.llm for t in self.tasks}
        for task in self.tasks:
            for coworker in task.delegation.coworkers if task.delegation else ():
                found.setdefault(id(coworker.llm), coworker.llm)
        if self.plan.planning_llm is not None:
            found.setdefault(id(self.plan.planning_llm), self.plan.planning_llm)
        return tuple(found.values())

    def check_routes(self) -> None:
        """Refuse, before anything is sent, a model litellm cannot route (every model the
        run may call, not only the first task's)."""
        for llm in self.llms():
            llm.check_route()

    def step(self, task: PreparedTask) -> Step[TaskOutput]:
        """The step that runs ``task``; its context tasks are finished by construction."""
        with self._lock:
            context = "\n\n".join(self._outputs[j].raw for j in task.context_from
                                  if j in self._outputs)
            plan = self._plans.get(task.index)
        if plan is not None:
            task = dataclasses.replace(task, plan=plan)
        policy = self.policy
        if task.task.budget is not None:
            policy = policy.extended(
                budgets=(BudgetAccount(task.task.budget, f"{self.id}:{task.name}"),))
        try:
            output = yield from run_task(task, context, self.scope, policy)
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

    def active(self) -> _Active:
        """The run's scope, listeners and log context, for the duration of the kickoff."""
        return _Active(self)

    def _started(self) -> None:
        if events.listening():
            events.emit(events.make(events.KickoffStarted, run_id=self.id,
                                    tasks=len(self.tasks), inputs=tuple(sorted(self.inputs))))
        if _log.isEnabledFor(logging.INFO):
            _log.info("kickoff started", tasks=len(self.tasks))

    def _finished(self, raised: BaseException | None) -> None:
        if raised is not None:
            usage = self.scope.usage
            exc = self.failures[0] if self.failures else raised
            _log.warning("kickoff failed", error=str(exc)[:300], error_type=type(exc).__name__,
                         requests=usage.requests, failed_requests=usage.failed_requests,
                         total_tokens=usage.total_tokens, cost=str(usage.cost))
            if events.listening():
                events.emit(events.make(events.KickoffFinished, run_id=self.id, usage=usage,
                                        ok=False, error=repr(exc)))
            return
        if _log.isEnabledFor(logging.INFO):
            usage = self.scope.usage
            _log.info("kickoff finished", requests=usage.requests,
                      total_tokens=usage.total_tokens, cost=str(usage.cost))
        if events.listening():
            events.emit(events.make(events.KickoffFinished, run_id=self.id,
                                    usage=self.scope.usage, ok=True))

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
            first.usage = Usage.from_records(records)  # type: ignore[attr-defined]
        return first

    def output(self) -> CrewOutput:
        with self._lock:
            outputs = tuple(self._outputs[i] for i in sorted(self._outputs))
        return CrewOutput(run_id=self.id, raw=outputs[-1].raw if outputs else "",
                          tasks_output=outputs, usage_records=self.scope.records)


class _Active:
    """``Run.active``: a class, not a generator-based context manager, since it is entered
    once per kickoff on the way to its first request."""

    __slots__ = ("_listeners", "_log", "_run", "_scope")

    def __init__(self, run: Run) -> None:
        self._run = run
        self._scope = run.scope.entered()
        self._listeners = events.run_listeners(run.listeners)
        self._log = log_context(run_id=run.id)

    def __enter__(self) -> None:
        self._scope.__enter__()
        try:
            self._listeners.__enter__()
            try:
                self._log.__enter__()
                try:
                    self._run._started()
                except BaseException:
                    self._log.__exit__()
                    raise
            except BaseException:
                self._listeners.__exit__()
                raise
        except BaseException:
            self._scope.__exit__()
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        try:
            self._run._finished(exc if kind is not None else None)
        finally:
            self._log.__exit__()
            self._listeners.__exit__()
            self._scope.__exit__()
