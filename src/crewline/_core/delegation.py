"""Delegation: an agent handing a piece of its task to a coworker, as a nested step.

The two tools keep crewAI's names and arguments (``delegate_work_to_coworker(task,
context, coworker)``, ``ask_question_to_coworker(question, context, coworker)``), but they
are not user code: a call is a sub-step of the same task, so the coworker's requests go
through the same ``llm_call`` and ``RequestPolicy`` (the task's budgets and rate limits cap
them), and land in a child usage scope that names the coworker and its delegator. The
task's usage includes them because records reach every ancestor scope; nothing is counted
twice and nothing is diffed.

What the delegator gets back is the coworker's answer. Whatever the model asks that cannot
be done (an unknown coworker, itself or anyone up its chain, a hand-off deeper than
``max_delegation_depth``, arguments that do not validate) is a tool error that says what is
allowed, never an exception. A coworker that fails (a provider error, too many turns)
becomes a tool error too, with its usage kept; a budget that is spent or a definition that
cannot work stops the task, since asking the model again cannot help.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crewline import events
from crewline._accounting.policy import RequestPolicy
from crewline._accounting.usage import current_scope
from crewline._core.effects import Step
from crewline._core.notify import notify
from crewline._core.prepared import Coworker, Delegation, PreparedTask
from crewline._definitions.tools import Tool, tool
from crewline.errors import BudgetExceededError, DefinitionError
from crewline.log import log_context
from crewline.transport.litellm import ToolCallRequest

__all__ = ["ASK_QUESTION", "DELEGATE_WORK", "DELEGATION_TOOLS", "Handoff", "coworker_step",
           "delegation_specs", "start_delegation"]

DELEGATE_WORK = "delegate_work_to_coworker"
ASK_QUESTION = "ask_question_to_coworker"
DELEGATION_TOOLS = frozenset({DELEGATE_WORK, ASK_QUESTION})

_ANSWER_CRITERIA = ("Your best answer to your coworker asking you this, accounting for the "
                    "context shared.")
_STOPS_THE_TASK = (BudgetExceededError, DefinitionError)
"""Coworker failures that are not the coworker's: retrying through the model cannot help."""


def _delegate_work_to_coworker(task: str, *, context: str = "", coworker: str) -> str:
    """Delegate a specific task to a coworker.

    Args:
        task: The task to delegate.
        context: The context for the task.
        coworker: The role/name of the coworker to delegate to.
    """
    raise NotImplementedError  # the engine runs delegations itself, as sub-steps


def _ask_question_to_coworker(question: str, *, context: str = "", coworker: str) -> str:
    """Ask a specific question to a coworker.

    Args:
        question: The question to ask.
        context: The context for the question.
        coworker: The role/name of the coworker to ask.
    """
    raise NotImplementedError  # the engine runs delegations itself, as sub-steps


@functools.cache
def _tools() -> dict[str, Tool]:
    """The two tools' schemas and argument checks, built once (pydantic models are costly)."""
    return {DELEGATE_WORK: tool(name=DELEGATE_WORK)(_delegate_work_to_coworker),
            ASK_QUESTION: tool(name=ASK_QUESTION)(_ask_question_to_coworker)}


def _normal(role: str) -> str:
    return " ".join(role.split()).casefold()


def _blocked(task: PreparedTask, delegation: Delegation) -> set[str]:
    return {_normal(role) for role in (*delegation.chain, task.role)}


def _reachable(task: PreparedTask, delegation: Delegation) -> list[Coworker]:
    blocked = _blocked(task, delegation)
    return [c for c in delegation.coworkers if _normal(c.role) not in blocked]


def _names(coworkers: list[Coworker]) -> str:
    return ", ".join(repr(c.role) for c in coworkers) or "none"


def delegation_specs(task: PreparedTask) -> list[dict[str, Any]]:
    """The delegation tools ``task``'s worker is offered (none if nobody is reachable)."""
    delegation = task.delegation
    if delegation is None:
        return []
    reachable = _reachable(task, delegation)
    if not reachable:
        return []
    roles = ", ".join(c.role for c in reachable)
    about = {
        DELEGATE_WORK: (
            f"Delegate a specific task to one of the following coworkers: {roles}\n"
            "The input to this tool should be the coworker, the task you want them to do, "
            "and ALL necessary context to execute the task, they know nothing about the "
            "task, so share absolutely everything you know, don't reference things but "
            "instead explain them."),
        ASK_QUESTION: (
            f"Ask a specific question to one of the following coworkers: {roles}\n"
            "The input to this tool should be the coworker, the question you have for them, "
            "and ALL necessary context to ask the question properly, they know nothing about "
            "the question, so share absolutely everything you know, don't reference things "
            "but instead explain them."),
    }
    return [dataclasses.replace(t, description=about[name]).openai_spec()
            for name, t in _tools().items()]


@dataclass(frozen=True, slots=True)
class Handoff:
    """What a delegation tool call gives back to the delegator: the coworker's answer, or a
    tool error (``error`` says what went wrong; ``text`` is what the model reads)."""

    text: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Request:
    coworker: Coworker
    question: bool
    text: str
    context: str


