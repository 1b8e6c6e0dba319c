"""Per-task overhead: one crew of 20 sequential tasks against 20 sequential litellm calls.

The server answers at once (latency 0), so the difference between a ``kickoff`` and 20
``litellm.completion`` calls with the same messages is crewline's own time. Runs
alternate (bare, crewline, crewline, bare, ...) and the figure is the median of the
paired differences, divided by 20.

Two more views of the same cost:

* engine only: the same crew on an in-process transport that answers instantly, so no
  litellm and no HTTP at all: what crewline's machinery costs per task by itself;
* a cProfile of engine-only kickoffs: the crewline functions with the most cumulative time
  (litellm is not in the picture by construction), and the libraries crewline's own code
  spends its time in; plus, from a profile of real kickoffs, how the time splits between
  crewline and litellm.

    python bench/overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _common as common

_TOP = 15


class InstantTransport:
    """A ``crewline`` transport that answers every request at once, with fixed usage."""

    def complete(self, request: dict[str, Any]) -> Any:
        from crewline.transport.litellm import ChatResponse

        return ChatResponse(content="Result 0123abcd for the request.", prompt_tokens=40,
                            completion_tokens=5, finish_reason="stop")

    async def acomplete(self, request: dict[str, Any]) -> Any:
        return self.complete(request)


def _crew(n_tasks: int, llm: Any) -> Any:
    from crewline import Agent, Crew, Task

    agent = Agent(role=common.ROLE, goal=common.GOAL, backstory=common.BACKSTORY, llm=llm)
    return Crew(agents=[agent], tasks=[
        Task(name=f"step_{j}", description=f"[[{{m}}]] step {j} of the job",
             expected_output=common.EXPECTED, agent=agent)
        for j in range(n_tasks)])


def _bare(litellm: Any, base_url: str, n_tasks: int, marker: str) -> dict[str, int]:
    totals = dict.fromkeys(common.USAGE_KEYS, 0)
    replies: list[str] = []
    for j in range(n_tasks):
        messages = common.messages_like_crewline(
            common.ROLE, common.GOAL, common.BACKSTORY, f"[[{marker}]] step {j} of the job",
            common.EXPECTED, "\n\n".join(replies))
        response = litellm.completion(model=common.MODEL, messages=messages,
                                      api_base=base_url, api_key=common.API_KEY,
                                      max_retries=0)
        replies.append(response.choices[0].message.content or "")
        totals["requests"] += 1
        totals["prompt_tokens"] += response.usage.prompt_tokens
        totals["completion_tokens"] += response.usage.completion_tokens
        totals["total_tokens"] += response.usage.total_tokens
    return totals


def _usage(output: Any) -> dict[str, int]:
    return {k: int(getattr(output.usage, k)) for k in common.USAGE_KEYS}


def _package(filename: str) -> str:
    path = Path(filename)
    parts = path.parts
    if str(common.SRC / "crewline") in filename or "crewline" in parts:
        return "crewline"
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    return "stdlib"


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    path = Path(filename)
    try:
        shown = str(path.relative_to(common.SRC))
    except ValueError:
        parts = path.parts
        shown = ("/".join(parts[parts.index("site-packages") + 1:])
                 if "site-packages" in parts else path.name)
    return f"{shown}:{line}({name})"


def _profile(fn: Any, runs: int) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        fn()
    profiler.disable()
    return pstats.Stats(profiler)


def _summarise(stats: pstats.Stats, per: int) -> dict[str, Any]:
    """Top crewline functions by cumulative time, and self time by package (us per task)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_package: dict[str, float] = defaultdict(float)
    rows = []
    for func, (_cc, calls, tottime, cumtime, _callers) in raw.items():
        package = _package(func[0])
        by_package[package] += tottime
        if package == "crewline":
            rows.append((cumtime, tottime, calls, func))
    rows.sort(key=lambda r: r[0], reverse=True)
    total = sum(by_package.values())
    top_self = sorted(((tottime, calls, func) for func, (_cc, calls, tottime, _ct, _c)
                       in raw.items()), key=lambda r: r[0], reverse=True)[:_TOP]
    return {
        "total_us_per_task": round(1e6 * total / per, 1),
        "self_us_per_task_by_package": {
            k: round(1e6 * v / per, 1) for k, v in
            sorted(by_package.items(), key=lambda kv: kv[1], reverse=True) if v / total > 0.005},
        "top_crewline_cumulative": [
            {"function": _where(func), "cum_us_per_task": round(1e6 * cum / per, 1),
             "self_us_per_task": round(1e6 * tot / per, 1), "calls_per_task":
             round(calls / per, 2)} for cum, tot, calls, func in rows[:_TOP]],
        "top_self": [
            {"function": _where(func), "package": _package(func[0]),
             "self_us_per_task": round(1e6 * tot / per, 1),
             "calls_per_task": round(calls / per, 2)} for tot, calls, func in top_self],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="crewline per-task overhead vs bare litellm")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--reps", type=int, default=21, help="bare/crewline pairs")
    parser.add_argument("--profile-runs", type=int, default=30,
                        help="engine-only kickoffs under cProfile")
    args = parser.parse_args()
    common.setup_offline()
    n = args.tasks

    import litellm

    from crewline import LLM

    with common.ServerProcess(0.0) as server:
        crew = _crew(n, LLM(model=common.MODEL, base_url=server.base_url,
                            api_key=common.API_KEY))
        for w in range(3):
            crew.kickoff({"m": f"warm-{w}"})
            _bare(litellm, server.base_url, n, f"warm-bare-{w}")
        walls: dict[str, list[float]] = {"bare": [], "crewline": []}
        cpus: dict[str, list[float]] = {"bare": [], "crewline": []}
        mismatches: list[str] = []
        checked = 0
        for rep in range(args.reps):
            order = ("bare", "crewline") if rep % 2 == 0 else ("crewline", "bare")
            for mode in order:
                marker = f"{mode}-{rep}"
                gc.collect()
                cpu0, t0 = time.process_time(), time.perf_counter()
                if mode == "bare":
                    _bare(litellm, server.base_url, n, marker)
                else:
                    out = crew.kickoff({"m": marker})
                walls[mode].append(time.perf_counter() - t0)
                cpus[mode].append(time.process_time() - cpu0)
                if mode == "crewline":
                    served = server.totals(marker)
                    checked += served["requests"]
                    mismatches += common.usage_mismatches(_usage(out), served)
        real_stats = _profile(lambda: crew.kickoff({"m": "profiled"}), 5)

    engine = _crew(n, LLM(model=common.MODEL, transport=InstantTransport()))
    engine.kickoff({"m": "warm"})
    sync_times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        engine.kickoff({"m": "x"})
        sync_times.append(time.perf_counter() - t0)

    async def timed_async() -> list[float]:
        await engine.kickoff_async({"m": "warm"})
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            await engine.kickoff_async({"m": "x"})
            times.append(time.perf_counter() - t0)
        return times

    async_times = asyncio.run(timed_async())
    engine_stats = _profile(lambda: engine.kickoff({"m": "profiled"}),
                            args.profile_runs)

    pair_wall = [(c - b) / n for b, c in zip(walls["bare"], walls["crewline"], strict=True)]
    pair_cpu = [(c - b) / n for b, c in zip(cpus["bare"], cpus["crewline"], strict=True)]
    extra_ms = 1000 * common.median(pair_wall)
    engine_profile = _summarise(engine_stats, args.profile_runs * n)
    real_profile = _summarise(real_stats, 5 * n)
    result = {
        "bench": "overhead", "tasks": n, "reps": args.reps,
        "extra_ms_per_task": round(extra_ms, 3),
        "extra_ms_per_task_diff_of_medians": round(
            1000 * (common.median(walls["crewline"]) - common.median(walls["bare"])) / n, 3),
        "extra_cpu_ms_per_task": round(1000 * common.median(pair_cpu), 3),
        "bare_ms_per_call": round(1000 * common.median(walls["bare"]) / n, 3),
        "crewline_ms_per_task": round(1000 * common.median(walls["crewline"]) / n, 3),
        "engine_only_ms_per_task": round(1000 * common.median(sync_times) / n, 3),
        "engine_only_async_ms_per_task": round(1000 * common.median(async_times) / n, 3),
        "usage_exact": not mismatches, "usage_mismatches": mismatches[:10],
        "requests_checked": checked,
        "profile_engine_only": engine_profile,
        "profile_real_self_us_per_task_by_package": real_profile[
            "self_us_per_task_by_package"],
    }
    summary = [
        f"overhead: {extra_ms:.3f} ms extra per task vs bare litellm.completion "
        f"({result['crewline_ms_per_task']:.2f} vs {result['bare_ms_per_call']:.2f} ms; "
        f"CPU {result['extra_cpu_ms_per_task']:.3f} ms); engine alone "
        f"{result['engine_only_ms_per_task']:.3f} ms/task sync, "
        f"{result['engine_only_async_ms_per_task']:.3f} async; usage exact: "
        f"{result['usage_exact']} ({checked} requests)",
        "  engine-only profile, crewline functions by cumulative time (us per task):",
        *(f"    {r['cum_us_per_task']:8.1f} cum {r['self_us_per_task']:7.1f} self  "
          f"{r['function']}" for r in engine_profile["top_crewline_cumulative"]),
        "  engine-only, functions by self time (us per task):",
        *(f"    {r['self_us_per_task']:8.1f} self  {r['function']}"
          for r in engine_profile["top_self"][:8]),
        "  engine-only self time by package (us per task): " + ", ".join(
            f"{k} {v}" for k, v in engine_profile["self_us_per_task_by_package"].items()),
        "  real kickoff self time by package (us per task): " + ", ".join(
            f"{k} {v}" for k, v in result["profile_real_self_us_per_task_by_package"].items()),
    ]
    common.emit(result, summary)


if __name__ == "__main__":
    main()
