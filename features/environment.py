"""behave hooks: one fake OpenAI-compatible server for the whole run, reset per scenario.

Every LLM in the scenarios points at this server on 127.0.0.1, and every figure the
scenarios check is compared with the server's own count of what it served.
"""

from __future__ import annotations

import logging
import os

# litellm must never fetch its price list: set before anything imports it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from crewline.testing import FakeLLMServer
from crewline.transport.litellm import litellm_module


def before_all(context):  # type: ignore[no-untyped-def]
    context.server = FakeLLMServer().start()
    litellm_module()  # pay the import once, before the first timed scenario
    # behave captures logging at INFO; litellm's per-call INFO lines would only slow us down.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def before_scenario(context, scenario):  # type: ignore[no-untyped-def]
    context.server.reset()
    context.server.latency = 0.0
    context.cleanups = []
    context.output = context.error = None


def after_scenario(context, scenario):  # type: ignore[no-untyped-def]
    for cleanup in reversed(context.cleanups):
        cleanup()
    context.server.wait_idle(timeout=10)


def after_all(context):  # type: ignore[no-untyped-def]
    context.server.stop()
