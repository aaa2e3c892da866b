"""SqlRedemptions: the idempotent token claim and the one-transaction credit (SPEC §7.2, invariant 5)."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.sql.database import SqlDatabase
from app.adapters.sql.ledger import key_from_row
from app.adapters.sql.models import metadata
from app.adapters.sql.wallet import STALE_PREFIX, mark_signed, output_from_row, persist_outputs
from app.domain.accounts import ApiKey
from app.domain.balance import next_limit_reset
from app.domain.cashu import PendingOutput, Proof
from app.domain.errors import RedemptionPendingError
from app.domain.money import Msat
from app.domain.wallet import (
    NewRedemption,
    Redemption,
    RedemptionCredit,
    RedemptionState,
    WalletProofState,
    redemption_op_id,
)

redemptions_t = metadata.tables["redemptions"]
RED = redemptions_t.c
keys_t = metadata.tables["api_keys"]
KEYS = keys_t.c
entries_t = metadata.tables["ledger_entries"]
proofs_t = metadata.tables["cashu_proofs"]
PROOFS = proofs_t.c

_P = WalletProofState


def redemption_from_row(row: RowMapping) -> Redemption:
    return Redemption(
        token_hash=row["token_hash"],
        key_hash=row["key_hash"],
        mint_url=row["mint_url"],
        unit=row["unit"],
        amount=row["amount"],
        fee=row["fee"],
        credited=Msat(row["credited_msat"]),
        state=RedemptionState(row["state"]),
        input_ys=tuple(row["input_ys"] or ()),
        attempt_started_at=row["attempt_started_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        error_code=row["error_code"],
    )


class SqlRedemptions:
    """Redemptions on SQLite or PostgreSQL; each method is one transaction."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def claim(self, claim: NewRedemption) -> tuple[Redemption, bool]:
        values: dict[str, Any] = {
            "token_hash": claim.token_hash,
            "key_hash": claim.key_hash,
            "mint_url": claim.mint_url,
            "unit": claim.unit,
            "amount": claim.amount,
            "fee": claim.fee,
            "credited_msat": 0,
            "state": RedemptionState.PENDING.value,
            "error_code": None,
            "input_ys": list(claim.input_ys),
            "attempt_started_at": claim.now,
            "created_at": claim.now,
            "updated_at": claim.now,
        }
        dialect_insert = postgresql.insert if not self._db.is_sqlite else sqlite.insert
        statement = dialect_insert(redemptions_t).values(**values).on_conflict_do_nothing(index_elements=["token_hash"])
        async with self._db.begin() as conn:
            inserted = (await conn.execute(statement)).rowcount == 1
            row = await self._row(conn, claim.token_hash)
        assert row is not None  # noqa: S101 - inserted or already present, and rows are never deleted
        return row, inserted

    async def get(self, token_hash: str) -> Redemption | None:
        async with self._db.read() as conn:
            return await self._row(conn, token_hash)

    async def restart(self, token_hash: str, expected: Redemption, key_hash: str, fee: int, now: datetime) -> bool:
        async with self._db.begin() as conn:
            result = await conn.execute(
                update(redemptions_t)
                .where(
                    RED.token_hash == token_hash,
                    RED.state == expected.state.value,
                    RED.attempt_started_at == expected.attempt_started_at,
                )
                .values(
                    state=RedemptionState.PENDING.value,
                    key_hash=key_hash,
                    fee=fee,
                    error_code=None,
                    attempt_started_at=now,
                    updated_at=now,
                )
            )
            return result.rowcount == 1

    async def persist_outputs(
        self, token_hash: str, mint_url: str, unit: str, outputs: Sequence[PendingOutput], now: datetime
    ) -> None:
        async with self._db.begin() as conn:
            await persist_outputs(conn, redemption_op_id(token_hash), mint_url, unit, outputs, now)

    async def outputs(self, token_hash: str) -> Sequence[PendingOutput]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(proofs_t)
                .where(PROOFS.op_id == redemption_op_id(token_hash), PROOFS.state == _P.ISSUING.value)
                .order_by(PROOFS.id)
            )
            return [output_from_row(r) for r in rows.mappings()]

    async def credit(self, credit: RedemptionCredit, proofs: Sequence[Proof]) -> ApiKey:
        try:
            async with self._db.begin() as conn:
                return await self._credit(conn, credit, proofs)
        except IntegrityError:
            # The key was created concurrently by another redemption: everything rolled back; go again once.
            async with self._db.begin() as conn:
                return await self._credit(conn, credit, proofs)

    async def _credit(self, conn: AsyncConnection, credit: RedemptionCredit, proofs: Sequence[Proof]) -> ApiKey:
        fence = [RED.token_hash == credit.token_hash, RED.state == RedemptionState.PENDING.value]
        if credit.attempt_started_at is not None:
            fence.append(RED.attempt_started_at == credit.attempt_started_at)
        cas = await conn.execute(
            update(redemptions_t)
            .where(*fence)
            .values(
                state=RedemptionState.CREDITED.value,
                credited_msat=credit.credited.value,
                key_hash=credit.key_hash,
                error_code=None,
                updated_at=credit.now,
            )
        )
        if cas.rowcount != 1:
            msg = "The token is being redeemed by another request"
            raise RedemptionPendingError(msg)
        op_id = redemption_op_id(credit.token_hash)
        await mark_signed(conn, op_id, proofs, _P.UNSPENT, credit.now)
        # Outputs the mint did not sign (none, after a full swap) are detached so none stays `issuing` here.
        await conn.execute(
            update(proofs_t)
            .where(PROOFS.op_id == op_id, PROOFS.state == _P.ISSUING.value)
            .values(op_id=STALE_PREFIX + op_id, updated_at=credit.now)
        )
        existing = (await conn.execute(select(keys_t).where(KEYS.key_hash == credit.key_hash))).mappings().first()
        if existing is None:
            terms = credit.terms
            await conn.execute(
                insert(keys_t).values(
                    key_hash=credit.key_hash,
                    balance_msat=credit.credited.value,
                    reserved_msat=0,
                    total_spent_msat=0,
                    total_requests=0,
                    limit_used_msat=0,
                    refund_mint_url=credit.mint_url,
                    refund_unit=credit.unit,
                    refund_address=terms.refund_address,
                    expires_at=terms.expires_at,
                    balance_limit_msat=None if terms.balance_limit is None else terms.balance_limit.value,
                    balance_limit_reset=None if terms.balance_limit_reset is None else terms.balance_limit_reset.value,
                    limit_reset_at=None
                    if terms.balance_limit_reset is None
                    else next_limit_reset(terms.balance_limit_reset, credit.now),
                    created_at=credit.now,
                )
            )
        else:
            await conn.execute(
                update(keys_t)
                .where(KEYS.key_hash == credit.key_hash)
                .values(balance_msat=KEYS.balance_msat + credit.credited.value)
            )
        await conn.execute(
            insert(entries_t).values(
                key_hash=credit.key_hash,
                kind="deposit",
                amount_msat=credit.credited.value,
                idempotency_key=op_id,
                mint_url=credit.mint_url,
                unit=credit.unit,
                meta=None,
                created_at=credit.now,
            )
        )
        row = (await conn.execute(select(keys_t).where(KEYS.key_hash == credit.key_hash))).mappings().one()
        return key_from_row(row)

    async def finish(
        self,
        token_hash: str,
        state: RedemptionState,
        error_code: str | None,
        now: datetime,
        *,
        attempt_started_at: datetime | None = None,
    ) -> bool:
        fence = [RED.token_hash == token_hash, RED.state == RedemptionState.PENDING.value]
        if attempt_started_at is not None:
            fence.append(RED.attempt_started_at == attempt_started_at)
        async with self._db.begin() as conn:
            result = await conn.execute(
                update(redemptions_t).where(*fence).values(state=state.value, error_code=error_code, updated_at=now)
            )
            return result.rowcount == 1

    async def stale(self, started_before: datetime, limit: int = 100) -> Sequence[Redemption]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(redemptions_t)
                .where(RED.state == RedemptionState.PENDING.value, RED.attempt_started_at < started_before)
                .order_by(RED.attempt_started_at, RED.token_hash)
                .limit(limit)
            )
            return [redemption_from_row(r) for r in rows.mappings()]

    @staticmethod
    async def _row(conn: AsyncConnection, token_hash: str) -> Redemption | None:
        row = (await conn.execute(select(redemptions_t).where(RED.token_hash == token_hash))).mappings().first()
        return None if row is None else redemption_from_row(row)
