"""The balance resource: what a key holds (and the /v1/wallet/* aliases, hidden from the schema)."""

from litestar import Controller, get
from litestar.di import NamedDependency, Provide

from app.api.deps import provide_caller
from app.api.schemas import BalanceInfoResponse
from app.domain.services.accounts import Caller


class BalanceController(Controller):
    path = "/v1/balance"
    tags = ("balance",)
    dependencies = {"caller": Provide(provide_caller)}  # noqa: RUF012 - Litestar reads this class attribute

    @get(["/info", "/"])
    async def info(self, caller: NamedDependency[Caller]) -> BalanceInfoResponse:
        return BalanceInfoResponse.from_domain(caller)


class WalletAliasController(Controller):
    path = "/v1/wallet"
    tags = ("balance",)
    include_in_schema = False
    dependencies = {"caller": Provide(provide_caller)}  # noqa: RUF012 - Litestar reads this class attribute

    @get(["/info", "/"])
    async def info(self, caller: NamedDependency[Caller]) -> BalanceInfoResponse:
        return BalanceInfoResponse.from_domain(caller)
