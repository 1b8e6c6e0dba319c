"""Streaming: time to first token and 200 concurrent streams, against bare litellm.

TTFT: from the call to the first piece of text, ``crew.astream`` (a one-task crew, the
first ``TextDelta``) vs ``litellm.acompletion(..., stream=True)`` (the first content chunk),
same messages size, in pairs over ``--rounds`` whose order alternates (whichever side goes
second pays for the background work litellm leaves from the first one's request: a fixed
order biased the figure by more than a millisecond); reported as the median of the pairs'
differences and as the difference of the medians. Makespan: ``--n`` streams at
once (20 words, ``--gap`` seconds apart) under ``asyncio.gather``, each side consuming
every chunk, 4 rounds in alternating order, reported as best of 4 per side and as the
median of the rounds' ratios (the machine's speed drifts between rounds: the paired ratio is
the steadier figure); crewline's usage is checked against the server's count.

The fake server runs on a thread of this process (both sides share that cost).

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/streaming.py --rounds 300 --n 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from crewline import LLM, Agent, Crew, Task
from crewline.events import TextDelta
from crewline.testing import FakeLLMServer
from crewline.transport.litellm import litellm_module

MODEL = "openai/gpt-4o-mini"
WORDS = " ".join(f"w{i}" for i in range(20))


TRANSPORT = "litellm"
"""crewline's transport here: litellm, the client the bare side uses, so the figures are the
engine's own cost (``--transport auto`` measures the default, which with openai >= 3 is the
direct path: faster than bare litellm, and so no measure of the engine)."""


def _crew(base_url: str) -> Crew:
    llm = LLM(model=MODEL, base_url=base_url, api_key="sk-bench",
              transport=TRANSPORT)  # type: ignore[arg-type]
    agent = Agent(role="Writer", goal="write", llm=llm)
    return Crew(agents=[agent], tasks=[Task(description="[[{m}]] Write {i}.",
                                            expected_output="x", agent=agent)])


async def _bare_one(base_url: str, i: int) -> float:
    litellm = litellm_module()
    t0 = time.perf_counter()
    first = 0.0
    stream = await litellm.acompletion(
        model=MODEL, api_base=base_url, api_key="sk-bench", max_retries=0, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "You are Writer."},
                  {"role": "user", "content": f"Current task: [[bare]] Write {i}."}])
    async for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
    return first


_TOKENS: list[int] = []
"""Total tokens of each crewline kickoff, to check against the server's count."""


async def _crew_one(crew: Crew, i: int) -> float:
    t0 = time.perf_counter()
    first = 0.0
    async with crew.astream(inputs={"m": "crew", "i": i}) as stream:
        async for event in stream:
            if not first and isinstance(event, TextDelta):
                first = time.perf_counter() - t0
    _TOKENS.append(stream.result.usage.total_tokens)
    return first


async def main(rounds: int, n: int, gap: float) -> dict[str, Any]:
    litellm_module()
    with FakeLLMServer() as server:
        server.add_rule(None, WORDS)
        crew = _crew(server.base_url)
        for i in range(3):  # warm both paths
            await _bare_one(server.base_url, i)
            await _crew_one(crew, i)
        bare, mine = [], []
        for i in range(rounds):
            if i % 2:
                bare.append(await _bare_one(server.base_url, i))
                mine.append(await _crew_one(crew, i))
            else:
                mine.append(await _crew_one(crew, i))
                bare.append(await _bare_one(server.base_url, i))
        server.stream_gap = gap
        spans: dict[str, list[float]] = {"bare": [], "crewline": []}
        exact = True
        for r in range(4):  # the order alternates, as for the time to first token
            for side in ("bare", "crewline") if r % 2 else ("crewline", "bare"):
                server.reset()
                server.add_rule(None, WORDS)
                t0 = time.perf_counter()
                if side == "bare":
                    await asyncio.gather(*(_bare_one(server.base_url, i) for i in range(n)))
                else:
                    _TOKENS.clear()
                    await asyncio.gather(*(_crew_one(crew, i) for i in range(n)))
                spans[side].append(time.perf_counter() - t0)
                assert server.wait_idle()
                served = server.totals()
                assert served.requests == n
                if side == "crewline":
                    exact = exact and sum(_TOKENS) == served.total_tokens
    return {"ttft_bare_ms": statistics.median(bare) * 1000,
            "ttft_crewline_ms": statistics.median(mine) * 1000,
            "ttft_extra_ms_median_of_pairs": statistics.median(
                m - b for m, b in zip(mine, bare, strict=True)) * 1000,
            "makespan_bare_s": min(spans["bare"]), "makespan_crewline_s": min(spans["crewline"]),
            "makespan_ratio_median_of_rounds": statistics.median(
                c / b for c, b in zip(spans["crewline"], spans["bare"], strict=True)),
            "usage_exact": exact}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.005)
    parser.add_argument("--transport", choices=("litellm", "auto", "openai"), default="litellm")
    args = parser.parse_args()
    TRANSPORT = args.transport
    result = asyncio.run(main(args.rounds, args.n, args.gap))
    print(json.dumps(result))
    mine, bare = result["ttft_crewline_ms"], result["ttft_bare_ms"]
    pairs = result["ttft_extra_ms_median_of_pairs"]
    print(f"TTFT: crewline {mine:.2f} ms vs bare {bare:.2f} ms (+{mine - bare:.2f} ms; "
          f"median of the pairs' differences +{pairs:.2f} ms; target <= 1 ms)")
    span, base = result["makespan_crewline_s"], result["makespan_bare_s"]
    print(f"{args.n} streams: crewline {span:.2f} s vs bare {base:.2f} s "
          f"({span / base:.3f}x best of 4 each; median of the 4 rounds' ratios "
          f"{result['makespan_ratio_median_of_rounds']:.3f}x; target <= 1.05x)")
