"""Definitions and money values stay valid and exact whatever way they are made or used."""

from __future__ import annotations

import copy
import decimal
import io
import logging
import pickle
import warnings
from decimal import Decimal

import pytest
import structlog
from pydantic import BaseModel, ValidationError

from crewline import LLM, Agent, Crew, Task, Usage, log
from crewline._accounting.pricing import Price, price_of
from crewline._accounting.usage import UsageRecord
from crewline.budget import Amount
from crewline.testing import ScriptedModel

KEY = "sk-proj-THIS-IS-A-LONG-SECRET-0123456789abcdef"


# -- item 6: model_copy validates -------------------------------------------------------

def test_model_copy_update_is_validated_and_names_the_field() -> None:
    llm = LLM(model="openai/gpt-4o-mini")
    with pytest.raises(ValidationError) as info:
        llm.model_copy(update={"reserve_output_tokens": -1_000_000})
    assert info.value.errors()[0]["loc"] == ("reserve_output_tokens",)
    with pytest.raises(ValidationError, match="no_such_field"):
        llm.model_copy(update={"no_such_field": 1})


def test_model_copy_runs_model_validators() -> None:
    class Shape(BaseModel):
        x: int

    task = Task(description="d")
    with pytest.raises(ValidationError, match="not both"):
        task.model_copy(update={"output_pydantic": Shape, "output_json": Shape})


def test_model_copy_is_a_new_definition_with_its_own_limiter() -> None:
    llm = LLM(model="openai/gpt-4o-mini", max_rpm=60, api_key=KEY)
    copied = llm.model_copy(update={"temperature": "0.5"})  # validated: the str is coerced
    assert copied.temperature == 0.5
    assert copied is not llm and copied != llm
    assert copied.limiter is not None and copied.limiter is not llm.limiter
    assert copied.api_key is not None and copied.api_key.get_secret_value() == KEY
    assert copied.model_fields_set == {"model", "max_rpm", "api_key", "temperature"}
    plain = copy.copy(llm)
    assert plain.limiter is not llm.limiter and plain.max_rpm == 60


def test_deepcopy_keeps_the_crew_graph_and_recreates_limiters() -> None:
    llm = LLM(model="openai/gpt-4o-mini", max_tpm=1000)
    agent = Agent(role="A", llm=llm)
    first = Task(description="one", agent=agent)
    second = Task(description="two", agent=agent, context=[first])
    crew = Crew(agents=[agent], tasks=[first, second])
    clone = copy.deepcopy(crew)
    assert clone.tasks[1].context == (clone.tasks[0],)
    assert clone.tasks[0].agent is clone.agents[0] is clone.tasks[1].agent
    assert clone.agents[0].llm is not None and clone.agents[0].llm.limiter is not None
    assert clone.agents[0].llm.limiter is not llm.limiter


# -- item 7: money in crewline's own decimal context -----------------------------------

def test_cost_ignores_the_callers_decimal_context() -> None:
    price = Price(Decimal("0.000000150"), Decimal("0.000000600"), Decimal("0.000000075"),
                  known=True)
    expected = price.cost(123_457, 98_765, 1_111)
    assert expected == Decimal("0.077694225")
    with decimal.localcontext(prec=3, rounding=decimal.ROUND_FLOOR):
        assert price.cost(123_457, 98_765, 1_111) == expected


def test_usage_and_amount_sums_ignore_the_callers_decimal_context() -> None:
    a = Usage(cost=Decimal("0.0000001234567"))
    b = Usage(cost=Decimal("12.5"))
    exact = Decimal("12.5000001234567")
    rec = _record(Decimal("0.0000001234567"))
    with decimal.localcontext(prec=3):
        assert (a + b).cost == exact
        assert sum([a, b], Usage()).cost == exact
        assert Usage.from_records([rec, _record(Decimal("12.5"))]).cost == exact
        assert (Amount(cost=a.cost) + Amount(cost=b.cost)).cost == exact
        assert (Amount(cost=b.cost) - Amount(cost=a.cost)).cost == Decimal("12.4999998765433")


def test_llm_price_override_cost_in_a_low_precision_context() -> None:
    llm = LLM(model="openai/whatever", input_cost_per_token="0.0000012345",
              output_cost_per_token="0.0000067891", transport=ScriptedModel("x"))
    outside = price_of(llm).cost(1001, 999)
    with decimal.localcontext(prec=2):
        assert price_of(llm).cost(1001, 999) == outside == Decimal("0.0080180454")


