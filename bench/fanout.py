"""Fan-out: N crews of 3 sequential tasks at once, against bare litellm doing the same calls.

Each crew is one ``kickoff_async`` of a 3-task sequential crew, all N under
``asyncio.gather``; the server answers every request after ``--latency`` seconds (0.1), so
the ideal makespan is 3 x latency. The baseline is N chains of 3 sequential
``litellm.acompletion`` calls with the same messages (each call sees the earlier replies as
context, as crewline's tasks do), also under ``asyncio.gather``.

Each side runs in fresh child processes (so peak RSS is its own), alternating
bare/crewline, against one fake server in a third process. Every crewline round checks that
the engine's usage equals the server's own count of what it served.

A third child runs the same crews on an in-process transport that only sleeps the latency
(no HTTP, no litellm call): the engine's own cost and scalability, without litellm's
~4-6 ms of CPU per call. Each child also reports the time spent in the garbage collector.

    python bench/fanout.py --n 200            # one JSON line, then a summary
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from typing import Any

import _common as common


def _crew(llm: Any) -> Any:
    from crewline import Agent, Crew, Task

    agent = Agent(role=common.ROLE, goal=common.GOAL, backstory=common.BACKSTORY, llm=llm)
    return Crew(agents=[agent], tasks=[
        Task(name=f"step_{j}", description=f"[[{{m}}]] step {j} for crew {{i}}",
             expected_output=common.EXPECTED, agent=agent)
        for j in range(3)])


class _Crewline:
    def __init__(self, base_url: str) -> None:
        from crewline import LLM

        self.crew = _crew(LLM(model=common.MODEL, base_url=base_url, api_key=common.API_KEY))

    async def run(self, n: int, marker: str) -> dict[str, int]:
        outs = await asyncio.gather(
            *(self.crew.kickoff_async({"m": marker, "i": i}) for i in range(n)))
        usage = sum((o.usage for o in outs), start=type(outs[0].usage)())
        return {k: int(getattr(usage, k)) for k in common.USAGE_KEYS}


class _SleepTransport:
    """Answers after ``latency`` seconds without HTTP or litellm: the engine alone."""

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def complete(self, request: dict[str, Any]) -> Any:
        raise NotImplementedError("the engine-only fan-out is asyncio only")

    async def acomplete(self, request: dict[str, Any]) -> Any:
        from crewline.transport.litellm import ChatResponse

        await asyncio.sleep(self.latency)
        return ChatResponse(content="Result 0123abcd for the request.", prompt_tokens=60,
                            completion_tokens=5, finish_reason="stop")


class _Engine(_Crewline):
    def __init__(self, latency: float) -> None:
        from crewline import LLM

        llm = LLM(model=common.MODEL, transport=_SleepTransport(latency))
        self.crew = _crew(llm)


class _Bare:
    def __init__(self, base_url: str) -> None:
        import litellm

        self.litellm = litellm
        self.base_url = base_url

    async def _chain(self, i: int, marker: str, totals: dict[str, int]) -> None:
        replies: list[str] = []
        for j in range(3):
            messages = common.messages_like_crewline(
                common.ROLE, common.GOAL, common.BACKSTORY, f"[[{marker}]] step {j} for crew {i}",
                common.EXPECTED, "\n\n".join(replies))
            response = await self.litellm.acompletion(
                model=common.MODEL, messages=messages, api_base=self.base_url,
                api_key=common.API_KEY, max_retries=0)
            replies.append(response.choices[0].message.content or "")
            usage = response.usage
            totals["requests"] += 1
            totals["prompt_tokens"] += usage.prompt_tokens
            totals["completion_tokens"] += usage.completion_tokens
            totals["total_tokens"] += usage.total_tokens

    async def run(self, n: int, marker: str) -> dict[str, int]:
        totals = dict.fromkeys(common.USAGE_KEYS, 0)
        await asyncio.gather(*(self._chain(i, marker, totals) for i in range(n)))
        return totals


class _GCClock:
    """Time spent in the cyclic garbage collector, and collections per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def reset(self) -> None:
        self.seconds, self.collections = 0.0, [0, 0, 0]


def _freeze_after_litellm_import() -> None:
    """What-if for a proposed src fix: ``gc.freeze()`` once litellm is imported."""
    from crewline.transport.litellm import litellm_module

    litellm_module()
    gc.collect()
    gc.freeze()


