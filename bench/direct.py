"""The direct transport: crewline on the openai SDK against the bare SDK and bare litellm.

Three measurements, each side in fresh child processes against one fake server process:

* fan-out: N crews of 3 sequential tasks at once (``kickoff_async`` under ``gather``, 100 ms
  per request), crewline on the direct transport (``openai/*``, the default) and on
  litellm (``transport="litellm"``), against N chains of 3 bare ``AsyncOpenAI`` calls and of
  3 bare ``litellm.acompletion`` calls with the same messages. Targets: direct <= 1.1x the
  bare SDK. Every crewline round's usage is checked against the server's count.
* first kickoff: a fresh process, clock started before ``import crewline``, one one-task
  ``kickoff`` on the direct path; its wall time including every import (target <= 0.5 s),
  and whether litellm was imported (it must not be).
* ``crewline run --help``: a fresh process's wall time, minus ``python -c pass``.

    python bench/direct.py --n 200 --pairs 1
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

import _common as common

MODES = ("sdk", "direct", "litellm", "crewline-litellm")


class _SDK:
    def __init__(self, base_url: str) -> None:
        import openai

        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=common.API_KEY,
                                         max_retries=0)

    async def _chain(self, i: int, marker: str, totals: dict[str, int]) -> None:
        replies: list[str] = []
        for j in range(3):
            messages = common.messages_like_crewline(
                common.ROLE, common.GOAL, common.BACKSTORY,
                f"[[{marker}]] step {j} for crew {i}", common.EXPECTED, "\n\n".join(replies))
            response = await self.client.chat.completions.create(
                model=common.MODEL.removeprefix("openai/"), messages=messages)  # type: ignore[arg-type]
            replies.append(response.choices[0].message.content or "")
            usage = response.usage
            assert usage is not None
            totals["requests"] += 1
            totals["prompt_tokens"] += usage.prompt_tokens
            totals["completion_tokens"] += usage.completion_tokens
            totals["total_tokens"] += usage.total_tokens

    async def run(self, n: int, marker: str) -> dict[str, int]:
        totals = dict.fromkeys(common.USAGE_KEYS, 0)
        await asyncio.gather(*(self._chain(i, marker, totals) for i in range(n)))
        return totals


class _Crewline:
    def __init__(self, base_url: str, transport: str) -> None:
        from fanout import _crew

        from crewline import LLM

        self.crew = _crew(LLM(model=common.MODEL, base_url=base_url, api_key=common.API_KEY,
                              transport=transport))  # type: ignore[arg-type]

    async def run(self, n: int, marker: str) -> dict[str, int]:
        outs = await asyncio.gather(
            *(self.crew.kickoff_async({"m": marker, "i": i}) for i in range(n)))
        usage = sum((o.usage for o in outs), start=type(outs[0].usage)())
        return {k: int(getattr(usage, k)) for k in common.USAGE_KEYS}


async def _child(mode: str, n: int, rounds: int, server: common.ServerClient, tag: str
                 ) -> dict[str, Any]:
    side: Any
    if mode == "sdk":
        side = _SDK(server.base_url)
    elif mode == "litellm":
        from fanout import _Bare

        side = _Bare(server.base_url)
    else:
        side = _Crewline(server.base_url, "openai" if mode == "direct" else "litellm")
    for w in range(3):
        await side.run(min(n, 50), f"{tag}-warm{w}")
    samples = []
    for r in range(rounds):
        marker = f"{tag}-r{r}"
        server.reset()
        cpu0, t0 = time.process_time(), time.perf_counter()
        usage = await side.run(n, marker)
        makespan, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        samples.append({"makespan_s": round(makespan, 4),
                        "cpu_ms_per_call": round(1000 * cpu / (3 * n), 3),
                        "mismatches": common.usage_mismatches(usage, server.totals(marker))})
    return {"bench": "direct-child", "mode": mode, "rounds": samples,
            "litellm_imported": "litellm" in sys.modules}


def _fanout(n: int, pairs: int, rounds: int, latency: float) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with common.ServerProcess(latency) as server:
        for p in range(pairs):
            for mode in MODES if p % 2 == 0 else tuple(reversed(MODES)):
                child = common.run_child(
                    [__file__, "--child", mode, "--n", str(n), "--rounds", str(rounds),
                     "--tag", f"{mode}-p{p}", *server.args()], timeout=900)
                if mode == "direct" and child["litellm_imported"]:
                    raise RuntimeError("the direct-path child imported litellm")
                samples[mode].extend(child["rounds"])
    med = {m: common.median([s["makespan_s"] for s in samples[m]]) for m in MODES}
    cpu = {m: common.median([s["cpu_ms_per_call"] for s in samples[m]]) for m in MODES}
    mismatches = [x for m in ("direct", "crewline-litellm") for s in samples[m]
                  for x in s["mismatches"]]
    return {"n": n, "latency_s": latency, "ideal_s": 3 * latency, "pairs": pairs,
            "rounds": rounds, "makespan_s": med, "cpu_ms_per_call": cpu,
            "makespans_s": {m: [s["makespan_s"] for s in samples[m]] for m in MODES},
            "direct_to_sdk": round(med["direct"] / med["sdk"], 3),
            "direct_to_litellm": round(med["direct"] / med["litellm"], 3),
            "crewline_litellm_to_litellm": round(med["crewline-litellm"] / med["litellm"], 3),
            "usage_exact": not mismatches}


_FIRST_KICKOFF = """
import time, sys
t0 = time.perf_counter()
from crewline import LLM, Agent, Crew, Task
llm = LLM(model="{model}", base_url="{base_url}", api_key="{key}")
agent = Agent(role="A", llm=llm)
Crew(agents=[agent], tasks=[Task(description="[[first]] go", agent=agent)]).kickoff()
print(time.perf_counter() - t0, "litellm" in sys.modules)
"""


def _wall(args: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], env=common.offline_env(), check=True,
                       capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def _startup(repeat: int) -> dict[str, Any]:
    firsts, imported = [], set()
    with common.ServerProcess(0.0) as server:
        code = _FIRST_KICKOFF.format(model=common.MODEL, base_url=server.base_url,
                                     key=common.API_KEY)
        for _ in range(repeat):
            done = subprocess.run([sys.executable, "-c", code], env=common.offline_env(),
                                  check=True, capture_output=True, text=True)
            seconds, flag = done.stdout.split()
            firsts.append(float(seconds))
            imported.add(flag)
    python = common.median(_wall(["-c", "pass"], repeat))
    help_ = common.median(_wall(["-m", "crewline", "run", "--help"], repeat))
    return {"first_kickoff_s": round(common.median(firsts), 3),
            "first_kickoffs_s": [round(x, 3) for x in firsts],
            "litellm_imported": imported != {"False"},
            "run_help_s": round(help_ - python, 3), "python_s": round(python, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description="direct transport vs bare SDK and litellm")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="x", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--control", help=argparse.SUPPRESS)
    args = parser.parse_args()
    common.setup_offline()
    if args.child:
        server = common.ServerClient(args.server, args.control)
        common.emit(asyncio.run(_child(args.child, args.n, args.rounds, server, args.tag)),
                    [])
        return
    import openai

    fan = _fanout(args.n, args.pairs, args.rounds, args.latency)
    start = _startup(args.repeat)
    m, c = fan["makespan_s"], fan["cpu_ms_per_call"]
    summary = [
        f"openai {openai.__version__}; fan-out N={fan['n']} x 3 tasks at "
        f"{fan['latency_s']:.1f}s (ideal {fan['ideal_s']:.1f}s), medians:",
        f"  crewline direct {m['direct']:.3f}s ({c['direct']:.2f} ms CPU/call) = "
        f"{fan['direct_to_sdk']:.3f}x bare SDK {m['sdk']:.3f}s ({c['sdk']:.2f} ms) "
        f"[target <= 1.1x], {fan['direct_to_litellm']:.3f}x bare litellm "
        f"{m['litellm']:.3f}s ({c['litellm']:.2f} ms)",
        f"  crewline on litellm {m['crewline-litellm']:.3f}s ({c['crewline-litellm']:.2f} ms)"
        f" = {fan['crewline_litellm_to_litellm']:.3f}x bare litellm; usage exact: "
        f"{fan['usage_exact']}",
        f"  first kickoff incl. imports (direct): {start['first_kickoff_s']:.3f}s "
        f"[target <= 0.5s], litellm imported: {start['litellm_imported']}; "
        f"`crewline run --help`: {start['run_help_s']:.3f}s over python's "
        f"{start['python_s']:.3f}s",
    ]
    common.emit({"bench": "direct", "fanout": fan, "startup": start,
                 "openai": openai.__version__, "usage_exact": fan["usage_exact"]}, summary)


if __name__ == "__main__":
    main()
