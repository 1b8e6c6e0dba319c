"""Events from inside the task step, stamped with where they happened.

The step always runs inside a usage scope; ``notify`` takes the run id, task and attempt
from it, so no call site repeats them, and builds the event only when someone listens.
"""

from __future__ import annotations

from typing import Any

from crewline import events
from crewline._accounting.usage import current_scope

__all__ = ["notify"]


_STAMPED: dict[type[events.Event], tuple[str, ...]] = {}
"""Per event type, which of ``task`` and ``attempt`` it declares (a class fact, cached: the
class's ``model_fields`` is a pydantic property, asked on the way to every request)."""


def _stamped(event_type: type[events.Event]) -> tuple[str, ...]:
    names = _STAMPED.get(event_type)
    if names is None:
        declared = event_type.model_fields
        names = _STAMPED[event_type] = tuple(n for n in ("task", "attempt") if n in declared)
    return names


def notify(event_type: type[events.Event], **fields: Any) -> None:
    """Emit ``event_type(**fields)``, filling ``run_id``/``task``/``attempt`` from the scope."""
    if not events.listening():
        return
    scope = current_scope()
    if "run_id" not in fields:
        fields["run_id"] = scope.run_id if scope is not None else ""
    for name in _stamped(event_type):
        if name not in fields:
            fields[name] = getattr(scope, name) if scope is not None else None
    events.emit(events.make(event_type, **fields))
