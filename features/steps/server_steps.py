"""Steps that set up the fake server and the process, shared by every feature."""

from __future__ import annotations

import sys
from typing import Any

from behave import given


@given("the server answers every request after {ms:d} ms")
def given_latency(context: Any, ms: int) -> None:
    context.server.latency = ms / 1000


@given("threads switch every microsecond")
def given_fast_switching(context: Any) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    context.cleanups.append(lambda: sys.setswitchinterval(old))
