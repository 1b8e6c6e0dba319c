"""``crewline``: run a crew file, or the offline demo.

Exit codes: 0 the run succeeded; 1 the run failed (a provider error, a budget, exhausted
guardrails...) and what it spent is still reported; 2 a mistake the user can fix (the
arguments, the crew file, a missing input), reported as one ``crewline: error:`` line,
never with a traceback; 130 interrupted (Ctrl-C), with one line saying what was spent.
With ``--json`` stdout holds exactly one JSON object; progress and logs always go to stderr.

A failure is said once: the command prints its own ``error:`` line, so the progress listener
does not also print the failed task's line and the run's ``kickoff failed`` log record is
not rendered.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from crewline import Usage, UsageRecord, __version__
from crewline._surface.report import agent_rows, dollars, outside_tasks_rows, usage_table

__all__ = ["main"]

if TYPE_CHECKING:
    from crewline._surface.live import LiveTally

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UsageError(Exception):
    """A mistake on the command line or in its files: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crewline", description=(
        "Run crews of LLM agents with exact usage and cost accounting."))
    parser.add_argument("--version", action="version", version=f"crewline {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a crew file and print its output and usage",
        description="Run the crew in a YAML crew file, then print its final output and a "
                    "usage table (or one JSON object with --json). Tools are imported from "
                    "the current directory too.")
    run.add_argument("crew", metavar="CREW.yaml", help="the crew file")
    run.add_argument("--input", "-i", action="append", default=[], metavar="KEY=VALUE",
                     help="a value for a {placeholder} (repeatable)")
    run.add_argument("--inputs-json", metavar="FILE",
                     help="a JSON object of inputs ('-' reads stdin); --input wins")
    run.add_argument("--model", metavar="MODEL",
                     help="use this model for every agent (e.g. openai/gpt-4o-mini)")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object (output and usage) on stdout")
    run.add_argument("--budget-usd", metavar="USD",
                     help="refuse any request that could take the run past this many dollars")
    run.add_argument("--base-url", metavar="URL",
                     help="the API base URL for every LLM of the crew file that sets no "
                          "base_url (e.g. http://127.0.0.1:8000/v1)")
    run.add_argument("--api-key-env", metavar="NAME",
                     help="read the API key from environment variable NAME, for every LLM "
                          "of the crew file that sets no api_key / api_key_env")
    run.add_argument("--stream", action="store_true",
                     help="print each agent's text as it is written, labelled by task and "
                          "agent")

    demo = commands.add_parser(
        "demo", help="run the example crew offline, many at once, against a fake server",
        description="Start a fake OpenAI-compatible server in this process, run the example "
                    "research crew on many topics concurrently, and check that the usage "
                    "crewline reports equals what the server served.")
    demo.add_argument("--crews", type=_positive_int, default=20, metavar="N",
                      help="how many crews to run concurrently (default: 20)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """The ``crewline`` command; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        return _user_error(str(exc))
    try:
        _configure_logging()
        if args.command == "run":
            return _run(args)
        if args.command == "demo":
            return _demo(args)
        raise UsageError("name a command: 'crewline run CREW.yaml' or 'crewline demo' "
                         "(see 'crewline --help')")
    except UsageError as exc:
        return _user_error(str(exc))
    except KeyboardInterrupt as exc:
        usage = getattr(exc, "usage", None)  # a run's interruption carries what it spent
        spent = (f"spent so far: {_spent(usage)}" if isinstance(usage, Usage)
                 else "no run had started, nothing was spent")
        print(f"crewline: interrupted; {spent}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _spent(usage: Usage) -> str:
    """``3 requests, 1 failed or cut off, 412 tokens, $0.0000129``.

    A request in flight when Ctrl-C arrived is recorded as not ok, and may still be billed:
    it is counted, never dropped.
    """
    failed = (f", {usage.failed_requests} failed or cut off" if usage.failed_requests
              else "")
    return (f"{usage.requests} request{'s' if usage.requests != 1 else ''}{failed}, "
            f"{usage.total_tokens} tokens, {dollars(usage.cost)}")


def _user_error(message: str) -> int:
    print(f"crewline: error: {_one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _configure_logging() -> None:
    from crewline import log

    try:
        log.configure(level=os.environ.get("CREWLINE_LOG_LEVEL") or "WARNING")
    except ValueError as exc:
        raise UsageError(f"logging: {exc}") from None
    for handler in logging.getLogger("crewline").handlers:
        handler.addFilter(_without_kickoff_failed)


def _without_kickoff_failed(record: logging.LogRecord) -> bool:
    """Drop the run's ``kickoff failed`` record: the command reports the failure itself."""
    event = record.msg
    return not (isinstance(event, dict) and event.get("event") == "kickoff failed")


# -- crewline run ------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from crewline import Crew, CrewlineError, DefinitionError, InputError

    inputs = _inputs(args.input, args.inputs_json)
    budget = _budget(args.budget_usd)
    if args.model is not None and not args.model.strip():
        raise UsageError("--model needs a model name")
    base_url = _base_url(args.base_url)
    api_key = _api_key(args.api_key_env)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # tools in the current directory, as python -m
    try:
        crew = Crew.from_yaml(args.crew, model=args.model, default_base_url=base_url,
                              default_api_key=api_key)
    except DefinitionError as exc:
        raise UsageError(str(exc)) from None
    progress = Progress(sys.stderr, live=_is_terminal(sys.stderr) and not args.stream)
    try:
        if args.stream and not args.json:
            output = _streamed(crew, inputs, budget, progress)
        else:
            output = crew.kickoff(inputs=inputs, budget=budget, listeners=[progress])
    except InputError as exc:
        hint = f"; pass --input {exc.placeholder}=..." if exc.placeholder else ""
        raise UsageError(f"{exc}{hint}") from None
    except CrewlineError as exc:
        progress.finish()
        return _report_failure(exc, progress, as_json=args.json)
    except BaseException:
        progress.finish()  # an interrupt: give the terminal back before saying so
        raise
    progress.finish()
    if args.json:
        _print_json(_success_json(output))
    else:
        if not args.stream:
            print(output.raw)
        print()
        print(usage_table(
            [("task", [(t.name, t.usage) for t in output.tasks_output]
              + outside_tasks_rows(output.usage_records)),
             ("agent", agent_rows(output.usage_records))],
            output.usage))
        _print_unpriced_note(output.usage_records)
    return EXIT_OK


def _streamed(crew: Any, inputs: dict[str, Any], budget: Any, progress: Progress) -> Any:
    """Kick off with ``crew.stream``: each reply's text to stdout as it arrives, under a
    ``[task · agent]`` label whenever the speaker (task, agent, attempt, purpose, retry)
    changes; a stream the provider broke off and crewline retried is labelled ``retry N``."""
    from crewline.events import TextDelta

    speaker: tuple[Any, ...] | None = None
    with crew.stream(inputs=inputs, budget=budget, listeners=[progress]) as stream:
        for event in stream:
            if not isinstance(event, TextDelta):
                continue
            current = (event.task, event.agent, event.attempt, event.purpose, event.retry)
            if current != speaker:
                label = f"{event.task} · {event.agent}"
                if event.attempt and event.attempt > 1:
                    label += f" · attempt {event.attempt}"
                if event.purpose != "agent":
                    label += f" · {event.purpose}"
                if event.retry:
                    label += f" · retry {event.retry}"
                print(("\n\n" if speaker is not None else "") + f"[{label}]", flush=True)
                speaker = current
            print(event.text, end="", flush=True)
    if speaker is not None:
        print()
    return stream.result


def _unpriced(records: Iterable[UsageRecord]) -> list[str]:
    return sorted({r.model for r in records if not r.priced and r.outcome == "ok"})


def _print_unpriced_note(records: Iterable[UsageRecord]) -> None:
    models = _unpriced(records)
    if models:
        print(f"note: no price is known for {', '.join(models)}; its requests count as $0 "
              "(set input_cost_per_token and output_cost_per_token in the crew file's llm)")


def _inputs(pairs: Sequence[str], json_file: str | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if json_file is not None:
        try:
            text = sys.stdin.read() if json_file == "-" else _read_text(json_file)
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--inputs-json {json_file}: invalid JSON at line {exc.lineno}, "
                             f"column {exc.colno}: {exc.msg}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--inputs-json {json_file}: expected a JSON object of inputs, "
                             f"got {type(loaded).__name__}")
        inputs.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            raise UsageError(f"--input {pair!r}: expected KEY=VALUE, where KEY is a "
                             "placeholder name such as topic")
        inputs[key] = value
    return inputs


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


def _budget(text: str | None) -> Any:
    if text is None:
        return None
    from crewline import Budget

    try:
        amount = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise UsageError(f"--budget-usd: expected a number of dollars, got {text!r}") from None
    if not amount.is_finite() or amount < 0:
        raise UsageError(f"--budget-usd: expected a finite amount >= 0, got {text!r}")
    return Budget(max_cost=amount, name="cli")


def _base_url(text: str | None) -> str | None:
    if text is None:
        return None
    url = text.strip()
    if not re.match(r"https?://[^/\s]+", url) or any(c.isspace() for c in url):
        raise UsageError(f"--base-url: expected an http:// or https:// URL, got {text!r}")
    return url


def _api_key(variable: str | None) -> str | None:
    """The key in environment variable ``variable``; never echoed in any message."""
    if variable is None:
        return None
    if not _NAME.fullmatch(variable):
        raise UsageError(f"--api-key-env: expected an environment variable name, got "
                         f"{variable!r}")
    key = os.environ.get(variable)
    if not key:
        raise UsageError(f"--api-key-env: environment variable {variable!r} is "
                         f"{'empty' if key == '' else 'not set'}")
    return key


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _report_failure(exc: Any, progress: Progress, *, as_json: bool) -> int:
    records: tuple[UsageRecord, ...] = exc.usage_records
    by_task = _group(records, "task")
    names = [state.name for state in progress.tasks()]
    names += [name for name in by_task if name not in names]
    if as_json:
        states = {state.name: state for state in progress.tasks()}
        tasks = []
        for name in names:
            state = states.get(name)
            tasks.append({
                "name": name, "raw": None,
                "agent": state.agent if state else _agent_of(records, name),
                "usage": by_task.get(name, Usage()).to_dict(),
                "attempts": state.attempts if state else _attempts_of(records, name),
                "ok": state.status == "done" if state else False,
            })
        _print_json({
            "ok": False,
            "run_id": progress.run_id or (records[0].run_id if records else None),
            "raw": None,
            "tasks": tasks,
            "usage": exc.usage.to_dict(),
            "usage_by_agent": {k: v.to_dict() for k, v in _group(records, "agent").items()},
            "unpriced_models": _unpriced(records),
            "error": _one_line(str(exc)),
        })
    else:
        print(usage_table(
            [("task", [(name, by_task.get(name, Usage())) for name in names if name]
              + outside_tasks_rows(records)),
             ("agent", agent_rows(records))],
            exc.usage, total_label="spent"))
        _print_unpriced_note(records)
    failed = [state.name for state in progress.tasks() if state.status == "failed"]
    where = f"task {failed[0]!r} failed: " if len(failed) == 1 else ""
    print(f"error: {where}{_one_line(str(exc))}", file=sys.stderr)
    return EXIT_FAILED


def _group(records: Iterable[UsageRecord], field: str) -> dict[str, Usage]:
    grouped: dict[str, list[UsageRecord]] = {}
    for record in records:
        grouped.setdefault(getattr(record, field) or "", []).append(record)
    return {key: Usage.from_records(items) for key, items in grouped.items()}


def _agent_of(records: Iterable[UsageRecord], task: str) -> str:
    return next((r.agent or "" for r in records if r.task == task), "")


def _attempts_of(records: Iterable[UsageRecord], task: str) -> int:
    return max((r.attempt or 0 for r in records if r.task == task), default=0)


def _success_json(output: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "run_id": output.run_id,
        "raw": output.raw,
        "tasks": [{"name": t.name, "raw": t.raw, "agent": t.agent,
                   "usage": t.usage.to_dict(), "attempts": len(t.attempts), "ok": True,
                   "json_dict": t.json_dict}
                  for t in output.tasks_output],
        "usage": output.usage.to_dict(),
        "usage_by_agent": {k: v.to_dict() for k, v in output.usage_by_agent.items()},
        "unpriced_models": _unpriced(output.usage_records),
        "error": None,
    }


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


# -- progress ----------------------------------------------------------------------------


@dataclass
class TaskState:
    name: str
    agent: str
    status: str = "started"
    attempts: int = 0
    note: str = ""


class Progress:
    """An event listener that shows each task's progress on ``stream``.

    On a terminal it draws live progress with ``rich`` (tasks done, requests, tokens and cost
    so far, and what each running task is doing); otherwise it writes one plain line per
    event. Events arrive from whichever thread runs the task, so every
    change and every write happens under one lock.
    """

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self._stream = stream
        self._live = live
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskState] = {}
        self.run_id: str | None = None
        self._tally: LiveTally | None = None
        if live:
            from crewline._surface.live import LiveTally

            self._tally = LiveTally(stream, title="crewline run")

    def __call__(self, event: object) -> None:
        from crewline.events import AttemptFailed, AttemptStarted, TaskFinished, TaskStarted

        if self._tally is not None:
            with self._lock:
                if not self._tally.drawing:
                    self._tally.__enter__()
            self._tally(event)
        with self._lock:
            self.run_id = self.run_id or getattr(event, "run_id", None)
            if isinstance(event, TaskStarted):
                state = self._tasks[event.task] = TaskState(event.task, event.agent)
                self._show(state, "started" if self._live else f"started ({event.agent})")
            elif isinstance(event, AttemptStarted) and event.task in self._tasks:
                state = self._tasks[event.task]
                state.status, state.attempts = "running", event.attempt
                if event.attempt > 1 or self._live:
                    self._show(state, f"attempt {event.attempt} running")
            elif isinstance(event, AttemptFailed) and event.task in self._tasks:
                state = self._tasks[event.task]
                state.note = f"attempt {event.attempt} rejected: {_short(event.reason)}"
                self._show(state, state.note)
            elif isinstance(event, TaskFinished) and event.task in self._tasks:
                state = self._tasks[event.task]
                # an attempt cut short by an error is not in event.attempts, but it started
                state.attempts = max(state.attempts, event.attempts)
                state.status = "done" if event.ok else "failed"
                if not event.ok and not self._live:
                    return  # the command's error line says it, once
                tries = f"{state.attempts} attempt{'s' if state.attempts != 1 else ''}"
                spent = (f"{event.usage.requests} request"
                         f"{'s' if event.usage.requests != 1 else ''}, "
                         f"{dollars(event.usage.cost)}")
                self._show(state, f"{state.status} after {tries} ({spent})")

    def _show(self, state: TaskState, message: str) -> None:
        state.note = message
        if self._live:
            return  # the live tally draws the terminal
        self._stream.write(f"[crewline] {state.name}: {message}\n")
        self._stream.flush()

    def tasks(self) -> list[TaskState]:
        with self._lock:
            return list(self._tasks.values())

    def finish(self) -> None:
        """Stop drawing; the tally's last line stays, and later output goes below it."""
        if self._tally is not None and self._tally.drawing:
            self._tally.__exit__(None, None, None)


def _short(text: str, limit: int = 100) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- crewline demo -------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    # The demo must work offline on a fresh machine: litellm would otherwise fetch its price
    # list when it is imported. This is the CLI's own process; the library never does this.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from crewline.examples.demo import run_demo

    return run_demo(crews=args.crews, out=sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
