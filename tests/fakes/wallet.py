"""Wallet and Redemptions fakes: the node wallet and the token claims in memory, over an InMemoryLedger's keys."""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from app.domain.accounts import ApiKey, LedgerEntry
from app.domain.balance import next_limit_reset
from app.domain.cashu import PendingOutput, Proof
from app.domain.errors import RedemptionPendingError, RefundConflictError, WalletShortError
from app.domain.money import Msat
from app.domain.wallet import (
    NewRedemption,
    Redemption,
    RedemptionCredit,
    RedemptionState,
    RefundRecord,
    RefundState,
    SendRequest,
    WalletProofState,
    msat_per_unit,
    redemption_op_id,
    refund_op_id,
    select_proofs,
)
from tests.fakes.ledger import InMemoryLedger

_P = WalletProofState
_UNSETTLED = frozenset({RefundState.PENDING, RefundState.AMBIGUOUS})


@dataclass
class StoredProof:
    """One `cashu_proofs` row: an output (`c` empty while issuing) or a proof."""

    id: int
    mint_url: str
    unit: str
    output: PendingOutput
    state: WalletProofState
    op_id: str | None
    c: str = ""

    @property
    def proof(self) -> Proof:
        return Proof(amount=self.output.amount, keyset_id=self.output.keyset_id, secret=self.output.secret, c=self.c)


class ProofStore:
    """The shared `cashu_proofs` table of both fakes."""

    def __init__(self) -> None:
        self.rows: list[StoredProof] = []

    def add_outputs(self, op_id: str, mint_url: str, unit: str, outputs: Sequence[PendingOutput]) -> None:
        for row in self.rows:
            if row.op_id == op_id and row.state is _P.ISSUING:
                row.op_id = "stale:" + op_id
        for output in outputs:
            if any(r.output.secret == output.secret for r in self.rows):
                msg = "duplicate secret in cashu_proofs"
                raise AssertionError(msg)
            self.rows.append(StoredProof(len(self.rows) + 1, mint_url, unit, output, _P.ISSUING, op_id))

    def issuing(self, op_id: str) -> list[PendingOutput]:
        return [r.output for r in self.rows if r.op_id == op_id and r.state is _P.ISSUING]

    def sign(self, op_id: str, proofs: Sequence[Proof], state: WalletProofState) -> None:
        """Like the SQL adapter: detached (`stale:`) outputs of the op are signed too and re-attached."""
        by_secret = {p.secret: p for p in proofs}
        for row in self.rows:
            if row.op_id in {op_id, "stale:" + op_id} and row.state is _P.ISSUING and row.output.secret in by_secret:
                row.state, row.c, row.op_id = state, by_secret[row.output.secret].c, op_id

    def detach(self, op_id: str) -> None:
        """Outputs the mint never signed leave the op (`stale:` prefix), so none stays `issuing` under it."""
        for row in self.rows:
            if row.op_id == op_id and row.state is _P.ISSUING:
                row.op_id = "stale:" + op_id

    def value(self, mint_url: str, unit: str) -> int:
        return sum(
            r.output.amount
            for r in self.rows
            if r.mint_url == mint_url and r.unit == unit and r.state in {_P.UNSPENT, _P.RESERVED}
        )


def _entry(  # noqa: PLR0917 - mirrors the journal columns
    ledger: InMemoryLedger, key_hash: str, kind: str, amount_msat: int, idempotency_key: str, now: datetime
) -> None:
    if any(e.idempotency_key == idempotency_key for e in ledger.entries):
        msg = f"duplicate idempotency key {idempotency_key}"
        raise AssertionError(msg)
    ledger.entries.append(
        LedgerEntry(
            key_hash=key_hash, kind=kind, amount_msat=amount_msat, idempotency_key=idempotency_key, created_at=now
        )
    )


