"""Request ids: a uuid4 per request, bound to the log context and returned in `x-routstr-request-id`."""

import uuid
from typing import Any, Final

import structlog
from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

REQUEST_ID_HEADER: Final = "x-routstr-request-id"
_STATE_KEY: Final = "routstr_request_id"


def request_id_of(scope: Scope) -> str:
    """The id assigned to this request; created on first use so that every path (even a 404) has one."""
    state = scope.setdefault("state", {})
    if _STATE_KEY not in state:
        state[_STATE_KEY] = str(uuid.uuid4())
    return str(state[_STATE_KEY])


async def bind_request_context(request: Request[Any, Any, Any]) -> None:
    """before_request hook: a fresh log context carrying the request id and route."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id_of(request.scope), route=request.scope["path"])


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """before_send hook: runs for every response, including framework 404/405 and error responses."""
    if message["type"] == "http.response.start":
        MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = request_id_of(scope)
