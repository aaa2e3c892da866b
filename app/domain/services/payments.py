"""Cashu payments in: idempotent token redemption (SPEC §7.2) and the balance create / top-up use cases (§9)."""

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from app.domain.accounts import ApiKey
from app.domain.cashu import PendingOutput, Proof, ProofStateKind, Token
from app.domain.errors import (
    DomainError,
    InvalidApiKeyError,
    InvalidCashuTokenError,
    InvalidRequestError,
    MintError,
    MintMismatchError,
    MintOutcomeUnknownError,
    MintRateLimitedError,
    MintUnreachableError,
    RedemptionPendingError,
    SwapFeesExceedAmountError,
    TokenAlreadySpentError,
    TokenPendingError,
    TokenZeroValueError,
    UnsupportedUnitError,
    UntrustedMintError,
)
from app.domain.money import Msat
from app.domain.ports import Clock, Ledger, Mint, Redemptions, TokenCodec
from app.domain.wallet import (
    KeyTerms,
    NewRedemption,
    Redemption,
    RedemptionCredit,
    RedemptionState,
    normalize_mint_url,
    token_api_key,
    token_key_hash,
    unit_to_msat,
)

Sleep = Callable[[float], Awaitable[None]]

POLL_SECONDS = 0.25
MIN_TOPUP_TOKEN_CHARS = 10
# How often an attempt holding the mint's signatures tries to take the row over after losing the credit CAS.
TAKEOVER_TRIES = 3
_TICK = timedelta(microseconds=1)
_S = RedemptionState
# Refusals after which the mint surely kept the token unspent: the claim is aborted and may be retried later.
_DEFINITE_REFUSALS = (
    InvalidCashuTokenError,
    MintUnreachableError,
    MintRateLimitedError,
    MintError,
    UnsupportedUnitError,
)


@dataclass(frozen=True, slots=True)
class MintPolicy:
    """The trusted mints (normalized, primary first) and the only unit accepted (SPEC §2)."""

    trusted_mints: tuple[str, ...]
    unit: str


@dataclass(frozen=True, slots=True)
class RedeemedToken:
    """The key a token was credited to and what it brought (`credited` msat, after the mint's input fee)."""

    key: ApiKey
    credited: Msat
    redemption: Redemption


