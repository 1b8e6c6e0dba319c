"""Events from inside the task step, stamped with where they happened.

The step always runs inside a usage scope; ``notify`` takes the run id, task and attempt
from it, so no call site repeats them, and builds the event only when someone listens.
"""

from __future__ import annotations

from typing import Any

from crewline import events
from crewline._accounting.usage import current_scope

__all__ = ["notify"]


def notify(event_type: type[events.Event], **fields: Any) -> None:
    """Emit ``event_type(**fields)``, filling ``run_id``/``task``/``attempt`` from the scope."""
    if not events.listening():
        return
    scope = current_scope()
    fields.setdefault("run_id", scope.run_id if scope is not None else "")
    declared = event_type.model_fields
    for name in ("task", "attempt"):
        if name in declared and name not in fields:
            fields[name] = getattr(scope, name, None) if scope is not None else None
    events.emit(events.make(event_type, **fields))
