"""The generic OpenAI-compatible upstream: `base_url` plus a Bearer key, one pooled httpx client per upstream."""

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final

import httpx
import msgspec

from app.domain.errors import UpstreamError, UpstreamTimeoutError
from app.domain.upstream import UpstreamRequest

CONNECT_TIMEOUT_SECONDS: Final = 10.0


class UpstreamClient(httpx.AsyncClient):
    """The pooled client of one upstream. `pool` is its transport: the hot path hands requests to it directly,
    skipping the client's per-request auth, redirect, cookie and URL-merging work; other calls use the client."""

    def __init__(self, idle_timeout_seconds: float, *, max_connections: int = 1000) -> None:
        idle = idle_timeout_seconds
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 4 or 1)
        self.pool = httpx.AsyncHTTPTransport(limits=limits, retries=0)
        # what the client would attach to each request: 10 s connect, `idle` between bytes (SPEC §2)
        self.timeouts: Final = {"connect": CONNECT_TIMEOUT_SECONDS, "read": idle, "write": idle, "pool": idle}
        timeout = httpx.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=idle, write=idle, pool=idle)
        super().__init__(transport=self.pool, timeout=timeout, follow_redirects=False, trust_env=False)


def make_upstream_client(idle_timeout_seconds: float, *, max_connections: int = 1000) -> UpstreamClient:
    """The pooled client for one upstream: 10 s connect, `idle_timeout_seconds` between bytes (SPEC §2)."""
    return UpstreamClient(idle_timeout_seconds, max_connections=max_connections)


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
        client: UpstreamClient,
        user_agent: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._provider_id = provider_id
        self._base_url = base_url.rstrip("/")
        self._client = client
        self._urls: dict[str, httpx.URL] = {}
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

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._base_url + path)
        return url

    async def send(self, request: UpstreamRequest) -> HttpUpstreamResponse:
        headers = {"content-type": "application/json", **dict(request.headers), **self._headers}
        http_request = httpx.Request(
            "POST",
            self._url(request.path),
            content=request.body,
            headers=headers,
            extensions={"timeout": self._client.timeouts},
        )
        try:
            response = await self._client.pool.handle_async_request(http_request)
        except httpx.HTTPError as exc:
            raise _translate(exc, self._provider_id) from None
        response.request = http_request
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
