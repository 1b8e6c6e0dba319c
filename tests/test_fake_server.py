"""The fake server counts exactly, answers deterministically, and speaks litellm's dialect.

Every engine test compares its numbers with this server's, so these tests pin the server's
own numbers by hand, and go through litellm's real HTTP path where the engine will.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pydantic
import pytest

from crewline.testing.server import FakeLLMServer, Reply, Served, ServedTotals, ToolCall

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("LITELLM_MODE", "PRODUCTION")

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as running:
        yield running


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    import litellm as module

    module.suppress_debug_info = True
    return module


def post(server: FakeLLMServer, body: dict[str, Any] | bytes) -> tuple[int, dict[str, Any], Any]:
    """POST to the server; returns status, headers and the decoded (or raw) body."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=data,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode()


def ask(server: FakeLLMServer, text: str, **extra: Any) -> dict[str, Any]:
    status, _, body = post(
        server, {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
    )
    assert status == 200, body
    return dict(body)


def content_of(answer: dict[str, Any]) -> Any:
    return answer["choices"][0]["message"]["content"]


def test_default_reply_counts_words_plus_three_per_message(server: FakeLLMServer) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarise the [[m1]] report please"},
    ]
    status, _, answer = post(server, {"model": "openai/x", "messages": messages})

    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:8]
    assert status == 200
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "openai/x"
    assert content_of(answer) == f"Result {digest} for the request."
    assert answer["choices"][0]["finish_reason"] == "stop"
    # (3 words + 3) + (5 words + 3) = 14; the reply is 5 words.
    assert answer["usage"] == {
        "prompt_tokens": 14,
        "completion_tokens": 5,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    [served] = server.served
    assert (served.index, served.marker, served.status, served.messages) == (
        0,
        "m1",
        200,
        messages,
    )
    assert server.totals() == ServedTotals(1, 0, 14, 5, 19, 0, 0)


def test_default_reply_is_deterministic_and_never_echoes_the_marker(
    server: FakeLLMServer,
) -> None:
    first = content_of(ask(server, "Do [[alpha]] now"))
    again = content_of(ask(server, "Do [[alpha]] now"))
    other = content_of(ask(server, "Do [[beta]] now"))
    assert first == again != other
    assert "alpha" not in first and "[[" not in first


def test_prompt_counts_text_parts_and_assistant_tool_calls_but_not_tools(
    server: FakeLLMServer,
) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a b"},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                {"type": "text", "text": "c"},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"q": "x y"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "found it"},
    ]
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    _, _, answer = post(server, {"model": "m", "messages": messages, "tools": tools})
    # user: 3 words + 3; assistant: 0 + 3 + "search" 1 + '{"q":' '"x' 'y"}' 3; tool: 2 + 3
    assert answer["usage"]["prompt_tokens"] == 6 + 7 + 5
    assert server.served[0].tools == tools


def test_marker_comes_from_the_first_user_message_only(server: FakeLLMServer) -> None:
    def marker_of(*messages: dict[str, str]) -> str | None:
        post(server, {"model": "m", "messages": list(messages)})
        return server.served[-1].marker

    system = {"role": "system", "content": "[[sys]]"}
    assert marker_of(system, {"role": "user", "content": "x [[t-1.a:b_c]] [[t2]]"}) == "t-1.a:b_c"
    late = {"role": "user", "content": "[[late]]"}
    assert marker_of(system, {"role": "user", "content": "none"}, late) is None
    assert marker_of({"role": "user", "content": "[[not valid]]"}) is None


def test_substring_rule_answers_its_replies_in_turn_then_repeats_the_last(
    server: FakeLLMServer,
) -> None:
    server.add_rule("alpha", "one", Reply(content="two words"))
    seen = [content_of(ask(server, "the alpha task")) for _ in range(3)]
    assert seen == ["one", "two words", "two words"]
    assert content_of(ask(server, "beta")).startswith("Result ")
    assert [s.completion_tokens for s in server.served] == [1, 2, 2, 5]


