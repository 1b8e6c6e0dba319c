"""Crew files: a crew written in YAML, loaded into the same frozen definitions as Python.

A crew file is data, so every mistake in it is reported as a ``DefinitionError`` that names
the file, the key path and what is wrong (``research.yaml: tasks.write.agent: unknown agent
'writer2' (agents: researcher, writer)``), before anything runs. The file is read with
PyYAML's safe loader (plus a check for duplicate keys, which YAML would silently collapse).

Choices a reader should know about:

* An agent's ``llm`` (a model string or a mapping) inherits every key it does not set from
  the top-level ``llm``, except the prices when it names another model: a price belongs
  to the model it was written for. The ``model=`` override follows the same rule.
* Prices and ``max_cost`` are exact ``Decimal``: a YAML float goes through its shortest
  repr (``0.00000015`` stays ``0.00000015``), a string is read as written.
* An agent's ``role`` defaults to its name; a task's name is its key, and tasks run in the
  order the file lists them. ``{placeholders}`` stay in the text until kickoff.
* ``process: hierarchical`` needs ``manager_llm`` (inheriting from ``llm`` as an agent's
  does); its tasks need no ``agent``. ``planning_llm`` inherits the same way.
* A ``guardrail`` that looks like an import path (``package.module:function``, no spaces)
  must resolve; so must one that looks like a dotted path (``checks.no_numbers``), the
  usual slip for the colon form, which would otherwise become a requirement for an LLM
  judge and fail requests later instead of at load. Any other text is a requirement an LLM
  judges the output against.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from crewline._crew.process import Process
from crewline._definitions.agent import Agent
from crewline._definitions.llm import LLM
from crewline._definitions.task import Task
from crewline._definitions.tools import Tool, tool
from crewline.budget import Budget
from crewline.errors import DefinitionError

__all__ = ["AGENT_KEYS", "BUDGET_KEYS", "LLM_KEYS", "TASK_KEYS", "TOP_KEYS",
           "crew_from_mapping", "load_crew"]

TOP_KEYS = ("name", "process", "llm", "agents", "tasks", "budget", "max_rpm", "max_tpm",
            "manager_llm", "planning", "planning_llm", "max_delegation_depth")
LLM_KEYS = ("model", "base_url", "api_key", "api_key_env", "temperature", "max_tokens",
            "timeout", "num_retries", "retry_backoff", "input_cost_per_token",
            "output_cost_per_token", "reserve_output_tokens", "max_rpm", "max_tpm",
            "transport")
_TRANSPORTS = ("auto", "litellm", "openai")
AGENT_KEYS = ("role", "goal", "backstory", "llm", "tools", "max_iter", "allow_delegation")
TASK_KEYS = ("description", "expected_output", "agent", "context", "async_execution",
             "guardrail", "guardrails", "guardrail_max_retries", "output_pydantic",
             "output_json")
BUDGET_KEYS = ("max_cost", "max_tokens", "max_requests", "period", "name", "timezone")

_PRICE_KEYS = ("input_cost_per_token", "output_cost_per_token")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


C = TypeVar("C", bound=BaseModel)


def load_crew(path: str | os.PathLike[str], *, crew_type: type[C], model: str | None = None,
              budget: Budget | None = None, default_base_url: str | None = None,
              default_api_key: str | None = None) -> C:
    """The crew defined in the YAML file at ``path``.

    ``model`` replaces the model of every agent (keeping ``base_url``, keys and limits);
    ``budget`` replaces the file's ``budget``. ``default_base_url`` and ``default_api_key``
    go to every LLM of the file that sets no ``base_url`` / key of its own (the CLI's
    ``--base-url`` and ``--api-key-env``), so a file written for one endpoint can be pointed
    at another without editing it, and without litellm's process-wide environment variables.
    Raises ``DefinitionError`` for any problem with the file, naming the file and the key path.
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise DefinitionError(f"{source}: is a directory, not a crew file") from None
    except UnicodeDecodeError as exc:
        raise DefinitionError(f"{source}: not UTF-8 text ({exc.reason} at byte "
                              f"{exc.start})") from None
    except OSError as exc:
        raise DefinitionError(f"{source}: cannot read the file ({exc.strerror})") from None
    return crew_from_mapping(parse_yaml(text, source=source), crew_type=crew_type,
                             source=source, model=model, budget=budget,
                             default_base_url=default_base_url, default_api_key=default_api_key)


