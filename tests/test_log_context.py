"""crewline's log context (``crewline.log.log_context``) under threads."""

from __future__ import annotations

import sys
import threading

import structlog

from crewline.log import log_context


def test_log_context_survives_threads_that_create_its_variable_at_once() -> None:
    # structlog creates a key's ContextVar on its first bind, without a lock: threads that
    # bind a new key at once can each create one, and its registry keeps the last. Resetting
    # through the registry then fails ("created by a different ContextVar"), which a cold
    # process running many crews on threads met; crewline resets through each token's own.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    errors: list[BaseException] = []
    leaked: list[object] = []
    try:
        for trial in range(300):
            key = f"crewline_test_key_{trial}"
            barrier = threading.Barrier(8)

            def work(key: str = key, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                try:
                    with log_context(**{key: threading.get_ident()}):
                        pass
                    leaked.extend(v for k, v in structlog.contextvars.get_contextvars().items()
                                  if k == key)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=work) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == [], errors[:3]
    assert leaked == []  # each thread's binding is gone once its block ends