async def _child(mode: str, n: int, rounds: int, latency: float,
                 server: common.ServerClient | None, tag: str, freeze: bool = False
                 ) -> dict[str, Any]:
    t0 = time.perf_counter()
    if freeze and mode != "bare":
        _freeze_after_litellm_import()
    side: _Crewline | _Bare
    if mode == "engine":
        side = _Engine(latency)
    else:
        assert server is not None
        side = _Crewline(server.base_url) if mode == "crewline" else _Bare(server.base_url)
    for w in range(3):  # imports litellm, opens connections, fills lazy caches
        await side.run(min(n, 50), f"{tag}-warm{w}")
    warmup_s = time.perf_counter() - t0
    results = []
    clock = _GCClock()
    for r in range(rounds):
        marker = f"{tag}-r{r}"
        gc.collect()
        if server is not None:
            server.reset()
        rss_before = common.rss_mb()
        hwm_ok = common.reset_peak_rss()
        clock.reset()
        cpu0, t0 = time.process_time(), time.perf_counter()
        usage = await side.run(n, marker)
        makespan = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        peak = common.peak_rss_mb() if hwm_ok else common.max_rss_mb()
        round_result: dict[str, Any] = {
            "makespan_s": round(makespan, 4), "cpu_s": round(cpu, 4),
            "cpu_ms_per_call": round(1000 * cpu / (3 * n), 3),
            "gc_s": round(clock.seconds, 4), "gc_collections": clock.collections,
            "rss_before_mb": round(rss_before, 1), "round_peak_rss_mb": round(peak, 1),
            "engine_usage": usage, "peak_in_flight": None, "usage_mismatches": []}
        if server is not None:
            served = server.totals(marker)
            round_result.update(peak_in_flight=server.peak_in_flight(), server_totals=served,
                                usage_mismatches=common.usage_mismatches(usage, served))
        results.append(round_result)
    return {"bench": "fanout-child", "mode": mode, "n": n, "warmup_s": round(warmup_s, 3),
            "rounds": results, "max_rss_mb": round(common.max_rss_mb(), 1),
            "crewline_imported": "crewline" in sys.modules}


def _default_rounds(n: int) -> int:
    return 5 if n <= 50 else 3 if n <= 300 else 1


def _mode_summary(samples: list[dict[str, Any]], children: list[dict[str, Any]],
                  ideal: float) -> dict[str, Any]:
    makespans = [s["makespan_s"] for s in samples]
    med = common.median(makespans)
    peaks = [s["peak_in_flight"] for s in samples if s["peak_in_flight"] is not None]
    return {
        "makespan_s": round(med, 4),
        "makespan_min_s": round(min(makespans), 4),
        "makespans_s": makespans,
        "ratio_to_ideal": round(med / ideal, 3),
        "peak_in_flight": max(peaks) if peaks else None,
        "cpu_ms_per_call": round(common.median([s["cpu_ms_per_call"] for s in samples]), 3),
        "gc_s": round(common.median([s["gc_s"] for s in samples]), 4),
        "gc_collections": samples[0]["gc_collections"],
        "peak_rss_mb": max(c["max_rss_mb"] for c in children),
        "round_peak_rss_mb": max(s["round_peak_rss_mb"] for s in samples),
        "rss_before_mb": round(common.median([s["rss_before_mb"] for s in samples]), 1),
    }


