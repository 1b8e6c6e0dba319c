"""The common base of crewline's frozen definitions (``LLM``, ``Agent``, ``Task``, ``Crew``).

Definitions compare and hash by identity: two tasks with the same text in one crew are two
tasks, and a run keys its state by the objects themselves, never by their contents.

A definition is valid however it was made. pydantic's ``model_copy(update=...)`` and
``copy.deepcopy`` skip validation and share or deep-copy private state, so both are
redone here through validation; pickling drops the process-local private state (the rate
limiter and its locks) and recreates it fresh on the other side.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from crewline._accounting.ratelimit import RateLimiter

__all__ = ["Definition", "RateLimitedDefinition"]


class Definition(BaseModel):
    # defer_build: validators are built at first use, keeping `import crewline` fast.
    # hide_input_in_errors: a definition built from dicts may hold an api_key; a
    # ValidationError's text must never quote it (the field and the problem are named).
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid",
                              defer_build=True, hide_input_in_errors=True)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def _revalidated(self, data: Mapping[str, Any], fields_set: set[str]) -> Self:
        copied = type(self).model_validate(dict(data))
        object.__setattr__(copied, "__pydantic_fields_set__", set(fields_set))
        return copied

    def model_copy(self, *, update: Mapping[str, Any] | None = None,
                   deep: bool = False) -> Self:
        """A new definition (a new identity), validated like one built by hand.

        ``update`` goes through every field and model validator, so a bad value raises a
        ``ValidationError`` naming the field instead of making, say, a negative budget
        hold. Private state (the rate limiter) is the copy's own, fresh.
        """
        data = copy.deepcopy(self._fields()) if deep else self._fields()
        data.update(update or {})
        return self._revalidated(data, self.model_fields_set | set(update or {}))

    def __copy__(self) -> Self:
        return self.model_copy()

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        fields = {name: copy.deepcopy(value, memo) for name, value in self._fields().items()}
        copied = self._revalidated(fields, self.model_fields_set)
        if memo is not None:
            memo[id(self)] = copied
        return copied

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        # Locks and token buckets belong to this process; the other side makes its own.
        state["__pydantic_private__"] = None
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        if self.__private_attributes__:  # fresh private state, as a new object has
            object.__setattr__(self, "__pydantic_private__", {
                name: attr.get_default() for name, attr in self.__private_attributes__.items()})
        self.model_post_init(None)


class RateLimitedDefinition(Definition):
    """A definition with ``max_rpm`` / ``max_tpm``, enforced by one limiter per object.

    The limiter is the one piece of state a definition carries, on purpose: it is shared
    by everything in the process that uses this object, whichever run or thread. A copy or
    an unpickled definition is another object, with a limiter of its own.
    """

    max_rpm: int | None = Field(default=None, gt=0)
    max_tpm: int | None = Field(default=None, gt=0)

    _limiter: RateLimiter | None = PrivateAttr(default=None)

    def model_post_init(self, _context: Any) -> None:
        if self.max_rpm is not None or self.max_tpm is not None:
            self._limiter = RateLimiter(rpm=self.max_rpm, tpm=self.max_tpm)

    @property
    def limiter(self) -> RateLimiter | None:
        # Read from pydantic's private store directly: ``self._limiter`` goes through the
        # model's ``__getattr__`` (microseconds), and this is read for every request.
        private = self.__pydantic_private__
        return private.get("_limiter") if private else None
