"""The balance resource: create a key from a token, top it up, refund it, read it (SPEC §9, §9.1).

`/v1/wallet/*` are the same handlers under the legacy path, hidden from the schema.
"""

from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import structlog
from litestar import Controller, Request, Response, get, post, route
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, RawBody

from app.api.deps import provide_caller
from app.api.schemas import (
    BalanceCreateRequest,
    BalanceInfoResponse,
    CreateKeyResponse,
    RefundTokenResponse,
    TopupRequest,
    TopupResponse,
)
from app.domain.accounts import LimitReset
from app.domain.errors import InvalidJsonError, InvalidRequestError
from app.domain.money import Msat
from app.domain.services.accounts import AccountService, Caller
from app.domain.services.payments import BalanceService
from app.domain.services.refunds import RefundService
from app.domain.services.xcashu import XCashuService
from app.domain.wallet import KeyTerms

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

BodyT = TypeVar("BodyT", BalanceCreateRequest, TopupRequest)


def _decode(body: bytes, kind: type[BodyT]) -> BodyT | None:
    """The optional JSON body; None when there is none. Bad JSON or fields are 400s that change nothing."""
    if not body.strip():
        return None
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(str(exc)) from None
    except msgspec.DecodeError:
        msg = "The request body is not valid JSON"
        raise InvalidJsonError(msg) from None


def _terms(data: BalanceCreateRequest | None) -> KeyTerms:
    if data is None:
        return KeyTerms()
    return KeyTerms(
        expires_at=None if data.validity_date is None else datetime.fromtimestamp(data.validity_date, tz=UTC),
        balance_limit=None if data.balance_limit_msat is None else Msat(data.balance_limit_msat),
        balance_limit_reset=None if data.balance_limit_reset is None else LimitReset(data.balance_limit_reset),
    )


class BalanceController(Controller):
    path = "/v1/balance"
    tags = ("balance",)
    dependencies = {"caller": Provide(provide_caller)}  # noqa: RUF012 - Litestar reads this class attribute

    @get(["/info", "/"])
    async def info(self, caller: NamedDependency[Caller]) -> BalanceInfoResponse:
        return BalanceInfoResponse.from_domain(caller)

    @route("/create", http_method=["GET", "POST"], status_code=200)
    async def create(
        self,
        balances: NamedDependency[BalanceService],
        body: RawBody,
        initial_balance_token: FromQuery[str | None] = None,
    ) -> CreateKeyResponse:
        data = _decode(body, BalanceCreateRequest)
        token = initial_balance_token or (data and (data.initial_balance_token or data.cashu_token)) or ""
        created = await balances.create(token, _terms(data))
        log.info("token_redeemed", key_id=created.key.key_id, balance_msat=created.key.balance.value, route="create")
        return CreateKeyResponse.from_domain(created)

    @post("/topup", status_code=200)
    async def topup(
        self,
        caller: NamedDependency[Caller],
        balances: NamedDependency[BalanceService],
        body: RawBody,
        cashu_token: FromQuery[str | None] = None,
    ) -> TopupResponse:
        data = _decode(body, TopupRequest)
        token = cashu_token or (data and data.cashu_token) or ""
        credited = await balances.topup(caller.key, token)
        log.info("token_redeemed", key_id=caller.key.key_id, credited_msat=credited.value, route="topup")
        return TopupResponse(credited_msat=credited.value)

    @post("/refund", status_code=200)
    async def refund(
        self,
        request: Request[Any, Any, Any],
        accounts: NamedDependency[AccountService],
        refunds: NamedDependency[RefundService],
        paid: NamedDependency[XCashuService],
    ) -> Response[RefundTokenResponse]:
        """The key's available balance as a token; with `X-Cashu: <original token>`, that token's change (§9.1)."""
        x_cashu = request.headers.get("x-cashu", "").strip()
        if x_cashu:
            refund = await paid.refund(x_cashu)
            log.info("refund_issued", amount=refund.amount, unit=refund.unit, repeated=refund.repeated, x_cashu=True)
            return Response(RefundTokenResponse.from_domain(refund), headers={"x-cashu": refund.token})
        caller = await accounts.authenticate(request.headers.get("authorization"))
        refund = await refunds.refund(caller.key)
        log.info(
            "refund_issued", key_id=caller.key.key_id, amount=refund.amount, unit=refund.unit, repeated=refund.repeated
        )
        return Response(RefundTokenResponse.from_domain(refund))


class WalletAliasController(BalanceController):
    path = "/v1/wallet"
    include_in_schema = False
