"""The ``crewline`` command: its output, its JSON, its exit codes, and the demo.

Every number the CLI reports is compared with the fake server's own count of what it
served. Most runs call ``main()`` in-process; a few run the real command in a subprocess,
where a traceback or a stray line on stdout would show.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import crewline
from crewline._accounting.usage import Usage, UsageRecord
from crewline._surface.cli import Progress, dollars, main
from crewline.events import (
    AttemptFailed,
    AttemptStarted,
    LLMCallFinished,
    TaskFinished,
    TaskStarted,
)
from crewline.testing.server import FakeLLMServer, Reply, ServedTotals, ToolCall

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

SRC = Path(__file__).resolve().parents[1] / "src"
PRICE_IN = Decimal("0.00000015")
PRICE_OUT = Decimal("0.0000006")

CREW = """\
name: owls
llm:
  model: openai/gpt-4o-mini
  base_url: {base_url}
  api_key: sk-test
  num_retries: 0
  input_cost_per_token: 0.00000015
  output_cost_per_token: "0.0000006"
agents:
  researcher:
    role: Researcher
    goal: Know {{topic}} well
    tools: [crewline.examples.tools:lookup]
  writer:
    role: Writer
tasks:
  research:
    description: LOOKUP-STEP Research {{topic}}.
    agent: researcher
  write:
    description: WRITE-STEP Write about {{topic}} in a {{tone}} tone.
    agent: writer
    context: [research]
