"""Import time: ``import crewline`` in a fresh process, and the first kickoff.

``import crewline`` is timed as ``python -c "import crewline"`` minus ``python -c pass``
(medians of alternating runs), from a byte-compiled copy of the package in a temporary
directory: that is what an installed wheel gives. The same import from ``src/`` without
bytecode (how the nox sessions run, with PYTHONDONTWRITEBYTECODE=1) is reported beside it,
with ``-X importtime`` self time by top-level package, and a check that litellm is not
imported.

The first kickoff runs in a fresh process against the fake server in another one: it
includes litellm's import (crewline imports litellm at the first request). The first bare
``litellm.completion`` in a fresh process, import included, is the comparison.

    python bench/import_time.py
"""

from __future__ import annotations

import argparse
import compileall
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _common as common

_PROBE = """
import sys
before = set(sys.modules)
import crewline
third_party = sorted({name.split(".")[0] for name in set(sys.modules) - before
                      if "site-packages" in (getattr(sys.modules[name], "__file__", "") or "")})
print(crewline.__file__, "litellm" in sys.modules, *third_party)
"""

_FIRST_KICKOFF = """
import json, time
t0 = time.perf_counter()
import crewline
t1 = time.perf_counter()
llm = crewline.LLM(model={model!r}, base_url={url!r}, api_key={key!r})
agent = crewline.Agent(role="Worker", goal="answer", llm=llm)
crew = crewline.Crew(agents=[agent], tasks=[
    crewline.Task(description="[[{{m}}]] the first task", expected_output="a line")])
t2 = time.perf_counter()
out = crew.kickoff({{"m": {marker!r}}})
t3 = time.perf_counter()
out2 = crew.kickoff({{"m": {marker!r}}})
t4 = time.perf_counter()
usage = out.usage + out2.usage
print(json.dumps({{"import_s": t1 - t0, "define_s": t2 - t1, "first_s": t3 - t2,
                  "second_s": t4 - t3, "usage": {{k: getattr(usage, k) for k in {keys!r}}}}}))
"""

_FIRST_BARE = """
import json, time
t0 = time.perf_counter()
import litellm
t1 = time.perf_counter()
messages = [{{"role": "user", "content": "[[{marker}]] the first task"}}]
call = dict(model={model!r}, messages=messages, api_base={url!r}, api_key={key!r},
            max_retries=0)
litellm.completion(**call)
t2 = time.perf_counter()
litellm.completion(**call)
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "first_s": t2 - t1, "second_s": t3 - t2}}))
"""


def _run(code: str, env: dict[str, str]) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"python -c {code[:60]!r} failed:\n{done.stderr[-3000:]}")
    return elapsed, done.stdout, done.stderr


