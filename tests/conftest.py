from __future__ import annotations

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest


@pytest.fixture
def fast_switching():
    """Force thread interleaving: the GIL switches every microsecond."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.fixture(scope="session")
def shared_server():
    from crewline.testing import FakeLLMServer

    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def server(shared_server):  # type: ignore[no-untyped-def]
    """The session's fake server, reset: no rules, nothing served, no latency, no gap
    between the words of a streamed answer."""
    shared_server.reset()
    shared_server.latency = 0.0
    shared_server.stream_gap = 0.0
    return shared_server
