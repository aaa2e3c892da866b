"""Anthropic: native `/messages` with `x-api-key` and `anthropic-version`, plus its OpenAI-compatible endpoint.

Chat completions go to Anthropic's OpenAI-compatible endpoint with the same key (SPEC §8.2).
"""

from app.adapters.providers.openai import HttpUpstreamResponse, OpenAiUpstream, UpstreamClient
from app.domain.upstream import UpstreamRequest

DEFAULT_ANTHROPIC_VERSION = "2023-06-01"


class AnthropicUpstream(OpenAiUpstream):
    """`type: anthropic`. Sends the key both as `x-api-key` (native API) and as a Bearer token (OpenAI-compatible
    endpoint), and `anthropic-version` unless the client chose one (that header is allow-listed)."""

    def __init__(
        self,
        *,
        provider_id: str,
        base_url: str,
        api_key: str | None,
        client: UpstreamClient,
        user_agent: str,
        anthropic_version: str = DEFAULT_ANTHROPIC_VERSION,
    ) -> None:
        super().__init__(
            provider_id=provider_id,
            base_url=base_url,
            api_key=api_key,
            client=client,
            user_agent=user_agent,
            extra_headers={"x-api-key": api_key} if api_key else None,
        )
        self._version = anthropic_version

    async def send(self, request: UpstreamRequest) -> HttpUpstreamResponse:
        if not any(name == "anthropic-version" for name, _ in request.headers):
            request = UpstreamRequest(
                path=request.path, body=request.body, headers=(*request.headers, ("anthropic-version", self._version))
            )
        return await super().send(request)
