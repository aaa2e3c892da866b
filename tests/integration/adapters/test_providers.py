"""HTTP provider adapters against the real echo upstream on loopback: headers, streaming, errors, model feeds."""

import json
from collections.abc import Iterator

import pytest

from app.adapters.providers import AnthropicUpstream, OpenAiUpstream, OpenRouterUpstream, make_upstream_client
from app.domain.errors import UpstreamError, UpstreamTimeoutError
from app.domain.upstream import UpstreamRequest
from tests.support.backends import free_port
from tests.support.echo_upstream import EchoUpstream

CHAT = json.dumps({"model": "echo/echo-1", "messages": [{"role": "user", "content": "a b"}]}).encode()


@pytest.fixture
def echo() -> Iterator[EchoUpstream]:
    with EchoUpstream() as upstream:
        yield upstream


async def test_openai_upstream_sends_only_given_headers_its_key_and_user_agent(echo: EchoUpstream) -> None:
    async with make_upstream_client(5) as client:
        upstream = OpenAiUpstream(
            provider_id="p", base_url=echo.base_url, api_key="up-key", client=client, user_agent="routstr-core/9"
        )
        request = UpstreamRequest("/chat/completions", CHAT, (("openai-beta", "x"),))

        response = await upstream.send(request)
        body = json.loads(await response.read())
        await response.aclose()

    seen = echo.received[-1].headers
    assert response.status == 200
    assert body["choices"][0]["message"]["content"] == "a b"
    assert seen["authorization"] == "Bearer up-key"
    assert seen["user-agent"] == "routstr-core/9"
    assert seen["openai-beta"] == "x"
    assert set(seen) <= {
        "host",
        "content-type",
        "content-length",
        "authorization",
        "user-agent",
        "openai-beta",
        "accept",
        "accept-encoding",
        "connection",
    }


async def test_openrouter_upstream_identifies_the_node_and_trusts_reported_cost(echo: EchoUpstream) -> None:
    async with make_upstream_client(5) as client:
        upstream = OpenRouterUpstream(
            provider_id="or",
            base_url=echo.base_url,
            api_key="k",
            client=client,
            user_agent="ua",
            referer="https://node.example",
            title="My Node",
        )
        response = await upstream.send(UpstreamRequest("/chat/completions", CHAT))
        await response.aclose()
        models = await upstream.fetch_models()

    seen = echo.received[0].headers
    assert (seen["http-referer"], seen["x-title"]) == ("https://node.example", "My Node")
    assert upstream.trusts_reported_cost
    assert {m["id"] for m in models} >= {"echo/echo-1"}


async def test_anthropic_upstream_sends_api_key_and_default_version_unless_client_chose(echo: EchoUpstream) -> None:
    async with make_upstream_client(5) as client:
        upstream = AnthropicUpstream(
            provider_id="a", base_url=echo.base_url, api_key="ak", client=client, user_agent="ua"
        )
        for headers in [(), (("anthropic-version", "2099-01-01"),)]:
            response = await upstream.send(UpstreamRequest("/messages", CHAT, headers))
            await response.aclose()

    assert [r.headers["anthropic-version"] for r in echo.received] == ["2023-06-01", "2099-01-01"]
    assert {r.headers["x-api-key"] for r in echo.received} == {"ak"}


async def test_stream_chunks_arrive_incrementally(echo: EchoUpstream) -> None:
    body = json.loads(CHAT)
    body.update(stream=True, echo={"chunks": 5, "delay_ms": 20})
    async with make_upstream_client(5) as client:
        upstream = OpenAiUpstream(provider_id="p", base_url=echo.base_url, api_key=None, client=client, user_agent="u")
        response = await upstream.send(UpstreamRequest("/chat/completions", json.dumps(body).encode()))
        chunks = [chunk async for chunk in response.chunks()]
        await response.aclose()

    assert (response.content_type or "").startswith("text/event-stream")
    assert len(chunks) > 3
    assert b"".join(chunks).endswith(b"data: [DONE]\n\n")


async def test_send_maps_connection_refused_to_upstream_error() -> None:
    async with make_upstream_client(5) as client:
        upstream = OpenAiUpstream(
            provider_id="p", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key=None, client=client, user_agent="u"
        )

        with pytest.raises(UpstreamError):
            await upstream.send(UpstreamRequest("/chat/completions", CHAT))
        with pytest.raises(UpstreamError):
            await upstream.fetch_models()


async def test_send_maps_idle_timeout_to_upstream_timeout(echo: EchoUpstream) -> None:
    body = json.loads(CHAT)
    body["echo"] = {"first_byte_delay_ms": 1500}
    async with make_upstream_client(0.3) as client:
        upstream = OpenAiUpstream(provider_id="p", base_url=echo.base_url, api_key=None, client=client, user_agent="u")

        with pytest.raises(UpstreamTimeoutError):
            await upstream.send(UpstreamRequest("/chat/completions", json.dumps(body).encode()))


async def test_broken_stream_raises_upstream_error_from_chunks(echo: EchoUpstream) -> None:
    body = json.loads(CHAT)
    body.update(stream=True, echo={"chunks": 10, "break_after": 3})
    async with make_upstream_client(5) as client:
        upstream = OpenAiUpstream(provider_id="p", base_url=echo.base_url, api_key=None, client=client, user_agent="u")
        response = await upstream.send(UpstreamRequest("/chat/completions", json.dumps(body).encode()))

        with pytest.raises(UpstreamError):
            async for _ in response.chunks():
                pass
        await response.aclose()


async def test_fetch_models_raises_upstream_error_for_non_200(echo: EchoUpstream) -> None:
    echo.api_key = "required"
    async with make_upstream_client(5) as client:
        upstream = OpenAiUpstream(
            provider_id="p", base_url=echo.base_url, api_key="wrong", client=client, user_agent="u"
        )

        with pytest.raises(UpstreamError):
            await upstream.fetch_models()
