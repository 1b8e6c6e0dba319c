"""Crew files load into the same definitions as Python, and every mistake names its key path."""

from __future__ import annotations

import os
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from crewline import Budget, Crew, DefinitionError, InputError, Process, Tool
from crewline.examples import RESEARCH_YAML
from crewline.examples.tools import at_most_80_words
from crewline.testing.server import FakeLLMServer

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

VALID = """\
name: newsroom
process: sequential
llm:
  model: openai/gpt-4o-mini
  base_url: http://127.0.0.1:9/v1
  api_key_env: CREWFILE_TEST_KEY
  temperature: 0.3
  max_tokens: 300
  input_cost_per_token: 0.00000015
  output_cost_per_token: "6e-7"
agents:
  researcher:
    role: Researcher of {topic}
    goal: Find facts about {topic}
    backstory: Careful.
    tools:
      - crewline.examples.tools:lookup
      - crewline.examples.tools:word_count
    max_iter: 4
  writer:
    role: Writer
    llm: openai/gpt-4o
  editor:
    role: Editor
    llm:
      temperature: 0.0
tasks:
  research:
    description: Research {topic}.
    expected_output: Three facts.
    agent: researcher
  background:
    description: Side notes on {topic}.
    agent: researcher
    async_execution: true
  write:
    description: Write about {topic}.
    agent: writer
    context: [research, background]
    guardrail: crewline.examples.tools:at_most_80_words
    guardrails:
      - "Note: the text must be polite."
    guardrail_max_retries: 1
  edit:
    description: Edit it.
    agent: editor
    output_pydantic: crewfile_test_models:Summary
budget:
  max_cost: 0.1
  max_requests: 40
  name: daily
  period: day
max_rpm: 600
"""


@pytest.fixture
def models_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "crewfile_test_models.py").write_text(
        "from pydantic import BaseModel\n\n\nclass Summary(BaseModel):\n    text: str\n"
        "\n\nNOT_A_MODEL = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def write(tmp_path: Path, text: str, name: str = "crew.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_valid_file_loads_into_the_python_definitions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_module: None) -> None:
    monkeypatch.setenv("CREWFILE_TEST_KEY", "sk-from-env")
    crew = Crew.from_yaml(write(tmp_path, VALID))

    assert crew.name == "newsroom"
    assert crew.process is Process.sequential
    assert crew.max_rpm == 600
    researcher, writer, editor = crew.agents
    assert [a.role for a in crew.agents] == ["Researcher of {topic}", "Writer", "Editor"]
    assert researcher.goal == "Find facts about {topic}"  # placeholders stay until kickoff
    assert researcher.max_iter == 4
    assert [t.name for t in researcher.tools] == ["lookup", "word_count"]
    assert all(isinstance(t, Tool) for t in researcher.tools)
    assert researcher.tools[1].fn("one two three") == 3

    # The top-level llm is the crew's default; prices are exact Decimals, not float sums.
    assert crew.llm is not None
    assert researcher.llm is None
    assert crew.llm.api_key is not None
    assert crew.llm.api_key.get_secret_value() == "sk-from-env"
    assert crew.llm.input_cost_per_token == Decimal("0.00000015")
    assert crew.llm.output_cost_per_token == Decimal("0.0000006")
    assert crew.llm.temperature == 0.3

    # A model string inherits the connection but not the other model's prices.
    assert writer.llm is not None
    assert writer.llm.model == "openai/gpt-4o"
    assert writer.llm.base_url == "http://127.0.0.1:9/v1"
    assert writer.llm.max_tokens == 300
    assert writer.llm.input_cost_per_token is None
    # A mapping without a model inherits everything it does not set, prices included.
    assert editor.llm is not None
    assert editor.llm.model == "openai/gpt-4o-mini"
    assert editor.llm.temperature == 0.0
    assert editor.llm.input_cost_per_token == Decimal("0.00000015")

    research, background, write_task, edit = crew.tasks
    assert [t.name for t in crew.tasks] == ["research", "background", "write", "edit"]
    assert research.agent is researcher and write_task.agent is writer
    assert research.expected_output == "Three facts."
    assert background.async_execution is True
    assert write_task.context == (research, background)
    assert write_task.guardrail is at_most_80_words
    assert write_task.guardrails == ("Note: the text must be polite.",)
    assert write_task.guardrail_max_retries == 1
    assert edit.context is None
    assert edit.output_pydantic is not None and edit.output_pydantic.__name__ == "Summary"

    assert isinstance(crew.budget, Budget)
    assert crew.budget.max_cost == Decimal("0.1")
    assert str(crew.budget.max_cost) == "0.1"
    assert crew.budget.max_requests == 40
    assert crew.budget.name == "daily" and crew.budget.period == "day"