def test_rule_matches_any_message_and_first_rule_wins(server: FakeLLMServer) -> None:
    server.add_rule("in-system", "first")
    server.add_rule(None, "catch-all")
    messages = [{"role": "system", "content": "x in-system y"}, {"role": "user", "content": "q"}]
    _, _, answer = post(server, {"model": "m", "messages": messages})
    assert content_of(answer) == "first"
    assert content_of(ask(server, "anything")) == "catch-all"


def test_callable_rule_with_times_stops_matching_once_exhausted(server: FakeLLMServer) -> None:
    seen_by_rule: list[Served] = []

    def wants_m2(request: Served) -> bool:
        seen_by_rule.append(request)
        return request.model == "m2"

    server.add_rule(wants_m2, "limited", times=2)
    server.add_rule(None, "fallback")
    answers = [
        content_of(
            post(server, {"model": "m2", "messages": [{"role": "user", "content": "hi"}]})[2]
        )
        for _ in range(3)
    ]
    assert answers == ["limited", "limited", "fallback"]
    assert seen_by_rule[0].status == 0 and seen_by_rule[0].prompt_tokens == 4
    assert len(seen_by_rule) == 2  # an exhausted rule is not consulted any more


def test_script_is_consulted_before_rules() -> None:
    scripted = FakeLLMServer(script=lambda r: "scripted" if r.marker == "s" else None)
    scripted.add_rule(None, "ruled")
    with scripted:
        assert content_of(ask(scripted, "[[s]] go")) == "scripted"
        assert content_of(ask(scripted, "[[t]] go")) == "ruled"


def test_script_that_raises_answers_500() -> None:
    def broken(request: Served) -> None:
        raise KeyError("nope")

    with FakeLLMServer(script=broken) as failing:
        status, _, body = post(failing, {"model": "m", "messages": []})
        assert status == 500 and "KeyError" in body["error"]["message"]
        assert failing.totals().failed_requests == 1


def test_max_tokens_truncates_the_content_and_reports_length(server: FakeLLMServer) -> None:
    server.add_rule(None, "a b c d e f")
    answer = ask(server, "x", max_tokens=3)
    assert content_of(answer) == "a b c"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 3
    assert ask(server, "x", max_completion_tokens=4)["usage"]["completion_tokens"] == 4
    assert content_of(ask(server, "x", max_tokens=6)) == "a b c d e f"
    assert content_of(ask(server, "x", max_tokens=2, max_completion_tokens=None)) == "a b"
    assert [s.max_tokens for s in server.served] == [3, 4, 6, 2]


def test_max_tokens_cuts_tool_call_arguments_like_a_provider(server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(tool_calls=[ToolCall("f", {"a": "b c d"}), ToolCall("g", "{}")]))
    answer = ask(server, "x", max_tokens=3)
    [call] = answer["choices"][0]["message"]["tool_calls"]
    # "f" plus the first 2 of the 4 words of '{"a": "b c d"}'; the second call is dropped.
    assert call["function"] == {"name": "f", "arguments": '{"a": "b'}
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 3


