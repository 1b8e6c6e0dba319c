"""Filling ``{placeholder}`` templates from kickoff inputs.

Only ``{identifier}`` is a placeholder; any other brace (JSON in a description, ``{ }``,
``{0}``) is left exactly as written, so prompts that show JSON need no escaping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from crewline.errors import InputError

__all__ = ["fill", "placeholders"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(text: str) -> list[str]:
    return _PLACEHOLDER.findall(text)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    import json

    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def fill(text: str, inputs: Mapping[str, Any], *, where: str) -> str:
    """``text`` with each ``{name}`` replaced by ``inputs[name]``.

    A placeholder without an input raises ``InputError`` naming the placeholder and
    ``where`` it stands (for example ``task 'summary' description``).
    """
    if "{" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise InputError(
                f"missing input {name!r} for placeholder {{{name}}} in {where} "
                f"(inputs given: {known})", placeholder=name, where=where)
        return _render(inputs[name])

    return _PLACEHOLDER.sub(replace, text)
