"""Bearer refunds (SPEC §9.1, §7.3): a key's available balance sent back as a token from its own mint and unit."""

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.domain.accounts import ApiKey
from app.domain.cashu import PendingOutput, Proof, ProofStateKind, Token
from app.domain.errors import (
    BalanceTooSmallError,
    ChildKeyRefundError,
    DomainError,
    GrantNotRefundableError,
    MintError,
    MintOutcomeUnknownError,
    MintUnreachableError,
    NoBalanceError,
    RefundConflictError,
    RequestInProgressError,
    TokenAlreadySpentError,
    TokenPendingError,
)
from app.domain.ports import Clock, Mint, TokenCodec, Wallet
from app.domain.wallet import RefundKind, RefundRecord, RefundState, SendRequest, payable_units


@dataclass(frozen=True, slots=True)
class RefundToken:
    """A token handed back to a client: `amount` is its face value in `unit`."""

    token: str
    amount: int
    unit: str
    refund_id: str
    repeated: bool = False


class RefundService:
    """Debit first (a CAS on the balance), then send; a definite mint failure gives the balance back."""

    def __init__(
        self,
        *,
        wallet: Wallet,
        mint: Mint,
        codec: TokenCodec,
        clock: Clock,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._wallet = wallet
        self._mint = mint
        self._codec = codec
        self._clock = clock
        self._new_id = new_id

    async def refund(
        self, key: ApiKey, *, kind: RefundKind = RefundKind.REFUND, request_id: str | None = None
    ) -> RefundToken:
        """Send `key`'s whole available balance as a token (sat units rounded down, the rest journaled `rounding`).
        X-Cashu change passes `kind=CHANGE` and the request's id (SPEC §6.1 step 6).

        With nothing available, the previous refund token is returned again. Raises ChildKeyRefundError,
        GrantNotRefundableError, RefundConflictError (holds in flight or a concurrent change; retry),
        NoBalanceError, BalanceTooSmallError, RequestInProgressError (nothing available while an earlier send is
        unsettled), and mint errors after which the balance is restored, except MintUnreachableError for an unknown
        outcome, which the reconciler settles. When the mint reports the node's own picked proofs spent, they are
        marked `spent`, the debit is reversed and the send is tried once more with other proofs (then MintError).
        """
        if key.parent_key_hash is not None:
            msg = "Child keys cannot be refunded; refund the parent key"
            raise ChildKeyRefundError(msg)
        mint_url, unit = key.refund_mint_url, key.refund_unit
        if mint_url is None or unit is None:
            msg = "This key was issued by the operator and is not refundable"
            raise GrantNotRefundableError(msg)
        if key.reserved:
            msg = "Requests are in flight on this key; retry the refund when they finish"
            raise RefundConflictError(msg)
        if not key.available:
            return await self._previous(key)
        units, rounding = payable_units(key.available, unit)
        if units == 0:
            msg = f"The balance ({key.available.value} msat) is less than one {unit}"
            raise BalanceTooSmallError(msg, details={"available_msat": key.available.value})
        request = SendRequest(
            refund_id=self._new_id(),
            key_hash=key.key_hash,
            mint_url=mint_url,
            unit=unit,
            amount=units,
            rounding=rounding,
            expected_balance=key.balance,
            now=self._clock.now(),
            kind=kind,
            request_id=request_id,
        )
        record, inputs = await self._wallet.reserve_send(request)
        try:
            sent = await self._send(record, inputs)
        except TokenAlreadySpentError:
            # The debit was reversed in full, so the key's balance is `request.expected_balance` again.
            retry = dataclasses.replace(request, refund_id=self._new_id(), now=self._clock.now())
            record, inputs = await self._wallet.reserve_send(retry)
            try:
                sent = await self._send(record, inputs)
            except TokenAlreadySpentError:
                msg = "The mint reports the node wallet's proofs already spent; nothing was refunded"
                raise MintError(msg) from None
        return self._token(record, sent)

    async def _previous(self, key: ApiKey) -> RefundToken:
        latest = await self.latest(key.key_hash)
        if latest is None:
            msg = "Nothing to refund: the balance is 0"
            raise NoBalanceError(msg)
        return latest

    async def latest(self, key_hash: str) -> RefundToken | None:
        """The key's newest issued token (refund or change), rebuilt from its `sent` proofs; None without one.

        Raises RequestInProgressError while a send of the key is `pending` or `ambiguous`: the reconciler will issue
        it (then fetchable here) or give the balance back, so neither "nothing" nor an older token is the answer.
        """
        if await self._wallet.has_unsettled(key_hash):
            msg = "A refund of this key is being settled with the mint; retry shortly"
            raise RequestInProgressError(msg, retry_after_seconds=2)
        latest = await self._wallet.latest_refund(key_hash, self._clock.now())
        if latest is None or not latest[1]:
            return None
        record, proofs = latest
        return self._token(record, proofs, repeated=True)

    def _token(self, record: RefundRecord, proofs: Sequence[Proof], *, repeated: bool = False) -> RefundToken:
        token = Token(mint=record.mint_url, unit=record.unit, proofs=tuple(proofs))
        return RefundToken(
            token=self._codec.encode_token(token),
            amount=token.amount,
            unit=record.unit,
            refund_id=record.id,
            repeated=repeated,
        )

    async def _send(self, record: RefundRecord, inputs: Sequence[Proof]) -> Sequence[Proof]:
        """Hand out the inputs as they are when they add up exactly, else swap them into `amount - fee` plus change."""
        total = sum(p.amount for p in inputs)
        if total == record.amount:
            return await self._complete(record, inputs, (), 0)
        try:
            fee = await self._mint.input_fee(record.mint_url, inputs)
        except DomainError:
            await self._wallet.cancel_send(record.id, self._clock.now())
            raise
        if fee >= record.amount:
            await self._wallet.cancel_send(record.id, self._clock.now())
            msg = f"The mint's fee ({fee} {record.unit}) would swallow this refund"
            raise BalanceTooSmallError(msg)
        send_outputs: Sequence[PendingOutput] = ()
        try:
            send_outputs = await self._mint.prepare_outputs(record.mint_url, record.unit, record.amount - fee)
            change_outputs = await self._mint.prepare_outputs(record.mint_url, record.unit, total - record.amount)
            outputs = [*send_outputs, *change_outputs]
            await self._wallet.persist_outputs(record.id, record.mint_url, record.unit, outputs, self._clock.now())
            signed = await self._mint.swap(record.mint_url, inputs, outputs)
        except MintOutcomeUnknownError:
            return await self._reconcile(record, inputs, {o.secret for o in send_outputs})
        except TokenAlreadySpentError:
            # 11001 on the node's own inputs: the mint's word is the wallet's truth; never put them back `unspent`.
            await self._wallet.cancel_send(record.id, self._clock.now(), inputs_spent=True)
            raise
        except TokenPendingError:
            await self._wallet.mark_ambiguous(record.id, self._clock.now())
            msg = "The mint holds this refund's proofs as pending; it will be settled shortly and can be fetched then"
            raise MintUnreachableError(msg) from None
        except DomainError:
            await self._wallet.cancel_send(record.id, self._clock.now())
            raise
        sent, change = list(signed[: len(send_outputs)]), list(signed[len(send_outputs) :])
        return await self._complete(record, sent, change, fee)

    async def _complete(
        self, record: RefundRecord, sent: Sequence[Proof], change: Sequence[Proof], fee: int
    ) -> Sequence[Proof]:
        """Issue the send; if it was reversed meanwhile (the reconciler gave the debit back), hand nothing out."""
        done = await self._wallet.complete_send(record.id, sent, change, fee, self._clock.now())
        if done.state is not RefundState.ISSUED:
            msg = "The mint answered too late; nothing was refunded and the balance is unchanged"
            raise MintUnreachableError(msg)
        return sent

    async def _reconcile(
        self, record: RefundRecord, inputs: Sequence[Proof], send_secrets: set[str]
    ) -> Sequence[Proof]:
        """The swap may or may not have happened: checkstate decides; undecidable outcomes wait for the reconciler."""
        try:
            kinds = {s.state for s in await self._mint.check_state(record.mint_url, self._mint.proof_ys(inputs))}
        except DomainError:
            kinds = set()
        if kinds == {ProofStateKind.UNSPENT}:
            await self._wallet.cancel_send(record.id, self._clock.now())
            msg = "The mint did not answer; nothing was refunded and the balance is unchanged"
            raise MintUnreachableError(msg)
        if kinds == {ProofStateKind.SPENT}:
            outputs = await self._wallet.outputs(record.id)
            try:
                restored: Sequence[Proof] | None = await self._mint.restore(record.mint_url, outputs)
            except DomainError:
                restored = None
            if restored is not None and len(restored) == len(outputs):
                sent = [p for p in restored if p.secret in send_secrets]
                change = [p for p in restored if p.secret not in send_secrets]
                fee = sum(p.amount for p in inputs) - sum(p.amount for p in restored)
                return await self._complete(record, sent, change, fee)
        await self._wallet.mark_ambiguous(record.id, self._clock.now())
        msg = "The mint did not answer; the refund will be settled shortly and can be fetched again then"
        raise MintUnreachableError(msg)