def test_reasoning_counts_inside_completion_and_within_max_tokens(server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(content="a b c d", reasoning_tokens=3, cached_prompt_tokens=2))
    answer = ask(server, "one two", max_tokens=5)
    assert content_of(answer) == "a b"
    assert answer["usage"]["completion_tokens"] == 5
    assert answer["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}
    assert answer["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    assert server.totals() == ServedTotals(1, 0, 5, 5, 10, 2, 3)


def test_usage_overrides_are_reported_as_given(server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(content="hi", prompt_tokens=100, completion_tokens=7))
    assert ask(server, "x")["usage"]["total_tokens"] == 107


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Item(pydantic.BaseModel):
    name: str
    count: int = pydantic.Field(ge=2)


class Report(pydantic.BaseModel):
    title: str
    score: float
    done: bool
    colour: Colour
    items: list[Item]
    main: Item
    note: str | None
    when: pydantic.AwareDatetime


def test_json_schema_request_gets_a_minimal_valid_instance(server: FakeLLMServer) -> None:
    schema = Report.model_json_schema()
    response_format = {"type": "json_schema", "json_schema": {"name": "R", "schema": schema}}
    content = content_of(ask(server, "report", response_format=response_format))

    report = Report.model_validate_json(content)
    assert report.colour is Colour.RED and report.main.count == 2 and report.items == []
    assert content_of(ask(server, "x", response_format={"type": "json_object"})) == "{}"
    assert server.served[0].response_format == response_format


def test_error_reply_has_openai_shape_and_retry_after(server: FakeLLMServer) -> None:
    server.add_rule("limit", Reply(status=429, retry_after=1.5, content="slow down"))
    server.add_rule("down", Reply(status=503))
    status, headers, body = post(
        server, {"model": "m", "messages": [{"role": "user", "content": "limit"}]}
    )
    assert status == 429
    assert headers["Retry-After"] == "1.5"
    assert body["error"]["message"] == "slow down"
    assert body["error"]["code"] == "rate_limit_exceeded"
    status, _, body = post(
        server, {"model": "m", "messages": [{"role": "user", "content": "down"}]}
    )
    assert status == 503 and body["error"]["type"] == "server_error"
    assert server.totals() == ServedTotals(requests=0, failed_requests=2)
    assert [s.status for s in server.served] == [429, 503]


def test_raw_body_is_sent_verbatim_as_json_content_type(server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(raw_body="this is <not> json"))
    status, headers, body = post(server, {"model": "m", "messages": []})
    assert (status, body) == (200, "this is <not> json")
    assert headers["Content-Type"].startswith("application/json")
    assert server.totals() == ServedTotals(requests=1)


def test_bad_json_and_bad_messages_answer_400_and_are_counted_as_failed(
    server: FakeLLMServer,
) -> None:
    assert post(server, b"{not json")[0] == 400
    assert post(server, {"model": "m", "messages": "hello"})[0] == 400
    assert server.totals().failed_requests == 2


def test_both_paths_are_served(server: FakeLLMServer) -> None:
    root = server.base_url.removesuffix("/v1")
    body = json.dumps({"model": "m", "messages": []}).encode()
    request = urllib.request.Request(f"{root}/v1/chat/completions", data=body)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["usage"]["prompt_tokens"] == 0
    assert len(server.served) == 1


def test_totals_filter_by_marker_and_reset_clears_everything(server: FakeLLMServer) -> None:
    server.add_rule("[[a]]", "one two")
    ask(server, "[[a]] x")
    ask(server, "[[a]] x y")
    ask(server, "[[b]] x")
    assert server.totals("a") == ServedTotals(2, 0, 5 + 6, 4, 15, 0, 0)
    assert server.totals("b").prompt_tokens == 5
    assert server.totals("zzz") == ServedTotals()
    assert server.totals().requests == 3

    server.reset()
    assert server.served == [] and server.totals() == ServedTotals()
    assert server.peak_in_flight == 0
    assert content_of(ask(server, "[[a]] x")).startswith("Result ")
    assert server.served[0].index == 0


def test_latency_holds_requests_concurrently_and_peak_is_measured() -> None:
    async def burst() -> tuple[float, FakeLLMServer, list[int]]:
        async with FakeLLMServer(latency=0.2) as server, aiohttp.ClientSession() as session:
            payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

            async def one() -> int:
                url = f"{server.base_url}/chat/completions"
                async with session.post(url, json=payload) as response:
                    await response.read()
                    return response.status

            started = time.perf_counter()
            statuses = await asyncio.gather(*(one() for _ in range(20)))
            return time.perf_counter() - started, server, statuses

    elapsed, server, statuses = asyncio.run(burst())
    assert statuses == [200] * 20
    assert server.peak_in_flight == 20 and server.in_flight == 0
    assert 0.2 <= elapsed < 1.5
    assert [s.index for s in server.served] == list(range(20))


def test_latency_and_delay_are_settable(server: FakeLLMServer) -> None:
    server.latency = 0.15
    server.add_rule("slow", Reply(delay=0.2))
    started = time.perf_counter()
    ask(server, "quick")
    middle = time.perf_counter()
    ask(server, "slow")
    assert 0.15 <= middle - started < 1.0
    assert 0.35 <= time.perf_counter() - middle < 1.5
    with pytest.raises(ValueError, match="latency"):
        server.latency = -1


def test_request_abandoned_by_the_client_is_recorded_as_499(server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(delay=5))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode()
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        urllib.request.urlopen(request, timeout=0.3)
    assert server.wait_idle(timeout=3)
    [served] = server.served
    assert served.status == 499 and served.prompt_tokens == 0
    assert server.totals() == ServedTotals(failed_requests=1)


def test_context_manager_binds_a_port_and_closes_it_on_exit() -> None:
    with FakeLLMServer() as server:
        port = server.port
        assert server.base_url == f"http://127.0.0.1:{port}/v1"
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    server.stop()  # stopping a stopped server is harmless
    with server:  # and it can start again
        assert ask(server, "again")["usage"]["prompt_tokens"] == 4


def test_port_in_use_raises_from_start() -> None:
    with FakeLLMServer() as first:
        with pytest.raises(OSError):
            FakeLLMServer(port=first.port).start()
        assert ask(first, "still fine")["usage"]["completion_tokens"] == 5


def test_litellm_completion_reports_what_the_server_served(
    server: FakeLLMServer, litellm: ModuleType
) -> None:
    server.add_rule(None, Reply(content="three word answer", cached_prompt_tokens=1))
    response = litellm.completion(
        model="openai/anything",
        api_base=server.base_url,
        api_key="sk-test",
        messages=[{"role": "user", "content": "What is [[lit]] here?"}],
        max_retries=0,
    )
    totals = server.totals("lit")
    assert response.choices[0].message.content == "three word answer"
    assert response.usage.prompt_tokens == totals.prompt_tokens == 7
    assert response.usage.completion_tokens == totals.completion_tokens == 3
    assert response.usage.prompt_tokens_details.cached_tokens == 1
    assert server.served[0].model == "anything"


def test_litellm_acompletion_against_a_server_on_the_same_loop(litellm: ModuleType) -> None:
    async def run() -> tuple[list[Any], FakeLLMServer]:
        async with FakeLLMServer(latency=0.05) as server:
            calls = [
                litellm.acompletion(
                    model="openai/anything",
                    api_base=server.base_url,
                    api_key="sk-test",
                    messages=[{"role": "user", "content": f"[[a{n}]] " + "w " * n}],
                    max_retries=0,
                )
                for n in range(5)
            ]
            return list(await asyncio.gather(*calls)), server

    responses, server = asyncio.run(run())
    for n, response in enumerate(responses):
        assert response.usage.prompt_tokens == server.totals(f"a{n}").prompt_tokens == 4 + n
    assert server.totals().total_tokens == sum(r.usage.total_tokens for r in responses)


def test_litellm_parses_tool_calls(server: FakeLLMServer, litellm: ModuleType) -> None:
    server.add_rule(
        "weather",
        Reply(
            tool_calls=[ToolCall("get_weather", {"city": "Paris"}), ToolCall("noop", "{}", "c9")]
        ),
        "It is sunny.",
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in Paris?"}]
    first = litellm.completion(
        model="openai/anything",
        api_base=server.base_url,
        api_key="sk-test",
        messages=messages,
        tools=tools,
        max_retries=0,
    )
    calls = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name) for c in calls] == [("call_0_0", "get_weather"), ("c9", "noop")]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    # "get_weather" '{"city":' '"Paris"}' + "noop" "{}"
    assert first.usage.completion_tokens == 5

    messages += [
        first.choices[0].message.model_dump(),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
        {"role": "tool", "tool_call_id": "c9", "content": "ok"},
    ]
    second = litellm.completion(
        model="openai/anything",
        api_base=server.base_url,
        api_key="sk-test",
        messages=messages,
        tools=tools,
        max_retries=0,
    )
    assert second.choices[0].message.content == "It is sunny."
    # user 3+3; assistant 0+3+5 from its tool calls; tools 1+3 and 1+3
    assert second.usage.prompt_tokens == server.served[1].prompt_tokens == 6 + 8 + 4 + 4


def test_litellm_sees_429_as_rate_limit_error(server: FakeLLMServer, litellm: ModuleType) -> None:
    server.add_rule(None, Reply(status=429, retry_after=2, content="Rate limit reached"))
    with pytest.raises(litellm.RateLimitError) as caught:
        litellm.completion(
            model="openai/anything",
            api_base=server.base_url,
            api_key="sk-test",
            messages=[{"role": "user", "content": "hi"}],
            max_retries=0,
        )
    assert caught.value.status_code == 429
    assert caught.value.litellm_response_headers["retry-after"] == "2"
    assert server.totals() == ServedTotals(failed_requests=1)


def test_litellm_stream_reports_usage_in_the_last_chunk(
    server: FakeLLMServer, litellm: ModuleType
) -> None:
    server.add_rule(None, " ".join(f"w{n}" for n in range(20)))
    chunks = list(
        litellm.completion(
            model="openai/anything",
            api_base=server.base_url,
            api_key="sk-test",
            messages=[{"role": "user", "content": "stream it"}],
            max_retries=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = next(c.usage for c in reversed(chunks) if getattr(c, "usage", None))
    assert text == " ".join(f"w{n}" for n in range(20))
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 20)
    assert server.served[0].stream and server.totals().total_tokens == 25


def test_a_stream_set_to_break_off_drops_the_connection_and_bills_what_it_sent(
    server: FakeLLMServer,
) -> None:
    server.add_rule(None, Reply(content="w0 w1 w2 w3 w4", stream_break_after=3))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}],
                       "stream": True, "stream_options": {"include_usage": True}}).encode()

    async def read() -> tuple[bytes, type[BaseException] | None]:
        received = b""
        url = f"{server.base_url}/chat/completions"
        async with aiohttp.ClientSession() as session, session.post(url, data=body) as reply:
            try:
                async for piece in reply.content.iter_any():
                    received += piece
            except aiohttp.ClientPayloadError as exc:
                return received, type(exc)
        return received, None

    received, error = asyncio.run(read())
    assert error is aiohttp.ClientPayloadError  # the body was never finished
    events = [json.loads(line[6:]) for line in received.decode().splitlines()
              if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == "w0 w1 w2" and b"[DONE]" not in received
    assert not any("usage" in e for e in events)
    [served] = server.served
    assert (served.status, served.completion_tokens, served.usage_sent) == (502, 3, False)
    with pytest.raises(ValueError, match="stream_break_after"):
        Reply(stream_break_after=-1)


def test_module_runs_as_a_process_and_prints_its_url() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "crewline.testing", "--latency", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        prefix, url = line.split(" ")
        assert prefix == "CREWLINE_FAKE_SERVER" and url.startswith("http://127.0.0.1:")
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "[[p]] a"}]})
        request = urllib.request.Request(f"{url}/chat/completions", data=body.encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["usage"]["total_tokens"] == 10
        totals_url = f"{url.removesuffix('/v1')}/_crewline/totals?marker=p"
        with urllib.request.urlopen(totals_url, timeout=10) as response:
            assert json.loads(response.read())["total_tokens"] == 10
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert process.stdout.read() == ""
