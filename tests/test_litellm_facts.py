"""What crewline relies on about litellm, checked against the installed release.

crewline supports a range of litellm releases (pyproject.toml); nox runs this file on the
lowest and the highest. Each fact here is in DESIGN.md ("litellm: facts measured on these
machines") and shapes code: the streaming path distrusts a usage chunk litellm may have
made up, crewline imports litellm with ``LITELLM_MODE=PRODUCTION``, and ``mcp`` stays a
dependency while a supported release imports it on ``tools=``. When a release changes one
of them, this file says which, instead of a user finding out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from crewline.testing import FakeLLMServer, Reply

SRC = str(Path(__file__).resolve().parents[1] / "src")
VERSION = metadata.version("litellm")

MCP_ON_TOOLS = {"1.106.2": True, "1.110.2": False}
"""Measured: does ``litellm.completion(tools=...)`` import ``mcp``? (litellm does not
install it; crewline depends on ``mcp`` while a supported release needs it)."""


def _run(code: str, *, cwd: str | None = None, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("LITELLM_MODE",)}
    full.update(PYTHONPATH=SRC, LITELLM_LOCAL_MODEL_COST_MAP="True", **env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _sse(*chunks: dict[str, object]) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_litellm_makes_up_a_stream_usage_chunk_when_the_provider_sent_none(
        server: FakeLLMServer) -> None:
    """Asked for usage, litellm invents one from its own count when the provider sends
    none; the raw SDK, on the same bytes, reports none. crewline must read usage only from
    a chunk the provider sent, so it cannot take litellm's last chunk at its word."""
    from crewline.transport.litellm import litellm_module

    head = {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    body = _sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                             "content": "hello there"},
                                      "finish_reason": None}]},
                {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    server.add_rule(None, Reply(raw_body=body))
    request = {"messages": [{"role": "user", "content": "stream it please"}], "stream": True,
               "stream_options": {"include_usage": True}}
    chunks = list(litellm_module().completion(model="openai/gpt-4o-mini",
                                              api_base=server.base_url, api_key="k",
                                              max_retries=0, **request))
    made_up = [c.usage for c in chunks if getattr(c, "usage", None) is not None]
    assert made_up and made_up[-1].prompt_tokens > 0 and made_up[-1].completion_tokens > 0

    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    raw = list(client.chat.completions.create(model="gpt-4o-mini", **request))  # type: ignore[call-overload]
    assert [c.usage for c in raw if c.usage is not None] == []
    assert len(server.served) == 2


def test_a_streamed_chunks_usage_is_read_as_getattr_reads_it(server: FakeLLMServer) -> None:
    """crewline reads each streamed chunk's usage from the pydantic model's stores, not with
    ``getattr``: litellm deletes ``usage`` from every chunk but the last, and ``getattr``
    of a missing attribute on a pydantic model raises inside it (microseconds per chunk).
    The two must agree on every chunk this release streams, with usage and without, sync
    and async, and on the openai SDK's chunks (the direct transport's)."""
    import asyncio

    import openai

    from crewline.transport.litellm import _usage_in_store, _usage_of, litellm_module

    server.add_rule(None, "one two three four")
    ask = dict(model="openai/gpt-4o-mini", api_base=server.base_url, api_key="k",
               max_retries=0, messages=[{"role": "user", "content": "stream it please"}],
               stream=True, stream_options={"include_usage": True})
    litellm = litellm_module()
    chunks = list(litellm.completion(**ask))

    async def collect() -> list[object]:
        return [c async for c in await litellm.acompletion(**ask)]

    chunks += asyncio.run(collect())
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    chunks += list(client.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o-mini", messages=ask["messages"], stream=True,
        stream_options={"include_usage": True}))
    assert all(_usage_in_store(type(c)) for c in chunks)  # the fast read is the one tested
    seen = [(_usage_of(c), getattr(c, "usage", None)) for c in chunks]
    assert all(fast is slow for fast, slow in seen)
    with_usage = [fast for fast, _ in seen if fast is not None]
    assert len(with_usage) == 3 and all(u.prompt_tokens > 0 for u in with_usage)
    assert len(seen) > 3 * 4  # chunks without usage were asked too


def test_importing_litellm_loads_a_dotenv_file_unless_production_mode(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CREWLINE_DOTENV_PROBE=loaded\n")
    probe = "import os, litellm; print(os.environ.get('CREWLINE_DOTENV_PROBE'))"
    assert _run(probe, cwd=str(tmp_path)) == "loaded"
    assert _run(probe, cwd=str(tmp_path), LITELLM_MODE="PRODUCTION") == "None"
    # crewline imports it in production mode, and leaves LITELLM_MODE as it found it
    through_crewline = """
        import os
        from crewline.transport.litellm import litellm_module
        litellm_module()
        print(os.environ.get('CREWLINE_DOTENV_PROBE'), os.environ.get('LITELLM_MODE'))
    """
    assert _run(through_crewline, cwd=str(tmp_path)) == "None None"


def test_a_tools_call_imports_mcp_as_measured_for_this_release() -> None:
    if VERSION not in MCP_ON_TOOLS:
        pytest.skip(f"litellm {VERSION} not measured: add it to MCP_ON_TOOLS")
    code = """
        import sys
        from crewline.testing import FakeLLMServer
        from crewline.transport.litellm import litellm_module
        with FakeLLMServer() as srv:
            litellm = litellm_module()
            ask = dict(model="openai/gpt-4o-mini", api_base=srv.base_url, api_key="k",
                       max_retries=0, messages=[{"role": "user", "content": "x"}])
            litellm.completion(**ask)
            plain = "mcp" in sys.modules
            litellm.completion(**ask, tools=[{"type": "function", "function": {
                "name": "add", "parameters": {"type": "object", "properties": {}}}}])
            print(plain, "mcp" in sys.modules)
    """
    assert _run(code) == f"False {MCP_ON_TOOLS[VERSION]}"


def test_the_supported_range_admits_this_release() -> None:
    """pyproject's range and the releases measured here agree (the range is what users
    install; the measured ends are what nox runs)."""
    from packaging.specifiers import SpecifierSet

    text = (Path(SRC).parent / "pyproject.toml").read_text()
    spec = next(line.strip().strip('",') for line in text.splitlines()
                if line.strip().startswith('"litellm'))
    allowed = SpecifierSet(spec.removeprefix("litellm"))
    assert VERSION in allowed
    assert all(v in allowed for v in MCP_ON_TOOLS)
