"""Request-scoped providers: the calling key."""

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from app.domain.services.accounts import AccountService, Caller


async def provide_caller(request: Request[Any, Any, Any], accounts: NamedDependency[AccountService]) -> Caller:
    """The key named by the Authorization header; raises the 401 errors of AccountService.authenticate."""
    return await accounts.authenticate(request.headers.get("authorization"))
