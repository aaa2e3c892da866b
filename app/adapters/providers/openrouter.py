"""OpenRouter: an OpenAI-compatible upstream that identifies the node and prices its `/models` feed."""

from collections.abc import Mapping

from app.adapters.providers.openai import OpenAiUpstream, UpstreamClient


class OpenRouterUpstream(OpenAiUpstream):
    """`type: openrouter`: as `openai`, plus `HTTP-Referer: HTTP_URL` and `X-Title: NAME` (SPEC §8.2).

    Its `/models` entries carry OpenRouter `pricing`, and it is the only provider whose reported USD cost
    (`usage.cost`) may be billed.
    """

    def __init__(
        self,
        *,
        provider_id: str,
        base_url: str,
        api_key: str | None,
        client: UpstreamClient,
        user_agent: str,
        referer: str | None,
        title: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        identity = {"x-title": title}
        if referer:
            identity["http-referer"] = referer
        super().__init__(
            provider_id=provider_id,
            base_url=base_url,
            api_key=api_key,
            client=client,
            user_agent=user_agent,
            extra_headers={**identity, **(extra_headers or {})},
        )

    @property
    def trusts_reported_cost(self) -> bool:
        return True
