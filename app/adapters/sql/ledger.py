"""SqlLedger: the Ledger port as conditional SQL writes, one transaction per money move, journaled."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import RowMapping, case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.sql.database import SqlDatabase
from app.adapters.sql.models import metadata
from app.domain.accounts import (
    ApiKey,
    LedgerEntry,
    LimitReset,
    NewApiKey,
    NewChildKey,
    Reservation,
    ReservationRequest,
    ReservationStatus,
    Settlement,
)
from app.domain.balance import (
    check_limit,
    check_not_expired,
    check_reservable,
    next_limit_reset,
    settlement_amounts,
    tracks_limit,
)
from app.domain.errors import (
    InsufficientBalanceError,
    InvalidApiKeyError,
    NotParentKeyError,
    ReservationNotFoundError,
    ReservationStateError,
)
from app.domain.money import Msat

keys_t = metadata.tables["api_keys"]
KEYS = keys_t.c
res_t = metadata.tables["reservations"]
RES = res_t.c
entries_t = metadata.tables["ledger_entries"]
ENTRIES = entries_t.c

SWEEP_BATCH: Final = 500
_S = ReservationStatus


def key_from_row(row: RowMapping) -> ApiKey:
    reset = row["balance_limit_reset"]
    limit = row["balance_limit_msat"]
    return ApiKey(
        key_hash=row["key_hash"],
        balance=Msat(row["balance_msat"]),
        reserved=Msat(row["reserved_msat"]),
        total_spent=Msat(row["total_spent_msat"]),
        total_requests=row["total_requests"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        refund_address=row["refund_address"],
        refund_mint_url=row["refund_mint_url"],
        refund_unit=row["refund_unit"],
        parent_key_hash=row["parent_key_hash"],
        balance_limit=None if limit is None else Msat(limit),
        balance_limit_reset=None if reset is None else LimitReset(reset),
        limit_used=Msat(row["limit_used_msat"]),
        limit_reset_at=row["limit_reset_at"],
    )


def reservation_from_row(row: RowMapping) -> Reservation:
    charged = row["charged_msat"]
    return Reservation(
        request_id=row["request_id"],
        key_hash=row["key_hash"],
        billing_key_hash=row["billing_key_hash"],
        amount=Msat(row["amount_msat"]),
        status=ReservationStatus(row["status"]),
        lease_expires_at=row["lease_expires_at"],
        created_at=row["created_at"],
        model=row["model"],
        provider_id=row["provider_id"],
        settled_at=row["settled_at"],
        charged=None if charged is None else Msat(charged),
    )


def entry_from_row(row: RowMapping) -> LedgerEntry:
    return LedgerEntry(
        key_hash=row["key_hash"],
        kind=row["kind"],
        amount_msat=row["amount_msat"],
        idempotency_key=row["idempotency_key"],
        created_at=row["created_at"],
        request_id=row["request_id"],
        mint_url=row["mint_url"],
        unit=row["unit"],
    )


def _floored_minus(column: Any, amount: int) -> Any:
    return case((column > amount, column - amount), else_=0)


class SqlLedger:
    """Ledger on SQLite or PostgreSQL. Safe across instances sharing the database; no process-local locks."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    # -- keys --------------------------------------------------------------------------------------------------------
    async def create_key(self, key: NewApiKey) -> ApiKey:
        try:
            async with self._db.begin() as conn:
                existing = await self._key(conn, key.key_hash)
                if existing is not None:
                    return existing
                reset_at = (
                    None
                    if key.balance_limit_reset is None
                    else next_limit_reset(key.balance_limit_reset, key.created_at)
                )
                await conn.execute(
                    insert(keys_t).values(
                        key_hash=key.key_hash,
                        balance_msat=key.grant.value,
                        reserved_msat=0,
                        total_spent_msat=0,
                        total_requests=0,
                        limit_used_msat=0,
                        created_at=key.created_at,
                        expires_at=key.expires_at,
                        refund_address=key.refund_address,
                        balance_limit_msat=None if key.balance_limit is None else key.balance_limit.value,
                        balance_limit_reset=None if key.balance_limit_reset is None else key.balance_limit_reset.value,
                        limit_reset_at=reset_at,
                    )
                )
                await self._journal(
                    conn, key.key_hash, "grant", key.grant.value, f"grant:{key.key_hash}", key.created_at
                )
                created = await self._key(conn, key.key_hash)
        except IntegrityError:
            # Another instance created the same key hash concurrently: return theirs, never grant twice.
            stored = await self.get_key(key.key_hash)
            if stored is None:
                raise
            return stored
        assert created is not None  # noqa: S101 - inserted above in this transaction
        return created

    async def get_key(self, key_hash: str) -> ApiKey | None:
        async with self._db.read() as conn:
            return await self._key(conn, key_hash)

    async def list_keys(self, *, limit: int = 100, offset: int = 0) -> Sequence[ApiKey]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(keys_t).order_by(KEYS.created_at, KEYS.key_hash).limit(limit).offset(offset)
            )
            return [key_from_row(r) for r in rows.mappings()]

    async def create_child_keys(
        self, parent_key_hash: str, children: Sequence[NewChildKey], fee_per_key: Msat, now: datetime
    ) -> Sequence[ApiKey]:
        async with self._db.begin() as conn:
            parent = await self._key(conn, parent_key_hash)
            if parent is None:
                msg = "The API key is unknown"
                raise InvalidApiKeyError(msg)
            if parent.parent_key_hash is not None:
                msg = "Child keys cannot create child keys"
                raise NotParentKeyError(msg)
            check_not_expired(parent, now)
            fee = Msat(fee_per_key.value * len(children))
            if fee and children:
                debited = await conn.execute(
                    update(keys_t)
                    .where(
                        KEYS.key_hash == parent_key_hash,
                        KEYS.balance_msat - KEYS.reserved_msat >= fee.value,
                        (KEYS.expires_at.is_(None)) | (KEYS.expires_at > now),
                    )
                    .values(balance_msat=KEYS.balance_msat - fee.value)
                )
                if debited.rowcount != 1:
                    check_reservable(parent, fee, now)
                    msg = "Insufficient balance for the child key fee"
                    raise InsufficientBalanceError(
                        msg, details={"required_msat": fee.value, "available_msat": parent.available.value}
                    )
                await self._journal(
                    conn,
                    parent_key_hash,
                    "child_key_fee",
                    -fee.value,
                    f"child_key_fee:{children[0].key_hash}",
                    now,
                    meta={"children": len(children)},
                )
            for child in children:
                reset = child.balance_limit_reset
                await conn.execute(
                    insert(keys_t).values(
                        key_hash=child.key_hash,
                        balance_msat=0,
                        reserved_msat=0,
                        total_spent_msat=0,
                        total_requests=0,
                        limit_used_msat=0,
                        created_at=child.created_at,
                        expires_at=child.expires_at,
                        parent_key_hash=parent_key_hash,
                        balance_limit_msat=None if child.balance_limit is None else child.balance_limit.value,
                        balance_limit_reset=None if reset is None else reset.value,
                        limit_reset_at=None if reset is None else next_limit_reset(reset, child.created_at),
                    )
                )
            created = [await self._key(conn, child.key_hash) for child in children]
            return [key for key in created if key is not None]

    # -- reservations ------------------------------------------------------------------------------------------------
    async def reserve(self, request: ReservationRequest) -> Reservation:
        try:
            async with self._db.begin() as conn:
                return await self._reserve(conn, request)
        except IntegrityError:
            # The same request id was reserved concurrently; our hold rolled back with this transaction.
            stored = await self.get_reservation(request.request_id)
            if stored is None:
                raise
            return stored

    async def _reserve(self, conn: AsyncConnection, request: ReservationRequest) -> Reservation:
        existing = await self._reservation(conn, request.request_id)
        if existing is not None:
            return existing
        key = await self._key(conn, request.key_hash)
        if key is None:
            msg = "The API key is unknown"
            raise InvalidApiKeyError(msg)
        check_not_expired(key, request.now)
        billing_hash = key.billing_key_hash
        amount = request.amount.value
        if key.balance_limit_reset is not None:
            await conn.execute(
                update(keys_t)
                .where(KEYS.key_hash == key.key_hash, KEYS.limit_reset_at <= request.now)
                .values(limit_used_msat=0, limit_reset_at=next_limit_reset(key.balance_limit_reset, request.now))
            )
        held = await conn.execute(
            update(keys_t)
            .where(
                KEYS.key_hash == billing_hash,
                KEYS.balance_msat - KEYS.reserved_msat >= amount,
                (KEYS.expires_at.is_(None)) | (KEYS.expires_at > request.now),
            )
            .values(reserved_msat=KEYS.reserved_msat + amount)
        )
        if held.rowcount != 1:
            billing = await self._key(conn, billing_hash)
            if billing is None:
                msg = "The API key's parent is unknown"
                raise InvalidApiKeyError(msg)
            check_reservable(billing, request.amount, request.now)
            msg = "Insufficient balance for this request"  # changed between the write and the re-read
            raise InsufficientBalanceError(
                msg, details={"required_msat": amount, "available_msat": billing.available.value}
            )
        if tracks_limit(key):
            limited = await conn.execute(
                update(keys_t)
                .where(
                    KEYS.key_hash == key.key_hash,
                    (KEYS.balance_limit_msat.is_(None)) | (KEYS.limit_used_msat + amount <= KEYS.balance_limit_msat),
                    (KEYS.expires_at.is_(None)) | (KEYS.expires_at > request.now),
                )
                .values(limit_used_msat=KEYS.limit_used_msat + amount)
            )
            if limited.rowcount != 1:
                current = await self._key(conn, key.key_hash)
                assert current is not None  # noqa: S101 - read above in this transaction
                check_not_expired(current, request.now)
                check_limit(current, request.amount)
        await conn.execute(
            insert(res_t).values(
                request_id=request.request_id,
                key_hash=key.key_hash,
                billing_key_hash=billing_hash,
                amount_msat=amount,
                status=_S.ACTIVE.value,
                lease_expires_at=request.lease_expires_at,
                model=request.model,
                provider_id=request.provider_id,
                created_at=request.now,
            )
        )
        return Reservation(
            request_id=request.request_id,
            key_hash=key.key_hash,
            billing_key_hash=billing_hash,
            amount=request.amount,
            status=_S.ACTIVE,
            lease_expires_at=request.lease_expires_at,
            created_at=request.now,
            model=request.model,
            provider_id=request.provider_id,
        )

    async def settle(self, request_id: str, charge: Msat, now: datetime) -> Settlement:
        try:
            async with self._db.begin() as conn:
                return await self._settle(conn, request_id, charge, now)
        except IntegrityError:
            # A concurrent settlement of the same request journaled first; ours rolled back entirely.
            async with self._db.read() as conn:
                settled = await self._prior_settlement(conn, request_id)
            if settled is None:
                raise
            return settled

    async def _settle(self, conn: AsyncConnection, request_id: str, charge: Msat, now: datetime) -> Settlement:
        row = (
            (await conn.execute(select(res_t).where(RES.request_id == request_id).with_for_update())).mappings().first()
        )
        if row is None:
            msg = f"no reservation {request_id}"
            raise ReservationNotFoundError(msg)
        reservation = reservation_from_row(row)
        if reservation.status is _S.CHARGED:
            prior = await self._prior_settlement(conn, request_id)
            if prior is None:
                msg = f"reservation {request_id} is charged but has no charge entry"
                raise ReservationStateError(msg)
            return prior
        if reservation.status is _S.RELEASED:
            msg = f"reservation {request_id} was released and cannot be charged"
            raise ReservationStateError(msg)
        billing_row = (
            (await conn.execute(select(keys_t).where(KEYS.key_hash == reservation.billing_key_hash).with_for_update()))
            .mappings()
            .one()
        )
        billing = key_from_row(billing_row)
        amounts = settlement_amounts(
            status=reservation.status,
            charge=charge,
            hold=reservation.amount,
            balance=billing.balance,
            reserved=billing.reserved,
        )
        cas = await conn.execute(
            update(res_t)
            .where(RES.request_id == request_id, RES.status == reservation.status.value)
            .values(status=_S.CHARGED.value, settled_at=now, charged_msat=amounts.collected.value)
        )
        if cas.rowcount != 1:
            msg = f"reservation {request_id} changed state during settlement"
            raise ReservationStateError(msg)
        freed = reservation.amount.value if reservation.status is _S.ACTIVE else 0
        await conn.execute(
            update(keys_t)
            .where(KEYS.key_hash == billing.key_hash)
            .values(
                balance_msat=KEYS.balance_msat - amounts.collected.value,
                reserved_msat=KEYS.reserved_msat - freed,
                total_spent_msat=KEYS.total_spent_msat + amounts.collected.value,
                total_requests=KEYS.total_requests + 1,
            )
        )
        user = billing if reservation.key_hash == billing.key_hash else await self._key(conn, reservation.key_hash)
        if user is not None and user.key_hash != billing.key_hash:
            await conn.execute(
                update(keys_t)
                .where(KEYS.key_hash == user.key_hash)
                .values(
                    total_spent_msat=KEYS.total_spent_msat + amounts.collected.value,
                    total_requests=KEYS.total_requests + 1,
                )
            )
        if user is not None and tracks_limit(user):
            # Relative to the locked row, not to `user` as read above: concurrent settlements of one child compose.
            # Same rule as balance.limit_used_after_settle: an expired hold's R was already given back.
            collected = amounts.collected.value
            used = (
                _floored_minus(KEYS.limit_used_msat + collected, reservation.amount.value)
                if reservation.status is _S.ACTIVE
                else KEYS.limit_used_msat + collected
            )
            await conn.execute(update(keys_t).where(KEYS.key_hash == user.key_hash).values(limit_used_msat=used))
        meta = {
            "requested_msat": charge.value,
            "shortfall_msat": amounts.shortfall.value,
            "balance_after_msat": amounts.balance_after.value,
        }
        await self._journal(
            conn, billing.key_hash, "charge", -amounts.collected.value, f"charge:{request_id}", now, request_id, meta
        )
        if amounts.shortfall:
            await self._journal(
                conn,
                billing.key_hash,
                "shortfall",
                0,
                f"shortfall:{request_id}",
                now,
                request_id,
                {"shortfall_msat": amounts.shortfall.value},
            )
        return Settlement(
            request_id=request_id,
            requested=charge,
            collected=amounts.collected,
            shortfall=amounts.shortfall,
            balance_after=amounts.balance_after,
        )

    async def release(self, request_id: str, now: datetime) -> bool:
        async with self._db.begin() as conn:
            return await self._end_hold(conn, request_id, now, target=_S.RELEASED, lease_before=None)

    async def renew_leases(self, request_ids: Sequence[str], lease_expires_at: datetime) -> int:
        if not request_ids:
            return 0
        async with self._db.begin() as conn:
            result = await conn.execute(
                update(res_t)
                .where(RES.request_id.in_(list(request_ids)), RES.status == _S.ACTIVE.value)
                .values(lease_expires_at=lease_expires_at)
            )
            return int(result.rowcount)

    async def sweep_expired(self, now: datetime) -> int:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(RES.request_id)
                .where(RES.status == _S.ACTIVE.value, RES.lease_expires_at <= now)
                .order_by(RES.lease_expires_at)
                .limit(SWEEP_BATCH)
            )
            due = [r[0] for r in rows]
        swept = 0
        for request_id in due:  # one short transaction each: no multi-row lock ordering, no deadlocks
            async with self._db.begin() as conn:
                swept += await self._end_hold(conn, request_id, now, target=_S.EXPIRED, lease_before=now)
        return swept

    async def reset_due_limits(self, now: datetime) -> int:
        reset = 0
        async with self._db.begin() as conn:
            for period in LimitReset:  # one conditional UPDATE per period: each has its own next boundary
                result = await conn.execute(
                    update(keys_t)
                    .where(KEYS.balance_limit_reset == period.value, KEYS.limit_reset_at <= now)
                    .values(limit_used_msat=0, limit_reset_at=next_limit_reset(period, now))
                )
                reset += int(result.rowcount)
        return reset

    async def _end_hold(
        self,
        conn: AsyncConnection,
        request_id: str,
        now: datetime,
        *,
        target: ReservationStatus,
        lease_before: datetime | None,
    ) -> bool:
        """CAS `active -> target`; only when that succeeds give the hold back to the billing key and the limit."""
        row = (
            (await conn.execute(select(res_t).where(RES.request_id == request_id).with_for_update())).mappings().first()
        )
        if row is None or row["status"] != _S.ACTIVE.value:
            return False
        conditions = [RES.request_id == request_id, RES.status == _S.ACTIVE.value]
        if lease_before is not None:
            conditions.append(RES.lease_expires_at <= lease_before)
        values: dict[str, object] = {"status": target.value}
        if target is _S.RELEASED:
            values["settled_at"] = now
        cas = await conn.execute(update(res_t).where(*conditions).values(**values))
        if cas.rowcount != 1:
            return False
        hold = int(row["amount_msat"])
        await conn.execute(
            update(keys_t)
            .where(KEYS.key_hash == row["billing_key_hash"])
            .values(reserved_msat=KEYS.reserved_msat - hold)
        )
        await conn.execute(
            update(keys_t)
            .where(KEYS.key_hash == row["key_hash"])
            .values(limit_used_msat=_floored_minus(KEYS.limit_used_msat, hold))
        )
        return True

    async def get_reservation(self, request_id: str) -> Reservation | None:
        async with self._db.read() as conn:
            return await self._reservation(conn, request_id)

    async def entries_for_key(self, key_hash: str) -> Sequence[LedgerEntry]:
        async with self._db.read() as conn:
            rows = await conn.execute(select(entries_t).where(ENTRIES.key_hash == key_hash).order_by(ENTRIES.id))
            return [entry_from_row(r) for r in rows.mappings()]

    # -- helpers -----------------------------------------------------------------------------------------------------
    @staticmethod
    async def _key(conn: AsyncConnection, key_hash: str) -> ApiKey | None:
        row = (await conn.execute(select(keys_t).where(KEYS.key_hash == key_hash))).mappings().first()
        return None if row is None else key_from_row(row)

    @staticmethod
    async def _reservation(conn: AsyncConnection, request_id: str) -> Reservation | None:
        row = (await conn.execute(select(res_t).where(RES.request_id == request_id))).mappings().first()
        return None if row is None else reservation_from_row(row)

    @staticmethod
    async def _prior_settlement(conn: AsyncConnection, request_id: str) -> Settlement | None:
        row = (
            (await conn.execute(select(entries_t).where(ENTRIES.idempotency_key == f"charge:{request_id}")))
            .mappings()
            .first()
        )
        if row is None:
            return None
        meta = row["meta"] or {}
        collected = Msat(-int(row["amount_msat"]))
        shortfall = Msat(int(meta.get("shortfall_msat", 0)))
        return Settlement(
            request_id=request_id,
            requested=Msat(int(meta.get("requested_msat", collected.value + shortfall.value))),
            collected=collected,
            shortfall=shortfall,
            balance_after=Msat(int(meta.get("balance_after_msat", 0))),
        )

    @staticmethod
    async def _journal(  # noqa: PLR0917 - one positional per journal column
        conn: AsyncConnection,
        key_hash: str | None,
        kind: str,
        amount_msat: int,
        idempotency_key: str,
        now: datetime,
        request_id: str | None = None,
        meta: Mapping[str, object] | None = None,
    ) -> None:
        await conn.execute(
            insert(entries_t).values(
                key_hash=key_hash,
                kind=kind,
                amount_msat=amount_msat,
                idempotency_key=idempotency_key,
                request_id=request_id,
                meta=None if meta is None else dict(meta),
                created_at=now,
            )
        )
