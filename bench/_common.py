"""What the benchmarks share: the server process, memory readings, prompts, JSON output.

Importing this module never imports crewline or litellm, so a bare-litellm child process
measures litellm alone and an import-time child measures an untouched interpreter.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SRC = REPO / "src"

MODEL = "openai/gpt-4o-mini"
API_KEY = "sk-bench"
USAGE_KEYS = ("requests", "failed_requests", "prompt_tokens", "completion_tokens",
              "total_tokens")

ROLE, GOAL, BACKSTORY = "Worker", "finish the step well", "You work carefully."
EXPECTED = "A short paragraph."


def offline_env() -> dict[str, str]:
    """The environment of every benchmark process: local price map, no proxy, src first."""
    env = dict(os.environ)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(SRC) not in paths:
        paths.insert(0, str(SRC))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def setup_offline() -> None:
    """Apply ``offline_env`` to this process (call before importing crewline or litellm)."""
    os.environ.update({k: v for k, v in offline_env().items()
                       if k in ("LITELLM_LOCAL_MODEL_COST_MAP", "NO_PROXY", "no_proxy")})
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url: str, *, post: bool = False, timeout: float = 30.0) -> Any:
    request = urllib.request.Request(url, data=b"" if post else None,
                                     method="POST" if post else "GET")
    with _opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


class ServerClient:
    """Reads the fake server's own counts: totals per marker, peak requests in flight."""

    def __init__(self, base_url: str, control_url: str) -> None:
        self.base_url = base_url
        self.control_url = control_url

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def totals(self, marker: str | None = None) -> dict[str, int]:
        query = f"?marker={marker}" if marker else ""
        totals: dict[str, int] = http_json(f"{self.root}/_crewline/totals{query}")
        return totals

    def peak_in_flight(self) -> int:
        return int(http_json(f"{self.control_url}/peak")["peak_in_flight"])

    def reset(self) -> None:
        http_json(f"{self.control_url}/reset", post=True)

    def set_stream_gap(self, seconds: float) -> None:
        http_json(f"{self.control_url}/stream_gap?seconds={seconds}", post=True)

    def args(self) -> list[str]:
        """Command-line arguments that let a child process attach to this server."""
        return ["--server", self.base_url, "--control", self.control_url]


class ServerProcess(ServerClient):
    """``bench/_server.py`` in a process of its own, for the duration of a ``with`` block."""

    def __init__(self, latency: float, reply: str | None = None) -> None:
        super().__init__("", "")
        self.latency = latency
        self.reply = reply
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> ServerProcess:
        process = subprocess.Popen(
            [sys.executable, str(BENCH / "_server.py"), "--latency", str(self.latency),
             *(("--reply", self.reply) if self.reply is not None else ())],
            stdout=subprocess.PIPE, text=True, env=offline_env())
        self._process = process
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if len(line) != 3 or line[0] != "BENCH_SERVER":
            process.kill()
            raise RuntimeError(f"bench server did not start (said {line!r})")
        self.base_url, self.control_url = line[1], line[2]
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# -- memory ----------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size now, in MB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def max_rss_mb() -> float:
    """Peak RSS of this process over its life (``resource.getrusage``; KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS mark (``VmHWM``) at the current RSS, where allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """``VmHWM``: peak RSS since the last ``reset_peak_rss()``, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return max_rss_mb()


# -- prompts ---------------------------------------------------------------------------

def messages_like_crewline(role: str, goal: str, backstory: str, description: str,
                           expected_output: str, context: str) -> list[dict[str, Any]]:
    """The two messages crewline sends for a task (``crewline._core.turns.first_messages``).

    Rebuilt here so the bare-litellm side sends the same bytes without importing crewline.
    """
    system = f"You are {role}. {backstory}\nYour personal goal is: {goal}"
    user = (f"Current task: {description}\n\n"
            f"This is the expected criteria for your final answer: {expected_output}")
    if context:
        user += f"\n\nThis is the context you are working with:\n{context}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def usage_mismatches(engine: dict[str, Any], server: dict[str, Any]) -> list[str]:
    return [f"{k}: engine {engine.get(k)} != server {server.get(k)}"
            for k in USAGE_KEYS if engine.get(k) != server.get(k)]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# -- output ----------------------------------------------------------------------------

def emit(result: dict[str, Any], summary: Sequence[str]) -> None:
    """The benchmark's one JSON line, then a short human summary."""
    print(json.dumps(result, sort_keys=True), flush=True)
    for line in summary:
        print(line, flush=True)


def parse_result(stdout: str) -> dict[str, Any]:
    """The one JSON object line a benchmark printed."""
    found = [line for line in stdout.splitlines() if line.startswith("{")]
    if len(found) != 1:
        raise RuntimeError(f"expected one JSON line, found {len(found)}")
    result: dict[str, Any] = json.loads(found[0])
    return result


def run_child(args: Sequence[str], *, timeout: float, summary: bool = False,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python <args>`` with the benchmark environment; its JSON line as a dict.

    With ``summary``, the child's human summary (its other stdout lines) is printed.
    """
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env={**offline_env(), **(env or {})}, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = parse_result(done.stdout)
    if summary:
        for line in done.stdout.splitlines():
            if line and not line.startswith("{"):
                print(f"   {line}", flush=True)
    result.setdefault("wall_s", round(time.perf_counter() - started, 3))
    return result
