"""Structured logs through structlog, on top of the standard ``logging`` module.

crewline logs to the ``crewline`` stdlib logger, so an application decides where its
records go and at what level (by default: nowhere below WARNING). ``configure()`` is
for programs that want crewline's own rendering: JSON or console lines on stderr,
chosen by ``CREWLINE_LOG=json|console`` and ``CREWLINE_LOG_LEVEL``. The run's context
(``run_id``, ``task``, ``attempt``, ``agent``) is bound with structlog's contextvars, so it
is on every line, whichever thread or asyncio task wrote it. Values under secret-looking
keys (``api_key``, ``authorization``, ...) are replaced before rendering, and so are those
same values where they appear inside other values of the line.

Masking a secret inside text replaces whole tokens only, and only values long enough to
be keys (``MIN_SECRET_LENGTH``): a plain substring replacement of ``api_key="k"`` turned
"time taken" into "time ta***en", and hid nothing worth hiding.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["MIN_SECRET_LENGTH", "configure", "get_logger", "mask_secrets", "redact_secrets"]

_SECRET_KEYS = ("api_key", "apikey", "authorization", "password", "secret", "token_value")

_configure_lock = threading.Lock()
_handler: logging.Handler | None = None

# The library convention: without configuration, crewline's records go nowhere (not to
# Python's last-resort stderr handler), until the application or ``configure()`` says so.
logging.getLogger("crewline").addHandler(logging.NullHandler())


MIN_SECRET_LENGTH = 8
"""Shorter values are not masked inside text: they are not keys, and masking them mangles."""

MASK = "***"


def mask_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with each secret replaced by ``***`` where it stands as a whole token.

    A token ends where a letter or digit run ends, so ``key=sk-abc...,`` and
    ``"Bearer sk-abc..."`` are masked, while a secret inside a longer word is left alone.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH},
                         key=len, reverse=True):
        if secret in text:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK,
                          text)
    return text


def redact_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]
                   ) -> MutableMapping[str, Any]:
    secrets: list[str] = []
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            value = event[key]
            if isinstance(value, str):
                secrets.append(value)
            elif hasattr(value, "get_secret_value"):
                secrets.append(str(value.get_secret_value()))
            event[key] = MASK
    if secrets:
        for key, value in event.items():
            if isinstance(value, str) and value != MASK:
                event[key] = mask_secrets(value, secrets)
    return event


_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_secrets,
]


class log_context:
    """structlog's ``bound_contextvars``, restored by token on exit: the same log context
    without copying every context variable on entry, which the engine would pay per run,
    task and attempt (internal; not part of ``__all__``).

    Each token is reset through its own variable, not through structlog's registry of them
    (``reset_contextvars``): structlog creates a key's variable on first use without a lock,
    so threads binding a new key at once may each create one, and the registry keeps only
    the last. A class rather than a generator-based context manager: it is entered per run,
    task and attempt, before the first request is sent."""

    __slots__ = ("_tokens", "_values")

    def __init__(self, **values: Any) -> None:
        self._values = values
        self._tokens: list[Any] = []

    def __enter__(self) -> None:
        tokens = self._tokens
        for key, value in self._values.items():
            var = _ENGINE_VARS.get(key)
            if var is None:  # not one of the engine's own keys: structlog makes its variable
                tokens.extend(structlog.contextvars.bind_contextvars(**{key: value}).values())
            else:
                tokens.append(var.set(value))

    def __exit__(self, *exc: object) -> None:
        tokens, self._tokens = self._tokens, []
        for token in reversed(tokens):
            token.var.reset(token)


# The engine's own keys get their variables now, under the import lock, so threads of a cold
# process never race to create them (see ``log_context``); ``log_context`` sets them itself
# (``bind_contextvars`` would look each one up by its prefixed name on every entry).
_ENGINE_VARS: dict[str, Any] = {}
for _key, _token in structlog.contextvars.bind_contextvars(
        **dict.fromkeys(("run_id", "task", "agent", "attempt", "delegated_by"), ...)).items():
    _token.var.reset(_token)
    _ENGINE_VARS[_key] = _token.var


def get_logger(name: str = "crewline") -> Any:
    """A structlog logger writing to the stdlib logger ``name``.

    Built whole here (no lazy proxy, which assembles a new bound logger at every call):
    the engine asks ``isEnabledFor`` on its path to each request."""
    return structlog.stdlib.BoundLogger(
        logging.getLogger(name),
        processors=[structlog.stdlib.filter_by_level, *_PRE_CHAIN,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        context={},
    )


def configure(renderer: str | None = None, level: str | int | None = None,
              stream: TextIO | None = None) -> None:
    """Render crewline's logs as JSON or console lines (idempotent: reconfigures in place)."""
    global _handler
    kind = (renderer or os.environ.get("CREWLINE_LOG") or "console").lower()
    if kind not in ("json", "console"):
        raise ValueError(f"CREWLINE_LOG must be 'json' or 'console', got {kind!r}")
    chosen = level if level is not None else os.environ.get("CREWLINE_LOG_LEVEL", "INFO")
    final: Any = (structlog.processors.JSONRenderer() if kind == "json"
                  else structlog.dev.ConsoleRenderer(colors=False))
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, final],
        foreign_pre_chain=_PRE_CHAIN)
    with _configure_lock:
        logger = logging.getLogger("crewline")
        if _handler is not None:
            logger.removeHandler(_handler)
        _handler = logging.StreamHandler(stream or sys.stderr)
        _handler.setFormatter(formatter)
        logger.addHandler(_handler)
        logger.setLevel(chosen.upper() if isinstance(chosen, str) else chosen)
        logger.propagate = False