def test_overrides_replace_every_model_and_the_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_module: None) -> None:
    monkeypatch.setenv("CREWFILE_TEST_KEY", "sk-from-env")
    cap = Budget(max_cost="0.01", name="override")
    crew = Crew.from_yaml(write(tmp_path, VALID), model="openai/gpt-4.1-nano", budget=cap)

    assert crew.budget is cap
    llms = [crew.llm, *(a.llm for a in crew.agents if a.llm is not None)]
    assert len(llms) == 3
    assert {llm.model for llm in llms if llm is not None} == {"openai/gpt-4.1-nano"}
    assert all(llm is not None and llm.base_url == "http://127.0.0.1:9/v1" for llm in llms)
    # the file's prices were for the replaced model
    assert all(llm is not None and llm.input_cost_per_token is None for llm in llms)


def test_the_example_crew_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-example")
    crew = Crew.from_yaml(RESEARCH_YAML)
    assert [t.name for t in crew.tasks] == ["research", "write"]
    assert [tool.name for a in crew.agents for tool in a.tools] == ["lookup", "word_count"]


def test_placeholders_are_filled_at_kickoff(tmp_path: Path) -> None:
    with FakeLLMServer() as server:
        path = write(tmp_path, f"""\
            llm:
              model: openai/gpt-4o-mini
              base_url: {server.base_url}
              api_key: sk-test
            agents:
              analyst:
                role: Analyst of {{field}}
                goal: Explain {{topic}}
            tasks:
              explain:
                description: Explain {{topic}} in one line.
            """)
        crew = Crew.from_yaml(path)
        with pytest.raises(InputError, match="topic"):
            crew.kickoff(inputs={"field": "zoology"})
        assert server.totals().requests == 0

        output = crew.kickoff(inputs={"topic": "octopus hearts", "field": "zoology"})

        served = server.served
    assert len(served) == 1
    system, user = (m["content"] for m in served[0].messages)
    assert "Analyst of zoology" in system and "Explain octopus hearts" in system
    assert "Explain octopus hearts in one line." in user
    assert "{topic}" not in system + user
    assert output.tasks_output[0].agent == "Analyst of zoology"
    assert output.usage.requests == 1


BASE = """\
llm:
  model: openai/gpt-4o-mini
agents:
  researcher:
    role: Researcher
    tools: [crewline.examples.tools:lookup]
  writer:
    role: Writer
tasks:
  research:
    description: Research {topic}.
    agent: researcher
  write:
    description: Write.
    agent: writer
"""


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


