"""The fake server as a process, playing a manager that delegates: ``python
delegating_server.py``.

A request from the ``Crew Manager`` (its system prompt opens ``You are Crew Manager.``) on
its first turn is answered with two delegations in one reply: to the Researcher and to the
Writer, each text marked ``[[<manager's marker>-r]]`` / ``-w`` so the server's totals tell
every agent's requests apart. Anything else gets the usual default answer. It prints the
same ``CREWLINE_FAKE_SERVER <base url>`` line as ``python -m crewline.testing``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from crewline.testing import FakeLLMServer, Reply, Served, agent_turn, delegate
from crewline.testing.__main__ import READY_PREFIX

_first_turn = agent_turn("Crew Manager", 1)


def manage(request: Served) -> Reply | None:
    if not _first_turn(request) or request.marker is None:
        return None
    return Reply(tool_calls=[
        delegate("Researcher", f"[[{request.marker}-r]] Find three facts", "for a report"),
        delegate("Writer", f"[[{request.marker}-w]] Draft an introduction, kindly")])


async def serve(port: int, latency: float) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    async with FakeLLMServer(port=port, latency=latency, script=manage) as server:
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
