"""Memory: per 1,000 crew definitions, and per 1,000 kickoffs in flight at once.

Definitions: 1,000 crews, each with its own ``LLM``, 3 agents and 3 tasks with distinct
strings, kept alive; measured twice in a fresh process that never imports litellm: the RSS
growth of one batch, and the traced Python allocations (tracemalloc) of another.

In flight: 1,000 one-task ``kickoff_async`` at once against a server answering after
``--latency`` seconds, after a warm-up; the peak RSS while they run minus the RSS before.
The same for 1,000 bare ``litellm.acompletion`` calls with the same messages, so the
difference is what crewline itself holds per kickoff. Each part runs in its own process.

For all 1,000 requests to be outstanding at once, two things differ from the fan-out
benchmark: litellm's aiohttp connector cap (500 connections per host by default) is lifted
for both sides (``AIOHTTP_CONNECTOR_LIMIT[_PER_HOST]``), and the latency is 4 s, not 1 s,
because sending 1,000 requests takes litellm 3-5 s of CPU on a 2-core machine; with 1 s
only a few hundred would be outstanding at the peak. The server's peak in flight is
reported, so the figure says how many were.

    python bench/memory.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from typing import Any

import _common as common

_MB = 2**20


def _definitions(count: int, base: int) -> list[Any]:
    from crewline import LLM, Agent, Crew, Task

    crews = []
    for i in range(base, base + count):
        llm = LLM(model=common.MODEL, base_url="http://127.0.0.1:9/v1", api_key=common.API_KEY)
        agents = [Agent(role=f"{kind} number {i}", goal=f"{kind} {i}: find what matters",
                        backstory=f"A careful {kind.lower()} (crew {i}).", llm=llm)
                  for kind in ("Researcher", "Writer", "Editor")]
        tasks = [Task(name=f"{verb}_{i}", description=f"{verb.title()} the topic of crew {i}.",
                      expected_output=f"The {verb} of crew {i}, in one paragraph.",
                      agent=agent)
                 for verb, agent in zip(("research", "write", "edit"), agents, strict=True)]
        crews.append(Crew(agents=agents, tasks=tasks, name=f"crew {i}"))
    return crews


def _child_definitions(count: int) -> dict[str, Any]:
    import crewline

    keep = [_definitions(10, 10**6)]  # warm up pydantic's validators
    gc.collect()
    rss0 = common.rss_mb()
    keep.append(_definitions(count, 0))
    gc.collect()
    rss_delta = common.rss_mb() - rss0
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep.append(_definitions(count, count))
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(keep[-1]) == count and crewline
    return {"count": count, "rss_mb": round(rss_delta, 2),
            "rss_kb_per_crew": round(rss_delta * 1024 / count, 2),
            "traced_mb": round(traced / _MB, 2),
            "traced_kb_per_crew": round(traced / 1024 / count, 2),
            "litellm_imported": "litellm" in __import__("sys").modules}


async def _sample_peak(stop: asyncio.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], common.rss_mb())
        await asyncio.sleep(0.02)


async def _child_inflight(mode: str, count: int, server: common.ServerClient
                          ) -> dict[str, Any]:
    if mode == "crewline":
        from crewline import LLM, Agent, Crew, Task

        llm = LLM(model=common.MODEL, base_url=server.base_url, api_key=common.API_KEY)
        agent = Agent(role=common.ROLE, goal=common.GOAL, backstory=common.BACKSTORY, llm=llm)
        crew = Crew(agents=[agent], tasks=[Task(
            description="[[{m}]] the task of crew {i}", expected_output=common.EXPECTED)])

        async def many(n: int, marker: str) -> dict[str, int]:
            outs = await asyncio.gather(
                *(crew.kickoff_async({"m": marker, "i": i}) for i in range(n)))
            return {k: sum(int(getattr(o.usage, k)) for o in outs) for k in common.USAGE_KEYS}
    else:
        import litellm

        async def one(i: int, marker: str) -> Any:
            messages = common.messages_like_crewline(
                common.ROLE, common.GOAL, common.BACKSTORY,
                f"[[{marker}]] the task of crew {i}", common.EXPECTED, "")
            return await litellm.acompletion(model=common.MODEL, messages=messages,
                                             api_base=server.base_url,
                                             api_key=common.API_KEY, max_retries=0)

        async def many(n: int, marker: str) -> dict[str, int]:
            responses = await asyncio.gather(*(one(i, marker) for i in range(n)))
            return {"requests": n, "failed_requests": 0, **{
                k: sum(int(getattr(r.usage, k)) for r in responses)
                for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}

    await many(50, "warm")
    await many(50, "warm2")
    gc.collect()
    server.reset()
    rss0 = common.rss_mb()
    hwm = common.reset_peak_rss()
    stop, peak = asyncio.Event(), [rss0]
    sampler = asyncio.create_task(_sample_peak(stop, peak))
    t0 = time.perf_counter()
    usage = await many(count, mode)
    elapsed = time.perf_counter() - t0
    stop.set()
    await sampler
    top = max(peak[0], common.peak_rss_mb()) if hwm else peak[0]
    served = server.totals(mode)
    return {"mode": mode, "count": count, "rss_before_mb": round(rss0, 1),
            "peak_rss_mb": round(top, 1), "delta_mb": round(top - rss0, 2),
            "peak_in_flight": server.peak_in_flight(), "makespan_s": round(elapsed, 3),
            "usage_mismatches": common.usage_mismatches(usage, served)}


def main() -> None:
    parser = argparse.ArgumentParser(description="crewline memory per definition and kickoff")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=4.0)
    parser.add_argument("--child", choices=("definitions", "crewline", "bare"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--control", help=argparse.SUPPRESS)
    args = parser.parse_args()
    common.setup_offline()

    if args.child == "definitions":
        common.emit(_child_definitions(args.count), [])
        return
    if args.child:
        server = common.ServerClient(args.server, args.control)
        common.emit(asyncio.run(_child_inflight(args.child, args.count, server)), [])
        return

    count = str(args.count)
    definitions = common.run_child([__file__, "--child", "definitions", "--count", count],
                                   timeout=300)
    inflight: dict[str, dict[str, Any]] = {}
    with common.ServerProcess(args.latency) as server:
        for mode in ("bare", "crewline"):
            inflight[mode] = common.run_child(
                [__file__, "--child", mode, "--count", count, *server.args()], timeout=300,
                env={"AIOHTTP_CONNECTOR_LIMIT": "4096",
                     "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": "4096"})
    per = 1000 / args.count
    cl, bare = inflight["crewline"], inflight["bare"]
    mismatches = cl["usage_mismatches"]
    result = {
        "bench": "memory", "count": args.count, "latency_s": args.latency,
        "definition_kb_per_crew": definitions["rss_kb_per_crew"],
        "definition_traced_kb_per_crew": definitions["traced_kb_per_crew"],
        "definitions_mb_per_1000": round(definitions["rss_mb"] * per, 2),
        "definitions_import_litellm": definitions["litellm_imported"],
        "inflight_mb_per_1000": round(cl["delta_mb"] * per, 1),
        "inflight_bare_mb_per_1000": round(bare["delta_mb"] * per, 1),
        "inflight_crewline_own_kb_per_kickoff": round(
            (cl["delta_mb"] - bare["delta_mb"]) * 1024 / args.count, 1),
        "inflight": inflight, "definitions": definitions,
        "usage_exact": not mismatches, "usage_mismatches": mismatches[:10],
    }
    common.emit(result, [
        f"definitions: {result['definition_kb_per_crew']:.1f} KB RSS per crew "
        f"({result['definition_traced_kb_per_crew']:.1f} KB traced), "
        f"{result['definitions_mb_per_1000']:.1f} MB per 1,000",
        f"in flight: {result['inflight_mb_per_1000']:.1f} MB per 1,000 kickoffs vs "
        f"{result['inflight_bare_mb_per_1000']:.1f} MB per 1,000 bare acompletion calls "
        f"(crewline's own {result['inflight_crewline_own_kb_per_kickoff']:.1f} KB/kickoff); "
        f"peak in flight {cl['peak_in_flight']} vs {bare['peak_in_flight']}; "
        f"usage exact: {result['usage_exact']}",
    ])


if __name__ == "__main__":
    main()
