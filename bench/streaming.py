"""Streaming: time to first token and 200 concurrent streams, against bare litellm.

TTFT: from the call to the first piece of text, ``crew.astream`` (a one-task crew, the
first ``TextDelta``) vs ``litellm.acompletion(..., stream=True)`` (the first content chunk),
same messages size, in pairs over ``--rounds`` whose order alternates (whichever side goes
second pays for the background work litellm leaves from the first one's request: a fixed
order biased the figure by more than a millisecond); reported as the median of the pairs'
differences and as the difference of the medians. Makespan: ``--n`` streams at
once (20 words, ``--gap`` seconds apart) under ``asyncio.gather``, each side consuming
every chunk, ``--span-rounds`` rounds in alternating order, reported as best of all per
side and as the median of the rounds' ratios (the machine's speed drifts between rounds:
the paired ratio is the steadier figure); crewline's usage is checked against the server's
count, per round.

The fake server runs in a process of its own (``bench/_server.py``), as for the fan-out
benchmarks: a provider never shares the client's interpreter. ``--in-process`` runs it on a
thread of this process instead, as this benchmark did until its sixth measurement; there its
work and its hand-offs of the GIL fall on both sides of the comparison.

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/streaming.py --rounds 300 --n 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import _common as common

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


async def _bare_one(base_url: str, i: int, marker: str = "bare") -> float:
    litellm = litellm_module()
    t0 = time.perf_counter()
    first = 0.0
    stream = await litellm.acompletion(
        model=MODEL, api_base=base_url, api_key="sk-bench", max_retries=0, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "You are Writer."},
                  {"role": "user", "content": f"Current task: [[{marker}]] Write {i}."}])
    async for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
    return first


_TOKENS: list[int] = []
"""Total tokens of each crewline kickoff, to check against the server's count."""


async def _crew_one(crew: Crew, i: int, marker: str = "crew") -> float:
    t0 = time.perf_counter()
    first = 0.0
    async with crew.astream(inputs={"m": marker, "i": i}) as stream:
        async for event in stream:
            if not first and isinstance(event, TextDelta):
                first = time.perf_counter() - t0
    _TOKENS.append(stream.result.usage.total_tokens)
    return first


class _Local:
    """The fake server on a thread of this process (``--in-process``), read like the
    server process is."""

    def __init__(self, server: FakeLLMServer) -> None:
        self.server, self.base_url = server, server.base_url

    def totals(self, marker: str) -> dict[str, int]:
        assert self.server.wait_idle()
        return asdict(self.server.totals(marker))

    def set_stream_gap(self, seconds: float) -> None:
        self.server.stream_gap = seconds


@contextlib.contextmanager
def _server(in_process: bool) -> Iterator[Any]:
    if in_process:
        with FakeLLMServer() as server:
            server.add_rule(None, WORDS)
            yield _Local(server)
    else:
        with common.ServerProcess(latency=0.0, reply=WORDS) as process:
            yield process


def _served(server: Any, marker: str, n: int) -> dict[str, int]:
    """The server's totals for ``marker`` once all ``n`` requests are on its record (a
    streamed answer is recorded as its last bytes go out, which the client may see first)."""
    deadline = time.monotonic() + 10
    while True:
        totals: dict[str, int] = server.totals(marker)
        if totals["requests"] >= n or time.monotonic() > deadline:
            return totals
        time.sleep(0.01)


async def main(rounds: int, n: int, gap: float, span_rounds: int = 10,
               in_process: bool = False) -> dict[str, Any]:
    litellm_module()
    with _server(in_process) as server:
        url = server.base_url
        crew = _crew(url)
        for i in range(3):  # warm both paths
            await _bare_one(url, i)
            await _crew_one(crew, i)
        bare, mine = [], []
        for i in range(rounds):
            if i % 2:
                bare.append(await _bare_one(url, i))
                mine.append(await _crew_one(crew, i))
            else:
                mine.append(await _crew_one(crew, i))
                bare.append(await _bare_one(url, i))
        server.set_stream_gap(gap)
        spans: dict[str, list[float]] = {"bare": [], "crewline": []}
        exact = True
        for r in range(span_rounds):  # the order alternates, as for the time to first token
            for side in ("bare", "crewline") if r % 2 else ("crewline", "bare"):
                marker = f"span{r}{side}"
                _TOKENS.clear()
                t0 = time.perf_counter()
                if side == "bare":
                    await asyncio.gather(*(_bare_one(url, i, marker) for i in range(n)))
                else:
                    await asyncio.gather(*(_crew_one(crew, i, marker) for i in range(n)))
                spans[side].append(time.perf_counter() - t0)
                served = _served(server, marker, n)
                assert served["requests"] == n, (marker, served)
                if side == "crewline":
                    exact = exact and sum(_TOKENS) == served["total_tokens"]
    return {"ttft_bare_ms": statistics.median(bare) * 1000,
            "ttft_crewline_ms": statistics.median(mine) * 1000,
            "ttft_extra_ms_median_of_pairs": statistics.median(
                m - b for m, b in zip(mine, bare, strict=True)) * 1000,
            "makespan_bare_s": min(spans["bare"]), "makespan_crewline_s": min(spans["crewline"]),
            "makespan_ratio_median_of_rounds": statistics.median(
                c / b for c, b in zip(spans["crewline"], spans["bare"], strict=True)),
            "makespan_round_ratios": [round(c / b, 3) for c, b in zip(
                spans["crewline"], spans["bare"], strict=True)],
            "makespan_rounds": span_rounds, "server_in_process": in_process,
            "usage_exact": exact}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.005)
    parser.add_argument("--span-rounds", type=int, default=20,
                        help="rounds of the makespan comparison (each runs both sides); one "
                             "round's ratio ranges 0.8-1.2 here for the same code")
    parser.add_argument("--in-process", action="store_true",
                        help="the fake server on a thread of this process")
    parser.add_argument("--transport", choices=("litellm", "auto", "openai"), default="litellm")
    args = parser.parse_args()
    TRANSPORT = args.transport
    result = asyncio.run(main(args.rounds, args.n, args.gap, args.span_rounds, args.in_process))
    print(json.dumps(result))
    mine, bare = result["ttft_crewline_ms"], result["ttft_bare_ms"]
    pairs = result["ttft_extra_ms_median_of_pairs"]
    print(f"TTFT: crewline {mine:.2f} ms vs bare {bare:.2f} ms (+{mine - bare:.2f} ms; "
          f"median of the pairs' differences +{pairs:.2f} ms; target <= 1 ms)")
    span, base = result["makespan_crewline_s"], result["makespan_bare_s"]
    print(f"{args.n} streams: crewline {span:.2f} s vs bare {base:.2f} s "
          f"({span / base:.3f}x best of {args.span_rounds} each; median of the "
          f"{args.span_rounds} rounds' ratios "
          f"{result['makespan_ratio_median_of_rounds']:.3f}x; target <= 1.05x)")
