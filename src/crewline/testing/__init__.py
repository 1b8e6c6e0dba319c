"""Test doubles for crewline and for the crews you build with it, all offline.

* ``FakeLLMServer``: an OpenAI-compatible server on 127.0.0.1 that counts exactly what
  it served; point ``LLM(base_url=server.base_url)`` at it to test through litellm's real
  HTTP path.
* ``ScriptedModel``: the same answers and counting in-process, for fast unit tests:
  ``LLM(model="openai/gpt-4o-mini", transport=ScriptedModel("first reply", ...))``.
"""

from crewline.testing.scripted import ScriptedModel
from crewline.testing.server import FakeLLMServer, Reply, Served, ServedTotals, ToolCall

__all__ = ["FakeLLMServer", "Reply", "ScriptedModel", "Served", "ServedTotals", "ToolCall"]
