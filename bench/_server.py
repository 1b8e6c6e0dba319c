"""The project's fake server in its own process, plus a small control port for benchmarks.

``python bench/_server.py --latency S`` serves ``crewline.testing.FakeLLMServer`` and
prints ``BENCH_SERVER <base_url> <control_url>``. Token totals come from the server's own
``GET /_crewline/totals?marker=...``. That endpoint does not report the peak of requests
in flight, so the control port adds it, read from the same server object:

* ``GET  <control_url>/peak``  -> ``{"peak_in_flight": int, "in_flight": int}``
* ``POST <control_url>/reset`` -> ``FakeLLMServer.reset()`` (forgets served requests too)
* ``POST <control_url>/stream_gap?seconds=S`` -> ``FakeLLMServer.stream_gap = S``

``--reply TEXT`` answers every request with ``TEXT`` (the default is the server's own
answer), and is kept across a reset.

Running the server in a separate process keeps its CPU off the client's GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from crewline.testing import FakeLLMServer

READY_PREFIX = "BENCH_SERVER"


async def _serve(latency: float, reply: str | None) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    async with FakeLLMServer(latency=latency) as server:
        if reply is not None:
            server.add_rule(None, reply)

        async def peak(_request: web.Request) -> web.Response:
            return web.json_response({"peak_in_flight": server.peak_in_flight,
                                      "in_flight": server.in_flight})

        async def reset(_request: web.Request) -> web.Response:
            server.reset()
            if reply is not None:
                server.add_rule(None, reply)
            return web.json_response({"ok": True})

        async def stream_gap(request: web.Request) -> web.Response:
            server.stream_gap = float(request.query["seconds"])
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_get("/peak", peak)
        app.router.add_post("/reset", reset)
        app.router.add_post("/stream_gap", stream_gap)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        control_port = int(runner.addresses[0][1])
        print(f"{READY_PREFIX} {server.base_url} http://127.0.0.1:{control_port}", flush=True)
        try:
            await stopping.wait()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--reply", help="answer every request with this text")
    args = parser.parse_args()
    asyncio.run(_serve(args.latency, args.reply))


if __name__ == "__main__":
    main()
