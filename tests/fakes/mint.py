"""Mint fake: in-memory Cashu mints that issue, swap, check and restore proofs like a real one, with failure knobs."""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.adapters.cashu import crypto
from app.domain.cashu import (
    Keyset,
    MeltQuote,
    MeltResult,
    MintInfo,
    MintQuote,
    PendingOutput,
    Proof,
    ProofState,
    ProofStateKind,
    QuoteState,
    Token,
    input_fee,
    resolve_keyset_id,
    split_amount,
)
from app.domain.errors import (
    InvalidCashuTokenError,
    MintError,
    MintOutcomeUnknownError,
    MintUnreachableError,
    TokenAlreadySpentError,
    TokenPendingError,
    UnsupportedUnitError,
)

AMOUNTS = tuple(1 << i for i in range(32))


@dataclass
class FakeMintState:
    """One mint: its keysets, what it has signed and what has been spent."""

    keysets: dict[str, Keyset]
    spent: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    issued: set[str] = field(default_factory=set)
    signed: dict[str, Proof] = field(default_factory=dict)  # B_ -> proof, for restore


class FakeMint:
    """The whole Mint port in memory. Signatures are `hash_to_curve(secret)` (valid points, not real BDHKE).

    Records every call in `calls` as `(operation, mint_url)`. Knobs:
      - `unreachable`: mint URLs whose every call raises MintUnreachableError;
      - `fail_next[operation]`: an error raised by the next such call (then cleared);
      - `lose_swap_replies`: that many next swaps are applied but raise MintOutcomeUnknownError (dropped replies);
      - `drop_swap_requests`: that many next swaps are not applied and raise MintOutcomeUnknownError.
    """

    def __init__(self, mints: dict[str, int] | None = None, unit: str = "sat") -> None:
        self.unit = unit
        self.mints: dict[str, FakeMintState] = {}
        for url, fee_ppk in (mints or {}).items():
            self.add_mint(url, fee_ppk)
        self.calls: list[tuple[str, str]] = []
        self.unreachable: set[str] = set()
        self.fail_next: dict[str, Exception] = {}
        self.lose_swap_replies = 0
        self.drop_swap_requests = 0

    def add_mint(self, url: str, input_fee_ppk: int = 0) -> None:
        keyset_id = "00" + secrets.token_hex(7)
        keyset = Keyset(
            id=keyset_id, unit=self.unit, active=True, input_fee_ppk=input_fee_ppk, keys=dict.fromkeys(AMOUNTS, "")
        )
        self.mints[url] = FakeMintState(keysets={keyset_id: keyset})

    # -- test helpers ------------------------------------------------------------------------------------------------
    def issue(self, mint_url: str, amount: int, *, unit: str | None = None) -> Token:
        """A fresh token worth `amount` (powers of two) that this mint will accept."""
        state = self.mints[mint_url]
        keyset = next(iter(state.keysets.values()))
        proofs = []
        for part in split_amount(amount):
            secret = secrets.token_hex(32)
            state.issued.add(secret)
            proofs.append(Proof(amount=part, keyset_id=keyset.id, secret=secret, c=_c(secret)))
        return Token(mint=mint_url, unit=unit or self.unit, proofs=tuple(proofs))

    def is_spent(self, mint_url: str, proof: Proof) -> bool:
        return proof.secret in self.mints[mint_url].spent

    def count(self, operation: str, mint_url: str | None = None) -> int:
        return sum(1 for op, url in self.calls if op == operation and (mint_url is None or url == mint_url))

    def _enter(self, operation: str, mint_url: str) -> FakeMintState:
        self.calls.append((operation, mint_url))
        if mint_url in self.unreachable:
            msg = "The mint is unreachable"
            raise MintUnreachableError(msg, details={"mint": mint_url})
        error = self.fail_next.pop(operation, None)
        if error is not None:
            raise error
        state = self.mints.get(mint_url)
        if state is None:
            msg = "The mint is unreachable"
            raise MintUnreachableError(msg, details={"mint": mint_url})
        return state

    # -- port --------------------------------------------------------------------------------------------------------
    async def info(self, mint_url: str) -> MintInfo:
        self._enter("info", mint_url)
        return MintInfo(name="fake", version="0", nuts=frozenset({1, 2, 3, 4, 5, 7, 8, 9, 12}))

    async def keysets(self, mint_url: str) -> Sequence[Keyset]:
        return list(self._enter("keysets", mint_url).keysets.values())

    async def input_fee(self, mint_url: str, proofs: Sequence[Proof]) -> int:
        state = self._enter("input_fee", mint_url)
        resolved = self._resolve(state, proofs)
        return input_fee(resolved, {k.id: k.input_fee_ppk for k in state.keysets.values()})

    def proof_ys(self, proofs: Sequence[Proof]) -> list[str]:
        return [_c(p.secret) for p in proofs]

    async def prepare_outputs(self, mint_url: str, unit: str, amount: int) -> Sequence[PendingOutput]:
        state = self._enter("prepare_outputs", mint_url)
        keyset = self._active(state, unit)
        return [_output(keyset.id, part) for part in split_amount(amount)]

    async def blank_outputs(self, mint_url: str, unit: str, fee_reserve: int) -> Sequence[PendingOutput]:
        state = self._enter("blank_outputs", mint_url)
        keyset = self._active(state, unit)
        return [_output(keyset.id, 1) for _ in range(max(1, fee_reserve.bit_length()) if fee_reserve else 0)]

    async def swap(self, mint_url: str, inputs: Sequence[Proof], outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        state = self._enter("swap", mint_url)
        if self.drop_swap_requests:
            self.drop_swap_requests -= 1
            msg = "The mint did not answer swap; its outcome is unknown"
            raise MintOutcomeUnknownError(msg)
        resolved = self._resolve(state, inputs)
        for proof in resolved:
            if proof.secret not in state.issued or proof.c != _c(proof.secret):
                msg = "Invalid Cashu token: the mint refused it (proof not issued here)"
                raise InvalidCashuTokenError(msg)
        if any(p.secret in state.pending for p in resolved):
            msg = "The Cashu token is pending at the mint"
            raise TokenPendingError(msg)
        if any(p.secret in state.spent for p in resolved):
            msg = "The Cashu token has already been spent"
            raise TokenAlreadySpentError(msg)
        fee = input_fee(resolved, {k.id: k.input_fee_ppk for k in state.keysets.values()})
        if sum(o.amount for o in outputs) != sum(p.amount for p in resolved) - fee:
            msg = "The mint refused swap: outputs do not balance the inputs"
            raise MintError(msg)
        if len({o.secret for o in outputs}) != len(outputs) or any(o.b_ in state.signed for o in outputs):
            msg = "The mint refused swap: outputs already signed"
            raise MintError(msg)
        state.spent.update(p.secret for p in resolved)
        signed = [self._sign(state, o) for o in outputs]
        if self.lose_swap_replies:
            self.lose_swap_replies -= 1
            msg = "The mint did not answer swap; its outcome is unknown"
            raise MintOutcomeUnknownError(msg)
        return signed

    async def check_state(self, mint_url: str, ys: Sequence[str]) -> Sequence[ProofState]:
        state = self._enter("check_state", mint_url)
        spent_ys = {_c(s) for s in state.spent}
        pending_ys = {_c(s) for s in state.pending}
        return [
            ProofState(
                y=y,
                state=ProofStateKind.SPENT
                if y in spent_ys
                else ProofStateKind.PENDING
                if y in pending_ys
                else ProofStateKind.UNSPENT,
            )
            for y in ys
        ]

    async def restore(self, mint_url: str, outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        state = self._enter("restore", mint_url)
        return [state.signed[o.b_] for o in outputs if o.b_ in state.signed]

    async def create_mint_quote(self, mint_url: str, unit: str, amount: int) -> MintQuote:
        self._enter("create_mint_quote", mint_url)
        return MintQuote(
            quote_id=secrets.token_hex(8), request="lnbc1fake", amount=amount, unit=unit, state=QuoteState.PAID
        )

    async def get_mint_quote(self, mint_url: str, quote_id: str) -> MintQuote:
        self._enter("get_mint_quote", mint_url)
        return MintQuote(quote_id=quote_id, request="lnbc1fake", amount=0, unit=self.unit, state=QuoteState.PAID)

    async def mint(self, mint_url: str, quote_id: str, outputs: Sequence[PendingOutput]) -> Sequence[Proof]:
        state = self._enter("mint", mint_url)
        del quote_id
        return [self._sign(state, o) for o in outputs]

    async def create_melt_quote(self, mint_url: str, unit: str, request: str) -> MeltQuote:
        self._enter("create_melt_quote", mint_url)
        return MeltQuote(
            quote_id=secrets.token_hex(8), request=request, amount=1, fee_reserve=0, unit=unit, state=QuoteState.UNPAID
        )

    async def get_melt_quote(
        self, mint_url: str, quote_id: str, blank_outputs: Sequence[PendingOutput] = ()
    ) -> MeltResult:
        self._enter("get_melt_quote", mint_url)
        del blank_outputs
        quote = MeltQuote(quote_id=quote_id, request="", amount=1, fee_reserve=0, unit=self.unit, state=QuoteState.PAID)
        return MeltResult(quote=quote)

    async def melt(
        self, mint_url: str, quote_id: str, inputs: Sequence[Proof], blank_outputs: Sequence[PendingOutput] = ()
    ) -> MeltResult:
        state = self._enter("melt", mint_url)
        del blank_outputs
        resolved = self._resolve(state, inputs)
        if any(p.secret in state.spent for p in resolved):
            msg = "The Cashu token has already been spent"
            raise TokenAlreadySpentError(msg)
        state.spent.update(p.secret for p in resolved)
        quote = MeltQuote(quote_id=quote_id, request="", amount=1, fee_reserve=0, unit=self.unit, state=QuoteState.PAID)
        return MeltResult(quote=quote)

    # -- internals ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _resolve(state: FakeMintState, proofs: Sequence[Proof]) -> list[Proof]:
        resolved = []
        for proof in proofs:
            full = resolve_keyset_id(proof.keyset_id, state.keysets)
            if full is None:
                msg = "Invalid Cashu token: the mint does not know its keyset"
                raise InvalidCashuTokenError(msg)
            resolved.append(Proof(amount=proof.amount, keyset_id=full, secret=proof.secret, c=proof.c, dleq=proof.dleq))
        return resolved

    @staticmethod
    def _active(state: FakeMintState, unit: str) -> Keyset:
        for keyset in state.keysets.values():
            if keyset.active and keyset.unit == unit:
                return keyset
        msg = f"The mint has no active keyset for unit {unit!r}"
        raise UnsupportedUnitError(msg)

    @staticmethod
    def _sign(state: FakeMintState, output: PendingOutput) -> Proof:
        state.issued.add(output.secret)
        proof = Proof(amount=output.amount, keyset_id=output.keyset_id, secret=output.secret, c=_c(output.secret))
        state.signed[output.b_] = proof
        return proof


def _c(secret: str) -> str:
    return crypto.point_hex(crypto.secret_y(secret))


def _output(keyset_id: str, amount: int) -> PendingOutput:
    return PendingOutput(
        amount=amount,
        keyset_id=keyset_id,
        secret=secrets.token_hex(32),
        blinding_factor=secrets.token_hex(32),
        b_=secrets.token_hex(33),
    )