def _env(pythonpath: Path, *, bytecode: bool) -> dict[str, str]:
    env = common.offline_env()
    env["PYTHONPATH"] = str(pythonpath)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _importtime(stderr: str) -> dict[str, dict[str, float]]:
    """``-X importtime`` in ms: self time by top-level package, self time by crewline
    module, and the cumulative time of what crewline modules import directly."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((depth, name.strip(), int(self_us) / 1000, int(cumulative_us) / 1000))
    by_package: dict[str, float] = defaultdict(float)
    own: dict[str, float] = {}
    direct: dict[str, float] = defaultdict(float)
    stack: list[tuple[int, str]] = []
    for depth, name, self_ms, cumulative_ms in reversed(rows):  # parents print last
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        stack.append((depth, name))
        by_package[name.split(".")[0]] += self_ms
        if name.startswith("crewline"):
            own[name] = self_ms
        elif parent.startswith("crewline"):
            direct[name.split(".")[0]] += cumulative_ms

    def top(values: dict[str, float], count: int) -> dict[str, float]:
        ordered = sorted(values.items(), key=lambda kv: kv[1], reverse=True)[:count]
        return {k: round(v, 1) for k, v in ordered}

    return {"self_by_package": top(by_package, 12), "self_by_crewline_module": top(own, 6),
            "cumulative_of_crewline_imports": top(direct, 8)}


def main() -> None:
    parser = argparse.ArgumentParser(description="crewline import and first-kickoff time")
    parser.add_argument("--reps", type=int, default=9, help="runs of each import")
    parser.add_argument("--first-reps", type=int, default=3, help="fresh first kickoffs")
    args = parser.parse_args()
    common.setup_offline()

    with tempfile.TemporaryDirectory(prefix="crewline-bench-") as tmp:
        copy = Path(tmp)
        shutil.copytree(common.SRC / "crewline", copy / "crewline")
        if not compileall.compile_dir(copy, quiet=1):
            raise RuntimeError("byte-compiling a copy of crewline failed")
        cached, uncached = _env(copy, bytecode=True), _env(common.SRC, bytecode=False)
        where, imports_litellm, *deps = _run(_PROBE, cached)[1].split()
        if not where.startswith(tmp):
            raise RuntimeError(f"crewline was imported from {where}, not the copy")
        deps_import = f"import {', '.join(deps)}" if deps else "pass"
        if "pydantic" in deps:  # pydantic imports lazily; a model needs these
            deps_import += "; from pydantic import BaseModel, ConfigDict, Field"
        times: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.reps):
            times["pass"].append(_run("pass", cached)[0])
            times["crewline"].append(_run("import crewline", cached)[0])
            times["crewline_src"].append(_run("import crewline", uncached)[0])
            times["deps"].append(_run(deps_import, cached)[0])
        profile = _importtime(_run("import crewline", {
            **cached, "PYTHONPROFILEIMPORTTIME": "1"})[2])

    med = {k: common.median(v) for k, v in times.items()}
    import_s = med["crewline"] - med["pass"]

    firsts: list[dict[str, Any]] = []
    bares: list[dict[str, Any]] = []
    mismatches: list[str] = []
    with common.ServerProcess(0.0) as server:
        for rep in range(args.first_reps):
            marker = f"first-{rep}"
            fill = {"model": common.MODEL, "url": server.base_url, "key": common.API_KEY,
                    "marker": marker, "keys": common.USAGE_KEYS}
            kickoff = json.loads(_run(_FIRST_KICKOFF.format(**fill), uncached)[1])
            firsts.append(kickoff)
            mismatches += common.usage_mismatches(kickoff["usage"], server.totals(marker))
            bares.append(json.loads(_run(_FIRST_BARE.format(**fill), uncached)[1]))

    def middle(key: str, runs: list[dict[str, Any]]) -> float:
        return round(common.median([r[key] for r in runs]), 3)

    result = {
        "bench": "import_time", "reps": args.reps,
        "import_crewline_s": round(import_s, 4),
        "import_crewline_no_bytecode_s": round(med["crewline_src"] - med["pass"], 4),
        "third_party_imported": deps,
        "import_third_party_alone_s": round(med["deps"] - med["pass"], 4),
        "python_startup_s": round(med["pass"], 4),
        "imports_litellm": imports_litellm == "True",
        "importtime_ms": profile,
        "first_kickoff_s": middle("first_s", firsts),
        "first_kickoff_with_import_s": round(common.median(
            [r["import_s"] + r["define_s"] + r["first_s"] for r in firsts]), 3),
        "second_kickoff_s": middle("second_s", firsts),
        "bare_import_litellm_s": middle("import_s", bares),
        "bare_first_completion_s": middle("first_s", bares),
        "bare_first_call_with_import_s": round(common.median(
            [r["import_s"] + r["first_s"] for r in bares]), 3),
        "usage_exact": not mismatches, "usage_mismatches": mismatches[:10],
    }
    common.emit(result, [
        f"import crewline: {import_s * 1000:.0f} ms (bytecode cached; "
        f"{result['import_crewline_no_bytecode_s'] * 1000:.0f} ms from src without bytecode; "
        f"its third-party imports alone ({', '.join(deps)}) "
        f"{result['import_third_party_alone_s'] * 1000:.0f} ms); "
        f"imports litellm: {result['imports_litellm']}",
        "  -X importtime, what crewline imports (cumulative ms): " + ", ".join(
            f"{k} {v}" for k, v in profile["cumulative_of_crewline_imports"].items()),
        "  self ms by package: " + ", ".join(
            f"{k} {v}" for k, v in profile["self_by_package"].items()),
        "  crewline modules (self ms): " + ", ".join(
            f"{k} {v}" for k, v in profile["self_by_crewline_module"].items()),
        f"first kickoff: {result['first_kickoff_s']:.2f} s (litellm import included; "
        f"{result['first_kickoff_with_import_s']:.2f} s with import crewline), second "
        f"{result['second_kickoff_s'] * 1000:.0f} ms; bare: import litellm "
        f"{result['bare_import_litellm_s']:.2f} s + first completion "
        f"{result['bare_first_completion_s'] * 1000:.0f} ms; usage exact: "
        f"{result['usage_exact']}",
    ])


if __name__ == "__main__":
    main()