class RedemptionService:
    """Turns a token into a key balance exactly once, however often and however concurrently it is presented.

    No process-local lock: the `redemptions` row is the claim. `sleep` and `clock` are injectable so tests need no
    real waiting; concurrent first uses poll every `poll_seconds` for up to `timeout_seconds` (the mint timeout).
    """

    def __init__(
        self,
        *,
        codec: TokenCodec,
        mint: Mint,
        redemptions: Redemptions,
        ledger: Ledger,
        clock: Clock,
        policy: MintPolicy,
        timeout_seconds: float = 30.0,
        poll_seconds: float = POLL_SECONDS,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._codec = codec
        self._mint = mint
        self._redemptions = redemptions
        self._ledger = ledger
        self._clock = clock
        self._policy = policy
        self._timeout = timedelta(seconds=timeout_seconds)
        self._poll = poll_seconds
        self._sleep = sleep

    @property
    def policy(self) -> MintPolicy:
        return self._policy

    def check(self, raw: str, *, require: tuple[str, str] | None = None) -> Token:
        """Decode and vet a token without any network call (steps 1-2).

        Raises InvalidCashuTokenError, UntrustedMintError (naming the accepted mints), UnsupportedUnitError, and
        MintMismatchError when `require` (mint, unit) is given and differs. The returned token's mint is normalized.
        """
        token = self._codec.decode_token(raw)
        mint_url = normalize_mint_url(token.mint)
        accepted = self._policy.trusted_mints
        if mint_url is None or mint_url not in accepted:
            msg = f"The token's mint is not accepted here; accepted mints: {', '.join(accepted)}"
            raise UntrustedMintError(msg, details={"accepted_mints": list(accepted)})
        if token.unit != self._policy.unit:
            msg = f"The token's unit {token.unit!r} is not accepted; use {self._policy.unit!r}"
            raise UnsupportedUnitError(msg, details={"accepted_unit": self._policy.unit})
        if require is not None and (mint_url, token.unit) != require:
            msg = f"Top-ups must come from this key's mint and unit: {require[0]} ({require[1]})"
            raise MintMismatchError(msg, details={"mint": require[0], "unit": require[1]})
        return Token(mint=mint_url, unit=token.unit, proofs=token.proofs, memo=token.memo)

    async def redeem(
        self, raw: str, *, key_hash: str, terms: KeyTerms | None = None, require: tuple[str, str] | None = None
    ) -> RedeemedToken:
        """Redeem `raw` into `key_hash` (creating the key with `terms` and the token's mint and unit if needed).

        A token already credited to this key returns that credit again; credited elsewhere or spent raises
        TokenAlreadySpentError. Raises the errors of `check`, TokenZeroValueError, SwapFeesExceedAmountError,
        TokenPendingError, MintUnreachableError (token left unspent), RedemptionPendingError (another request is
        redeeming it, or the outcome awaits reconciliation; retry later).
        """
        token = self.check(raw, require=require)
        token_hash = token.token_hash
        prior = await self._redemptions.get(token_hash)
        if prior is not None and prior.state in {_S.CREDITED, _S.FAILED}:
            return await self._settled(prior, key_hash)
        fee = await self._mint.input_fee(token.mint, token.proofs)
        if fee > token.amount:
            msg = f"The mint's input fee ({fee} {token.unit}) exceeds the token's value ({token.amount} {token.unit})"
            raise SwapFeesExceedAmountError(msg, details={"amount": token.amount, "fee": fee})
        if fee == token.amount:
            msg = "Nothing is left of this token after the mint's input fee"
            raise TokenZeroValueError(msg, details={"amount": token.amount, "fee": fee})
        claim = NewRedemption(
            token_hash=token_hash,
            key_hash=key_hash,
            mint_url=token.mint,
            unit=token.unit,
            amount=token.amount,
            fee=fee,
            input_ys=tuple(self._mint.proof_ys(token.proofs)),
            now=self._clock.now(),
        )
        row, inserted = await self._redemptions.claim(claim)
        if inserted:
            return await self._attempt(token, row, key_hash, terms or KeyTerms(), reconcile=False)
        deadline = self._clock.now() + self._timeout
        while True:
            if row.state in {_S.CREDITED, _S.FAILED}:
                return await self._settled(row, key_hash)
            now = self._clock.now()
            stale = row.state is _S.PENDING and now - row.attempt_started_at > 2 * self._timeout
            if row.state is _S.ABORTED or stale:
                if await self._redemptions.restart(token_hash, row, key_hash, fee, now):
                    restarted = await self._require(token_hash)
                    return await self._attempt(token, restarted, key_hash, terms or KeyTerms(), reconcile=True)
            elif now >= deadline:
                msg = "This token is being redeemed by another request; retry shortly"
                raise RedemptionPendingError(msg, retry_after_seconds=2)
            else:
                await self._sleep(self._poll)
            row = await self._require(token_hash)

    async def _settled(self, row: Redemption, key_hash: str) -> RedeemedToken:
        if row.state is _S.CREDITED and row.key_hash == key_hash:
            key = await self._key_after_credit(row)
            return RedeemedToken(key=key, credited=row.credited, redemption=row)
        msg = "This Cashu token has already been spent"
        raise TokenAlreadySpentError(msg)

    async def _key_after_credit(self, row: Redemption) -> ApiKey:
        key = await self._ledger.get_key(row.key_hash)
        if key is None:  # credited rows always have their key (same transaction)
            msg = "The key of this token is unknown"
            raise InvalidApiKeyError(msg)
        return key

    async def _require(self, token_hash: str) -> Redemption:
        row = await self._redemptions.get(token_hash)
        assert row is not None  # noqa: S101 - claimed above; rows are never deleted
        return row

    # -- one attempt at the mint -------------------------------------------------------------------------------------
    async def _attempt(
        self, token: Token, row: Redemption, key_hash: str, terms: KeyTerms, *, reconcile: bool
    ) -> RedeemedToken:
        """Steps 4-6 for a row this call holds in `pending`. With `reconcile`, an earlier attempt may have swapped."""
        net = row.amount - row.fee
        outputs: Sequence[PendingOutput] = await self._redemptions.outputs(row.token_hash)
        if reconcile and outputs:
            settled = await self._reconcile(token, row, outputs, key_hash, terms, swap_again=False)
            if settled is not None:
                return settled
        if sum(o.amount for o in outputs) != net or not outputs:
            try:
                outputs = await self._mint.prepare_outputs(token.mint, token.unit, net)
            except _DEFINITE_REFUSALS as exc:
                return await self._give_up(row, _S.ABORTED, exc, key_hash)
            await self._redemptions.persist_outputs(row.token_hash, token.mint, token.unit, outputs, self._clock.now())
        return await self._swap(token, row, outputs, key_hash, terms, retried=False)

    async def _swap(
        self,
        token: Token,
        row: Redemption,
        outputs: Sequence[PendingOutput],
        key_hash: str,
        terms: KeyTerms,
        *,
        retried: bool,
    ) -> RedeemedToken:
        try:
            proofs = await self._mint.swap(token.mint, token.proofs, outputs)
        except TokenAlreadySpentError:
            # Another attempt on these outputs (a restarted stale one, or the first one still in flight) may have
            # swapped them: their signatures are then restorable, and dropping them would lose the token.
            return await self._restore_or_fail(token, row, outputs, key_hash, terms)
        except TokenPendingError as exc:
            return await self._give_up(row, _S.ABORTED, exc, key_hash)
        except MintOutcomeUnknownError:
            if retried:
                msg = "The mint did not answer the swap; the token was not redeemed"
                return await self._give_up(row, _S.ABORTED, MintUnreachableError(msg), key_hash)
            settled = await self._reconcile(token, row, outputs, key_hash, terms, swap_again=True)
            assert settled is not None  # noqa: S101 - with swap_again every branch settles or raises
            return settled
        except _DEFINITE_REFUSALS as exc:
            return await self._give_up(row, _S.ABORTED, exc, key_hash)
        return await self._credit(token, row, proofs, key_hash, terms)

    async def _reconcile(
        self,
        token: Token,
        row: Redemption,
        outputs: Sequence[PendingOutput],
        key_hash: str,
        terms: KeyTerms,
        *,
        swap_again: bool,
    ) -> RedeemedToken | None:
        """Decide an unknown swap outcome from NUT-07 states; None means "all unspent, swap normally"."""
        try:
            states = await self._mint.check_state(token.mint, row.input_ys)
        except DomainError:
            msg = "The mint's answer is unknown; this token's redemption will be settled shortly, retry then"
            raise RedemptionPendingError(msg, retry_after_seconds=2) from None
        kinds = {s.state for s in states}
        if kinds == {ProofStateKind.UNSPENT}:
            if swap_again:
                return await self._swap(token, row, outputs, key_hash, terms, retried=True)
            return None
        if ProofStateKind.PENDING in kinds:
            msg = "The Cashu token is pending at the mint"
            return await self._give_up(row, _S.ABORTED, TokenPendingError(msg), key_hash)
        return await self._restore_or_fail(token, row, outputs, key_hash, terms)

    async def _restore_or_fail(
        self, token: Token, row: Redemption, outputs: Sequence[PendingOutput], key_hash: str, terms: KeyTerms
    ) -> RedeemedToken:
        """The inputs are spent: NUT-09 restore this redemption's outputs and credit them; `failed` only when the
        mint signed none of them. A partial or unknown answer leaves the row `pending` for the reconciler."""
        try:
            restored = await self._mint.restore(token.mint, outputs) if outputs else []
        except DomainError:
            msg = "The mint's answer is unknown; this token's redemption will be settled shortly, retry then"
            raise RedemptionPendingError(msg, retry_after_seconds=2) from None
        if restored and sum(p.amount for p in restored) == row.amount - row.fee:
            return await self._credit(token, row, restored, key_hash, terms)
        if restored:
            msg = "The mint returned part of this token's outputs; its redemption will be settled shortly"
            raise RedemptionPendingError(msg, retry_after_seconds=2)
        msg = "This Cashu token has already been spent"
        return await self._give_up(row, _S.FAILED, TokenAlreadySpentError(msg), key_hash)

    async def _credit(
        self, token: Token, row: Redemption, proofs: Sequence[Proof], key_hash: str, terms: KeyTerms
    ) -> RedeemedToken:
        """Credit the signed `proofs` for this attempt; if another attempt moved the row, never drop them."""
        credited = unit_to_msat(row.amount - row.fee, token.unit)
        credit = RedemptionCredit(
            token_hash=row.token_hash,
            key_hash=key_hash,
            mint_url=token.mint,
            unit=token.unit,
            credited=credited,
            now=self._clock.now(),
            terms=terms,
            attempt_started_at=row.attempt_started_at,
        )
        for _ in range(TAKEOVER_TRIES):
            try:
                key = await self._redemptions.credit(credit, proofs)
            except RedemptionPendingError:
                current = await self._require(row.token_hash)
                if current.state is _S.CREDITED:
                    return await self._settled(current, key_hash)
                # This attempt holds the mint's signatures, so its swap is the one that spent the token: whatever
                # another attempt concluded (failed, aborted, still pending), take the row over and credit them.
                now = max(self._clock.now(), current.attempt_started_at + _TICK)
                if await self._redemptions.restart(row.token_hash, current, key_hash, row.fee, now):
                    credit = dataclasses.replace(credit, now=now, attempt_started_at=now)
                continue
            final = await self._require(row.token_hash)
            return RedeemedToken(key=key, credited=credited, redemption=final)
        msg = "This token is being redeemed by another request; retry shortly"
        raise RedemptionPendingError(msg, retry_after_seconds=2)

    async def _give_up(self, row: Redemption, state: RedemptionState, exc: DomainError, key_hash: str) -> RedeemedToken:
        """End this attempt as `state` and raise `exc`; if another attempt moved the row, report its outcome."""
        now = self._clock.now()
        if await self._redemptions.finish(
            row.token_hash, state, exc.code, now, attempt_started_at=row.attempt_started_at
        ):
            raise exc
        current = await self._require(row.token_hash)
        if current.state in {_S.CREDITED, _S.FAILED}:
            return await self._settled(current, key_hash)
        msg = "This token is being redeemed by another request; retry shortly"
        raise RedemptionPendingError(msg, retry_after_seconds=2) from exc


@dataclass(frozen=True, slots=True)
class CreatedKey:
    api_key: str
    key: ApiKey


class BalanceService:
    """`/v1/balance/create` and `/v1/balance/topup`: tokens into key balances."""

    def __init__(self, redemption: RedemptionService, ledger: Ledger) -> None:
        self._redemption = redemption
        self._ledger = ledger

    async def create(self, raw_token: str, terms: KeyTerms | None = None) -> CreatedKey:
        """The key `sk-sha256(token)` holding the token's value; idempotent per token."""
        token = raw_token.strip()
        if not token:
            msg = "initial_balance_token (or cashu_token) is required"
            raise InvalidRequestError(msg)
        redeemed = await self._redemption.redeem(token, key_hash=token_key_hash(token), terms=terms)
        return CreatedKey(api_key=token_api_key(token), key=redeemed.key)

    async def topup(self, key: ApiKey, raw_token: str) -> Msat:
        """Credit the billing key of `key` with a token from its own mint and unit; returns the msat credited.

        Raises InvalidRequestError for a value that cannot be a token, MintMismatchError for another mint or unit
        (operator-issued keys have none), and the errors of `RedemptionService.redeem`.
        """
        token = raw_token.strip()
        if len(token) < MIN_TOPUP_TOKEN_CHARS or not token.startswith("cashu"):
            msg = "cashu_token must be a Cashu token (cashuA… or cashuB…)"
            raise InvalidRequestError(msg)
        billing = key if key.parent_key_hash is None else await self._ledger.get_key(key.billing_key_hash)
        if billing is None:
            msg = "The API key's parent is unknown"
            raise InvalidApiKeyError(msg)
        if billing.refund_mint_url is None or billing.refund_unit is None:
            msg = "This key was not funded from a mint, so it cannot be topped up with a token"
            raise MintMismatchError(msg)
        redeemed = await self._redemption.redeem(
            token, key_hash=billing.key_hash, require=(billing.refund_mint_url, billing.refund_unit)
        )
        return redeemed.credited
