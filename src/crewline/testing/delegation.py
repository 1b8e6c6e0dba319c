"""Scripting delegation in tests: a manager's hand-offs, and who is asking.

A delegation is an ordinary tool call on the wire, so a test scripts it with a ``Reply``
whose ``tool_calls`` name ``delegate_work_to_coworker`` or ``ask_question_to_coworker``.
These helpers spell such calls, and tell apart the requests of different agents (every
agent's prompt opens with ``You are <role>.``), so one fake server can play a manager and
its coworkers at once::

    server.add_rule(agent_turn("Crew Manager", 1),
                    Reply(tool_calls=[delegate("Researcher", "[[facts]] Find three facts"),
                                      delegate("Writer", "[[draft]] Draft the intro")]))
    server.add_rule(agent_turn("Crew Manager", 2), "The report, from my team's work.")
"""

from __future__ import annotations

from collections.abc import Callable

from crewline.testing.server import Served, ToolCall

__all__ = ["agent_is", "agent_turn", "ask", "delegate"]


def delegate(coworker: str, task: str, context: str = "", *, id: str | None = None
             ) -> ToolCall:
    """A ``delegate_work_to_coworker`` call handing ``task`` (and ``context``) to ``coworker``."""
    return ToolCall("delegate_work_to_coworker",
                    {"task": task, "context": context, "coworker": coworker}, id=id)


def ask(coworker: str, question: str, context: str = "", *, id: str | None = None
        ) -> ToolCall:
    """An ``ask_question_to_coworker`` call asking ``coworker`` the ``question``."""
    return ToolCall("ask_question_to_coworker",
                    {"question": question, "context": context, "coworker": coworker}, id=id)


def _system_text(served: Served) -> str:
    for message in served.messages:
        if message.get("role") == "system":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def agent_is(role: str) -> Callable[[Served], bool]:
    """A rule condition: the request was made by the agent playing ``role``."""
    opening = f"You are {role}."

    def matches(served: Served) -> bool:
        return _system_text(served).startswith(opening)

    return matches


def agent_turn(role: str, turn: int) -> Callable[[Served], bool]:
    """A rule condition: ``role``'s ``turn``-th model turn of one task attempt (1 is the
    first request; each tool round trip adds one)."""
    is_agent = agent_is(role)

    def matches(served: Served) -> bool:
        done = sum(1 for m in served.messages if m.get("role") == "assistant")
        return is_agent(served) and done + 1 == turn

    return matches
