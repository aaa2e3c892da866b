"""Paid requests by credential (SPEC §6): X-Cashu pay-per-request with change (§6.1), NUT-24 402s (§6.2), and the
X-Cashu refund (§9.1). Keys and `Bearer cashu…` go straight to the proxy; every 402 leaves here with a creq."""

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from app.domain.cashu import Token
from app.domain.creq import demand_details, payment_request
from app.domain.errors import (
    BalanceLimitExceededError,
    ChangeUnavailableError,
    DomainError,
    InsufficientBalanceError,
    InvalidCashuTokenError,
    PaymentRequiredError,
    RequestInProgressError,
    TokenAlreadySpentError,
    TokenNotFoundError,
)
from app.domain.money import Msat
from app.domain.ports import Clock, Ledger, Mint, Redemptions, TokenCodec, Wallet
from app.domain.services.accounts import bearer_credential
from app.domain.services.payments import RedemptionService
from app.domain.services.proxy import CompletedRequest, ProxyReply, ProxyRequest, RequestObserver
from app.domain.services.refunds import RefundService, RefundToken
from app.domain.wallet import RedemptionState, RefundKind, payable_units, token_api_key, token_key_hash, unit_to_msat

X_CASHU: Final = "x-cashu"
CHANGE_PENDING: Final = "x-routstr-change-pending"
CHANGE_OBJECT: Final = "routstr.change"
CHANGE_EVENT: Final = "routstr.change"
DONE: Final = b"data: [DONE]\n\n"
TYPED_ROUTES: Final = frozenset({"/responses", "/messages"})  # dialects whose events are named (`event:` lines)
_PAYMENT_DEMANDS: Final = (PaymentRequiredError, InsufficientBalanceError, BalanceLimitExceededError)


class PaidProxy(Protocol):
    """What this service needs of the proxy (ProxyService)."""

    async def handle(self, request: ProxyRequest) -> ProxyReply: ...

    async def quote(self, request: ProxyRequest) -> tuple[str | None, Msat]:
        """The request's model and the reservation `R` of its first candidate; no money moves, no storage call."""
        ...


@dataclass(frozen=True, slots=True)
class Change:
    """What an X-Cashu request hands back: `amount` in `unit`; `token` is None when nothing is owed (`amount` 0)
    or when issuing failed (`pending`: the funds stay on the token's key, recoverable with the X-Cashu refund)."""

    token: str | None
    amount: int
    unit: str
    pending: bool = False


@dataclass(frozen=True, slots=True)
class XCashuPayments:
    """The Cashu side: redemption into the token's key, sends (change, refunds) and the records behind them."""

    redemption: RedemptionService
    refunds: RefundService
    mint: Mint
    ledger: Ledger
    wallet: Wallet
    redemptions: Redemptions


@dataclass(frozen=True, slots=True)
class _Paid:
    """One redeemed X-Cashu request: where its change comes from and where it goes."""

    payments: XCashuPayments
    token: Token
    key_hash: str
    request_id: str
    model: str | None


class PaymentModeObserver:
    """Wraps the `request_completed` observer: records of X-Cashu requests get `payment_mode="x_cashu"`."""

    def __init__(self, inner: RequestObserver) -> None:
        self._inner = inner
        self._x_cashu: set[str] = set()

    def mark(self, request_id: str) -> None:
        self._x_cashu.add(request_id)

    def request_completed(self, record: CompletedRequest) -> None:
        if record.request_id in self._x_cashu:
            self._x_cashu.discard(record.request_id)
            record = replace(record, payment_mode="x_cashu")
        self._inner.request_completed(record)


def x_cashu_token(headers: Sequence[tuple[str, str]]) -> str | None:
    """The `X-Cashu` request header (any case), stripped; None when absent or blank."""
    for name, value in headers:
        if name.lower() == X_CASHU and value.strip():
            return value.strip()
    return None


