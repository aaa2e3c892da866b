"""Upstream model providers over HTTP: the generic OpenAI-compatible adapter and OpenRouter."""

from app.adapters.providers.anthropic import AnthropicUpstream
from app.adapters.providers.openai import HttpUpstreamResponse, OpenAiUpstream, UpstreamClient, make_upstream_client
from app.adapters.providers.openrouter import OpenRouterUpstream

__all__ = [
    "AnthropicUpstream",
    "HttpUpstreamResponse",
    "OpenAiUpstream",
    "OpenRouterUpstream",
    "UpstreamClient",
    "make_upstream_client",
]
