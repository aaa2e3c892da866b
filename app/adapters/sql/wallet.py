"""SqlWallet: the node's proofs in `cashu_proofs` and the sends that spend them (SPEC §7.3), one transaction each."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import RowMapping, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.sql.database import SqlDatabase
from app.adapters.sql.models import metadata
from app.domain.cashu import Dleq, PendingOutput, Proof
from app.domain.errors import RefundConflictError, WalletShortError
from app.domain.wallet import (
    RefundKind,
    RefundRecord,
    RefundState,
    SendRequest,
    WalletProofState,
    msat_per_unit,
    refund_op_id,
    select_proofs,
)

proofs_t = metadata.tables["cashu_proofs"]
PROOFS = proofs_t.c
refunds_t = metadata.tables["refunds"]
REFUNDS = refunds_t.c
keys_t = metadata.tables["api_keys"]
KEYS = keys_t.c
entries_t = metadata.tables["ledger_entries"]
ENTRIES = entries_t.c

_P = WalletProofState
STALE_PREFIX: Final = "stale:"
_UNSETTLED: Final = (RefundState.PENDING.value, RefundState.AMBIGUOUS.value)


# -- row mapping shared with SqlRedemptions --------------------------------------------------------------------------
def dleq_json(proof: Proof) -> dict[str, Any] | None:
    if proof.dleq is None:
        return None
    return {"e": proof.dleq.e, "s": proof.dleq.s, "r": proof.dleq.r}


def proof_from_row(row: RowMapping) -> Proof:
    dleq = row["dleq"]
    return Proof(
        amount=row["amount"],
        keyset_id=row["keyset_id"],
        secret=row["secret"],
        c=row["c"] or "",
        dleq=None if not dleq else Dleq(e=dleq["e"], s=dleq["s"], r=dleq.get("r")),
    )


def output_from_row(row: RowMapping) -> PendingOutput:
    return PendingOutput(
        amount=row["amount"],
        keyset_id=row["keyset_id"],
        secret=row["secret"],
        blinding_factor=row["blinding_factor"],
        b_=row["blinded_message"],
    )


async def persist_outputs(  # noqa: PLR0917 - one positional per stored column group
    conn: AsyncConnection, op_id: str, mint_url: str, unit: str, outputs: Sequence[PendingOutput], now: datetime
) -> None:
    """Detach the op's earlier `issuing` outputs (op_id gets the `stale:` prefix), then store `outputs` as issuing."""
    await conn.execute(
        update(proofs_t)
        .where(PROOFS.op_id == op_id, PROOFS.state == _P.ISSUING.value)
        .values(op_id=STALE_PREFIX + op_id, updated_at=now)
    )
    if not outputs:
        return
    await conn.execute(
        insert(proofs_t),
        [
            {
                "mint_url": mint_url,
                "unit": unit,
                "keyset_id": o.keyset_id,
                "amount": o.amount,
                "secret": o.secret,
                "c": None,
                "blinded_message": o.b_,
                "blinding_factor": o.blinding_factor,
                "dleq": None,
                "state": _P.ISSUING.value,
                "op_id": op_id,
                "created_at": now,
                "updated_at": now,
            }
            for o in outputs
        ],
    )


async def mark_signed(
    conn: AsyncConnection, op_id: str, proofs: Sequence[Proof], state: WalletProofState, now: datetime
) -> None:
    """Store the signatures of the op's issuing outputs and move them to `state`.

    Outputs an attempt detached (`stale:` op_id) are included and re-attached: a signature from the mint is kept
    whichever attempt persisted the output (secrets are unique, so nothing else matches).
    """
    for proof in proofs:
        await conn.execute(
            update(proofs_t)
            .where(
                PROOFS.secret == proof.secret,
                PROOFS.op_id.in_([op_id, STALE_PREFIX + op_id]),
                PROOFS.state == _P.ISSUING.value,
            )
            .values(
                state=state.value,
                op_id=op_id,
                c=proof.c,
                keyset_id=proof.keyset_id,
                dleq=dleq_json(proof),
                updated_at=now,
            )
        )


def refund_from_row(row: RowMapping) -> RefundRecord:
    return RefundRecord(
        id=row["id"],
        key_hash=row["key_hash"],
        kind=RefundKind(row["kind"]),
        mint_url=row["mint_url"],
        unit=row["unit"],
        amount=row["amount"],
        fee=row["fee"],
        state=RefundState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        request_id=row["request_id"],
        collected_at=row["collected_at"],
    )