class XCashuService:
    """Front of every paid request: resolves the credential order of SPEC §6 and attaches a creq to every 402.

    X-Cashu: decode and vet the token offline, price the request, refuse (402, token untouched) when the token minus
    the mint's input fee is below `R`, redeem it idempotently into `sk-sha256(token)`, proxy with that key, then
    send the key's available balance back as change (`refunds.kind=change`): in the `X-Cashu` response header, in
    the stream's change event, or as `error.refund_token` when the request failed.
    """

    def __init__(
        self,
        *,
        proxy: PaidProxy,
        codec: TokenCodec,
        clock: Clock,
        mints: Sequence[str],
        unit: str,
        payments: XCashuPayments | None = None,
        modes: PaymentModeObserver | None = None,
    ) -> None:
        self._proxy = proxy
        self._codec = codec
        self._clock = clock
        self._mints = tuple(mints)
        self._unit = unit
        self._payments = payments
        self._modes = modes

    # -- paid requests ---------------------------------------------------------------------------------------------
    async def handle(self, request: ProxyRequest) -> ProxyReply:
        """Raises the errors of ProxyService.handle; 402s carry `payment_request`. With `X-Cashu`, also the token
        errors of RedemptionService.redeem (the token is then untouched or credited, never lost)."""
        raw = x_cashu_token(request.headers)
        if raw is None:
            return await self._keyed(request)
        return await self._x_cashu(request, raw)

    async def _keyed(self, request: ProxyRequest) -> ProxyReply:
        if bearer_credential(request.authorization) is None:
            try:
                model, required = await self._proxy.quote(request)
            except DomainError:
                return await self._proxy.handle(request)  # the same refusal, with its `request_completed` record
            self._refused(request, None, model, status=402, payment_mode="key")
            demand = PaymentRequiredError(
                "Payment required: pay the X-Cashu payment request or send an API key",
                details=demand_details(required, Msat(0), model),
            )
            raise self._demand(demand, required, model)
        try:
            return await self._proxy.handle(request)
        except _PAYMENT_DEMANDS as exc:
            raise await self._with_creq(exc, request) from None

    async def _with_creq(self, exc: DomainError, request: ProxyRequest) -> DomainError:
        """Completes the 402's details (required, available, model; other details are kept) and adds the creq."""
        details = dict(exc.details or {})
        required = details.get("required_msat")
        model = details.get("model")
        if not isinstance(required, int) or not isinstance(model, str):
            quoted_model, quoted = await self._proxy.quote(request)
            model = model if isinstance(model, str) else quoted_model
            required = required if isinstance(required, int) else quoted.value
        available = details.get("available_msat")
        available_msat = Msat(available if isinstance(available, int) else 0)
        exc.details = {**details, **demand_details(Msat(required), available_msat, model)}
        return self._demand(exc, Msat(required), model)

    def _demand(self, exc: DomainError, required: Msat, model: str | None) -> DomainError:
        exc.payment_request = self._codec.encode_payment_request(
            payment_request(required, model, self._mints, self._unit)
        )
        return exc

    async def _x_cashu(self, request: ProxyRequest, raw: str) -> ProxyReply:
        payments = self._require_payments()
        model, required = await self._proxy.quote(request)  # body, model and price checks come first (SPEC §8.1)
        token = payments.redemption.check(raw)  # offline: decode, trusted mint, unit
        fee = await payments.mint.input_fee(token.mint, token.proofs)
        worth = unit_to_msat(max(token.amount - fee, 0), token.unit)
        key_hash = token_key_hash(raw)
        if worth < required:
            self._refused(request, key_hash, model, status=402)
            demand = InsufficientBalanceError(
                "The X-Cashu token is worth less than this request may cost",
                details=demand_details(required, worth, model),
            )
            raise self._demand(demand, required, model)
        redeemed = await payments.redemption.redeem(raw, key_hash=key_hash)
        if redeemed.key.available < required and redeemed.key.balance >= required:  # held by a request in flight
            msg = "A request paid with this token is still running; retry when it has finished"
            raise RequestInProgressError(msg)
        if redeemed.key.available < required:  # credited by an earlier request whose funds are gone
            msg = "This X-Cashu token was already used; fetch its change with POST /v1/balance/refund"
            raise TokenAlreadySpentError(msg, details={"hint": "POST /v1/balance/refund with X-Cashu: <token>"})
        keyed = ProxyRequest(
            path=request.path,
            body=request.body,
            headers=request.headers,
            authorization=f"Bearer {token_api_key(raw)}",
            request_id=request.request_id,
        )
        paid = _Paid(payments, token, key_hash, request.request_id, model)
        if self._modes is not None:
            self._modes.mark(request.request_id)
        try:
            reply = await self._proxy.handle(keyed)
        except DomainError as exc:
            change = await self._change(paid)
            exc.refund_token = change.token
            exc.change_pending = change.amount if change.pending else None
            if isinstance(exc, _PAYMENT_DEMANDS):
                raise await self._with_creq(exc, request) from None
            raise
        if reply.stream is None:
            change = await self._change(paid)
            return replace(reply, headers={**reply.headers, **_change_headers(change)})
        return replace(reply, stream=self._with_change(reply.stream, paid, typed=_route(request.path) in TYPED_ROUTES))

    def _refused(
        self,
        request: ProxyRequest,
        key_hash: str | None,
        model: str | None,
        *,
        status: int,
        payment_mode: str = "x_cashu",
    ) -> None:
        """The `request_completed` record of a request refused here, before the proxy saw it."""
        if self._modes is None:
            return
        self._modes.request_completed(
            CompletedRequest.refused(
                request.request_id, key_hash, model=model, status=status, duration_ms=0, payment_mode=payment_mode
            )
        )

    async def _change(self, paid: _Paid) -> Change:
        """Send the key's available balance back (sat rounded down); a failure leaves it on the key as `pending`."""
        try:
            key = await paid.payments.ledger.get_key(paid.key_hash)
        except DomainError:  # storage hiccup: whatever is owed stays on the key
            return Change(token=None, amount=0, unit=paid.token.unit, pending=True)
        unit = (key.refund_unit if key is not None else None) or paid.token.unit
        if key is None:
            return Change(token=None, amount=0, unit=unit)
        units, _ = payable_units(key.available, unit)
        if units == 0:
            return Change(token=None, amount=0, unit=unit)
        try:
            sent = await paid.payments.refunds.refund(key, kind=RefundKind.CHANGE, request_id=paid.request_id)
        except DomainError:
            return Change(token=None, amount=units, unit=unit, pending=True)
        return Change(token=sent.token, amount=sent.amount, unit=sent.unit)

    async def _with_change(self, stream: AsyncIterator[bytes], paid: _Paid, *, typed: bool) -> AsyncIterator[bytes]:
        """Relays the proxy's stream untouched and as it comes; after settlement (the final `[DONE]`, or the end of a
        typed stream) inserts the change event of SPEC §8.5. A client that leaves gets no change: the funds stay on
        the token's key for the X-Cashu refund."""
        stream_id: str | None = None
        sent_change = False
        fallback_id = f"chatcmpl-{paid.request_id}"
        try:
            async for chunk in stream:
                if stream_id is None:
                    stream_id = _stream_id(chunk)
                # `[DONE]` is written only after settlement, last, possibly joined to the events before it
                if not sent_change and chunk.endswith(DONE):
                    sent_change = True
                    if len(chunk) > len(DONE):
                        yield chunk[: -len(DONE)]
                    change = await self._change(paid)
                    yield self._change_event(change, stream_id or fallback_id, paid, typed=typed)
                    yield DONE
                    continue
                yield chunk
            if not sent_change:
                change = await self._change(paid)
                yield self._change_event(change, stream_id or fallback_id, paid, typed=typed)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    def _change_event(self, change: Change, stream_id: str, paid: _Paid, *, typed: bool) -> bytes:
        payload: dict[str, Any] = {
            "id": stream_id,
            "object": CHANGE_OBJECT,
            "created": int(self._clock.now().timestamp()),
            "model": paid.model,
            "choices": [],
            "x_cashu": change.token,
            "amount": change.amount,
            "unit": change.unit,
            "request_id": paid.request_id,
        }
        if change.pending:
            payload["pending"] = True
        data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
        return b"event: " + CHANGE_EVENT.encode() + b"\n" + data if typed else data

    # -- refund by token -------------------------------------------------------------------------------------------
    async def refund(self, raw: str) -> RefundToken:
        """`POST /v1/balance/refund` with `X-Cashu: <original token>` (SPEC §9.1).

        The key's available balance as a token; with none, the latest change (or refund) token again. Raises
        InvalidCashuTokenError (undecodable), TokenNotFoundError (never redeemed), RequestInProgressError (a hold
        is active or the redemption pending), ChangeUnavailableError (nothing left and no token issued),
        RefundConflictError (a lost CAS), and the mint errors of RefundService.refund.
        """
        payments = self._require_payments()
        raw = raw.strip()
        token = self._codec.decode_token(raw)
        key_hash = token_key_hash(raw)
        key = await payments.ledger.get_key(key_hash)
        redemption = await payments.redemptions.get(token.token_hash)
        in_flight = "A request paid with this token is in progress; retry shortly"
        if redemption is not None and redemption.state is RedemptionState.PENDING and redemption.key_hash == key_hash:
            raise RequestInProgressError(in_flight)
        if key is None:
            msg = "This token was never redeemed here"
            raise TokenNotFoundError(msg)
        if key.reserved:
            raise RequestInProgressError(in_flight)
        unit = key.refund_unit or token.unit
        units, _ = payable_units(key.available, unit)
        if units > 0:
            return await payments.refunds.refund(key)
        latest = await payments.refunds.latest(key_hash)
        if latest is None:
            msg = "Nothing is left of this token and no change was issued"
            raise ChangeUnavailableError(msg)
        return latest

    def _require_payments(self) -> XCashuPayments:
        if self._payments is None:
            msg = "Cashu payments are not available on this node"
            raise InvalidCashuTokenError(msg)
        return self._payments


def _change_headers(change: Change) -> Mapping[str, str]:
    if change.pending:
        return {CHANGE_PENDING: str(change.amount)}
    if change.token is not None:
        return {X_CASHU: change.token}
    return {}


def _route(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _stream_id(chunk: bytes) -> str | None:
    """The id of the stream an SSE event belongs to (chat chunk `id`, Responses `response.id`, Anthropic
    `message.id`), or None. Only parsed until the first id is found."""
    for line in chunk.split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        try:
            payload = json.loads(line[6:])
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        for holder in (payload, payload.get("response"), payload.get("message")):
            if isinstance(holder, dict) and isinstance(holder.get("id"), str):
                return str(holder["id"])
    return None
