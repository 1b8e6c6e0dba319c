"""Provider failures say what happened, through litellm's real HTTP path.

A missing key, a refused connection and a timeout used to come back alike as a retryable
``status 500``; here each is told apart by the exception types under litellm's wrapper.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from crewline import LLM, Agent, Crew, DefinitionError, ProviderError, Task
from crewline.testing import FakeLLMServer, Reply, ScriptedModel
from crewline.transport.litellm import LiteLLMTransport

KEY = "sk-proj-provider-SECRET-0123456789"


def _crew(model: str = "openai/gpt-4o-mini", **llm_kw: Any) -> Crew:
    llm_kw.setdefault("num_retries", 0)
    llm = LLM(model=model, **llm_kw)
    agent = Agent(role="A", llm=llm)
    return Crew(agents=[agent], tasks=[Task(description="[[p]] go", agent=agent)])


def _kickoff(crew: Crew, mode: str) -> Any:
    if mode == "sync":
        return crew.kickoff()
    return asyncio.run(crew.kickoff_async())


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed on exit: nothing listens there


@pytest.mark.parametrize("mode", ["sync", "asyncio"])
def test_missing_api_key_is_an_auth_error_never_sent(
        server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ProviderError) as info:
        _kickoff(_crew(base_url=server.base_url, num_retries=3), mode)
    err = info.value
    assert (err.kind, err.retryable, err.sent, err.status) == ("auth", False, False, None)
    assert "never sent" in str(err) and "status 500" not in str(err)
    assert server.served == []


@pytest.mark.parametrize("mode", ["sync", "asyncio"])
def test_refused_connection_is_a_retryable_connection_error_never_sent(mode: str) -> None:
    base_url = f"http://127.0.0.1:{_refused_port()}/v1"
    with pytest.raises(ProviderError) as info:
        _kickoff(_crew(base_url=base_url, api_key=KEY), mode)
    err = info.value
    assert (err.kind, err.retryable, err.sent, err.status) == ("connection", True, False, None)


def test_unresolvable_host_is_a_connection_error_never_sent() -> None:
    with pytest.raises(ProviderError) as info:
        _crew(base_url="http://no-such-host.invalid/v1", api_key=KEY).kickoff()
    assert (info.value.kind, info.value.sent) == ("connection", False)


@pytest.mark.parametrize("mode", ["sync", "asyncio"])
def test_timeout_is_a_timeout_that_was_sent(server: FakeLLMServer, mode: str) -> None:
    server.add_rule(None, Reply(delay=5))
    with pytest.raises(ProviderError) as info:
        _kickoff(_crew(base_url=server.base_url, api_key=KEY, timeout=0.3), mode)
    err = info.value
    assert (err.kind, err.retryable, err.sent) == ("timeout", True, True)


@pytest.mark.parametrize(("status", "kind", "retryable"), [
    (401, "auth", False), (403, "auth", False), (429, "rate_limit", True),
    (503, "status", True), (400, "status", False)])
def test_http_errors_keep_the_servers_status(server: FakeLLMServer, status: int, kind: str,
                                             retryable: bool) -> None:
    server.add_rule(None, Reply(status=status, content="no"))
    with pytest.raises(ProviderError) as info:
        _crew(base_url=server.base_url, api_key=KEY).kickoff()
    err = info.value
    assert (err.status, err.kind, err.retryable, err.sent) == (status, kind, retryable, True)


def _body(**fields: Any) -> str:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                       **fields})


_CHOICE = {"index": 0, "message": {"role": "assistant", "content": "hi"},
           "finish_reason": "stop"}


@pytest.mark.parametrize("body", [_body(choices=[]), _body()], ids=["empty", "missing"])
def test_a_reply_without_choices_is_malformed_and_retried(server: FakeLLMServer,
                                                          body: str) -> None:
    server.add_rule(None, Reply(raw_body=body), times=1)
    out = _crew(base_url=server.base_url, api_key=KEY, num_retries=1,
                retry_backoff=0.01).kickoff()
    assert [r.outcome for r in out.usage_records] == ["error", "ok"]
    server.reset()
    server.add_rule(None, Reply(raw_body=body))
    with pytest.raises(ProviderError) as info:
        _crew(base_url=server.base_url, api_key=KEY).kickoff()
    assert (info.value.kind, info.value.retryable) == ("malformed", True)
    assert "IndexError" not in str(info.value)


def _send(server: FakeLLMServer) -> Any:
    return LiteLLMTransport().complete({
        "model": "openai/m", "messages": [{"role": "user", "content": "hi"}],
        "api_base": server.base_url, "api_key": KEY, "max_retries": 0})


def test_litellm_zero_filled_usage_is_no_usage(server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(raw_body=_body(choices=[_CHOICE])))  # no "usage" at all
    reply = _send(server)
    assert reply.content == "hi"
    assert not reply.usage_reported and reply.prompt_tokens == 0


def test_untrustworthy_usage_is_handed_through_unchanged(server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(raw_body=_body(choices=[_CHOICE], usage={
        "prompt_tokens": -5, "completion_tokens": 10**12, "total_tokens": 3})))
    reply = _send(server)
    assert reply.usage_reported
    assert (reply.prompt_tokens, reply.completion_tokens) == (-5, 10**12)


def test_real_usage_is_reported(server: FakeLLMServer) -> None:
    reply = _send(server)
    assert reply.usage_reported and reply.prompt_tokens == server.totals().prompt_tokens > 0


def test_provider_message_masks_the_key_as_a_whole_token_only(server: FakeLLMServer) -> None:
    server.add_rule(None, Reply(status=401, content=f"bad key {KEY}; time taken 3s"))
    with pytest.raises(ProviderError) as info:
        _crew(base_url=server.base_url, api_key=KEY).kickoff()
    assert "bad key ***; time taken 3s" in str(info.value)
    server.reset()
    server.add_rule(None, Reply(status=401, content="bad key; time taken 3s"))
    with pytest.raises(ProviderError) as info:
        _crew(base_url=server.base_url, api_key="taken").kickoff()  # too short to be a key
    assert "time taken 3s" in str(info.value)


def test_a_model_litellm_cannot_route_is_a_definition_error(server: FakeLLMServer) -> None:
    crew = _crew("my-local-model", base_url=server.base_url, api_key=KEY)
    with pytest.raises(DefinitionError, match=r"'my-local-model'.*'openai/my-local-model'"):
        crew.kickoff()
    with pytest.raises(DefinitionError, match="my-local-model"):
        asyncio.run(crew.kickoff_async())
    assert server.served == []


def test_a_custom_transport_routes_any_model_name() -> None:
    crew = _crew("my-local-model", transport=ScriptedModel("done"))
    assert crew.kickoff().raw == "done"


def test_an_unroutable_model_of_a_later_task_fails_the_kickoff_before_any_request(
        server: FakeLLMServer) -> None:
    good = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key=KEY)
    bad = LLM(model="my-local-model", base_url=server.base_url, api_key=KEY)
    first, second = Agent(role="First", llm=good), Agent(role="Second", llm=bad)
    crew = Crew(agents=[first, second], tasks=[Task(description="one", agent=first),
                                               Task(description="two", agent=second)])
    for kickoff in (crew.kickoff, lambda: asyncio.run(crew.kickoff_async())):
        with pytest.raises(DefinitionError, match="my-local-model"):
            kickoff()
    assert server.served == []  # the first task's request was never sent


def test_an_unroutable_coworker_model_fails_the_kickoff_before_any_request(
        server: FakeLLMServer) -> None:
    from crewline import Process

    good = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key=KEY)
    bad = LLM(model="my-local-model", base_url=server.base_url, api_key=KEY)
    writer = Agent(role="Writer", llm=bad)
    crew = Crew(agents=[writer], tasks=[Task(description="one")],
                process=Process.hierarchical, manager_llm=good)
    with pytest.raises(DefinitionError, match="my-local-model"):
        crew.kickoff()
    assert server.served == []  # the manager's request was never sent