def _refused(text: str) -> Handoff:
    return Handoff(f"Error: {text}", text)


def _check(task: PreparedTask, call: ToolCallRequest) -> _Request | Handoff:
    """The delegation the call asks for, or the tool error that says what is allowed."""
    delegation = task.delegation
    assert delegation is not None
    try:
        args = _tools()[call.name].parse_arguments(call.arguments)
    except ValueError as exc:
        return _refused(f"tool {call.name!r}: {exc}")
    reachable = _reachable(task, delegation)
    if delegation.depth + 1 > delegation.max_depth:
        return _refused(
            f"you cannot delegate any further: this work is already {delegation.depth} "
            f"delegation(s) deep and the crew allows at most {delegation.max_depth} "
            "(max_delegation_depth). Do the work yourself and give your final answer.")
    wanted = _normal(str(args["coworker"]))
    found = next((c for c in delegation.coworkers if _normal(c.role) == wanted), None)
    if found is None:
        return _refused(
            f"there is no coworker {args['coworker']!r}. The coworkers you can "
            f"{'ask' if call.name == ASK_QUESTION else 'delegate to'} are: "
            f"{_names(reachable)} (use one of these roles exactly).")
    if wanted in _blocked(task, delegation):
        who = ("yourself" if wanted == _normal(task.role)
               else f"{found.role!r}, who is already in this chain of delegation "
                    f"({' -> '.join((*delegation.chain, task.role))})")
        return _refused(f"you cannot delegate to {who}. The coworkers you can reach are: "
                        f"{_names(reachable)}.")
    question = call.name == ASK_QUESTION
    text = str(args["question" if question else "task"])
    return _Request(found, question, text, str(args.get("context") or ""))


Work = Callable[[PreparedTask, str, RequestPolicy], Step[str]]
"""Runs a prepared task's tool loop from its first messages (``context`` included) and
returns the final answer: the agent loop of ``turns``, handed in so that this module, which
the loop calls, does not import it back."""


def start_delegation(task: PreparedTask, call: ToolCallRequest, policy: RequestPolicy,
                     work: Work) -> Step[Handoff] | Handoff:
    """The coworker's sub-step for a delegation tool call, or the tool error to feed back."""
    checked = _check(task, call)
    if isinstance(checked, Handoff):
        return checked
    return coworker_step(task, checked.coworker, checked.text, checked.context, policy,
                         work, question=checked.question)


def _coworker_task(task: PreparedTask, coworker: Coworker, text: str) -> PreparedTask:
    """The piece of work as the coworker sees it: its own agent, none of the delegator's
    prompt, the crew task's name (its records belong to that task)."""
    delegation = task.delegation
    assert delegation is not None
    own = None
    if coworker.agent.allow_delegation:
        own = Delegation(coworkers=delegation.coworkers, max_depth=delegation.max_depth,
                         depth=delegation.depth + 1, chain=(*delegation.chain, task.role))
    return dataclasses.replace(
        task, agent=coworker.agent, llm=coworker.llm, role=coworker.role, goal=coworker.goal,
        backstory=coworker.backstory, description=text, expected_output=_ANSWER_CRITERIA,
        delegation=own, manager=False, plan=None, delegated_by=task.role)


def coworker_step(task: PreparedTask, coworker: Coworker, text: str, context: str,
                  policy: RequestPolicy, work: Work, *, question: bool = False
                  ) -> Step[Handoff]:
    """``coworker`` works ``text`` with ``context``; returns its answer, or a tool error.

    Runs in its own usage scope (records name the coworker and ``delegated_by``), with the
    delegation events emitted in the context the sub-step runs in: ``DelegationStarted``
    before its first request, ``DelegationFinished`` after its last.
    """
    parent = current_scope()
    if parent is None:
        raise RuntimeError("crewline: delegation outside any usage scope (engine bug)")
    piece = _coworker_task(task, coworker, text)
    depth = task.delegation.depth + 1 if task.delegation is not None else 1
    scope = parent.delegated(agent=coworker.role, by=task.role)
    fields = {"task": task.name, "by": task.role, "to": coworker.role, "depth": depth}
    with scope.entered(), log_context(agent=coworker.role, delegated_by=task.role):
        notify(events.DelegationStarted, **fields)
        try:
            answer = yield from work(piece, context, policy)
        except Exception as exc:
            if events.listening():
                notify(events.DelegationFinished, **fields, ok=False, usage=scope.usage,
                       error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, _STOPS_THE_TASK):
                raise
            return _refused(f"coworker {coworker.role!r} could not "
                            f"{'answer' if question else 'finish the work'}: "
                            f"{type(exc).__name__}: {exc}")
        except BaseException as exc:
            if events.listening():
                notify(events.DelegationFinished, **fields, ok=False, usage=scope.usage,
                       error=repr(exc))
            raise
        if events.listening():
            notify(events.DelegationFinished, **fields, ok=True, usage=scope.usage)
        return Handoff(answer)
