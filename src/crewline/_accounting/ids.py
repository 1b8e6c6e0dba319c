"""Random ids for runs and usage records."""

from __future__ import annotations

import os

__all__ = ["new_id"]


def new_id() -> str:
    """``uuid.uuid4().hex``, without building a ``UUID`` object.

    A run id and a usage record id are made on a streamed kickoff's way to its first token
    and its end; right after the process waited on the network, ``uuid4`` costs tens of
    microseconds there (its ``UUID`` constructor checks and converts what it is given).
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()
