"""Structured output: turning a reply into the task's pydantic model.

The provider is asked for JSON matching the model's schema where it can give it. A reply
that does not parse or validate gets one conversion request (purpose ``conversion``,
recorded in the attempt like any other request); if that fails too, the attempt fails with
``ConversionError`` and the task retries under its guardrail retry budget.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from crewline._accounting.policy import RequestPolicy
from crewline._core.effects import Step
from crewline._core.prepared import PreparedTask
from crewline._core.request import llm_call
from crewline._definitions.llm import LLM
from crewline.errors import ConversionError

__all__ = ["convert", "response_format_for"]

_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def _supports_schema(llm: LLM) -> bool:
    if not llm.uses_litellm() or llm.model.startswith("openai/"):
        return True
    from crewline.transport.litellm import litellm_module

    try:
        return bool(litellm_module().supports_response_schema(model=llm.model))
    except Exception:
        return False


def response_format_for(task: PreparedTask) -> dict[str, Any] | None:
    model = task.task.output_model
    if model is None or not _supports_schema(task.llm):
        return None
    return {"type": "json_schema",
            "json_schema": {"name": model.__name__[:64], "schema": model.model_json_schema(),
                            "strict": False}}


def _json_text(raw: str) -> str:
    fenced = _FENCE.match(raw)
    if fenced:
        return fenced.group(1)
    start, end = raw.find("{"), raw.rfind("}")
    if start != -1 and end > start and not raw.lstrip().startswith(("{", "[")):
        return raw[start:end + 1]
    return raw


def parse(raw: str, model: type[BaseModel]) -> BaseModel:
    """``raw`` as an instance of ``model``; ValueError says what is wrong."""
    try:
        return model.model_validate_json(_json_text(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors()[:5])
        raise ValueError(problems) from None


def _outputs(model: type[BaseModel], value: BaseModel, as_json: bool
             ) -> tuple[BaseModel | None, dict[str, Any]]:
    data = value.model_dump(mode="json")
    return (None if as_json else value), data


def convert(task: PreparedTask, raw: str, response_format: dict[str, Any] | None,
            policy: RequestPolicy) -> Step[tuple[BaseModel | None, dict[str, Any] | None]]:
    """``(pydantic, json_dict)`` for ``raw``; ``(None, None)`` when no model is asked for."""
    model = task.task.output_model
    if model is None:
        return None, None
    as_json = task.task.output_pydantic is None
    try:
        return _outputs(model, parse(raw, model), as_json)
    except ValueError as first:
        first_problem = str(first) or "not JSON"
    schema = json.dumps(model.model_json_schema())
    messages = [
        {"role": "system", "content": "You convert text into JSON that matches a JSON "
                                      "schema. Reply with the JSON object only."},
        {"role": "user", "content": f"Schema:\n{schema}\n\nText:\n{raw}"},
    ]
    reply = yield from llm_call(task.llm, messages, policy=policy, purpose="conversion",
                                response_format=response_format)
    try:
        return _outputs(model, parse(reply.content or "", model), as_json)
    except ValueError as second:
        raise ConversionError(
            f"task {task.name!r}: the reply is not a valid {model.__name__} "
            f"({first_problem}), nor is the conversion of it ({second})",
            task=task.name, raw=raw) from None