def parse_yaml(text: str, *, source: str) -> Any:
    """The YAML document in ``text``; syntax errors name the line and column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        raise DefinitionError(f"{source}: {where}invalid YAML: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None


def crew_from_mapping(data: Any, *, crew_type: type[C], source: str = "<crew>",
                      model: str | None = None, budget: Budget | None = None,
                      default_base_url: str | None = None,
                      default_api_key: str | None = None) -> C:
    """The crew a parsed crew file describes (``source`` names it in error messages).

    ``crew_type`` is ``crewline.Crew`` (``Crew.from_yaml`` passes itself): the loader sits
    below the crew in the layers, so it is handed the class instead of importing it.
    """
    reader = _CrewReader(source, defaults={"base_url": default_base_url,
                                           "api_key": default_api_key})
    return reader.crew(data, crew_type=crew_type, model=model, budget=budget)


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key; the constructor reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_mapping)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _pydantic_problems(exc: ValidationError, path: str) -> str:
    problems = []
    for error in exc.errors():
        where = path
        for part in error["loc"]:
            where = _join(where, part)
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


class _CrewReader:
    """Checks a parsed crew file key by key, so every error can name its key path."""

    def __init__(self, source: str, *, defaults: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.defaults = {k: v for k, v in (defaults or {}).items() if v is not None}

    def fail(self, path: str, problem: str) -> NoReturn:
        where = f"{path}: " if path else ""
        raise DefinitionError(f"{self.source}: {where}{problem}")

    # -- values ------------------------------------------------------------------------

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | None = None
                ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be names (strings), got {key!r}")
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(_join(path, key), f"unknown key ({hint}allowed: {', '.join(allowed)})")
        return value

    def string(self, value: Any, path: str, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {_kind(value)}")
        if not empty and not value.strip():
            self.fail(path, "must not be empty")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"expected a boolean, got {_kind(value)}")
        return value

    def integer(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, got {_kind(value)}")
        return value

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"expected a number, got {_kind(value)}")
        return float(value)

    def decimal(self, value: Any, path: str) -> Decimal:
        """An exact amount: a float through its shortest repr, a string as written."""
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.fail(path, f"expected a number, got {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(path, f"expected a finite number, got {value!r}")
        try:
            result = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except InvalidOperation:
            self.fail(path, f"expected a number, got {value!r}")
        if not result.is_finite() or result < 0:
            self.fail(path, f"expected a finite number >= 0, got {value!r}")
        return result

    def string_list(self, value: Any, path: str) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.fail(path, f"expected a list, got {_kind(value)}")
        return [self.string(item, _join(path, i)) for i, item in enumerate(value)]

    def resolve(self, spec: str, path: str) -> Any:
        """The object an import path ``package.module:attribute`` names."""
        module_name, _, attribute = spec.partition(":")
        if not _IMPORT_PATH.fullmatch(spec.strip()):
            self.fail(path, f"expected an import path 'package.module:name', got {spec!r}")
        module_name, attribute = module_name.strip(), attribute.strip()
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError as exc:
            self.fail(path, f"cannot import {spec!r} ({exc})")
        except Exception as exc:
            self.fail(path, f"cannot import {spec!r} (importing {module_name!r} raised "
                            f"{type(exc).__name__}: {exc})")
        walked: list[str] = []
        for part in attribute.split("."):
            try:
                found = getattr(found, part)
            except AttributeError:
                owner = (repr(f"{module_name}:{'.'.join(walked)}") if walked
                         else f"module {module_name!r}")
                self.fail(path, f"cannot import {spec!r} ({owner} has no attribute {part!r})")
            walked.append(part)
        return found

    def resolve_dotted(self, spec: str, path: str) -> Any:
        """The object a dotted path ``package.module.attribute`` names, or a failure that
        suggests the ``module:function`` form the file was meant to use."""
        parts = spec.split(".")
        suggestion = f"{'.'.join(parts[:-1])}:{parts[-1]}"
        advice = (f"name a function as 'module:function' (e.g. {suggestion!r}), or write a "
                  "requirement for an LLM judge as a sentence")
        for split in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:split])
            try:
                found: Any = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name is not None and (module_name == exc.name
                                             or module_name.startswith(exc.name + ".")):
                    continue  # that prefix is no module; try a shorter one
                self.fail(path, f"{spec!r} looks like an import path but importing "
                                f"{module_name!r} failed ({exc}); {advice}")
            except Exception as exc:
                self.fail(path, f"{spec!r} looks like an import path but importing "
                                f"{module_name!r} raised {type(exc).__name__}: {exc}; {advice}")
            for depth in range(split, len(parts)):
                if not hasattr(found, parts[depth]):
                    self.fail(path, f"{spec!r} looks like an import path but does not "
                                    f"resolve ({'.'.join(parts[:depth])!r} has no attribute "
                                    f"{parts[depth]!r}); {advice}")
                found = getattr(found, parts[depth])
            return found
        self.fail(path, f"{spec!r} looks like an import path but does not resolve (no module "
                        f"named {parts[0]!r}); {advice}")

    def build(self, cls: type[BaseModel], path: str, **fields: Any) -> Any:
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise DefinitionError(f"{self.source}: {_pydantic_problems(exc, path)}") from None

    # -- sections ----------------------------------------------------------------------

    def llm_config(self, value: Any, path: str) -> dict[str, Any]:
        """The LLM fields a ``llm`` entry sets (a model string sets only the model)."""
        if isinstance(value, str):
            return {"model": self.string(value, path)}
        spec = self.mapping(value, path, LLM_KEYS)
        if "api_key" in spec and "api_key_env" in spec:
            self.fail(path, "set api_key or api_key_env, not both")
        config: dict[str, Any] = {}
        for key, item in spec.items():
            where = _join(path, key)
            if item is None:
                config[key] = None
            elif key in ("model", "base_url", "api_key"):
                config[key] = self.string(item, where)
            elif key == "api_key_env":
                variable = self.string(item, where)
                if variable not in os.environ:
                    self.fail(where, f"environment variable {variable!r} is not set")
                config["api_key"] = os.environ[variable]
            elif key in ("temperature", "timeout", "retry_backoff"):
                config[key] = self.number(item, where)
            elif key == "transport":
                choice = self.string(item, where)
                if choice not in _TRANSPORTS:
                    self.fail(where, f"unknown transport {choice!r} (allowed: "
                                     f"{', '.join(_TRANSPORTS)})")
                config[key] = choice
            elif key in _PRICE_KEYS:
                config[key] = self.decimal(item, where)
            else:
                config[key] = self.integer(item, where)
        return config

    def llm(self, config: dict[str, Any], path: str, model: str | None) -> LLM:
        config = dict(config)
        for key, value in self.defaults.items():
            if config.get(key) is None:
                config[key] = value
        if model is not None and config.get("model") != model:
            config = _with_model(config, model)
        if not config.get("model"):
            self.fail(_join(path, "model"), "missing: name the model, e.g. openai/gpt-4o-mini")
        llm: LLM = self.build(LLM, path, **config)
        return llm

    def tools(self, value: Any, path: str) -> list[Tool]:
        if not isinstance(value, list):
            self.fail(path, f"expected a list of import paths, got {_kind(value)}")
        tools = []
        for i, item in enumerate(value):
            where = _join(path, i)
            spec = self.string(item, where)
            found = self.resolve(spec, where)
            if isinstance(found, Tool):
                tools.append(found)
                continue
            if not callable(found):
                self.fail(where, f"{spec!r} is {_kind(found)}, not a function or a "
                                 "crewline.Tool")
            try:
                tools.append(tool(found))
            except (TypeError, ValueError) as exc:
                self.fail(where, f"{spec!r} cannot be a tool: {exc}")
        return tools

    def agent(self, name: str, value: Any, top: dict[str, Any] | None,
              model: str | None, default: LLM | None) -> Agent:
        path = _join("agents", name)
        spec = self.mapping(value, path, AGENT_KEYS)
        fields: dict[str, Any] = {"role": name}
        for key in ("role", "goal", "backstory"):
            if spec.get(key) is not None:
                fields[key] = self.string(spec[key], _join(path, key), empty=key != "role")
        if spec.get("llm") is not None:
            own = self.llm_config(spec["llm"], _join(path, "llm"))
            fields["llm"] = self.llm(_inherit(top or {}, own), _join(path, "llm"), model)
        elif default is None:
            self.fail(path, f"no model: set llm.model at the top level or "
                            f"{_join(path, 'llm')}")
        if spec.get("tools") is not None:
            fields["tools"] = self.tools(spec["tools"], _join(path, "tools"))
        if spec.get("max_iter") is not None:
            fields["max_iter"] = self.integer(spec["max_iter"], _join(path, "max_iter"))
        if spec.get("allow_delegation") is not None:
            fields["allow_delegation"] = self.boolean(spec["allow_delegation"],
                                                      _join(path, "allow_delegation"))
        agent: Agent = self.build(Agent, path, **fields)
        return agent

    def guardrail(self, value: Any, path: str) -> Any:
        text = self.string(value, path)
        if _DOTTED_PATH.fullmatch(text.strip()):
            found = self.resolve_dotted(text.strip(), path)
        elif _IMPORT_PATH.fullmatch(text.strip()):
            found = self.resolve(text, path)
        else:
            return text  # a requirement for an LLM judge
        if not callable(found):
            self.fail(path, f"{text!r} is {_kind(found)}, not a function")
        return found

    def model_class(self, value: Any, path: str) -> type[BaseModel]:
        spec = self.string(value, path)
        found = self.resolve(spec, path)
        if not (isinstance(found, type) and issubclass(found, BaseModel)):
            self.fail(path, f"{spec!r} is not a pydantic model class")
        return found

    def task(self, name: str, value: Any, agents: dict[str, Agent],
             done: dict[str, Task], later: set[str], *, managed: bool = False) -> Task:
        path = _join("tasks", name)
        spec = self.mapping(value, path, TASK_KEYS)
        if spec.get("description") is None:
            self.fail(_join(path, "description"), "missing: say what the task is")
        fields: dict[str, Any] = {"name": name}
        fields["description"] = self.string(spec["description"], _join(path, "description"))
        if spec.get("expected_output") is not None:
            fields["expected_output"] = self.string(
                spec["expected_output"], _join(path, "expected_output"), empty=True)
        if not managed or spec.get("agent") is not None:
            fields["agent"] = self.task_agent(spec.get("agent"), _join(path, "agent"), agents)
        if spec.get("context") is not None:
            fields["context"] = self.context(spec["context"], _join(path, "context"), name,
                                             done, later)
        if spec.get("async_execution") is not None:
            fields["async_execution"] = self.boolean(spec["async_execution"],
                                                     _join(path, "async_execution"))
        if spec.get("guardrail") is not None:
            fields["guardrail"] = self.guardrail(spec["guardrail"], _join(path, "guardrail"))
        if spec.get("guardrails") is not None:
            where = _join(path, "guardrails")
            fields["guardrails"] = [self.guardrail(item, _join(where, i)) for i, item
                                    in enumerate(self.string_list(spec["guardrails"], where))]
        if spec.get("guardrail_max_retries") is not None:
            fields["guardrail_max_retries"] = self.integer(
                spec["guardrail_max_retries"], _join(path, "guardrail_max_retries"))
        for key in ("output_pydantic", "output_json"):
            if spec.get(key) is not None:
                fields[key] = self.model_class(spec[key], _join(path, key))
        task: Task = self.build(Task, path, **fields)
        return task

    def task_agent(self, value: Any, path: str, agents: dict[str, Agent]) -> Agent:
        names = ", ".join(agents)
        if value is None:
            if len(agents) == 1:
                return next(iter(agents.values()))
            self.fail(path, f"missing: the crew has {len(agents)} agents ({names})")
        name = self.string(value, path)
        if name not in agents:
            self.fail(path, f"unknown agent {name!r} (agents: {names})")
        return agents[name]

    def context(self, value: Any, path: str, name: str, done: dict[str, Task],
                later: set[str]) -> list[Task]:
        tasks = []
        for i, ref in enumerate(self.string_list(value, path)):
            where = _join(path, i)
            if ref in done:
                tasks.append(done[ref])
            elif ref == name:
                self.fail(where, f"task {name!r} cannot be its own context")
            elif ref in later:
                self.fail(where, f"task {ref!r} comes after {name!r}; context may only "
                                 "name earlier tasks")
            else:
                earlier = ", ".join(done) or "none"
                self.fail(where, f"no task named {ref!r} (tasks before {name!r}: {earlier})")
        return tasks

    def budget(self, value: Any) -> Budget:
        spec = self.mapping(value, "budget", BUDGET_KEYS)
        fields: dict[str, Any] = {}
        for key, item in spec.items():
            where = _join("budget", key)
            if item is None:
                continue
            if key == "max_cost":
                fields[key] = self.decimal(item, where)
            elif key in ("max_tokens", "max_requests"):
                fields[key] = self.integer(item, where)
            else:
                fields[key] = self.string(item, where)
        try:
            return Budget(**fields)
        except (TypeError, ValueError) as exc:
            self.fail("budget", str(exc))

    # -- the crew ----------------------------------------------------------------------

    def crew(self, data: Any, *, crew_type: type[C], model: str | None,
             budget: Budget | None) -> C:
        if data is None:
            self.fail("", "the file is empty; a crew file is a mapping with 'agents' and "
                          "'tasks'")
        spec = self.mapping(data, "", TOP_KEYS)
        if model is not None and (not isinstance(model, str) or not model.strip()):
            self.fail("", f"the model override must be a model name, got {model!r}")
        for key in ("agents", "tasks"):
            if not spec.get(key):
                self.fail(key, f"missing: a crew needs at least one {key[:-1]}")
        fields: dict[str, Any] = {}
        top = self.llm_config(spec["llm"], "llm") if spec.get("llm") is not None else None
        if top is not None and (top.get("model") or model):
            fields["llm"] = self.llm(top, "llm", model)
        default = fields.get("llm")
        agents = {name: self.agent(name, value, top, model, default)
                  for name, value in self.mapping(spec["agents"], "agents").items()}
        if spec.get("process") is not None:
            process = self.string(spec["process"], "process")
            allowed = [p.value for p in Process]
            if process not in allowed:
                self.fail("process", f"unknown process {process!r} (allowed: "
                                     f"{', '.join(allowed)})")
            fields["process"] = Process(process)
        managed = fields.get("process") == Process.hierarchical
        for key in ("manager_llm", "planning_llm"):
            if spec.get(key) is not None:
                own = self.llm_config(spec[key], key)
                fields[key] = self.llm(_inherit(top or {}, own), key, model)
        if managed and "manager_llm" not in fields:
            self.fail("manager_llm", "missing: a hierarchical crew needs a manager model "
                                     "(manager_llm: openai/gpt-4o-mini, or a mapping)")
        if spec.get("planning") is not None:
            fields["planning"] = self.boolean(spec["planning"], "planning")
        if spec.get("max_delegation_depth") is not None:
            fields["max_delegation_depth"] = self.integer(spec["max_delegation_depth"],
                                                          "max_delegation_depth")
        task_specs = self.mapping(spec["tasks"], "tasks")
        done: dict[str, Task] = {}
        later = set(task_specs)
        for name, value in task_specs.items():
            later.discard(name)
            done[name] = self.task(name, value, agents, done, later, managed=managed)
        if spec.get("name") is not None:
            fields["name"] = self.string(spec["name"], "name")
        for key in ("max_rpm", "max_tpm"):
            if spec.get(key) is not None:
                fields[key] = self.integer(spec[key], key)
        if budget is not None:
            fields["budget"] = budget
        elif spec.get("budget") is not None:
            fields["budget"] = self.budget(spec["budget"])
        try:
            crew: C = self.build(crew_type, "", agents=tuple(agents.values()),
                                 tasks=tuple(done.values()), **fields)
        except DefinitionError as exc:
            if str(exc).startswith(f"{self.source}:"):
                raise
            self.fail("", str(exc))  # the crew's shape (a manager, delegation): name the file
        return crew


def _with_model(config: Mapping[str, Any], model: str) -> dict[str, Any]:
    """``config`` for another model: the prices it gave were for the old one."""
    return {**{k: v for k, v in config.items() if k not in _PRICE_KEYS}, "model": model}


def _inherit(top: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    base = dict(top)
    if own.get("model") is not None and own["model"] != top.get("model"):
        base = {k: v for k, v in base.items() if k not in _PRICE_KEYS}
    return {**base, **own}
