"""Delegation from a crew file and in the CLI's usage table, against the server's counts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewline import Crew, DefinitionError, Process
from crewline._surface.cli import main
from crewline.testing import FakeLLMServer, Reply, agent_turn, delegate

CREW = """\
name: bees
process: hierarchical
planning: true
max_delegation_depth: 1
llm:
  model: openai/gpt-4o-mini
  base_url: {base_url}
  api_key: sk-test
  num_retries: 0
  input_cost_per_token: 0.000001
  output_cost_per_token: 0.000002
manager_llm:
  temperature: 0
agents:
  researcher:
    role: Researcher
    allow_delegation: true
  writer:
    role: Writer
tasks:
  report:
    description: "[[report]] Write a report on {{topic}}."
"""


@pytest.fixture(autouse=True)
def restore_crewline_logger() -> Iterator[None]:
    logger = logging.getLogger("crewline")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def _file(tmp_path: Path, server: FakeLLMServer, text: str = CREW) -> Path:
    path = tmp_path / "bees.yaml"
    path.write_text(text.format(base_url=server.base_url))
    return path


def test_crew_file_keys_for_delegation(tmp_path: Path, server: FakeLLMServer) -> None:
    crew = Crew.from_yaml(_file(tmp_path, server))
    assert crew.process == Process.hierarchical and crew.planning
    assert crew.max_delegation_depth == 1
    assert crew.manager_llm is not None and crew.manager_llm.temperature == 0
    assert crew.manager_llm.base_url == server.base_url  # inherited from the top-level llm
    assert [a.allow_delegation for a in crew.agents] == [True, False]
    assert crew.tasks[0].agent is None


def test_crew_file_hierarchical_without_manager_names_the_key(tmp_path: Path,
                                                              server: FakeLLMServer) -> None:
    text = CREW.replace("manager_llm:\n  temperature: 0\n", "")
    with pytest.raises(DefinitionError, match=r"bees.yaml: manager_llm: missing"):
        Crew.from_yaml(_file(tmp_path, server, text))


def test_cli_table_shows_manager_planning_and_delegated_work(
        tmp_path: Path, server: FakeLLMServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.add_rule(agent_turn("Crew Manager", 1), Reply(tool_calls=[
        delegate("Researcher", "[[r]] Find facts"), delegate("Writer", "[[w]] Draft")]))
    server.add_rule(agent_turn("Crew Manager", 2), "The report.")
    code = main(["run", str(_file(tmp_path, server)), "--input", "topic=bees"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {line.strip().split("  ")[0]: line.split() for line in out.splitlines()}
    planner = [s for s in server.served if "Task Execution Planner" in str(s.messages)]
    by_marker = {m: [s for s in server.served if s.marker == m and s not in planner]
                 for m in ("report", "r", "w")}

    def check(label: str, served: list) -> None:  # type: ignore[type-arg]
        cells = rows[label][-4:]  # requests, prompt, completion, cost
        assert cells[:3] == [str(len(served)), str(sum(s.prompt_tokens for s in served)),
                             str(sum(s.completion_tokens for s in served))], label

    check("Crew Manager (manager)", by_marker["report"])
    check("Researcher (delegated by Crew Manager)", by_marker["r"])
    check("Writer (delegated by Crew Manager)", by_marker["w"])
    check("Task Execution Planner (planning)", planner)
    check("(no task: planning)", planner)
    check("report", by_marker["report"] + by_marker["r"] + by_marker["w"])
    check("total", server.served)