ERRORS = {
    "unknown agent": (
        edit(BASE, "agent: writer", "agent: writer2"),
        "tasks.write.agent: unknown agent 'writer2' (agents: researcher, writer)"),
    "misspelt context": (
        edit(BASE, "    agent: writer", "    agent: writer\n    context: [resaerch]"),
        "tasks.write.context[0]: no task named 'resaerch'"),
    "context naming a later task": (
        edit(BASE, "    agent: researcher", "    agent: researcher\n    context: [write]"),
        "tasks.research.context[0]: task 'write' comes after 'research'"),
    "tool attribute missing": (
        edit(BASE, "[crewline.examples.tools:lookup]",
             "[crewline.examples.tools:lookup, crewline.examples.tools:nope]"),
        "agents.researcher.tools[1]: cannot import 'crewline.examples.tools:nope' "
        "(module 'crewline.examples.tools' has no attribute 'nope')"),
    "tool module missing": (
        edit(BASE, "crewline.examples.tools:lookup", "crewline.no_such_module:lookup"),
        "agents.researcher.tools[0]: cannot import 'crewline.no_such_module:lookup' "
        "(No module named 'crewline.no_such_module')"),
    "tool not a function": (
        edit(BASE, "crewline.examples.tools:lookup", "crewline.examples.tools:FACTS"),
        "agents.researcher.tools[0]: 'crewline.examples.tools:FACTS' is a mapping"),
    "tool not an import path": (
        edit(BASE, "crewline.examples.tools:lookup", "lookup"),
        "agents.researcher.tools[0]: expected an import path 'package.module:name'"),
    "unknown top-level key": (
        BASE + "agnets: {}\n",
        "agnets: unknown key (did you mean 'agents'? allowed: name, process, llm, agents"),
    "unknown agent key": (
        edit(BASE, "    role: Writer", "    role: Writer\n    gaol: x"),
        "agents.writer.gaol: unknown key (did you mean 'goal'? allowed: role, goal"),
    "unknown task key": (
        edit(BASE, "    description: Write.", "    description: Write.\n    priority: x"),
        "tasks.write.priority: unknown key (allowed: description, expected_output, agent"),
    "not a boolean": (
        edit(BASE, "    description: Write.", "    description: Write.\n"
                                              "    async_execution: sometimes"),
        "tasks.write.async_execution: expected a boolean, got a string"),
    "not an integer": (
        edit(BASE, "    role: Writer", "    role: Writer\n    max_iter: many"),
        "agents.writer.max_iter: expected an integer, got a string"),
    "pydantic bound": (
        edit(BASE, "    role: Writer", "    role: Writer\n    max_iter: 0"),
        "agents.writer.max_iter: Input should be greater than 0"),
    "llm pydantic bound": (
        edit(BASE, "  model: openai/gpt-4o-mini", "  model: openai/gpt-4o-mini\n"
                                                  "  max_tokens: -5"),
        "llm.max_tokens: Input should be greater than 0"),
    "bad price": (
        edit(BASE, "  model: openai/gpt-4o-mini", "  model: openai/gpt-4o-mini\n"
                                                  "  input_cost_per_token: cheap"),
        "llm.input_cost_per_token: expected a number, got 'cheap'"),
    "unknown llm key": (
        edit(BASE, "  model: openai/gpt-4o-mini", "  model: openai/gpt-4o-mini\n  modle: x"),
        "llm.modle: unknown key (did you mean 'model'?"),
    "agent without a model": (
        edit(BASE, "llm:\n  model: openai/gpt-4o-mini\n", ""),
        "agents.researcher: no model: set llm.model at the top level"),
    "task without an agent": (
        edit(BASE, "    agent: writer\n", ""),
        "tasks.write.agent: missing: the crew has 2 agents (researcher, writer)"),
    "task without a description": (
        edit(BASE, "    description: Write.\n", ""),
        "tasks.write.description: missing"),
    "guardrail path that does not resolve": (
        edit(BASE, "    agent: writer", "    agent: writer\n"
                                        "    guardrail: crewline.examples.tools:chek"),
        "tasks.write.guardrail: cannot import 'crewline.examples.tools:chek'"),
    "guardrail written as a dotted path": (
        edit(BASE, "    agent: writer", "    agent: writer\n"
                                        "    guardrail: crewfile_checks.no_numbers"),
        "tasks.write.guardrail: 'crewfile_checks.no_numbers' looks like an import path but "
        "does not resolve (no module named 'crewfile_checks'); name a function as "
        "'module:function' (e.g. 'crewfile_checks:no_numbers')"),
    "dotted guardrail with a missing attribute": (
        edit(BASE, "    agent: writer", "    agent: writer\n"
                                        "    guardrail: crewline.examples.tools.chek"),
        "tasks.write.guardrail: 'crewline.examples.tools.chek' looks like an import path but "
        "does not resolve ('crewline.examples.tools' has no attribute 'chek'); name a "
        "function as 'module:function' (e.g. 'crewline.examples.tools:chek')"),
    "dotted guardrail in a list": (
        edit(BASE, "    agent: writer", "    agent: writer\n"
                                        "    guardrails: [Be polite., checks.polite]"),
        "tasks.write.guardrails[1]: 'checks.polite' looks like an import path"),
    "output model that is not a model": (
        edit(BASE, "    agent: writer", "    agent: writer\n"
                                        "    output_pydantic: crewline.examples.tools:lookup"),
        "tasks.write.output_pydantic: 'crewline.examples.tools:lookup' is not a pydantic "
        "model class"),
    "unknown process": (
        BASE + "process: parallel\n",
        "process: unknown process 'parallel' (allowed: sequential, hierarchical)"),
    "bad budget": (
        BASE + "budget:\n  max_cost: 1\n  period: week\n",
        "budget: period must be 'run' or 'day'"),
    "budget key": (
        BASE + "budget:\n  max_dollars: 1\n",
        "budget.max_dollars: unknown key"),
    "agents not a mapping": (
        "llm: {model: openai/gpt-4o-mini}\nagents: [researcher]\ntasks: {t: {description: d}}\n",
        "agents: expected a mapping, got a list"),
    "duplicate task": (
        BASE + "  write:\n    description: Again.\n",
        "line 16, column 3: invalid YAML: duplicate key 'write'"),
    "yaml syntax": (
        edit(BASE, "    role: Writer", "    role: Writer\n   goal: [unclosed"),
        "invalid YAML"),
    "empty file": ("", "the file is empty"),
    "no tasks": (BASE.split("tasks:")[0], "tasks: missing"),
}


