"""The generic OpenAI-compatible upstream: `base_url` plus a Bearer key, one pooled httpx client per upstream."""

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final

import httpx
import msgspec

from app.domain.errors import UpstreamError, UpstreamTimeoutError
from app.domain.upstream import UpstreamRequest

CONNECT_TIMEOUT_SECONDS: Final = 10.0


def make_upstream_client(idle_timeout_seconds: float, *, max_connections: int = 1000) -> httpx.AsyncClient:
    """The pooled client for one upstream: 10 s connect, `idle_timeout_seconds` between bytes (SPEC §2)."""
    timeout = httpx.Timeout(
        connect=CONNECT_TIMEOUT_SECONDS,
        read=idle_timeout_seconds,
        write=idle_timeout_seconds,
        pool=idle_timeout_seconds,
    )
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 4 or 1)
    return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False)


def _translate(exc: httpx.HTTPError, provider_id: str) -> UpstreamError | UpstreamTimeoutError:
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return UpstreamError(f"Upstream {provider_id} is unreachable")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(f"Upstream {provider_id} timed out")
    return UpstreamError(f"Upstream {provider_id} failed: {type(exc).__name__}")


class HttpUpstreamResponse:
    """An httpx streaming response seen through the `UpstreamResponse` port."""

    __slots__ = ("_closed", "_provider_id", "_response")

    def __init__(self, response: httpx.Response, provider_id: str) -> None:
        self._response = response
        self._provider_id = provider_id
        self._closed = False

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def content_type(self) -> str | None:
        value: str | None = self._response.headers.get("content-type")
        return value

    @property
    def retry_after(self) -> str | None:
        value: str | None = self._response.headers.get("retry-after")
        return value

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise _translate(exc, self._provider_id) from None

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _translate(exc, self._provider_id) from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()


class OpenAiUpstream:
    """`type: openai`: POST `{base_url}{path}` with `Authorization: Bearer <api_key>` (SPEC §8.2).

    Sends only the client headers the request carries (already allow-listed by the domain), its own credential
    and `user-agent`; httpx adds nothing that identifies the client.
    """

    def __init__(
        self,
        *,
        provider_id: str,
        base_url: str,
        api_key: str | None,
        client: httpx.AsyncClient,
        user_agent: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._provider_id = provider_id
        self._base_url = base_url.rstrip("/")
        self._client = client
        headers = {"user-agent": user_agent, "accept-encoding": "identity", **(extra_headers or {})}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._headers: Final = headers

    @property
    def provider_id(self) -> str:
        return self._provider_id

    @property
    def trusts_reported_cost(self) -> bool:
        return False

    @property
    def base_url(self) -> str:
        return self._base_url

    async def send(self, request: UpstreamRequest) -> HttpUpstreamResponse:
        headers = {"content-type": "application/json", **dict(request.headers), **self._headers}
        http_request = self._client.build_request(
            "POST", self._base_url + request.path, content=request.body, headers=headers
        )
        try:
            response = await self._client.send(http_request, stream=True)
        except httpx.HTTPError as exc:
            raise _translate(exc, self._provider_id) from None
        return HttpUpstreamResponse(response, self._provider_id)

    async def fetch_models(self) -> Sequence[Mapping[str, object]]:
        try:
            response = await self._client.get(self._base_url + "/models", headers=self._headers)
        except httpx.HTTPError as exc:
            raise _translate(exc, self._provider_id) from None
        if response.status_code != 200:  # noqa: PLR2004
            msg = f"Upstream {self._provider_id} /models answered {response.status_code}"
            raise UpstreamError(msg)
        try:
            payload = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            msg = f"Upstream {self._provider_id} /models is not JSON"
            raise UpstreamError(msg) from None
        data = payload.get("data") if isinstance(payload, dict) else payload
        if not isinstance(data, list):
            msg = f"Upstream {self._provider_id} /models has no model list"
            raise UpstreamError(msg)
        return [item for item in data if isinstance(item, dict)]