class InMemoryRedemptions:
    """Each method runs without awaiting, so it is atomic under asyncio like one SQL transaction.

    Records `calls` (method, token hash); `fail_next` is raised by the next call.
    """

    def __init__(self, ledger: InMemoryLedger, proofs: ProofStore | None = None) -> None:
        self.ledger = ledger
        self.proofs = proofs or ProofStore()
        self.rows: dict[str, Redemption] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_next: Exception | None = None

    def _enter(self, method: str, token_hash: str) -> None:
        self.calls.append((method, token_hash))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    async def claim(self, claim: NewRedemption) -> tuple[Redemption, bool]:
        self._enter("claim", claim.token_hash)
        if claim.token_hash in self.rows:
            return self.rows[claim.token_hash], False
        row = Redemption(
            token_hash=claim.token_hash,
            key_hash=claim.key_hash,
            mint_url=claim.mint_url,
            unit=claim.unit,
            amount=claim.amount,
            fee=claim.fee,
            credited=Msat(0),
            state=RedemptionState.PENDING,
            input_ys=claim.input_ys,
            attempt_started_at=claim.now,
            created_at=claim.now,
            updated_at=claim.now,
        )
        self.rows[claim.token_hash] = row
        return row, True

    async def get(self, token_hash: str) -> Redemption | None:
        self._enter("get", token_hash)
        return self.rows.get(token_hash)

    async def restart(self, token_hash: str, expected: Redemption, key_hash: str, fee: int, now: datetime) -> bool:
        self._enter("restart", token_hash)
        row = self.rows.get(token_hash)
        if row is None or row.state is not expected.state or row.attempt_started_at != expected.attempt_started_at:
            return False
        self.rows[token_hash] = dataclasses.replace(
            row,
            state=RedemptionState.PENDING,
            key_hash=key_hash,
            fee=fee,
            error_code=None,
            attempt_started_at=now,
            updated_at=now,
        )
        return True

    async def persist_outputs(
        self, token_hash: str, mint_url: str, unit: str, outputs: Sequence[PendingOutput], now: datetime
    ) -> None:
        self._enter("persist_outputs", token_hash)
        del now
        self.proofs.add_outputs(redemption_op_id(token_hash), mint_url, unit, outputs)

    async def outputs(self, token_hash: str) -> Sequence[PendingOutput]:
        self._enter("outputs", token_hash)
        return self.proofs.issuing(redemption_op_id(token_hash))

    async def credit(self, credit: RedemptionCredit, proofs: Sequence[Proof]) -> ApiKey:
        self._enter("credit", credit.token_hash)
        row = self.rows.get(credit.token_hash)
        fenced = credit.attempt_started_at is not None and row is not None
        if (
            row is None
            or row.state is not RedemptionState.PENDING
            or (fenced and row.attempt_started_at != credit.attempt_started_at)
        ):
            msg = "The token is being redeemed by another request"
            raise RedemptionPendingError(msg)
        self.rows[credit.token_hash] = dataclasses.replace(
            row,
            state=RedemptionState.CREDITED,
            credited=credit.credited,
            key_hash=credit.key_hash,
            updated_at=credit.now,
        )
        op_id = redemption_op_id(credit.token_hash)
        self.proofs.sign(op_id, proofs, _P.UNSPENT)
        self.proofs.detach(op_id)
        key = self.ledger.keys.get(credit.key_hash)
        if key is None:
            terms = credit.terms
            key = ApiKey(
                key_hash=credit.key_hash,
                balance=credit.credited,
                reserved=Msat(0),
                total_spent=Msat(0),
                total_requests=0,
                created_at=credit.now,
                expires_at=terms.expires_at,
                refund_address=terms.refund_address,
                refund_mint_url=credit.mint_url,
                refund_unit=credit.unit,
                balance_limit=terms.balance_limit,
                balance_limit_reset=terms.balance_limit_reset,
                limit_reset_at=None
                if terms.balance_limit_reset is None
                else next_limit_reset(terms.balance_limit_reset, credit.now),
            )
        else:
            key = dataclasses.replace(key, balance=key.balance + credit.credited)
        self.ledger.keys[credit.key_hash] = key
        _entry(self.ledger, credit.key_hash, "deposit", credit.credited.value, op_id, credit.now)
        return key

    async def finish(
        self,
        token_hash: str,
        state: RedemptionState,
        error_code: str | None,
        now: datetime,
        *,
        attempt_started_at: datetime | None = None,
    ) -> bool:
        self._enter("finish", token_hash)
        row = self.rows.get(token_hash)
        if row is None or row.state is not RedemptionState.PENDING:
            return False
        if attempt_started_at is not None and row.attempt_started_at != attempt_started_at:
            return False
        self.rows[token_hash] = dataclasses.replace(row, state=state, error_code=error_code, updated_at=now)
        return True

    async def stale(self, started_before: datetime, limit: int = 100) -> Sequence[Redemption]:
        self._enter("stale", "")
        rows = [
            r
            for r in self.rows.values()
            if r.state is RedemptionState.PENDING and r.attempt_started_at < started_before
        ]
        return sorted(rows, key=lambda r: (r.attempt_started_at, r.token_hash))[:limit]


