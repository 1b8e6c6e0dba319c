"""What a request cost, computed by crewline from the tokens the provider reported.

Prices come from the ``LLM``'s own override when given, else from litellm's price table,
read once per model and turned into exact Decimals (a float price goes through its
shortest repr). An unknown model without an override costs 0 and its records say
``priced=False``: crewline never guesses a price silently. Costs are computed in
crewline's own ``decimal`` context (``crewline.budget.amount.MONEY``), never the caller's.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from crewline.budget.amount import MONEY

if TYPE_CHECKING:
    from crewline._definitions.llm import LLM

__all__ = ["Price", "price_of"]

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
_table: dict[str, Price] = {}


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
    inp = _exact(info.get("input_cost_per_token"))
    out = _exact(info.get("output_cost_per_token"))
    if inp is None or out is None:
        return UNKNOWN
    cached = _exact(info.get("cache_read_input_token_cost"))
    return Price(inp, out, cached if cached is not None else inp, known=True)


def price_of(llm: LLM) -> Price:
    """The price of ``llm``'s tokens; overrides win, missing halves fall back to the table.

    This is the first thing a request asks about its model, before any budget hold or
    send, so it is also where a model litellm cannot route is refused (``DefinitionError``).
    """
    llm.check_route()
    override_in, override_out = llm.input_cost_per_token, llm.output_cost_per_token
    if override_in is not None and override_out is not None:
        return Price(override_in, override_out, override_in, known=True)
    table = _table.get(llm.model)
    if table is None:
        looked_up = _from_litellm(llm.model)
        with _table_lock:
            table = _table.setdefault(llm.model, looked_up)
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
