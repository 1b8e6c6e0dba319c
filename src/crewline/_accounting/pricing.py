"""What a request cost, computed by crewline from the tokens the provider reported, and
how many prompt tokens a request holds before it is sent.

Prices come from the ``LLM``'s own override when given, else from litellm's price table,
read once per model and turned into exact Decimals (a float price goes through its
shortest repr). For a model litellm serves, the table is asked through litellm; for one
the direct transport serves, litellm's shipped table is read as data (the JSON file in the
installed package, found without importing litellm), so the direct path never pays
litellm's import. An unknown model without an override costs 0 and its records say
``priced=False``: crewline never guesses a price silently. Costs are computed in
crewline's own ``decimal`` context (``crewline.budget.amount.MONEY``), never the caller's.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from crewline.budget.amount import MONEY

if TYPE_CHECKING:
    from crewline._definitions.llm import LLM

__all__ = ["Price", "count_prompt_tokens", "price_of", "shipped_price_table"]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Price:
    input: Decimal
    output: Decimal
    cached_input: Decimal
    known: bool

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0
             ) -> Decimal:
        cached = min(cached_prompt_tokens, prompt_tokens)
        total = MONEY.multiply(prompt_tokens - cached, self.input)
        total = MONEY.add(total, MONEY.multiply(cached, self.cached_input))
        return MONEY.add(total, MONEY.multiply(completion_tokens, self.output))


UNKNOWN = Price(_ZERO, _ZERO, _ZERO, known=False)

_table_lock = threading.Lock()
_table: dict[tuple[str, bool], Price] = {}


def _exact(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def _from_litellm(model: str) -> Price:
    from crewline.transport.litellm import litellm_module

    litellm = litellm_module()
    try:
        info = litellm.get_model_info(model)
    except Exception:
        return UNKNOWN
    return _price_entry(dict(info))


_PRICE_FILE = "litellm/model_prices_and_context_window_backup.json"
_TOKENIZER_DIR = "litellm/litellm_core_utils/tokenizers"
_shipped: dict[str, Any] | None = None


def _litellm_file(relative: str) -> str | None:
    """A file inside the installed litellm package, located without importing litellm."""
    from importlib import metadata

    try:
        located = metadata.distribution("litellm").locate_file(relative)
    except metadata.PackageNotFoundError:
        return None
    path = os.fspath(located)  # type: ignore[call-overload]
    return str(path) if os.path.exists(path) else None


def shipped_price_table() -> dict[str, Any]:
    """litellm's price table as shipped in the installed package (read once, as data).

    ``CREWLINE_PRICE_TABLE`` names a JSON file in the same format to use instead (a
    newer or private table); no table at all means every model is unpriced.
    """
    global _shipped
    if _shipped is None:
        path = os.environ.get("CREWLINE_PRICE_TABLE") or _litellm_file(_PRICE_FILE)
        loaded: dict[str, Any] = {}
        if path is not None:
            with open(path, encoding="utf-8") as handle:
                loaded = json.load(handle)
        with _table_lock:
            if _shipped is None:
                _shipped = loaded
    return _shipped


def _price_entry(info: Any) -> Price:
    """A price from one entry of litellm's table, read as data or through litellm."""
    if not isinstance(info, dict):
        return UNKNOWN
    inp = _exact(info.get("input_cost_per_token"))
    out = _exact(info.get("output_cost_per_token"))
    if inp is None or out is None:
        return UNKNOWN
    cached = _exact(info.get("cache_read_input_token_cost"))
    return Price(inp, out, cached if cached is not None else inp, known=True)


def _from_shipped(model: str) -> Price:
    """The table's price for a direct-path model, looked up as litellm would for OpenAI:
    the name as given, else without its ``openai/`` prefix when the entry is OpenAI's."""
    from crewline.transport.openai import direct_model_name

    table = shipped_price_table()
    if model in table:
        return _price_entry(table[model])
    bare = direct_model_name(model)
    info = table.get(bare)
    if isinstance(info, dict) and info.get("litellm_provider") == "openai":
        return _price_entry(info)
    return UNKNOWN


_encoding_lock = threading.Lock()
_counters: dict[str, Callable[[str], int]] = {}


def _tiktoken_counter(model: str) -> Callable[[str], int]:
    """A token counter for ``model``'s tiktoken encoding (cl100k_base when unknown).

    tiktoken downloads an encoding on first use unless it is cached; litellm ships the
    files, so their folder is the cache unless the application chose one itself.
    """
    from crewline.transport.openai import direct_model_name

    counter = _counters.get(model)
    if counter is not None:
        return counter
    import tiktoken

    try:
        name = tiktoken.encoding_name_for_model(direct_model_name(model))
    except KeyError:
        name = "cl100k_base"
    with _encoding_lock:
        set_dir = "TIKTOKEN_CACHE_DIR" not in os.environ
        bundled = _litellm_file(_TOKENIZER_DIR) if set_dir else None
        if bundled is not None:
            os.environ["TIKTOKEN_CACHE_DIR"] = bundled
        try:
            encoding = tiktoken.get_encoding(name)
        finally:
            if bundled is not None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    _counters[model] = count
    return count


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def count_prompt_tokens(model: str, messages: list[dict[str, Any]],
                        tools: list[dict[str, Any]] | None, *, with_litellm: bool) -> int:
    """The prompt tokens a request is held for: litellm's ``token_counter`` for a model
    litellm serves, tiktoken for one the direct transport serves (no litellm import).

    The tiktoken count follows OpenAI's message accounting as litellm does (3 tokens per
    message, 1 per name, 3 priming the reply, tool definitions as text plus 9); it is a
    reservation's estimate, settled to the provider's own count after the reply.
    """
    if with_litellm:
        from crewline.transport.litellm import litellm_module

        return int(litellm_module().token_counter(model=model, messages=messages,
                                                  tools=tools))
    count = _tiktoken_counter(model)
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "tool_calls" and isinstance(value, list):
                total += sum(count(str(call.get("function", {}).get("arguments", "")))
                             for call in value if isinstance(call, dict))
            elif key == "content":
                total += count(_content_text(value))
            elif isinstance(value, str):
                total += count(value) + (1 if key == "name" else 0)
    if tools:
        total += count(json.dumps(tools, separators=(",", ":"))) + 9
    return total


def price_of(llm: LLM) -> Price:
    """The price of ``llm``'s tokens; overrides win, missing halves fall back to the table.

    This is the first thing a request asks about its model, before any budget hold or
    send, so it is also where a model litellm cannot route is refused (``DefinitionError``).
    """
    llm.check_route()
    override_in, override_out = llm.input_cost_per_token, llm.output_cost_per_token
    if override_in is not None and override_out is not None:
        return Price(override_in, override_out, override_in, known=True)
    key = (llm.model, llm.uses_litellm())
    table = _table.get(key)
    if table is None:
        looked_up = _from_litellm(llm.model) if key[1] else _from_shipped(llm.model)
        with _table_lock:
            table = _table.setdefault(key, looked_up)
    if override_in is None and override_out is None:
        return table
    if not table.known:
        given, missing = (("input", "output") if override_in is not None
                          else ("output", "input"))
        warnings.warn(
            f"LLM {llm.model!r}: {given}_cost_per_token is set but {missing}_cost_per_token "
            f"is not, and litellm has no price for this model: its requests are unpriced "
            f"(cost 0, priced=False); set both", UserWarning, stacklevel=2)
        return UNKNOWN
    inp = override_in if override_in is not None else table.input
    out = override_out if override_out is not None else table.output
    return Price(inp, out, inp if override_in is not None else table.cached_input, known=True)