class InMemoryWallet:
    """The Wallet port in memory over the same ProofStore; atomic per call like InMemoryRedemptions.

    Records `calls` (method, refund id or key hash); `fail_next` is raised by the next call.
    """

    def __init__(self, ledger: InMemoryLedger, proofs: ProofStore | None = None) -> None:
        self.ledger = ledger
        self.proofs = proofs or ProofStore()
        self.refunds: dict[str, RefundRecord] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_next: Exception | None = None

    def _enter(self, method: str, argument: str) -> None:
        self.calls.append((method, argument))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    def add_proofs(self, mint_url: str, unit: str, proofs: Sequence[Proof]) -> None:
        """Seed unspent proofs (e.g. from FakeMint.issue)."""
        for proof in proofs:
            output = PendingOutput(
                amount=proof.amount, keyset_id=proof.keyset_id, secret=proof.secret, blinding_factor="", b_=""
            )
            self.proofs.rows.append(
                StoredProof(len(self.proofs.rows) + 1, mint_url, unit, output, _P.UNSPENT, None, proof.c)
            )

    async def reserve_send(self, request: SendRequest) -> tuple[RefundRecord, Sequence[Proof]]:
        self._enter("reserve_send", request.refund_id)
        key = self.ledger.keys.get(request.key_hash)
        debit = request.debit
        if key is None or key.balance != request.expected_balance or key.reserved or key.balance < debit:
            msg = "Requests are in flight or the balance changed; retry the refund shortly"
            raise RefundConflictError(msg)
        candidates = {
            r.id: r.output.amount
            for r in self.proofs.rows
            if r.mint_url == request.mint_url and r.unit == request.unit and r.state is _P.UNSPENT
        }
        chosen = select_proofs(candidates, request.amount)
        if chosen is None:
            msg = "The node wallet holds too little"
            raise WalletShortError(msg)
        op_id = refund_op_id(request.refund_id)
        inputs = []
        for row in self.proofs.rows:
            if row.id in chosen:
                row.state, row.op_id = _P.RESERVED, op_id
                inputs.append(row.proof)
        self.ledger.keys[key.key_hash] = dataclasses.replace(key, balance=key.balance - debit)
        record = RefundRecord(
            id=request.refund_id,
            key_hash=request.key_hash,
            kind=request.kind,
            mint_url=request.mint_url,
            unit=request.unit,
            amount=request.amount,
            fee=0,
            state=RefundState.PENDING,
            created_at=request.now,
            updated_at=request.now,
            request_id=request.request_id,
        )
        self.refunds[request.refund_id] = record
        refund_msat = request.amount * msat_per_unit(request.unit)
        _entry(self.ledger, key.key_hash, "refund", -refund_msat, op_id, request.now)
        if request.rounding:
            _entry(
                self.ledger,
                key.key_hash,
                "rounding",
                -request.rounding.value,
                f"rounding:{request.refund_id}",
                request.now,
            )
        return record, inputs

    async def persist_outputs(
        self, refund_id: str, mint_url: str, unit: str, outputs: Sequence[PendingOutput], now: datetime
    ) -> None:
        self._enter("persist_outputs", refund_id)
        del now
        self.proofs.add_outputs(refund_op_id(refund_id), mint_url, unit, outputs)

    async def outputs(self, refund_id: str) -> Sequence[PendingOutput]:
        self._enter("outputs", refund_id)
        return self.proofs.issuing(refund_op_id(refund_id))

    async def complete_send(
        self, refund_id: str, sent: Sequence[Proof], change: Sequence[Proof], fee: int, now: datetime
    ) -> RefundRecord:
        self._enter("complete_send", refund_id)
        record = self.refunds[refund_id]
        if record.state is RefundState.ISSUED:
            return record
        op_id = refund_op_id(refund_id)
        if record.state is RefundState.FAILED:  # reversed meanwhile: keep a late swap's proofs, hand out nothing
            inputs = [r for r in self.proofs.rows if r.op_id == op_id and r.state in {_P.RESERVED, _P.UNSPENT}]
            if {p.secret for p in sent} <= {r.output.secret for r in inputs} and not change:
                return record
            for row in inputs:
                row.state = _P.SPENT
            self.proofs.sign(op_id, [*sent, *change], _P.UNSPENT)
            return record
        sent_secrets = {p.secret for p in sent}
        for row in self.proofs.rows:
            if row.op_id == op_id and row.state is _P.RESERVED:
                row.state = _P.SENT if row.output.secret in sent_secrets else _P.SPENT
        self.proofs.sign(op_id, sent, _P.SENT)
        self.proofs.sign(op_id, change, _P.UNSPENT)
        self.proofs.detach(op_id)
        updated = dataclasses.replace(record, state=RefundState.ISSUED, fee=fee, updated_at=now)
        self.refunds[refund_id] = updated
        return updated

    async def cancel_send(self, refund_id: str, now: datetime, *, inputs_spent: bool = False) -> bool:
        self._enter("cancel_send", refund_id)
        record = self.refunds.get(refund_id)
        if record is None or record.state not in {RefundState.PENDING, RefundState.AMBIGUOUS}:
            return False
        self.refunds[refund_id] = dataclasses.replace(record, state=RefundState.FAILED, updated_at=now)
        op_id = refund_op_id(refund_id)
        for row in self.proofs.rows:
            if row.op_id == op_id and row.state is _P.RESERVED:
                row.state = _P.SPENT if inputs_spent else _P.UNSPENT
            elif row.op_id == op_id and row.state is _P.ISSUING:
                row.op_id = "stale:" + op_id
        give_back = -sum(
            e.amount_msat for e in self.ledger.entries if e.idempotency_key in {op_id, f"rounding:{refund_id}"}
        )
        key = self.ledger.keys[record.key_hash]
        self.ledger.keys[record.key_hash] = dataclasses.replace(key, balance=key.balance + Msat(give_back))
        _entry(self.ledger, record.key_hash, "refund_reversal", give_back, f"refund_reversal:{refund_id}", now)
        return True

    async def mark_ambiguous(self, refund_id: str, now: datetime) -> None:
        self._enter("mark_ambiguous", refund_id)
        record = self.refunds.get(refund_id)
        if record is not None and record.state is RefundState.PENDING:
            self.refunds[refund_id] = dataclasses.replace(record, state=RefundState.AMBIGUOUS, updated_at=now)

    async def send_inputs(self, refund_id: str) -> Sequence[Proof]:
        self._enter("send_inputs", refund_id)
        op_id = refund_op_id(refund_id)
        return [r.proof for r in self.proofs.rows if r.op_id == op_id and r.state is _P.RESERVED]

    async def unsettled(self, updated_before: datetime, limit: int = 100) -> Sequence[RefundRecord]:
        self._enter("unsettled", "")
        rows = [r for r in self.refunds.values() if r.state in _UNSETTLED and r.updated_at < updated_before]
        return sorted(rows, key=lambda r: (r.updated_at, r.id))[:limit]

    async def has_unsettled(self, key_hash: str) -> bool:
        self._enter("has_unsettled", key_hash)
        return any(r.key_hash == key_hash and r.state in _UNSETTLED for r in self.refunds.values())

    async def latest_refund(self, key_hash: str, now: datetime) -> tuple[RefundRecord, Sequence[Proof]] | None:
        self._enter("latest_refund", key_hash)
        issued = [r for r in self.refunds.values() if r.key_hash == key_hash and r.state is RefundState.ISSUED]
        if not issued:
            return None
        record = max(issued, key=lambda r: (r.created_at, r.id))
        record = dataclasses.replace(record, collected_at=now)
        self.refunds[record.id] = record
        sent = [r.proof for r in self.proofs.rows if r.op_id == record.op_id and r.state is _P.SENT]
        return record, sent

    async def balance(self, mint_url: str, unit: str) -> int:
        self._enter("balance", mint_url)
        return self.proofs.value(mint_url, unit)
