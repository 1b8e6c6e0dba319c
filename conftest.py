"""Every code block in README.md and docs/*.md is a test, so the docs cannot drift.

Collected by sybil in the default ``pytest`` run (``testpaths`` lists the docs). The rules a
doc writer follows:

* A ```` ```python ```` block runs, top to bottom, in one namespace per document.
* What it prints is shown in an ```` ```output ```` block right after it, and checked
  exactly (``...`` stands for any text, as in doctest's ELLIPSIS: use it for run ids,
  timestamps and other values that change from run to run). A block that prints and shows
  no output fails, and so does an ```` ```output ```` block that follows no python block.
* A ```` ```yaml ```` block is a crew file: it must load (``Crew.from_yaml``'s checks), with
  a placeholder value for any ``api_key_env`` variable the environment lacks.
* Any other block (shell, text, a fragment of Python that cannot run alone) must be
  preceded by ``<!-- skip: next "why it does not run" -->``, so pytest lists it as skipped
  with that reason. A block that neither runs nor is skipped fails.
* README.md's example uses no ``base_url``, as a reader's would: for it, the test points
  litellm's own ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` at a fake server.
"""

from __future__ import annotations

import contextlib
import difflib
import doctest
import io
import logging
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from sybil import Document, Example, Region, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import SkipParser
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported

_FENCED = RawFencedCodeBlockLexer(info_pattern=re.compile(r"(?P<language>[^\n]*)$\n",
                                                          re.MULTILINE))
_CHECKER = doctest.OutputChecker()


class _Block:
    """One fenced block: its language, its text, and where it starts."""

    def __init__(self, region: Region) -> None:
        self.region = region
        self.language = str(region.lexemes["language"]).strip()
        self.source = region.lexemes["source"]


def _blocks(document: Document) -> list[_Block]:
    return sorted((_Block(r) for r in _FENCED(document)), key=lambda b: b.region.start)


def _line(document: Document, offset: int) -> int:
    return document.text.count("\n", 0, offset) + 1


class _PythonAndOutput:
    """Runs each python block and checks what it printed against the output block after it."""

    def __call__(self, document: Document) -> Iterable[Region]:
        blocks = _blocks(document)
        for i, block in enumerate(blocks):
            if block.language == "python":
                following = blocks[i + 1] if i + 1 < len(blocks) else None
                expected = following.source if following and following.language == "output" \
                    else None
                region = block.region
                yield Region(region.start, region.end, (block.source, expected), self.run)
            elif block.language == "output" and (i == 0 or blocks[i - 1].language != "python"):
                region = block.region
                yield Region(region.start, region.end, None, self.orphan)

    @staticmethod
    def run(example: Example) -> str | None:
        source, expected = example.parsed
        code = compile(pad(source, example.line + source.line_offset), example.path, "exec",
                       dont_inherit=True)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(code, example.namespace)
        example.namespace.pop("__builtins__", None)
        got = printed.getvalue()
        if expected is None:
            if got:
                return (f"this block prints, but no ```output block after it shows what:\n"
                        f"{got}")
            return None
        if _CHECKER.check_output(str(expected), got, doctest.ELLIPSIS):
            return None
        diff = difflib.unified_diff(str(expected).splitlines(), got.splitlines(),
                                    "shown in the docs", "printed", lineterm="")
        return "the output shown differs from what the block prints:\n" + "\n".join(diff)

    @staticmethod
    def orphan(example: Example) -> str:
        return "an ```output block must follow the ```python block whose output it shows"


class _CrewFiles:
    """Loads each yaml block as a crew file, so a documented crew file stays valid."""

    def __call__(self, document: Document) -> Iterable[Region]:
        for block in _blocks(document):
            if block.language == "yaml":
                region = block.region
                yield Region(region.start, region.end, str(block.source), self.load)

    @staticmethod
    def load(example: Example) -> None:
        from crewline import Crew
        from crewline._crew.crewfile import crew_from_mapping, parse_yaml

        source = f"{example.path}:{example.line}"
        data = parse_yaml(example.parsed, source=source)
        missing = {name: None for name in _key_variables(data) if name not in os.environ}
        try:
            os.environ.update({name: "sk-placeholder" for name in missing})
            crew_from_mapping(data, crew_type=Crew, source=source)
        finally:
            _restore_environ(missing)


def _key_variables(data: Any) -> Iterator[str]:
    """The ``api_key_env`` names anywhere in a parsed crew file."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "api_key_env" and isinstance(value, str):
                yield value
            else:
                yield from _key_variables(value)
    elif isinstance(data, list):
        for item in data:
            yield from _key_variables(item)


class _EveryOtherBlock:
    """Fails any other block that was not skipped with a reason: nothing goes unchecked."""

    def __call__(self, document: Document) -> Iterable[Region]:
        for block in _blocks(document):
            if block.language not in ("python", "output", "yaml"):
                region = block.region
                yield Region(region.start, region.end, block.language, self.unchecked)

    @staticmethod
    def unchecked(example: Example) -> str:
        kind = f"```{example.parsed}" if example.parsed else "a plain ``` block"
        return (f"{kind} neither runs nor is skipped: make it ```python, or put "
                f"<!-- skip: next \"why it cannot run\" --> before it")


@contextlib.contextmanager
def _crewline_logger_restored() -> Iterator[None]:
    logger = logging.getLogger("crewline")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def _setup(namespace: dict[str, Any]) -> None:
    stack = contextlib.ExitStack()
    stack.enter_context(_crewline_logger_restored())  # docs/events-and-logging.md configures it
    namespace["__name__"] = "__docs__"
    namespace["__docs_cleanup__"] = stack


def _setup_readme(namespace: dict[str, Any]) -> None:
    """The README's crew talks to "OpenAI": a fake one that calls the tool, as a model would."""
    from crewline.testing import FakeLLMServer, Reply, ToolCall

    _setup(namespace)
    stack: contextlib.ExitStack = namespace["__docs_cleanup__"]
    server = stack.enter_context(FakeLLMServer())
    server.add_rule("Collect three facts",
                    Reply(tool_calls=[ToolCall("lookup", {"topic": "octopuses"})]),
                    "- three hearts\n- blue blood\n- most neurons in the arms")
    server.add_rule("Write one paragraph", "An octopus has three hearts and blue blood.")
    saved = {name: os.environ.get(name) for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    stack.callback(_restore_environ, saved)
    os.environ["OPENAI_BASE_URL"] = server.base_url
    os.environ["OPENAI_API_KEY"] = "sk-fake"


def _restore_environ(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _teardown(namespace: dict[str, Any]) -> None:
    namespace.pop("__docs_cleanup__").close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[pytest.TestReport]:
    """Report a skipped block at its line in the doc, not where sybil raised the skip."""
    report: pytest.TestReport = yield
    example = getattr(item, "example", None)
    if report.skipped and isinstance(example, Example) and isinstance(report.longrepr, tuple):
        report.longrepr = (str(example.path), example.line, report.longrepr[2])
    return report


_PARSERS = [SkipParser(), _PythonAndOutput(), _CrewFiles(), _EveryOtherBlock()]

pytest_collect_file = (
    Sybil(parsers=_PARSERS, patterns=["docs/*.md"], setup=_setup, teardown=_teardown,
          name="docs")
    + Sybil(parsers=_PARSERS, filenames=["README.md"], setup=_setup_readme,
            teardown=_teardown, name="readme")
).pytest()