"""


@pytest.fixture(autouse=True)
def restore_crewline_logger() -> Iterator[None]:
    """``main`` configures the ``crewline`` logger for its process; tests share one process."""
    logger = logging.getLogger("crewline")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as running:
        running.add_rule("LOOKUP-STEP", Reply(tool_calls=[ToolCall("lookup", {"topic": "owls"})]),
                         times=1)
        yield running


@pytest.fixture
def crew_file(tmp_path: Path, server: FakeLLMServer) -> Path:
    path = tmp_path / "owls.yaml"
    path.write_text(CREW.format(base_url=server.base_url))
    return path


def expected_cost(totals: ServedTotals) -> Decimal:
    return totals.prompt_tokens * PRICE_IN + totals.completion_tokens * PRICE_OUT


def assert_usage_is_served(usage: dict[str, object], totals: ServedTotals) -> None:
    assert usage["requests"] == totals.requests
    assert usage["failed_requests"] == totals.failed_requests
    assert usage["prompt_tokens"] == totals.prompt_tokens
    assert usage["completion_tokens"] == totals.completion_tokens
    assert usage["total_tokens"] == totals.total_tokens


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base["PYTHONPATH"] = str(SRC)
    return subprocess.run([sys.executable, "-m", "crewline", *args], capture_output=True,
                          text=True, timeout=timeout, env={**base, **(env or {})})


# -- successful runs -----------------------------------------------------------------------


def test_json_output_is_one_object_whose_usage_is_what_the_server_served(
        crew_file: Path, server: FakeLLMServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(crew_file), "--input", "topic=owls", "-i", "tone=dry", "--json"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)  # fails on anything but exactly one JSON document
    totals = server.totals()
    assert totals.requests == 3  # the research task called its tool, so it took two turns
    assert report["ok"] is True and report["error"] is None
    assert_usage_is_served(report["usage"], totals)
    assert Decimal(report["usage"]["cost"]) == expected_cost(totals)
    assert [t["name"] for t in report["tasks"]] == ["research", "write"]
    assert [t["agent"] for t in report["tasks"]] == ["Researcher", "Writer"]
    assert [t["attempts"] for t in report["tasks"]] == [1, 1]
    assert [t["usage"]["requests"] for t in report["tasks"]] == [2, 1]
    assert sum(t["usage"]["prompt_tokens"] for t in report["tasks"]) == totals.prompt_tokens
    assert report["raw"] == report["tasks"][-1]["raw"] == server.served[-1].content
    assert set(report["usage_by_agent"]) == {"Researcher", "Writer"}
    assert report["usage_by_agent"]["Researcher"]["requests"] == 2
    assert "dry tone" in server.served[-1].messages[1]["content"]
    assert "[crewline] research: started" in captured.err  # progress goes to stderr


def test_json_output_of_the_real_command(crew_file: Path, server: FakeLLMServer) -> None:
    done = cli("run", str(crew_file), "-i", "topic=owls", "-i", "tone=warm", "--json")

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    totals = server.totals()
    assert totals.requests == 3
    assert_usage_is_served(report["usage"], totals)
    assert Decimal(report["usage"]["cost"]) == expected_cost(totals)
    assert report["usage"]["cost"] == str(Decimal(report["usage"]["cost"]))


def test_human_output_shows_the_answer_and_a_usage_table(
        crew_file: Path, server: FakeLLMServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(crew_file), "-i", "topic=owls", "-i", "tone=dry"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    totals = server.totals()
    lines = captured.out.splitlines()
    assert lines[0] == server.served[-1].content
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    assert rows["total"] == [str(totals.requests), str(totals.prompt_tokens),
                             str(totals.completion_tokens), dollars(expected_cost(totals))]
    assert rows["research"][0] == "2" and rows["write"][0] == "1"
    assert rows["Researcher"][0] == "2" and rows["Writer"][0] == "1"
    assert "[crewline] write: done after 1 attempt" in captured.err


def test_model_override_and_inputs_json(crew_file: Path, server: FakeLLMServer, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"topic": "owls", "tone": "grim"}))

    code = main(["run", str(crew_file), "--inputs-json", str(inputs), "-i", "tone=sunny",
                 "--model", "openai/gpt-4.1-nano", "--json"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert {s.model for s in server.served} == {"gpt-4.1-nano"}
    assert "sunny tone" in server.served[-1].messages[1]["content"]
    report = json.loads(captured.out)
    assert_usage_is_served(report["usage"], server.totals())


# -- run failures: exit 1, usage still reported -------------------------------------------


def test_a_provider_failure_exits_1_with_the_usage_spent_in_json(
        crew_file: Path, server: FakeLLMServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.add_rule("WRITE-STEP", Reply(status=401, content="bad key"))

    code = main(["run", str(crew_file), "-i", "topic=owls", "-i", "tone=dry", "--json"])

    captured = capsys.readouterr()
    assert code == 1
    report = json.loads(captured.out)
    totals = server.totals()
    assert (totals.requests, totals.failed_requests) == (2, 1)
    assert report["ok"] is False
    assert "401" in report["error"]
    assert_usage_is_served(report["usage"], totals)
    assert Decimal(report["usage"]["cost"]) == expected_cost(totals) > 0
    by_task = {t["name"]: t for t in report["tasks"]}
    assert by_task["research"]["usage"]["requests"] == 2
    assert by_task["write"]["usage"]["failed_requests"] == 1
    assert by_task["write"]["ok"] is False
    assert captured.err.splitlines()[-1].startswith("error: ")
    assert "Traceback" not in captured.err


def test_a_provider_failure_in_human_mode_prints_what_was_spent(
        crew_file: Path, server: FakeLLMServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.reset()  # forget the fixture's tool-call rule: every request fails
    server.add_rule(None, Reply(status=401))

    code = main(["run", str(crew_file), "-i", "topic=owls", "-i", "tone=dry"])

    captured = capsys.readouterr()
    assert code == 1
    assert server.totals().failed_requests == 1
    spent = next(line for line in captured.out.splitlines() if line.startswith("spent"))
    assert spent.split() == ["spent", "0", "1", "0", "0", "$0"]
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "401" in errors[0]


def test_a_tiny_budget_exits_1_before_anything_is_sent(
        crew_file: Path, server: FakeLLMServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(crew_file), "-i", "topic=owls", "-i", "tone=dry",
                 "--budget-usd", "0.0000001", "--json"])

    captured = capsys.readouterr()
    assert code == 1
    assert server.totals().requests == 0
    report = json.loads(captured.out)
    assert report["ok"] is False
    assert report["error"].startswith("budget 'cli' exceeded")
    assert report["usage"]["requests"] == 0
    assert "error: task 'research' failed: budget 'cli' exceeded" in captured.err


def test_a_budget_refusal_is_said_once_on_stderr(
        crew_file: Path, server: FakeLLMServer) -> None:
    done = cli("run", str(crew_file), "-i", "topic=owls", "-i", "tone=dry",
               "--budget-usd", "0.0000001")

    assert done.returncode == 1
    assert server.totals().requests == 0
    # progress, then one line about the refusal: no "failed after" progress line, no
    # "kickoff failed" log record repeating it
    first, second = done.stderr.splitlines()
    assert first == "[crewline] research: started (Researcher)"
    assert re.fullmatch(r"error: task 'research' failed: budget 'cli' exceeded: reserving "
                        r"\$0\.\d+ with \$0\.0000001 left of \$0\.0000001", second)
    assert done.stdout.splitlines()[-1].split() == ["spent", "0", "0", "0", "$0"]


def test_ctrl_c_prints_what_was_spent_in_one_line_and_exits_130(
        crew_file: Path, server: FakeLLMServer) -> None:
    server.add_rule("WRITE-STEP", Reply(delay=30))
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [sys.executable, "-m", "crewline", "run", str(crew_file), "-i", "topic=owls",
         "-i", "tone=dry"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**base, "PYTHONPATH": str(SRC)})
    assert process.stderr is not None
    lines = []
    for line in process.stderr:  # the research task is done: the write request is in flight
        lines.append(line.rstrip("\n"))
        if line.startswith("[crewline] write: started"):
            break
    research = server.totals()  # the write request is held by the server, not yet served
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130
    lines += err.splitlines()
    assert research.requests == 2
    # the write request may be cut off in flight (recorded, not ok) or not yet sent
    cut_off = "(, 1 failed or cut off)?"
    assert re.fullmatch(
        rf"crewline: interrupted; spent so far: 2 requests{cut_off}, "
        rf"{research.total_tokens} tokens, {re.escape(dollars(expected_cost(research)))}",
        lines[-1])
    assert [line for line in lines if not line.startswith("[crewline] ")] == [lines[-1]]
    assert "write: failed" not in err and "error=" not in err
    assert out == ""


def test_interrupted_before_a_run_started_says_nothing_was_spent(
        monkeypatch: pytest.MonkeyPatch, crew_file: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("crewline._crew.crewfile.load_crew", interrupted)

    assert main(["run", str(crew_file)]) == 130
    assert capsys.readouterr().err == ("crewline: interrupted; no run had started, nothing "
                                       "was spent\n")


# -- --base-url and --api-key-env ------------------------------------------------------------

BARE_CREW = """\
llm:
  model: openai/gpt-4o-mini
  num_retries: 0
