"""Where requests go: the ``Transport`` protocol, the reply it returns, litellm's
implementation of it (``LiteLLMTransport``) and the direct one for OpenAI-compatible
servers (``OpenAITransport``, chosen for ``openai/...`` models; see docs/providers.md).

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
from crewline.transport.openai import OpenAITransport

__all__ = [
    "DEFAULT_TRANSPORT",
    "ChatResponse",
    "LiteLLMTransport",
    "OpenAITransport",
    "ToolCallRequest",
    "Transport",
    "litellm_imported",
    "litellm_module",
    "provider_error",
]
