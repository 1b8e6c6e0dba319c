"""Test doubles for crewline and for the crews you build with it, all offline.

* ``FakeLLMServer``: an OpenAI-compatible server on 127.0.0.1 that counts exactly what
  it served; point ``LLM(base_url=server.base_url)`` at it to test through litellm's real
  HTTP path.
* ``ScriptedModel``: the same answers and counting in-process, for fast unit tests:
  ``LLM(model="openai/gpt-4o-mini", transport=ScriptedModel("first reply", ...))``.
* ``delegate``, ``ask``, ``agent_is``, ``agent_turn``: script a manager's hand-offs to its
  coworkers, and answer each agent by its role.
"""

from crewline.testing.delegation import agent_is, agent_turn, ask, delegate
from crewline.testing.scripted import ScriptedModel
from crewline.testing.server import FakeLLMServer, Reply, Served, ServedTotals, ToolCall

__all__ = ["FakeLLMServer", "Reply", "ScriptedModel", "Served", "ServedTotals", "ToolCall",
           "agent_is", "agent_turn", "ask", "delegate"]
