"""The reconciler (SPEC §7.4): Cashu operations unsettled for twice the mint timeout are finished or undone."""

import dataclasses
import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from app.domain.cashu import PendingOutput, Proof, ProofStateKind
from app.domain.errors import (
    DomainError,
    MintUnreachableError,
    RedemptionPendingError,
    TokenAlreadySpentError,
    TokenPendingError,
)
from app.domain.ports import Clock, Mint, Redemptions, Wallet
from app.domain.wallet import (
    Redemption,
    RedemptionCredit,
    RedemptionState,
    RefundRecord,
    RefundState,
    unit_to_msat,
)

BATCH = 100
_S = RedemptionState
_SPENT = frozenset({ProofStateKind.SPENT})
_UNSPENT = frozenset({ProofStateKind.UNSPENT})


class Outcome(enum.StrEnum):
    """What one reconciliation did. `left` means still undecidable (mint unreachable, pending, partial answers)."""

    CREDITED = "redemption_credited"
    FAILED = "redemption_failed"
    ABORTED = "redemption_aborted"
    ISSUED = "send_issued"
    REVERSED = "send_reversed"
    MOVED = "moved_elsewhere"
    LEFT = "left_pending"


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """How many operations each outcome settled in one pass."""

    outcomes: Mapping[Outcome, int]

    def count(self, outcome: Outcome) -> int:
        return self.outcomes.get(outcome, 0)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())


class ReconcilerService:
    """One pass over the stale operations; run it on one instance at a time (a leased job).

    Every outcome goes through the same one-transaction writes as the live paths (redemption credit with its
    `deposit`, complete/cancel send with its `refund_reversal`), whose CAS and idempotency keys make it journal once
    even if a live attempt or another pass gets there too. A stale redemption is first restarted (CAS to a new
    attempt) so the reconciler's writes are fenced against the attempt it replaced.
    """

    def __init__(
        self,
        *,
        mint: Mint,
        redemptions: Redemptions,
        wallet: Wallet,
        clock: Clock,
        timeout_seconds: float,
        batch: int = BATCH,
    ) -> None:
        self._mint = mint
        self._redemptions = redemptions
        self._wallet = wallet
        self._clock = clock
        self._stale_after = timedelta(seconds=2 * timeout_seconds)
        self._batch = batch

    async def run_once(self) -> ReconcileReport:
        """Settle what can be settled now; storage errors propagate (the job logs them and tries again later)."""
        cutoff = self._clock.now() - self._stale_after
        outcomes: Counter[Outcome] = Counter()
        for row in await self._redemptions.stale(cutoff, self._batch):
            outcomes[await self._redemption(row)] += 1
        for record in await self._wallet.unsettled(cutoff, self._batch):
            outcomes[await self._send(record)] += 1
        return ReconcileReport(outcomes=dict(outcomes))

    # -- redemptions ---------------------------------------------------------------------------------------------
    async def _redemption(self, row: Redemption) -> Outcome:  # noqa: PLR0911 - one exit per mint answer
        now = self._clock.now()
        if not await self._redemptions.restart(row.token_hash, row, row.key_hash, row.fee, now):
            return Outcome.MOVED
        mine = dataclasses.replace(row, attempt_started_at=now)
        try:
            kinds = {s.state for s in await self._mint.check_state(row.mint_url, row.input_ys)}
        except DomainError:
            return Outcome.LEFT
        if kinds == _UNSPENT:  # the swap never happened: the next presentation may try again
            return await self._finish(mine, _S.ABORTED, MintUnreachableError.code, Outcome.ABORTED)
        if ProofStateKind.PENDING in kinds:
            return await self._finish(mine, _S.ABORTED, TokenPendingError.code, Outcome.ABORTED)
        if kinds != _SPENT:
            return Outcome.LEFT
        outputs = await self._redemptions.outputs(row.token_hash)
        restored = await self._restore(row.mint_url, outputs)
        if restored is None:
            return Outcome.LEFT
        net = row.amount - row.fee
        if not restored:  # spent, but not by a swap into this redemption's outputs
            return await self._finish(mine, _S.FAILED, TokenAlreadySpentError.code, Outcome.FAILED)
        if sum(p.amount for p in restored) != net:
            return Outcome.LEFT
        credit = RedemptionCredit(
            token_hash=row.token_hash,
            key_hash=row.key_hash,
            mint_url=row.mint_url,
            unit=row.unit,
            credited=unit_to_msat(net, row.unit),
            now=now,
            attempt_started_at=now,
        )
        try:
            await self._redemptions.credit(credit, restored)
        except RedemptionPendingError:
            return Outcome.MOVED  # a live attempt holding the signatures took the row over and credits them
        return Outcome.CREDITED

    async def _finish(self, row: Redemption, state: RedemptionState, code: str, outcome: Outcome) -> Outcome:
        done = await self._redemptions.finish(
            row.token_hash, state, code, self._clock.now(), attempt_started_at=row.attempt_started_at
        )
        return outcome if done else Outcome.MOVED

    # -- token sends -----------------------------------------------------------------------------------------------
    async def _send(self, record: RefundRecord) -> Outcome:  # noqa: PLR0911 - one exit per mint answer
        inputs = await self._wallet.send_inputs(record.id)
        if not inputs:
            return Outcome.LEFT
        try:
            kinds = {s.state for s in await self._mint.check_state(record.mint_url, self._mint.proof_ys(inputs))}
        except DomainError:
            return Outcome.LEFT
        if kinds == _UNSPENT:  # never swapped (or never sent): give the balance back
            done = await self._wallet.cancel_send(record.id, self._clock.now())
            return Outcome.REVERSED if done else Outcome.MOVED
        if kinds != _SPENT:
            return Outcome.LEFT
        outputs = await self._wallet.outputs(record.id)
        restored = await self._restore(record.mint_url, outputs)
        if not restored or len(restored) != len(outputs):
            return Outcome.LEFT
        fee = sum(p.amount for p in inputs) - sum(o.amount for o in outputs)
        send_secrets = _send_secrets(outputs, record.amount - fee)
        if send_secrets is None:
            return Outcome.LEFT
        sent = [p for p in restored if p.secret in send_secrets]
        change = [p for p in restored if p.secret not in send_secrets]
        issued = await self._wallet.complete_send(record.id, sent, change, fee, self._clock.now())
        return Outcome.ISSUED if issued.state is RefundState.ISSUED else Outcome.MOVED

    async def _restore(self, mint_url: str, outputs: Sequence[PendingOutput]) -> Sequence[Proof] | None:
        """NUT-09 restore; [] without outputs, None when the mint cannot answer."""
        if not outputs:
            return []
        try:
            return await self._mint.restore(mint_url, outputs)
        except DomainError:
            return None


def _send_secrets(outputs: Sequence[PendingOutput], send_amount: int) -> set[str] | None:
    """The send's outputs are persisted first, then the change's: the shortest prefix worth `send_amount`."""
    total = 0
    for index, output in enumerate(outputs):
        total += output.amount
        if total == send_amount:
            return {o.secret for o in outputs[: index + 1]}
        if total > send_amount:
            return None
    return None