@pytest.mark.parametrize("text, expected", list(ERRORS.values()), ids=list(ERRORS))
def test_mistakes_name_the_file_and_the_key_path(tmp_path: Path, text: str,
                                                 expected: str) -> None:
    path = write(tmp_path, text, name="research.yaml")
    with pytest.raises(DefinitionError) as caught:
        Crew.from_yaml(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_yaml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "agents:\n  a:\n    role: [x\n  b: 1\n")
    with pytest.raises(DefinitionError, match=r"crew\.yaml: line \d+, column \d+: invalid YAML"):
        Crew.from_yaml(path)


def test_a_missing_file_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"nothere\.yaml: no such file"):
        Crew.from_yaml(tmp_path / "nothere.yaml")


def test_an_unset_api_key_variable_is_reported(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREWFILE_UNSET_KEY", raising=False)
    path = write(tmp_path, edit(BASE, "  model: openai/gpt-4o-mini",
                                "  model: openai/gpt-4o-mini\n  api_key_env: CREWFILE_UNSET_KEY"))
    with pytest.raises(DefinitionError) as caught:
        Crew.from_yaml(path)
    assert str(caught.value) == (f"{path}: llm.api_key_env: environment variable "
                                 "'CREWFILE_UNSET_KEY' is not set")


def test_output_models_must_be_pydantic_classes(tmp_path: Path, models_module: None) -> None:
    path = write(tmp_path, edit(BASE, "    agent: writer",
                                "    agent: writer\n"
                                "    output_json: crewfile_test_models:NOT_A_MODEL"))
    with pytest.raises(DefinitionError, match=r"tasks\.write\.output_json: .* is not a pydantic"):
        Crew.from_yaml(path)


def test_a_dotted_guardrail_path_that_resolves_is_the_function(tmp_path: Path) -> None:
    path = write(tmp_path, edit(BASE, "    agent: writer", "    agent: writer\n"
                                "    guardrail: crewline.examples.tools.at_most_80_words\n"
                                "    guardrails: [Be polite., Cite e.g. two sources]"))
    crew = Crew.from_yaml(path)

    write_task = crew.tasks[1]
    assert write_task.guardrail is at_most_80_words
    assert write_task.guardrails == ("Be polite.", "Cite e.g. two sources")  # sentences stay


def test_a_dotted_guardrail_whose_module_fails_to_import_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "crewfile_broken_checks.py").write_text("import crewfile_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, edit(BASE, "    agent: writer", "    agent: writer\n"
                                "    guardrail: crewfile_broken_checks.polite"))
    with pytest.raises(DefinitionError) as caught:
        Crew.from_yaml(path)
    assert "tasks.write.guardrail: 'crewfile_broken_checks.polite' looks like an import path " \
           "but importing 'crewfile_broken_checks' failed (No module named " \
           "'crewfile_no_such_dependency')" in str(caught.value)


def test_default_base_url_and_key_go_to_every_llm_without_its_own(tmp_path: Path) -> None:
    path = write(tmp_path, edit(BASE, "    role: Writer", "    role: Writer\n"
                                "    llm:\n      base_url: http://own:1/v1\n"
                                "      api_key: sk-own"))
    crew = Crew.from_yaml(path, default_base_url="http://127.0.0.1:9/v1",
                     default_api_key="sk-default")

    shared, own = crew.llm, crew.agents[1].llm  # the researcher uses the crew's llm
    assert shared is not None and own is not None
    assert shared.base_url == "http://127.0.0.1:9/v1"
    assert shared.api_key is not None and shared.api_key.get_secret_value() == "sk-default"
    assert own.base_url == "http://own:1/v1"
    assert own.api_key is not None and own.api_key.get_secret_value() == "sk-own"


def test_an_llm_names_its_transport(tmp_path: Path) -> None:
    path = write(tmp_path, edit(BASE, "    role: Writer", "    role: Writer\n"
                                "    llm:\n      model: openai/gpt-4o-mini\n"
                                "      transport: litellm"))
    crew = Crew.from_yaml(path)
    assert crew.agents[1].llm is not None and crew.agents[1].llm.transport == "litellm"
    bad = write(tmp_path, edit(BASE, "    role: Writer", "    role: Writer\n"
                               "    llm:\n      model: openai/gpt-4o-mini\n"
                               "      transport: grpc"))
    with pytest.raises(DefinitionError, match=r"agents\.writer\.llm\.transport: unknown "
                                              r"transport 'grpc' \(allowed: auto, litellm"):
        Crew.from_yaml(bad)
