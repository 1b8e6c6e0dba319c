"""The common base of crewline's frozen definitions (``LLM``, ``Agent``, ``Task``, ``Crew``).

Definitions compare and hash by identity: two tasks with the same text in one crew are two
tasks, and a run keys its state by the objects themselves, never by their contents.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from crewline._accounting.ratelimit import RateLimiter

__all__ = ["Definition", "RateLimitedDefinition"]


class Definition(BaseModel):
    # defer_build: validators are built at first use, keeping `import crewline` fast.
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid",
                              defer_build=True)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


class RateLimitedDefinition(Definition):
    """A definition with ``max_rpm`` / ``max_tpm``, enforced by one limiter per object.

    The limiter is the one piece of state a definition carries, on purpose: it is shared
    by everything in the process that uses this object, whichever run or thread.
    """

    max_rpm: int | None = Field(default=None, gt=0)
    max_tpm: int | None = Field(default=None, gt=0)

    _limiter: RateLimiter | None = PrivateAttr(default=None)

    def model_post_init(self, _context: Any) -> None:
        if self.max_rpm is not None or self.max_tpm is not None:
            self._limiter = RateLimiter(rpm=self.max_rpm, tpm=self.max_tpm)

    @property
    def limiter(self) -> RateLimiter | None:
        return self._limiter
