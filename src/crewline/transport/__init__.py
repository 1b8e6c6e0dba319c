"""Where requests go: the ``Transport`` protocol, the reply it returns, and litellm's
implementation of it (``LiteLLMTransport``, the default).

A transport sends one chat request and returns a ``ChatResponse``; everything above it
(retries, usage records, budgets) is the same code whatever the transport.
"""

from crewline.transport.litellm import (
    DEFAULT_TRANSPORT,
    ChatResponse,
    LiteLLMTransport,
    ToolCallRequest,
    Transport,
    litellm_imported,
    litellm_module,
    provider_error,
)

__all__ = [
    "DEFAULT_TRANSPORT",
    "ChatResponse",
    "LiteLLMTransport",
    "ToolCallRequest",
    "Transport",
    "litellm_imported",
    "litellm_module",
    "provider_error",
]
