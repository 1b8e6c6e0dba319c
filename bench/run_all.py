"""Run every benchmark, each in its own process, and compare the figures with the targets.

Targets are reported, not asserted: the exit status is 0 when targets are missed, and
non-zero only when a benchmark crashed or crewline's usage differed from the fake server's
own count (the usage-exactness check every benchmark makes).

    python bench/run_all.py                   # about 15 minutes on 2 cores
    python bench/run_all.py --out results.jsonl
    python bench/run_all.py --only fanout-200 --only overhead
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as common

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Target:
    label: str
    bench: str
    read: Callable[[dict[str, Any]], float]
    limit: float
    unit: str


def _fanout(result: dict[str, Any]) -> dict[str, Any]:
    only: dict[str, Any] = result["results"][0]
    return only


TARGETS = (
    Target("fan-out N=200, x bare litellm", "fanout-200",
           lambda r: _fanout(r)["ratio_to_bare"], 1.05, "x"),
    Target("fan-out N=1000, x bare litellm", "fanout-1000",
           lambda r: _fanout(r)["ratio_to_bare"], 1.05, "x"),
    Target("overhead per task vs bare litellm", "overhead",
           lambda r: r["extra_ms_per_task"], 0.3, "ms"),
    Target("import crewline", "import_time", lambda r: r["import_crewline_s"], 0.15, "s"),
    Target("memory per crew definition", "memory",
           lambda r: r["definition_kb_per_crew"], 50.0, "KB"),
    Target("streaming: time to first token over bare litellm", "streaming",
           lambda r: r["ttft_extra_ms_median_of_pairs"], 1.0, "ms"),
    Target("streaming: 200 streams, x bare litellm", "streaming",
           lambda r: r["makespan_ratio_median_of_rounds"], 1.05, "x"),
    Target("direct transport fan-out N=200, x bare openai SDK", "direct",
           lambda r: r["fanout"]["direct_to_sdk"], 1.1, "x"),
    Target("first kickoff incl. imports, direct transport", "direct",
           lambda r: r["startup"]["first_kickoff_s"], 0.5, "s"),
)

BENCHMARKS: dict[str, list[str]] = {
    "fanout-10": ["fanout.py", "--n", "10"],
    "fanout-200": ["fanout.py", "--n", "200"],
    "fanout-1000": ["fanout.py", "--n", "1000", "--pairs", "3"],
    "overhead": ["overhead.py"],
    "import_time": ["import_time.py"],
    "memory": ["memory.py"],
    "streaming": ["streaming.py", "--rounds", "300", "--n", "200"],
    "direct": ["direct.py", "--n", "200", "--pairs", "3"],
}

QUICK: dict[str, list[str]] = {
    "fanout-10": ["--pairs", "1", "--rounds", "2"],
    "fanout-200": ["--pairs", "1", "--rounds", "1"],
    "fanout-1000": ["--pairs", "1"],
    "overhead": ["--reps", "7", "--profile-runs", "10"],
    "import_time": ["--reps", "3", "--first-reps", "1"],
    "memory": [],
    "streaming": ["--rounds", "100", "--n", "50", "--span-rounds", "6"],
    "direct": ["--pairs", "1", "--rounds", "1", "--repeat", "2"],
}


def _informational(results: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name in ("fanout-10", "fanout-200", "fanout-1000"):
        if name in results:
            r = _fanout(results[name])
            c, b, e = r["crewline"], r["bare"], r["engine_only"]
            rows.append((f"fan-out N={r['n']}",
                         f"{c['makespan_s']:.3f} s vs bare {b['makespan_s']:.3f} s "
                         f"({r['ratio_to_bare']:.3f}x; CPU/call {r['cpu_ratio_to_bare']:.3f}x); "
                         f"{c['ratio_to_ideal']:.2f}x ideal; in flight {c['peak_in_flight']}"
                         f"/{b['peak_in_flight']}; peak RSS {c['peak_rss_mb']:.0f}/"
                         f"{b['peak_rss_mb']:.0f} MB; engine alone "
                         f"{e['ratio_to_ideal']:.2f}x ideal"))
    if "overhead" in results:
        r = results["overhead"]
        rows.append(("per task", f"{r['extra_ms_per_task']:.3f} ms extra vs litellm "
                                 f"(CPU {r['extra_cpu_ms_per_task']:.3f}); engine alone "
                                 f"{r['engine_only_ms_per_task']:.3f} ms sync, "
                                 f"{r['engine_only_async_ms_per_task']:.3f} ms async"))
    if "import_time" in results:
        r = results["import_time"]
        rows.append(("first kickoff", f"{r['first_kickoff_s']:.2f} s incl. litellm import "
                                      f"(bare: {r['bare_first_call_with_import_s']:.2f} s); "
                                      f"litellm imported by import crewline: "
                                      f"{r['imports_litellm']}"))
    if "memory" in results:
        r = results["memory"]
        rows.append(("in-flight kickoffs", f"{r['inflight_mb_per_1000']:.1f} MB per 1,000 "
                                           f"(bare litellm {r['inflight_bare_mb_per_1000']:.1f}"
                                           f" MB; crewline's own "
                                           f"{r['inflight_crewline_own_kb_per_kickoff']:.1f} "
                                           "KB each)"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description="all crewline benchmarks, with targets")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS),
                        help="run only these (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions: a smoke run, not figures to quote")
    parser.add_argument("--out", type=Path, help="also write every JSON line to this file")
    args = parser.parse_args()
    common.setup_offline()

    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    crashed: list[str] = []
    for name, argv in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        extra = QUICK[name] if args.quick else []
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = common.run_child([str(BENCH / argv[0]), *argv[1:], *extra],
                                      timeout=900, summary=True)
        except Exception as exc:
            crashed.append(name)
            print(f"   CRASHED: {exc}", flush=True)
            continue
        result["name"] = name
        results[name] = result
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)

    if args.out:
        args.out.write_text("".join(json.dumps(r, sort_keys=True) + "\n"
                                    for r in results.values()))

    print("\n| target | measured | limit | status |\n|---|---|---|---|")
    for target in TARGETS:
        if target.bench not in results:
            status = "CRASHED" if target.bench in crashed else "not run"
            print(f"| {target.label} | - | <= {target.limit:g} {target.unit} | {status} |")
            continue
        value = target.read(results[target.bench])
        status = "met" if value <= target.limit else "MISSED"
        print(f"| {target.label} | {value:.3g} {target.unit} | <= {target.limit:g} "
              f"{target.unit} | {status} |")
    inexact = [name for name, r in results.items() if not r.get("usage_exact", False)]
    checked = ", ".join(f"{n}: {'exact' if n not in inexact else 'MISMATCH'}"
                        for n in results)
    print(f"| usage = server totals | {checked} | every run | "
          f"{'FAILED' if inexact else 'met'} |")
    print()
    for label, text in _informational(results):
        print(f"{label}: {text}")
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
    if inexact:
        for name in inexact:
            print(f"usage mismatch in {name}: {results[name].get('usage_mismatches')}",
                  file=sys.stderr)
    return 1 if crashed or inexact else 0


if __name__ == "__main__":
    sys.exit(main())
