"""A Starlette app that streams a crew to the browser as server-sent events.

``GET /report?topic=...`` answers ``text/event-stream``: one ``delta`` event per piece of
text (with the task and agent it belongs to), then a ``done`` event with the usage, or an
``error`` event. A client that disconnects leaves the ``async with`` block, which cancels
the kickoff: the request in flight is cut off and paid at its full budget hold.

Run it with ``uvicorn docs.examples.sse_app:app`` (``make_app`` takes your own crew).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from crewline import Crew
from crewline.events import TaskFinished, TextDelta


def _sse(event: str, data: dict[str, object]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def make_app(crew: Crew) -> Starlette:
    async def report(request: Request) -> StreamingResponse:
        inputs = {"topic": request.query_params.get("topic", "octopuses")}

        async def events() -> AsyncIterator[str]:
            async with crew.astream(inputs=inputs) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        yield _sse("delta", {"task": event.task, "agent": event.agent,
                                             "attempt": event.attempt, "text": event.text})
                    elif isinstance(event, TaskFinished):
                        yield _sse("task", {"task": event.task, "ok": event.ok})
            try:
                out = stream.result
            except Exception as exc:  # a CrewlineError carries what was spent
                yield _sse("error", {"message": str(exc)})
                return
            yield _sse("done", {"raw": out.raw, "usage": out.usage.to_dict()})

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/report", report)])
