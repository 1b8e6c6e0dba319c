"""Scale-out: 1,000 crews x 3 tasks at 100 ms, one process against ``RayRunner(workers=2)``.

One process tops out where litellm's CPU per request does (about 4 ms, so ~250 requests a
second per core); a batch of 1,000 three-task crews is 3,000 requests, about 12 s of one
core. ``RayRunner`` spreads the batch over two worker processes, one per core here.

Each side runs in a child process of its own against one fake server in a third process
(``--latency`` 0.1 s), after a warm-up batch (imports, connections, Ray's workers), and
checks that the batch's usage equals the server's own count. The Ray child also reports
what Ray itself costs: ``ray.init`` time, and the resident memory of Ray's processes
(GCS, raylet, workers and helpers) against the driver's own.

    python bench/ray_scaleout.py --n 1000      # one JSON line, then a summary
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import _common as common


def _crew(base_url: str) -> Any:
    from crewline import LLM, Agent, Crew, Task

    llm = LLM(model=common.MODEL, base_url=base_url, api_key=common.API_KEY)
    agent = Agent(role=common.ROLE, goal=common.GOAL, backstory=common.BACKSTORY, llm=llm)
    return Crew(agents=[agent], tasks=[
        Task(name=f"step_{j}", description=f"[[{{m}}]] step {j} for crew {{i}}",
             expected_output=common.EXPECTED, agent=agent)
        for j in range(3)])


def _usage(outs: list[Any]) -> dict[str, int]:
    usage = sum((o.usage for o in outs), start=type(outs[0].usage)())
    return {k: int(getattr(usage, k)) for k in common.USAGE_KEYS}


def _ray_memory_mb() -> dict[str, float]:
    """RSS of this process and of every Ray process on the machine (one node here)."""
    import os

    import psutil

    me = psutil.Process(os.getpid())
    ray_rss = 0.0
    names: dict[str, float] = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "memory_info"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.pid == me.pid or not any(
                    key in cmd for key in ("ray::", "raylet", "gcs_server", "ray/_private",
                                           "ray/dashboard", "ray/autoscaler")):
                continue
            rss = proc.info["memory_info"].rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError):
            continue
        ray_rss += rss
        label = "worker" if "ray::" in cmd else (proc.info["name"] or "?")
        names[label] = names.get(label, 0.0) + rss
    return {"ray_processes_mb": round(ray_rss, 1), "driver_mb": round(
        me.memory_info().rss / 2**20, 1), **{f"ray_{k}_mb": round(v, 1)
                                            for k, v in sorted(names.items())}}


def _child(mode: str, n: int, workers: int, server: common.ServerClient) -> dict[str, Any]:
    common.setup_offline()
    crew = _crew(server.base_url)
    result: dict[str, Any] = {"mode": mode, "n": n}
    runner = None
    if mode == "ray":
        import ray

        from crewline.ray import RayRunner

        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        result["ray_init_s"] = round(time.perf_counter() - started, 2)
        runner = RayRunner(workers=workers)
        started = time.perf_counter()
        runner.worker_pids()  # workers up, litellm imported on them
        result["workers_ready_s"] = round(time.perf_counter() - started, 2)

    async def batch(marker: str, count: int) -> list[Any]:
        inputs = [{"m": marker, "i": i} for i in range(count)]
        if runner is not None:
            return await crew.kickoff_for_each_async(inputs, runner=runner)
        return await crew.kickoff_for_each_async(inputs)

    asyncio.run(batch("warm", 50))  # imports, connections, the first requests
    server.reset()
    started = time.perf_counter()
    outs = asyncio.run(batch("timed", n))
    result["makespan_s"] = round(time.perf_counter() - started, 3)
    engine, served = _usage(outs), server.totals()
    result["usage"] = engine
    result["mismatches"] = common.usage_mismatches(engine, served)
    if runner is not None:
        result.update(_ray_memory_mb())
        runner.close()
        import ray

        ray.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--child", choices=["local", "ray"])
    parser.add_argument("--server")
    parser.add_argument("--control")
    args = parser.parse_args()
    if args.child:
        client = common.ServerClient(args.server, args.control)
        print(json.dumps(_child(args.child, args.n, args.workers, client)), flush=True)
        return

    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    with common.ServerProcess(args.latency) as server:
        for _ in range(args.pairs):
            for mode in ("local", "ray"):
                done = subprocess.run(
                    [sys.executable, __file__, "--child", mode, "--n", str(args.n),
                     "--workers", str(args.workers), *server.args()],
                    capture_output=True, text=True, env=common.offline_env(), check=False)
                if done.returncode != 0:
                    sys.stderr.write(done.stderr[-3000:])
                    raise SystemExit(f"{mode} child failed ({done.returncode})")
                runs[mode].append(common.parse_result(done.stdout))
    local = common.median([r["makespan_s"] for r in runs["local"]])
    on_ray = common.median([r["makespan_s"] for r in runs["ray"]])
    exact = all(not r["mismatches"] for rs in runs.values() for r in rs)
    last = runs["ray"][-1]
    result = {"benchmark": "ray-scaleout", "n": args.n, "workers": args.workers,
              "latency": args.latency, "local_s": local, "ray_s": on_ray,
              "speedup": round(local / on_ray, 3), "usage_exact": exact, "runs": runs}
    common.emit(result, [
        f"scale-out N={args.n} x 3 tasks at {args.latency}s: one process {local:.2f}s, "
        f"RayRunner(workers={args.workers}) {on_ray:.2f}s -> {local / on_ray:.2f}x; "
        f"usage exact: {exact}",
        f"  Ray: init {last.get('ray_init_s')}s, workers ready {last.get('workers_ready_s')}s;"
        f" Ray's processes {last.get('ray_processes_mb')} MB RSS "
        f"(driver {last.get('driver_mb')} MB)",
    ])
    if not exact:
        raise SystemExit("usage differed from the server's count")


if __name__ == "__main__":
    main()