def _measure(n: int, pairs: int, rounds: int, latency: float, freeze: bool
             ) -> dict[str, Any]:
    modes = ("bare", "crewline", "engine")
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    children: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}

    def run(mode: str, tag: str, server_args: list[str]) -> None:
        child = common.run_child(
            [__file__, "--child", mode, "--n", str(n), "--rounds", str(rounds),
             "--latency", str(latency), "--tag", tag, *server_args,
             *(["--what-if-gc-freeze"] if freeze else [])], timeout=600)
        if mode == "bare" and child["crewline_imported"]:
            raise RuntimeError("the bare-litellm child imported crewline")
        samples[mode].extend(child["rounds"])
        children[mode].append(child)

    with common.ServerProcess(latency) as server:
        for p in range(pairs):
            for mode in ("bare", "crewline") if p % 2 == 0 else ("crewline", "bare"):
                run(mode, f"{mode}-p{p}", server.args())
    run("engine", "engine", [])

    ideal = 3 * latency
    per_mode = {m: _mode_summary(samples[m], children[m], ideal) for m in modes}
    cl, bare = per_mode["crewline"], per_mode["bare"]
    mismatches = [m for s in samples["crewline"] for m in s["usage_mismatches"]]
    return {
        "n": n, "latency_s": latency, "ideal_s": round(ideal, 3), "pairs": pairs,
        "rounds": rounds, "what_if_gc_freeze": freeze,
        "ratio_to_bare": round(cl["makespan_s"] / bare["makespan_s"], 3),
        "ratio_to_bare_min": round(cl["makespan_min_s"] / bare["makespan_min_s"], 3),
        "cpu_ratio_to_bare": round(cl["cpu_ms_per_call"] / bare["cpu_ms_per_call"], 3),
        "pair_ratios": [round(common.median([s["makespan_s"] for s in c["rounds"]])
                              / common.median([s["makespan_s"] for s in b["rounds"]]), 3)
                        for c, b in zip(children["crewline"], children["bare"], strict=True)],
        "crewline": cl, "bare": bare, "engine_only": per_mode["engine"],
        "usage_exact": not mismatches, "usage_mismatches": mismatches[:10],
        "requests_checked": sum(s["server_totals"]["requests"] for s in samples["crewline"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="crewline fan-out vs bare litellm")
    parser.add_argument("--n", default="200", help="crews at once; a comma list runs several")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--pairs", type=int, default=2,
                        help="bare/crewline child-process pairs per N (alternating order)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="timed rounds per child (default: 5, 3 or 1 by N)")
    parser.add_argument("--what-if-gc-freeze", action="store_true",
                        help="gc.freeze() after litellm's import in the crewline children "
                             "only: measures a proposed fix, not crewline as it is")
    parser.add_argument("--child", choices=("crewline", "bare", "engine"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="x", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--control", help=argparse.SUPPRESS)
    args = parser.parse_args()
    common.setup_offline()
    ns = [int(x) for x in str(args.n).split(",") if x]

    if args.child:
        server = common.ServerClient(args.server, args.control) if args.server else None
        common.emit(asyncio.run(_child(args.child, ns[0], args.rounds or 1, args.latency,
                                       server, args.tag, args.what_if_gc_freeze)), [])
        return

    results = [_measure(n, args.pairs, args.rounds or _default_rounds(n), args.latency,
                        args.what_if_gc_freeze) for n in ns]
    summary = []
    for r in results:
        c, b, e = r["crewline"], r["bare"], r["engine_only"]
        summary += [
            f"fan-out N={r['n']}{' (what-if gc.freeze)' if r['what_if_gc_freeze'] else ''}: "
            f"crewline {c['makespan_s']:.3f}s, bare litellm "
            f"{b['makespan_s']:.3f}s -> {r['ratio_to_bare']:.3f}x bare "
            f"({r['ratio_to_bare_min']:.3f}x best-of; per pair "
            f"{', '.join(f'{x:.2f}' for x in r['pair_ratios'])}), "
            f"{c['ratio_to_ideal']:.2f}x ideal "
            f"{r['ideal_s']:.1f}s; usage exact: {r['usage_exact']} "
            f"({r['requests_checked']} requests)",
            f"  CPU/call {c['cpu_ms_per_call']:.2f} vs {b['cpu_ms_per_call']:.2f} ms "
            f"({r['cpu_ratio_to_bare']:.3f}x); GC {c['gc_s']:.2f} vs {b['gc_s']:.2f} s; "
            f"peak in flight {c['peak_in_flight']} vs {b['peak_in_flight']}; peak RSS "
            f"{c['peak_rss_mb']:.0f} vs {b['peak_rss_mb']:.0f} MB",
            f"  engine only (no litellm, no HTTP): {e['makespan_s']:.3f}s "
            f"({e['ratio_to_ideal']:.2f}x ideal), {e['cpu_ms_per_call']:.3f} ms CPU/task"]
    common.emit({"bench": "fanout", "results": results,
                 "usage_exact": all(r["usage_exact"] for r in results)}, summary)


if __name__ == "__main__":
    main()
