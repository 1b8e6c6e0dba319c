"""Filling ``{placeholder}`` templates from kickoff inputs.

Only ``{identifier}`` is a placeholder; any other brace (JSON in a description, ``{ }``,
``{0}``) is left exactly as written, so prompts that show JSON need no escaping.

Input keys are strings, checked once at kickoff (``checked_inputs``): a placeholder can
only ever name a string, and events and error messages list the keys sorted, which mixed
key types would break far from the mistake. Values are turned into text only where a
placeholder uses them; a value that cannot be (its ``__str__`` raises) is an ``InputError``
naming the input and the template, never the value's own exception escaping a kickoff.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from crewline.errors import InputError

__all__ = ["Template", "checked_inputs", "fill", "placeholders"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(text: str) -> list[str]:
    return _PLACEHOLDER.findall(text)


def checked_inputs(inputs: Mapping[Any, Any] | None) -> dict[str, Any]:
    """A copy of a kickoff's ``inputs``, or ``InputError`` naming the first non-string key."""
    copied = dict(inputs or {})
    for key in copied:
        if not isinstance(key, str):
            raise InputError(f"input keys must be strings (placeholder names), got "
                             f"{_safe_repr(key)} ({type(key).__name__})")
    return copied


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} object with a broken __repr__>"


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _value(name: str, inputs: Mapping[str, Any], where: str) -> str:
    """The text of input ``name`` for a placeholder in ``where``, or ``InputError``."""
    if name not in inputs:
        known = ", ".join(sorted(inputs)) or "none"
        raise InputError(
            f"missing input {name!r} for placeholder {{{name}}} in {where} "
            f"(inputs given: {known})", placeholder=name, where=where)
    value = inputs[name]
    try:
        return _render(value)
    except Exception as exc:
        raise InputError(
            f"input {name!r} for placeholder {{{name}}} in {where} cannot be turned "
            f"into text: converting its {type(value).__name__} value raised "
            f"{type(exc).__name__}: {_safe_str(exc)}", placeholder=name,
            where=where) from exc


class Template:
    """A text split once at its placeholders, filled per kickoff without a regex pass."""

    __slots__ = ("_parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        # literal, name, literal, name, ..., literal
        self._parts: tuple[str, ...] = tuple(_PLACEHOLDER.split(text)) if "{" in text else (
            text,)

    @property
    def plain(self) -> bool:
        """Holds no placeholder: filling it gives the text back."""
        return len(self._parts) == 1

    def fill(self, inputs: Mapping[str, Any], *, where: str) -> str:
        """See ``fill``."""
        parts = self._parts
        if len(parts) == 1:
            return self.text
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            out.append(_value(parts[i], inputs, where))
            out.append(parts[i + 1])
        return "".join(out)


def fill(text: str, inputs: Mapping[str, Any], *, where: str) -> str:
    """``text`` with each ``{name}`` replaced by ``inputs[name]``.

    A placeholder without an input, or with a value that cannot become text, raises
    ``InputError`` naming the placeholder and ``where`` it stands (for example
    ``task 'summary' description``).
    """
    if "{" not in text:
        return text
    return Template(text).fill(inputs, where=where)


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "(its message cannot be shown)"
