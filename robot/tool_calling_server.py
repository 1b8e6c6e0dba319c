"""The fake server as a process, scripted to ask for tools: ``python tool_calling_server.py``.

``python -m crewline.testing`` only ever answers with text, so a crew's tools would never
run against it. This runs the same ``FakeLLMServer`` with one rule: a request that offers
tools and ends with the user's message is answered with a call to the first tool offered
(every required argument set to ``"x"``); anything else gets the usual default answer.
It prints the same ``CREWLINE_FAKE_SERVER <base url>`` line and serves the same
``/_crewline/totals`` endpoint, until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from crewline.testing import FakeLLMServer, Reply, Served, ToolCall
from crewline.testing.__main__ import READY_PREFIX


def ask_for_a_tool(request: Served) -> Reply | None:
    if not request.tools or request.messages[-1].get("role") != "user":
        return None
    function: dict[str, Any] = request.tools[0]["function"]
    required = (function.get("parameters") or {}).get("required", [])
    return Reply(tool_calls=[ToolCall(function["name"], {name: "x" for name in required})])


async def serve(port: int, latency: float) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    async with FakeLLMServer(port=port, latency=latency, script=ask_for_a_tool) as server:
        print(f"{READY_PREFIX} {server.base_url}", flush=True)
        await stopping.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency))


if __name__ == "__main__":
    main()
