"""``python -m crewline.testing [--port N] [--latency S]``: the fake server as a process.

Robot Framework suites and the CLI demo drive crewline from other processes, so they start
the server this way and read the one line it prints (``CREWLINE_FAKE_SERVER <base url>``)
to learn where it listens. It serves until SIGTERM or SIGINT and then exits 0; totals stay
readable over HTTP at ``GET /_crewline/totals[?marker=name]`` while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from crewline.testing.server import FakeLLMServer

READY_PREFIX = "CREWLINE_FAKE_SERVER"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crewline.testing",
        description="Serve a fake OpenAI-compatible chat-completions API until SIGTERM/SIGINT.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error("--latency must be >= 0")
    asyncio.run(_serve(host=args.host, port=args.port, latency=args.latency))
    return 0


async def _serve(*, host: str, port: int, latency: float) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    async with FakeLLMServer(host=host, port=port, latency=latency) as server:
        print(f"{READY_PREFIX} {server.base_url}", flush=True)
        await stopping.wait()


if __name__ == "__main__":
    sys.exit(main())
