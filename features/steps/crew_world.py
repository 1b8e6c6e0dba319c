"""What the step modules share: models pointed at the fake server, and ways to read it.

Not a step module (it defines no steps); the others import it. Every prompt a scenario
sends carries a ``[[marker]]`` so the server can say what it served for each task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from crewline import LLM, Usage
from crewline.testing import FakeLLMServer, Served, ServedTotals

# Prices of the made-up model the budget scenarios use: exact, so money can be compared.
IN = Decimal("0.000001")
OUT = Decimal("0.000002")


def llm(server: FakeLLMServer, **overrides: Any) -> LLM:
    """gpt-4o-mini (priced by litellm's table) at the fake server."""
    return LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="sk-test",
               **overrides)


def priced_llm(server: FakeLLMServer, **overrides: Any) -> LLM:
    """A model with an exact price override, so the server's count converts to dollars."""
    settings: dict[str, Any] = {"max_tokens": 20}
    settings.update(overrides)
    return LLM(model="openai/custom-model", base_url=server.base_url, api_key="sk-test",
               input_cost_per_token=IN, output_cost_per_token=OUT, **settings)


def served_cost(totals: ServedTotals) -> Decimal:
    """What the server's count of tokens costs at the made-up model's prices."""
    return totals.prompt_tokens * IN + totals.completion_tokens * OUT


def served_for(server: FakeLLMServer, marker: str) -> list[Served]:
    return [s for s in server.served if s.marker == marker]


def user_prompt(served: Served) -> str:
    """The first user message of a request: the task as the agent was asked it."""
    for message in served.messages:
        if message.get("role") == "user":
            return str(message.get("content") or "")
    raise AssertionError(f"request {served.index} has no user message")


def figures(usage: Usage | ServedTotals) -> dict[str, int]:
    return {"requests": usage.requests, "failed_requests": usage.failed_requests,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def assert_same_usage(engine: Usage, served: ServedTotals, what: str) -> None:
    mine, theirs = figures(engine), figures(served)
    assert mine == theirs, f"{what}: crewline reports {mine}, the server served {theirs}"


def mismatches(per_task: Mapping[str, int], server: FakeLLMServer,
               marker_of: Callable[[str], str]) -> list[str]:
    """Tasks whose reported total tokens differ from the server's count for their marker."""
    return [f"{name}: {tokens} reported, {server.totals(marker=marker_of(name)).total_tokens}"
            " served" for name, tokens in sorted(per_task.items())
            if tokens != server.totals(marker=marker_of(name)).total_tokens]


def outcome(context: Any, run: Callable[[], Any]) -> None:
    """Run a kickoff; keep its output or its error on the scenario for the Then steps."""
    context.output = context.error = None
    try:
        context.output = run()
    except BaseException as exc:  # the Then steps decide whether an error was expected
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        context.error = exc


def gather(coroutines: Iterable[Any]) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(*coroutines)

    return asyncio.run(main())


def require_output(context: Any) -> Any:
    if context.error is not None:
        raise AssertionError(f"the kickoff failed: {context.error!r}") from context.error
    return context.output


def served_sum(server: FakeLLMServer, markers: Iterable[str]) -> ServedTotals:
    """The server's count over several markers, as one total."""
    served = [s for s in server.served if s.marker in set(markers)]
    return ServedTotals.of(served)