def _record(cost: Decimal, *, prompt: int = 2, completion: int = 3) -> UsageRecord:
    from datetime import UTC, datetime

    return UsageRecord(id="r", run_id="run", task="t", attempt=1, agent="a", purpose="agent",
                       model="m", prompt_tokens=prompt, completion_tokens=completion,
                       cached_prompt_tokens=0, reasoning_tokens=0, cost=cost, priced=True,
                       latency_s=0.1, started_at=datetime(2026, 1, 1, tzinfo=UTC),
                       outcome="ok")


# -- item 8: total_tokens is derived ---------------------------------------------------

def test_total_tokens_is_derived_and_cannot_be_contradicted() -> None:
    usage = Usage(prompt_tokens=2, completion_tokens=3)
    assert usage.total_tokens == 5
    assert (usage + usage).total_tokens == 10
    assert usage.to_dict()["total_tokens"] == 5
    with pytest.raises(TypeError):
        Usage(prompt_tokens=2, completion_tokens=3, total_tokens=0)  # type: ignore[call-arg]


def test_usage_stays_frozen_hashable_and_picklable() -> None:
    usage = Usage(requests=1, prompt_tokens=2, completion_tokens=3, cost=Decimal("0.1"))
    with pytest.raises(AttributeError):
        usage.prompt_tokens = 9  # type: ignore[misc]
    assert hash(usage) == hash(Usage(requests=1, prompt_tokens=2, completion_tokens=3,
                                     cost=Decimal("0.10")))
    back = pickle.loads(pickle.dumps(usage))
    assert back == usage and back.total_tokens == 5
    record = _record(Decimal("0.25"))
    assert pickle.loads(pickle.dumps(record)) == record


# -- item 13: secrets in validation errors and logs -------------------------------------

def _llm_dict(**extra: object) -> dict[str, object]:
    return {"model": "openai/gpt-4o-mini", "api_key": KEY, **extra}


@pytest.mark.parametrize("build", ["llm-key-type", "llm-field", "task-validator",
                                   "crew-agents-shape", "crew-validator"])
def test_validation_errors_never_quote_an_api_key(build: str) -> None:
    from pydantic import BaseModel

    class Shape(BaseModel):
        x: int

    agent = {"role": "A", "llm": _llm_dict()}
    cases: dict[str, tuple[type[BaseModel], dict[str, object], str]] = {
        # the key itself of the wrong type: pydantic would quote it whole
        "llm-key-type": (LLM, {"model": "m", "api_key": [KEY]}, "api_key"),
        "llm-field": (Agent, {"role": "A", "llm": _llm_dict(temperature="hot")},
                      "temperature"),
        # a model validator's error quotes the whole input dict, key included
        "task-validator": (Task, {"description": "d", "agent": agent,
                                  "output_pydantic": Shape, "output_json": Shape},
                           "not both"),
        # one agent given where a list belongs: the error quotes the agent's dict
        "crew-agents-shape": (Crew, {"agents": agent, "tasks": [{"description": "go"}]},
                              "agents"),
        "crew-validator": (Crew, {"agents": [agent, {**agent, "role": "B"}],
                                  "tasks": [{"description": "go"}]}, "has no agent"),
    }
    cls, data, named = cases[build]
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    text = str(info.value) + repr(info.value)
    assert named in text  # the problem is still named
    for size in (6, 8, 12, 19):
        assert KEY[-size:] not in text
        assert KEY[:size] not in text


def test_log_masks_a_key_only_as_a_whole_token() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("crewline")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    log.configure("console", "INFO", stream=stream)
    try:
        log.get_logger().info("time taken", api_key="k", detail="time taken 3s")
        log.get_logger().info("failed", api_key=KEY, detail=f"provider said: bad key {KEY}.")
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    text = stream.getvalue()
    assert "time taken 3s" in text and "ta***en" not in text
    assert KEY not in text
    assert "bad key ***." in text


def test_mask_secrets_rules() -> None:
    assert log.mask_secrets("time taken", ["k"]) == "time taken"
    assert log.mask_secrets("a token-1234567 here", ["token-1234567"]) == "a *** here"
    assert log.mask_secrets("mytoken-12345678s", ["token-12345678"]) == "mytoken-12345678s"
    assert log.mask_secrets("key=abcdefgh1,", ["abcdefgh1"]) == "key=***,"
    assert log.mask_secrets("x", [None, ""]) == "x"
    assert structlog  # structlog renders the lines above


# -- item 15: one-sided price override of an unpriced model -----------------------------

def test_one_sided_price_override_of_an_unknown_model_warns() -> None:
    llm = LLM(model="openai/no-such-model-anywhere-h1", input_cost_per_token="0.000001",
              transport=ScriptedModel("x"))
    with pytest.warns(UserWarning, match="output_cost_per_token is not"):
        price = price_of(llm)
    assert not price.known
    known = LLM(model="openai/gpt-4o-mini", input_cost_per_token="0.000001")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert price_of(known).known  # the other side comes from litellm's table