class SqlWallet:
    """Wallet on SQLite (BEGIN IMMEDIATE serializes writers) or PostgreSQL (row locks, SKIP LOCKED)."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def reserve_send(self, request: SendRequest) -> tuple[RefundRecord, Sequence[Proof]]:
        async with self._db.begin() as conn:
            debit = request.debit.value
            debited = await conn.execute(
                update(keys_t)
                .where(
                    KEYS.key_hash == request.key_hash,
                    KEYS.balance_msat == request.expected_balance.value,
                    KEYS.reserved_msat == 0,
                    KEYS.balance_msat >= debit,
                )
                .values(balance_msat=KEYS.balance_msat - debit)
            )
            if debited.rowcount != 1:
                msg = "Requests are in flight or the balance changed; retry the refund shortly"
                raise RefundConflictError(msg)
            inputs = await self._pick(conn, request)
            op_id = refund_op_id(request.refund_id)
            await conn.execute(
                update(proofs_t)
                .where(PROOFS.secret.in_([p.secret for p in inputs]))
                .values(state=_P.RESERVED.value, op_id=op_id, updated_at=request.now)
            )
            await conn.execute(
                insert(refunds_t).values(
                    id=request.refund_id,
                    key_hash=request.key_hash,
                    request_id=request.request_id,
                    kind=request.kind.value,
                    method="token",
                    mint_url=request.mint_url,
                    unit=request.unit,
                    amount=request.amount,
                    fee=0,
                    destination=None,
                    melt_quote_id=None,
                    state=RefundState.PENDING.value,
                    collected_at=None,
                    created_at=request.now,
                    updated_at=request.now,
                )
            )
            meta = {"mint_url": request.mint_url, "unit": request.unit}
            await self._journal(conn, request, "refund", request.amount * msat_per_unit(request.unit), op_id, meta=meta)
            if request.rounding:
                await self._journal(conn, request, "rounding", request.rounding.value, f"rounding:{request.refund_id}")
            record = await self._refund(conn, request.refund_id)
        assert record is not None  # noqa: S101 - inserted above in this transaction
        return record, inputs

    async def _pick(self, conn: AsyncConnection, request: SendRequest) -> list[Proof]:
        """Lock unspent proofs worth at least the amount; proofs another transaction holds are skipped, not awaited."""
        locked: dict[int, RowMapping] = {}
        skipped: set[int] = set()
        # Each round locks or skips at least one candidate, so this ends: covered, or no candidates left.
        while (need := request.amount - sum(r["amount"] for r in locked.values())) > 0:
            rows = await conn.execute(
                select(PROOFS.id, PROOFS.amount).where(
                    PROOFS.mint_url == request.mint_url,
                    PROOFS.unit == request.unit,
                    PROOFS.state == _P.UNSPENT.value,
                    PROOFS.id.not_in(list(locked) + list(skipped)),
                )
            )
            choice = select_proofs({int(r[0]): int(r[1]) for r in rows}, need)
            if choice is None:
                break
            got = await conn.execute(
                select(proofs_t)
                .where(PROOFS.id.in_(choice), PROOFS.state == _P.UNSPENT.value)
                .with_for_update(skip_locked=True)
            )
            for row in got.mappings():
                locked[row["id"]] = row
            skipped.update(pid for pid in choice if pid not in locked)
        if sum(r["amount"] for r in locked.values()) < request.amount:
            msg = f"The node wallet holds too little at {request.mint_url} to send {request.amount} {request.unit}"
            raise WalletShortError(msg)
        return [proof_from_row(locked[pid]) for pid in sorted(locked)]

    async def persist_outputs(
        self, refund_id: str, mint_url: str, unit: str, outputs: Sequence[PendingOutput], now: datetime
    ) -> None:
        async with self._db.begin() as conn:
            await persist_outputs(conn, refund_op_id(refund_id), mint_url, unit, outputs, now)

    async def outputs(self, refund_id: str) -> Sequence[PendingOutput]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(proofs_t)
                .where(PROOFS.op_id == refund_op_id(refund_id), PROOFS.state == _P.ISSUING.value)
                .order_by(PROOFS.id)
            )
            return [output_from_row(r) for r in rows.mappings()]

    async def complete_send(
        self, refund_id: str, sent: Sequence[Proof], change: Sequence[Proof], fee: int, now: datetime
    ) -> RefundRecord:
        async with self._db.begin() as conn:
            record = await self._refund(conn, refund_id, lock=True)
            if record is None:
                msg = f"no refund {refund_id}"
                raise KeyError(msg)
            if record.state is RefundState.ISSUED:
                return record
            op_id = refund_op_id(refund_id)
            if record.state is RefundState.FAILED:
                await self._keep_late_swap(conn, op_id, sent, change, now)
                return record
            sent_secrets = [p.secret for p in sent]
            await conn.execute(
                update(proofs_t)
                .where(PROOFS.op_id == op_id, PROOFS.state == _P.RESERVED.value)
                .values(
                    state=case((PROOFS.secret.in_(sent_secrets), _P.SENT.value), else_=_P.SPENT.value),
                    updated_at=now,
                )
            )
            await mark_signed(conn, op_id, sent, _P.SENT, now)
            await mark_signed(conn, op_id, change, _P.UNSPENT, now)
            await conn.execute(
                update(proofs_t)
                .where(PROOFS.op_id == op_id, PROOFS.state == _P.ISSUING.value)
                .values(op_id=STALE_PREFIX + op_id, updated_at=now)
            )
            await conn.execute(
                update(refunds_t)
                .where(REFUNDS.id == refund_id)
                .values(state=RefundState.ISSUED.value, fee=fee, updated_at=now)
            )
            updated = await self._refund(conn, refund_id)
        assert updated is not None  # noqa: S101 - read above in this transaction
        return updated

    async def cancel_send(self, refund_id: str, now: datetime, *, inputs_spent: bool = False) -> bool:
        async with self._db.begin() as conn:
            record = await self._refund(conn, refund_id, lock=True)
            if record is None or record.state not in {RefundState.PENDING, RefundState.AMBIGUOUS}:
                return False
            cas = await conn.execute(
                update(refunds_t)
                .where(REFUNDS.id == refund_id, REFUNDS.state == record.state.value)
                .values(state=RefundState.FAILED.value, updated_at=now)
            )
            if cas.rowcount != 1:
                return False
            op_id = refund_op_id(refund_id)
            inputs_state = _P.SPENT if inputs_spent else _P.UNSPENT
            await conn.execute(
                update(proofs_t)
                .where(PROOFS.op_id == op_id, PROOFS.state == _P.RESERVED.value)
                .values(state=inputs_state.value, updated_at=now)
            )
            await conn.execute(
                update(proofs_t)
                .where(PROOFS.op_id == op_id, PROOFS.state == _P.ISSUING.value)
                .values(op_id=STALE_PREFIX + op_id, updated_at=now)
            )
            debited = await conn.execute(
                select(func.coalesce(func.sum(ENTRIES.amount_msat), 0)).where(
                    ENTRIES.idempotency_key.in_([op_id, f"rounding:{refund_id}"])
                )
            )
            give_back = -int(debited.scalar_one())
            await conn.execute(
                update(keys_t)
                .where(KEYS.key_hash == record.key_hash)
                .values(balance_msat=KEYS.balance_msat + give_back)
            )
            await conn.execute(
                insert(entries_t).values(
                    key_hash=record.key_hash,
                    kind="refund_reversal",
                    amount_msat=give_back,
                    idempotency_key=f"refund_reversal:{refund_id}",
                    request_id=record.request_id,
                    mint_url=record.mint_url,
                    unit=record.unit,
                    meta=None,
                    created_at=now,
                )
            )
            return True

    async def mark_ambiguous(self, refund_id: str, now: datetime) -> None:
        async with self._db.begin() as conn:
            await conn.execute(
                update(refunds_t)
                .where(REFUNDS.id == refund_id, REFUNDS.state == RefundState.PENDING.value)
                .values(state=RefundState.AMBIGUOUS.value, updated_at=now)
            )

    async def send_inputs(self, refund_id: str) -> Sequence[Proof]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(proofs_t)
                .where(PROOFS.op_id == refund_op_id(refund_id), PROOFS.state == _P.RESERVED.value)
                .order_by(PROOFS.id)
            )
            return [proof_from_row(r) for r in rows.mappings()]

    async def unsettled(self, updated_before: datetime, limit: int = 100) -> Sequence[RefundRecord]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(refunds_t)
                .where(
                    REFUNDS.method == "token",
                    REFUNDS.state.in_(_UNSETTLED),
                    REFUNDS.updated_at < updated_before,
                )
                .order_by(REFUNDS.updated_at, REFUNDS.id)
                .limit(limit)
            )
            return [refund_from_row(r) for r in rows.mappings()]

    async def has_unsettled(self, key_hash: str) -> bool:
        async with self._db.read() as conn:
            row = await conn.execute(
                select(REFUNDS.id)
                .where(REFUNDS.key_hash == key_hash, REFUNDS.method == "token", REFUNDS.state.in_(_UNSETTLED))
                .limit(1)
            )
            return row.first() is not None

    async def latest_refund(self, key_hash: str, now: datetime) -> tuple[RefundRecord, Sequence[Proof]] | None:
        async with self._db.begin() as conn:
            row = (
                (
                    await conn.execute(
                        select(refunds_t)
                        .where(
                            REFUNDS.key_hash == key_hash,
                            REFUNDS.method == "token",
                            REFUNDS.state == RefundState.ISSUED.value,
                        )
                        .order_by(REFUNDS.created_at.desc(), REFUNDS.id.desc())
                        .limit(1)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            record = refund_from_row(row)
            proofs = await conn.execute(
                select(proofs_t).where(PROOFS.op_id == record.op_id, PROOFS.state == _P.SENT.value).order_by(PROOFS.id)
            )
            sent = [proof_from_row(r) for r in proofs.mappings()]
            await conn.execute(update(refunds_t).where(REFUNDS.id == record.id).values(collected_at=now))
        return record, sent

    async def balance(self, mint_url: str, unit: str) -> int:
        async with self._db.read() as conn:
            total = await conn.execute(
                select(func.coalesce(func.sum(PROOFS.amount), 0)).where(
                    PROOFS.mint_url == mint_url,
                    PROOFS.unit == unit,
                    PROOFS.state.in_([_P.UNSPENT.value, _P.RESERVED.value]),
                )
            )
            return int(total.scalar_one())

    # -- helpers -----------------------------------------------------------------------------------------------------
    @staticmethod
    async def _keep_late_swap(
        conn: AsyncConnection, op_id: str, sent: Sequence[Proof], change: Sequence[Proof], now: datetime
    ) -> None:
        """The send was reversed, yet a swap of its inputs landed: the inputs are spent and every signed output is the
        node's (`unspent`); nothing is handed out. Inputs sent as they are (no swap) stay as they are."""
        inputs = await conn.execute(
            select(PROOFS.secret).where(PROOFS.op_id == op_id, PROOFS.state.in_([_P.RESERVED.value, _P.UNSPENT.value]))
        )
        input_secrets = {row[0] for row in inputs}
        if {p.secret for p in sent} <= input_secrets and not change:
            return
        await conn.execute(
            update(proofs_t)
            .where(PROOFS.op_id == op_id, PROOFS.secret.in_(input_secrets))
            .values(state=_P.SPENT.value, updated_at=now)
        )
        await mark_signed(conn, op_id, [*sent, *change], _P.UNSPENT, now)

    @staticmethod
    async def _refund(conn: AsyncConnection, refund_id: str, *, lock: bool = False) -> RefundRecord | None:
        statement = select(refunds_t).where(REFUNDS.id == refund_id)
        if lock:
            statement = statement.with_for_update()
        row = (await conn.execute(statement)).mappings().first()
        return None if row is None else refund_from_row(row)

    @staticmethod
    async def _journal(
        conn: AsyncConnection,
        request: SendRequest,
        kind: str,
        debit_msat: int,
        idempotency_key: str,
        *,
        meta: dict[str, Any] | None = None,
    ) -> None:
        await conn.execute(
            insert(entries_t).values(
                key_hash=request.key_hash,
                kind=kind,
                amount_msat=-debit_msat,
                idempotency_key=idempotency_key,
                request_id=request.request_id,
                mint_url=request.mint_url,
                unit=request.unit,
                meta=meta,
                created_at=request.now,
            )
        )
