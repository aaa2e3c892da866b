"""Upstream fake: scripted replies (status, content type, body chunks) and failures, recording every request."""

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from app.domain.errors import DomainError
from app.domain.upstream import UpstreamRequest


@dataclass
class ScriptedReply:
    """What the fake answers: `chunks` are yielded with `delay` seconds between them; `fail_after` raises
    `error` after that many chunks (a broken stream)."""

    status: int = 200
    content_type: str | None = "application/json"
    chunks: Sequence[bytes] = ()
    retry_after: str | None = None
    delay: float = 0.0
    fail_after: int | None = None
    error: DomainError | None = None


class FakeUpstreamResponse:
    def __init__(self, reply: ScriptedReply) -> None:
        self._reply = reply
        self.closed = False
        self.chunks_read = 0

    @property
    def status(self) -> int:
        return self._reply.status

    @property
    def content_type(self) -> str | None:
        return self._reply.content_type

    @property
    def retry_after(self) -> str | None:
        return self._reply.retry_after

    async def chunks(self) -> AsyncIterator[bytes]:
        for n, chunk in enumerate(self._reply.chunks):
            if self._reply.fail_after is not None and n >= self._reply.fail_after and self._reply.error:
                raise self._reply.error
            if self._reply.delay:
                await asyncio.sleep(self._reply.delay)
            self.chunks_read += 1
            yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeUpstream:
    """The whole Upstream port. `replies` are answered in order (the last one repeats); `fail_next` raises
    instead of answering once. `requests` and `responses` record what happened."""

    provider_id: str = "fake"
    trusts_reported_cost: bool = False
    replies: list[ScriptedReply] = field(default_factory=lambda: [ScriptedReply()])
    models: list[Mapping[str, object]] = field(default_factory=list)
    fail_next: DomainError | None = None
    requests: list[UpstreamRequest] = field(default_factory=list)
    responses: list[FakeUpstreamResponse] = field(default_factory=list)

    async def send(self, request: UpstreamRequest) -> FakeUpstreamResponse:
        self.requests.append(request)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        response = FakeUpstreamResponse(reply)
        self.responses.append(response)
        return response

    async def fetch_models(self) -> Sequence[Mapping[str, object]]:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return self.models
