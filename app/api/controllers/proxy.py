"""Paid proxy routes: the POST /v1/* endpoints and their unprefixed aliases, and the `request_completed` log line.

Chat completions, completions, embeddings, responses and messages, any other POST /v1/* as a passthrough
(SPEC §8, §9, §14).
"""

from dataclasses import asdict
from typing import Any, Final

import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.response import Stream

from app.api.request_id import request_id_of
from app.domain.errors import NotFoundError
from app.domain.services.proxy import CompletedRequest, ProxyRequest
from app.domain.services.xcashu import XCashuService

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

ALIASES: Final = ("/chat/completions", "/completions", "/embeddings", "/responses", "/messages")


class LogRequestObserver:
    """Writes one `request_completed` event per proxied request; the record carries no prompt, key or token."""

    def request_completed(self, record: CompletedRequest) -> None:
        log.info("request_completed", **asdict(record))


async def _proxy(request: Request[Any, Any, Any], paid: XCashuService) -> Response[bytes] | Stream:
    path = request.scope["path"]
    relative = path[3:] if path.startswith("/v1/") else path
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
    reply = await paid.handle(
        ProxyRequest(
            path=relative,
            body=await request.body(),
            headers=headers,
            authorization=request.headers.get("authorization"),
            request_id=request_id_of(request.scope),
        )
    )
    if reply.stream is not None:
        return Stream(reply.stream, status_code=reply.status, media_type=reply.media_type, headers=dict(reply.headers))
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=dict(reply.headers))


class ProxyController(Controller):
    path = "/"
    tags = ("proxy",)

    @post(["/v1/{path:path}"], status_code=200)
    async def proxy(
        self, request: Request[Any, Any, Any], paid: NamedDependency[XCashuService]
    ) -> Response[bytes] | Stream:
        """Forward to the upstream serving `model`, billed from the reported usage (key, token or X-Cashu)."""
        return await _proxy(request, paid)

    @post(list(ALIASES), status_code=200, include_in_schema=False)
    async def alias(
        self, request: Request[Any, Any, Any], paid: NamedDependency[XCashuService]
    ) -> Response[bytes] | Stream:
        return await _proxy(request, paid)

    @get(["/v1/{path:path}"], include_in_schema=False)
    async def other_get(self) -> None:
        """GET passthrough is a non-goal: unknown GET routes under /v1 are 404."""
        msg = "Not found"
        raise NotFoundError(msg)
