"""Tools an agent may call, described to the model in the OpenAI tools format.

``@tool`` builds the JSON schema from the function's type hints (through pydantic) and
its docstring (first paragraph: what the tool does; ``Args:`` lines: what each parameter
means). A tool may be a plain or an ``async`` function: the sync driver calls sync tools
inline, the asyncio driver awaits async ones and runs sync ones on crewline's worker
threads in a copy of the caller's context.

A ``Tool`` pickles by reference to its function's module and qualified name, as a function
does: the other process imports the module and finds the same tool, so the module globals
the tool reads (a ``ContextVar``, a client) are that process's real ones, never copies.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

__all__ = ["Tool", "tool"]

F = TypeVar("F", bound=Callable[..., Any])

_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    if not doc:
        return "", {}
    text = inspect.cleandoc(doc)
    paragraphs = text.split("\n\n")
    summary = " ".join(paragraphs[0].split())
    params: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower() in ("args:", "arguments:", "parameters:"):
            in_args = True
            continue
        if in_args:
            if not stripped:
                current = None
                continue
            if stripped.endswith(":") and not line.startswith((" ", "\t")):
                in_args = False
                continue
            match = _ARG_LINE.match(line)
            if match and (current is None or len(line) - len(line.lstrip()) <= 4):
                current = match.group(1).lstrip("*")
                params[current] = match.group(2).strip()
            elif current is not None:
                params[current] += " " + stripped
    return summary, params


@dataclass(frozen=True, slots=True)
class Tool:
    """A callable the model may ask for, with the schema that describes it."""

    name: str
    description: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    is_async: bool = False
    schema: dict[str, Any] = field(default_factory=dict)

    def openai_spec(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": self.schema}}

    def parse_arguments(self, arguments: str) -> dict[str, Any]:
        """Arguments as the model sent them, validated; errors read well to the model."""
        try:
            raw = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments are not valid JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise ValueError("arguments must be a JSON object")
        try:
            model = self.args_model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
                for e in exc.errors())
            raise ValueError(f"invalid arguments: {problems}") from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        module = getattr(self.fn, "__module__", None)
        qualname = getattr(self.fn, "__qualname__", None)
        if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
            raise pickle.PicklingError(
                f"tool {self.name!r}: only tools made from module-level functions pickle "
                f"(pickled by reference, as functions are); {qualname or self.fn!r} is not one")
        try:
            found = _resolve(module, qualname)
        except (ImportError, AttributeError) as exc:
            raise pickle.PicklingError(
                f"tool {self.name!r}: {module}.{qualname} cannot be imported back ({exc})"
            ) from None
        if found is not self and found is not self.fn and getattr(found, "fn", None
                                                                  ) is not self.fn:
            raise pickle.PicklingError(
                f"tool {self.name!r}: {module}.{qualname} is another object than this "
                "tool's function, so it cannot be pickled by reference")
        return (_tool_by_reference, (module, qualname, self.name, self.description))


def _resolve(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _tool_by_reference(module: str, qualname: str, name: str, description: str) -> Tool:
    """The unpickling side: the module's own tool, or one made again from its function."""
    found = _resolve(module, qualname)
    if isinstance(found, Tool) and found.name == name and found.description == description:
        return found
    fn = found.fn if isinstance(found, Tool) else found
    return _build(fn, name, description)


def _build(fn: Callable[..., Any], name: str | None, description: str | None) -> Tool:
    summary, param_docs = _parse_docstring(fn.__doc__)
    tool_name = name or fn.__name__
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tool_name):
        raise ValueError(f"tool name {tool_name!r} must be 1-64 letters, digits, _ or -")
    try:
        hints = get_type_hints(fn)
    except Exception as exc:
        raise TypeError(f"tool {tool_name!r}: cannot resolve type hints: {exc}") from exc
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *args/**kwargs cannot be described to a model")
        annotation = hints.get(pname, Any)
        from pydantic import Field

        default = ... if param.default is param.empty else param.default
        fields[pname] = (annotation, Field(default, description=param_docs.get(pname)))
    args_model = create_model(
        f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    schema = args_model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    return Tool(name=tool_name, description=description or summary or tool_name, fn=fn,
                args_model=args_model, is_async=inspect.iscoroutinefunction(fn),
                schema=schema)


@overload
def tool(fn: F, /) -> Tool: ...


@overload
def tool(*, name: str | None = None, description: str | None = None
         ) -> Callable[[F], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         description: str | None = None) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function into a ``Tool``: ``@tool`` or ``@tool(name=..., description=...)``."""
    if fn is not None:
        return _build(fn, name, description)

    def decorate(f: Callable[..., Any]) -> Tool:
        return _build(f, name, description)

    return decorate


def as_tool(value: Any) -> Tool:
    """Accept a ``Tool`` or a plain function in ``Agent(tools=[...])``."""
    if isinstance(value, Tool):
        return value
    if callable(value):
        return _build(value, None, None)
    raise TypeError(f"expected a tool or a function, got {type(value).__name__}")
