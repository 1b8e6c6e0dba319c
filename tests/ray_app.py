"""What Ray workers import by reference in ``test_ray.py``: tools and a ContextVar.

Module globals, as the contract asks: a worker imports this module (``tests/`` is on its
``PYTHONPATH``) and so reads and sets the same variable the tests set on the driver.
"""

from __future__ import annotations

import os
import time
from contextvars import ContextVar
from pathlib import Path

import structlog

from crewline import tool

tenant: ContextVar[str] = ContextVar("tenant")


@tool
def whoami() -> str:
    """Say which process and tenant this runs in."""
    log = structlog.contextvars.get_contextvars()
    return f"pid={os.getpid()} tenant={tenant.get('-')} request={log.get('request_id', '-')}"


@tool
def hold(path: str) -> str:
    """Block until ``path`` exists (the test releases it), then say which process ran."""
    deadline = time.monotonic() + 120
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return f"pid={os.getpid()} released"