agents:
  writer:
    role: Writer
  local:
    role: Local
    llm:
      base_url: {own_url}
      api_key: sk-own
tasks:
  first:
    description: FIRST-STEP Write about {{topic}}.
    agent: writer
  second:
    description: SECOND-STEP Again.
    agent: local
"""


def test_base_url_and_api_key_env_reach_every_llm_without_its_own(
        tmp_path: Path, server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with FakeLLMServer() as own:
        path = tmp_path / "bare.yaml"
        path.write_text(BARE_CREW.format(own_url=own.base_url))
        monkeypatch.setenv("CLI_TEST_KEY", "sk-from-the-env")
        for variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
            monkeypatch.delenv(variable, raising=False)

        code = main(["run", str(path), "-i", "topic=owls", "--base-url", server.base_url,
                     "--api-key-env", "CLI_TEST_KEY", "--json"])

        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert server.totals().requests == 1 and own.totals().requests == 1
        assert "FIRST-STEP" in json.dumps(server.served[0].messages)
        assert "SECOND-STEP" in json.dumps(own.served[0].messages)
        # with no OPENAI_API_KEY, the first agent's request could only go out with the key
        # read from CLI_TEST_KEY (the key's value is checked in test_crewfile.py)
        assert "sk-from-the-env" not in captured.out + captured.err


@pytest.mark.parametrize("argv, expected", [
    (["--base-url", "127.0.0.1:8000"], "--base-url: expected an http:// or https:// URL, "
                                       "got '127.0.0.1:8000'"),
    (["--api-key-env", "CLI_TEST_UNSET"], "--api-key-env: environment variable "
                                          "'CLI_TEST_UNSET' is not set"),
    (["--api-key-env", "sk-123-secret"], "--api-key-env: expected an environment variable "
                                         "name"),
])
def test_bad_base_url_or_key_variable_is_a_user_error(
        argv: list[str], expected: str, crew_file: Path, server: FakeLLMServer,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CLI_TEST_UNSET", raising=False)

    code = main(["run", str(crew_file), "-i", "topic=owls", "-i", "tone=dry", *argv])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"crewline: error: {expected}")
    assert server.totals().requests == 0


# -- user errors: exit 2, one line, no traceback -----------------------------------------


@pytest.mark.parametrize("case", [
    "missing file", "bad yaml", "unknown agent", "bad input syntax", "missing input",
    "bad budget", "unknown option", "no command", "bad inputs json",
])
def test_user_errors_exit_2_with_one_line(case: str, crew_file: Path, server: FakeLLMServer,
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    good = ["run", str(crew_file), "-i", "topic=owls", "-i", "tone=dry"]
    argv, expected = {
        "missing file": (["run", str(tmp_path / "nope.yaml")], "nope.yaml: no such file"),
        "bad yaml": (["run", str(bad)], "bad.yaml: line 2, column 7: invalid YAML: mapping "
                                        "values are not allowed here"),
        "unknown agent": (["run", str(bad)],
                          "tasks.t.agent: unknown agent 'ghost' (agents: a)"),
        "bad input syntax": ([*good, "--input", "topic"], "--input 'topic': expected KEY=VALUE"),
        "missing input": (["run", str(crew_file), "-i", "topic=owls"],
                          "missing input 'tone'"),
        "bad budget": ([*good, "--budget-usd", "lots"], "--budget-usd: expected a number"),
        "unknown option": ([*good, "--colour"], "unrecognized arguments: --colour"),
        "no command": ([], "name a command"),
        "bad inputs json": ([*good, "--inputs-json", str(bad)], "invalid JSON"),
    }[case]
    if case in ("bad yaml", "bad inputs json"):
        bad.write_text("agents:\n  a: b: c\n")
    if case == "unknown agent":
        bad.write_text("llm: {model: m}\nagents: {a: {role: A}}\n"
                       "tasks: {t: {description: d, agent: ghost}}\n")

    code = main(argv)

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("crewline: error: ")
    assert expected in captured.err
    assert "Traceback" not in captured.err
    assert server.totals().requests == 0


def test_user_errors_of_the_real_command_have_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "crew.yaml"
    path.write_text("llm: {model: m}\nagents: {a: {role: A}}\ntasks: {t: {description: '{x}'}}\n")

    done = cli("run", str(path))

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == ("crewline: error: missing input 'x' for placeholder {x} in task 't' "
                           "description (inputs given: none); pass --input x=...\n")


# -- the rest of the command ---------------------------------------------------------------


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"crewline {crewline.__version__}\n"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "run" in out and "demo" in out


def _record(task: str, agent: str, prompt: int, completion: int, cost: str,
            outcome: str = "ok") -> UsageRecord:
    from datetime import UTC, datetime

    return UsageRecord(id=f"{task}-{prompt}", run_id="r", task=task, attempt=1, agent=agent,
                       purpose="agent", model="m", prompt_tokens=prompt,
                       completion_tokens=completion, cached_prompt_tokens=0,
                       reasoning_tokens=0, cost=Decimal(cost), priced=True, latency_s=0.1,
                       started_at=datetime.now(UTC), outcome=outcome)  # type: ignore[arg-type]


def test_live_progress_tallies_tasks_requests_tokens_and_cost() -> None:
    stream = io.StringIO()
    progress = Progress(stream, live=True)
    usage = Usage(requests=2, cost=Decimal("0.00012"))
    records = [_record("research", "Researcher", 10, 5, "0.00002"),
               _record("write", "Writer", 20, 7, "0.00003"),
               _record("write", "Writer", 0, 0, "0", outcome="error")]
    for event in [TaskStarted(run_id="r", task="research", agent="Researcher"),
                  AttemptStarted(run_id="r", task="research", attempt=1),
                  LLMCallFinished(run_id="r", record=records[0]),
                  TaskStarted(run_id="r", task="write", agent="Writer"),
                  AttemptStarted(run_id="r", task="write", attempt=1),
                  LLMCallFinished(run_id="r", record=records[2]),
                  AttemptFailed(run_id="r", task="write", attempt=1, reason="too\nlong"),
                  AttemptStarted(run_id="r", task="write", attempt=2),
                  LLMCallFinished(run_id="r", record=records[1]),
                  TaskFinished(run_id="r", task="research", agent="Researcher", ok=True,
                               attempts=1, usage=usage),
                  TaskFinished(run_id="r", task="write", agent="Writer", ok=True, attempts=2,
                               usage=usage)]:
        progress(event)
    progress.finish()
    progress.finish()  # idempotent: an interrupt and the normal path may both finish

    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())  # rich's cursor moves
    last = screen.rstrip("\n").splitlines()[-1]
    assert last == ("crewline run: tasks done 2/2 · requests 2 (1 failed) · tokens 42 · "
                    "cost $0.00005")
    assert [(t.name, t.status, t.attempts) for t in progress.tasks()] == [
        ("research", "done", 1), ("write", "done", 2)]


def test_dollars_are_exact() -> None:
    assert dollars(Decimal("0.0000001")) == "$0.0000001"
    assert dollars(Decimal("0.000012900")) == "$0.0000129"
    assert dollars(Decimal("1E+1")) == "$10"
    assert dollars(Decimal("0E-12")) == "$0"


def test_demo_runs_offline_and_its_usage_check_passes() -> None:
    # Without LITELLM_LOCAL_MODEL_COST_MAP: the demo must set it for its own process.
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    env["PYTHONPATH"] = str(SRC)
    done = subprocess.run([sys.executable, "-m", "crewline._surface.cli", "demo", "--crews", "3"],
                          capture_output=True, text=True, timeout=120, env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "cost map" not in done.stderr  # litellm did not try to fetch its price list
    check = done.stdout.splitlines()[-1]
    assert check.startswith("usage check: engine totals == server totals (12 requests, ")
    assert check.endswith(" OK")
    assert "tools called: lookup x3, word_count x3" in done.stdout
