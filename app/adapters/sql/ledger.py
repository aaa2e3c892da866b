"""SqlLedger: the Ledger port as conditional SQL writes, one transaction per money move, journaled.

Every operation is a synchronous function of a SQLAlchemy `Connection` that `SqlDatabase.run` executes in one
transaction (on the loop thread for a SQLite file, through `run_sync` on PostgreSQL). The hot path (`get_key`,
`reserve`, `settle` of a plain key) uses statements built once at module level and guarded `UPDATE`s instead of
reads followed by writes; anything unusual (child keys, limits, expired holds, overruns, repeats) falls back to the
general path, which reads and locks the rows first.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, RowMapping, bindparam, case, insert, select, update
from sqlalchemy.exc import IntegrityError

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
    BalanceLimitExceededError,
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


def _floored_minus(column: Any, amount: Any) -> Any:
    return case((column > amount, column - amount), else_=0)


def _not_expired_at(now: Any) -> Any:
    return (KEYS.expires_at.is_(None)) | (KEYS.expires_at > now)


class _SlowSettle(Exception):  # noqa: N818 - control flow, never leaves this module
    """The fast settlement does not apply (the charge exceeds what the key can pay): roll back, go the long way."""


# -- statements built once -------------------------------------------------------------------------------------------
_B_NOW_KEYS = bindparam("b_now", type_=KEYS.expires_at.type)
_B_NOW_RES = bindparam("b_now", type_=RES.settled_at.type)
_B_CHARGE = bindparam("b_charge", type_=KEYS.balance_msat.type)
_B_HOLD = bindparam("b_hold", type_=KEYS.balance_msat.type)

_SELECT_KEY = select(keys_t).where(KEYS.key_hash == bindparam("b_key"))
_SELECT_RESERVATION = select(res_t).where(RES.request_id == bindparam("b_request"))
_INSERT_KEY = insert(keys_t)
_INSERT_RESERVATION = insert(res_t)
_INSERT_ENTRY = insert(entries_t)

# A plain key (no parent, no limit) that has not expired and can cover the hold: hold it in one statement.
_HOLD_PLAIN_KEY = (
    update(keys_t)
    .where(
        KEYS.key_hash == bindparam("b_key"),
        KEYS.parent_key_hash.is_(None),
        KEYS.balance_limit_msat.is_(None),
        KEYS.balance_limit_reset.is_(None),
        KEYS.balance_msat - KEYS.reserved_msat >= _B_HOLD,
        _not_expired_at(_B_NOW_KEYS),
    )
    .values(reserved_msat=KEYS.reserved_msat + _B_HOLD)
)

# The exactly-once CAS of an active hold, charging the full amount (the fast path only runs when it is covered).
_CHARGE_ACTIVE = (
    update(res_t)
    .where(RES.request_id == bindparam("b_request"), RES.status == _S.ACTIVE.value)
    .values(status=_S.CHARGED.value, settled_at=_B_NOW_RES, charged_msat=_B_CHARGE)
    .returning(RES.key_hash, RES.billing_key_hash, RES.amount_msat)
)

_TRACKS_LIMIT = KEYS.parent_key_hash.is_not(None) | KEYS.balance_limit_msat.is_not(None)
# Same rule as balance.limit_used_after_settle for an active hold, relative to the locked row.
_LIMIT_USED_AFTER_SETTLE = case(
    (_TRACKS_LIMIT, _floored_minus(KEYS.limit_used_msat + _B_CHARGE, _B_HOLD)), else_=KEYS.limit_used_msat
)
_COVERED = KEYS.balance_msat - KEYS.reserved_msat + _B_HOLD >= _B_CHARGE
_DEBIT_VALUES: Final = {
    "balance_msat": KEYS.balance_msat - _B_CHARGE,
    "reserved_msat": KEYS.reserved_msat - _B_HOLD,
    "total_spent_msat": KEYS.total_spent_msat + _B_CHARGE,
    "total_requests": KEYS.total_requests + 1,
}
# Debit a billing key that is also the requesting key (its own limit moves too) when the hold + free balance covers.
_DEBIT_OWN_KEY = (
    update(keys_t)
    .where(KEYS.key_hash == bindparam("b_key"), _COVERED)
    .values(**_DEBIT_VALUES, limit_used_msat=_LIMIT_USED_AFTER_SETTLE)
    .returning(KEYS.balance_msat)
)
# Debit a parent that pays for a child: the parent's own limit is not the child's.
_DEBIT_PARENT_KEY = (
    update(keys_t)
    .where(KEYS.key_hash == bindparam("b_key"), _COVERED)
    .values(**_DEBIT_VALUES)
    .returning(KEYS.balance_msat)
)
# The child's own totals and limit, when its parent paid.
_CHILD_SPENT = (
    update(keys_t)
    .where(KEYS.key_hash == bindparam("b_key"))
    .values(
        total_spent_msat=KEYS.total_spent_msat + _B_CHARGE,
        total_requests=KEYS.total_requests + 1,
        limit_used_msat=_LIMIT_USED_AFTER_SETTLE,
    )
)


# -- transaction functions (synchronous; SqlDatabase.run gives each its transaction) ----------------------------------
def _key(conn: Connection, key_hash: str) -> ApiKey | None:
    row = conn.execute(_SELECT_KEY, {"b_key": key_hash}).mappings().first()
    return None if row is None else key_from_row(row)


def _reservation(conn: Connection, request_id: str) -> Reservation | None:
    row = conn.execute(_SELECT_RESERVATION, {"b_request": request_id}).mappings().first()
    return None if row is None else reservation_from_row(row)


def _journal(  # noqa: PLR0917 - one positional per journal column
    conn: Connection,
    key_hash: str | None,
    kind: str,
    amount_msat: int,
    idempotency_key: str,
    now: datetime,
    request_id: str | None = None,
    meta: Mapping[str, object] | None = None,
) -> None:
    conn.execute(
        _INSERT_ENTRY,
        {
            "key_hash": key_hash,
            "kind": kind,
            "amount_msat": amount_msat,
            "idempotency_key": idempotency_key,
            "request_id": request_id,
            "meta": None if meta is None else dict(meta),
            "created_at": now,
        },
    )


def _prior_settlement(conn: Connection, request_id: str) -> Settlement | None:
    row = conn.execute(select(entries_t).where(ENTRIES.idempotency_key == f"charge:{request_id}")).mappings().first()
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


def _create_key(conn: Connection, key: NewApiKey) -> ApiKey:
    existing = _key(conn, key.key_hash)
    if existing is not None:
        return existing
    reset_at = None if key.balance_limit_reset is None else next_limit_reset(key.balance_limit_reset, key.created_at)
    conn.execute(
        _INSERT_KEY,
        {
            "key_hash": key.key_hash,
            "balance_msat": key.grant.value,
            "reserved_msat": 0,
            "total_spent_msat": 0,
            "total_requests": 0,
            "limit_used_msat": 0,
            "created_at": key.created_at,
            "expires_at": key.expires_at,
            "refund_address": key.refund_address,
            "balance_limit_msat": None if key.balance_limit is None else key.balance_limit.value,
            "balance_limit_reset": None if key.balance_limit_reset is None else key.balance_limit_reset.value,
            "limit_reset_at": reset_at,
        },
    )
    _journal(conn, key.key_hash, "grant", key.grant.value, f"grant:{key.key_hash}", key.created_at)
    created = _key(conn, key.key_hash)
    assert created is not None  # noqa: S101 - inserted above in this transaction
    return created


def _list_keys(conn: Connection, limit: int, offset: int) -> list[ApiKey]:
    rows = conn.execute(select(keys_t).order_by(KEYS.created_at, KEYS.key_hash).limit(limit).offset(offset))
    return [key_from_row(r) for r in rows.mappings()]


def _create_child_keys(
    conn: Connection, parent_key_hash: str, children: Sequence[NewChildKey], fee_per_key: Msat, now: datetime
) -> list[ApiKey]:
    parent = _key(conn, parent_key_hash)
    if parent is None:
        msg = "The API key is unknown"
        raise InvalidApiKeyError(msg)
    if parent.parent_key_hash is not None:
        msg = "Child keys cannot create child keys"
        raise NotParentKeyError(msg)
    check_not_expired(parent, now)
    fee = Msat(fee_per_key.value * len(children))
    if fee and children:
        debited = conn.execute(
            update(keys_t)
            .where(
                KEYS.key_hash == parent_key_hash,
                KEYS.balance_msat - KEYS.reserved_msat >= fee.value,
                _not_expired_at(now),
            )
            .values(balance_msat=KEYS.balance_msat - fee.value)
        )
        if debited.rowcount != 1:
            check_reservable(parent, fee, now)
            msg = "Insufficient balance for the child key fee"
            raise InsufficientBalanceError(
                msg, details={"required_msat": fee.value, "available_msat": parent.available.value}
            )
        _journal(
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
        conn.execute(
            _INSERT_KEY,
            {
                "key_hash": child.key_hash,
                "balance_msat": 0,
                "reserved_msat": 0,
                "total_spent_msat": 0,
                "total_requests": 0,
                "limit_used_msat": 0,
                "created_at": child.created_at,
                "expires_at": child.expires_at,
                "refund_address": None,
                "parent_key_hash": parent_key_hash,
                "balance_limit_msat": None if child.balance_limit is None else child.balance_limit.value,
                "balance_limit_reset": None if reset is None else reset.value,
                "limit_reset_at": None if reset is None else next_limit_reset(reset, child.created_at),
            },
        )
    created = [_key(conn, child.key_hash) for child in children]
    return [key for key in created if key is not None]


def _insert_reservation(conn: Connection, request: ReservationRequest, key_hash: str, billing_hash: str) -> Reservation:
    conn.execute(
        _INSERT_RESERVATION,
        {
            "request_id": request.request_id,
            "key_hash": key_hash,
            "billing_key_hash": billing_hash,
            "amount_msat": request.amount.value,
            "status": _S.ACTIVE.value,
            "lease_expires_at": request.lease_expires_at,
            "model": request.model,
            "provider_id": request.provider_id,
            "created_at": request.now,
        },
    )
    return Reservation(
        request_id=request.request_id,
        key_hash=key_hash,
        billing_key_hash=billing_hash,
        amount=request.amount,
        status=_S.ACTIVE,
        lease_expires_at=request.lease_expires_at,
        created_at=request.now,
        model=request.model,
        provider_id=request.provider_id,
    )


def _reserve(conn: Connection, request: ReservationRequest) -> Reservation:
    """Fast path: a plain key covers the hold (one guarded UPDATE, then the INSERT, whose primary key rejects a
    repeated request id: the caller then returns the stored reservation). Anything else: the general path."""
    held = conn.execute(
        _HOLD_PLAIN_KEY, {"b_key": request.key_hash, "b_hold": request.amount.value, "b_now": request.now}
    )
    if held.rowcount == 1:
        return _insert_reservation(conn, request, request.key_hash, request.key_hash)
    return _reserve_general(conn, request)


def _reserve_general(conn: Connection, request: ReservationRequest) -> Reservation:
    existing = _reservation(conn, request.request_id)
    if existing is not None:
        return existing
    key = _key(conn, request.key_hash)
    if key is None:
        msg = "The API key is unknown"
        raise InvalidApiKeyError(msg)
    check_not_expired(key, request.now)
    billing_hash = key.billing_key_hash
    amount = request.amount.value
    if key.balance_limit_reset is not None:
        conn.execute(
            update(keys_t)
            .where(KEYS.key_hash == key.key_hash, KEYS.limit_reset_at <= request.now)
            .values(limit_used_msat=0, limit_reset_at=next_limit_reset(key.balance_limit_reset, request.now))
        )
    held = conn.execute(
        update(keys_t)
        .where(
            KEYS.key_hash == billing_hash,
            KEYS.balance_msat - KEYS.reserved_msat >= amount,
            _not_expired_at(request.now),
        )
        .values(reserved_msat=KEYS.reserved_msat + amount)
    )
    if held.rowcount != 1:
        billing = _key(conn, billing_hash)
        if billing is None:
            msg = "The API key's parent is unknown"
            raise InvalidApiKeyError(msg)
        check_reservable(billing, request.amount, request.now)
        msg = "Insufficient balance for this request"  # changed between the write and the re-read
        raise InsufficientBalanceError(
            msg, details={"required_msat": amount, "available_msat": billing.available.value}
        )
    if tracks_limit(key):
        limited = conn.execute(
            update(keys_t)
            .where(
                KEYS.key_hash == key.key_hash,
                (KEYS.balance_limit_msat.is_(None)) | (KEYS.limit_used_msat + amount <= KEYS.balance_limit_msat),
                _not_expired_at(request.now),
            )
            .values(limit_used_msat=KEYS.limit_used_msat + amount)
        )
        if limited.rowcount != 1:
            current = _key(conn, key.key_hash)
            assert current is not None  # noqa: S101 - read above in this transaction
            check_not_expired(current, request.now)
            check_limit(current, request.amount)
    return _insert_reservation(conn, request, key.key_hash, billing_hash)


def _resize(conn: Connection, request_id: str, amount: Msat, now: datetime) -> Reservation:
    """Grow an active hold: CAS on status and old amount, then the guarded `reserved += Δ` and `limit_used += Δ`.
    Any refusal raises, so the transaction rolls the CAS back and the hold stays as it was."""
    reservation = _reservation(conn, request_id)
    if reservation is None:
        msg = f"no reservation {request_id}"
        raise ReservationNotFoundError(msg)
    if reservation.status is not _S.ACTIVE:
        msg = f"reservation {request_id} is {reservation.status.value} and cannot be resized"
        raise ReservationStateError(msg)
    delta = amount.value - reservation.amount.value
    if delta <= 0:
        return reservation
    cas = conn.execute(
        update(res_t)
        .where(
            RES.request_id == request_id,
            RES.status == _S.ACTIVE.value,
            RES.amount_msat == reservation.amount.value,
        )
        .values(amount_msat=amount.value)
    )
    if cas.rowcount != 1:
        msg = f"reservation {request_id} changed during the resize"
        raise ReservationStateError(msg)
    held = conn.execute(
        update(keys_t)
        .where(
            KEYS.key_hash == reservation.billing_key_hash,
            KEYS.balance_msat - KEYS.reserved_msat >= delta,
            _not_expired_at(now),
        )
        .values(reserved_msat=KEYS.reserved_msat + delta)
    )
    if held.rowcount != 1:
        billing = _key(conn, reservation.billing_key_hash)
        if billing is None:
            msg = "The API key's parent is unknown"
            raise InvalidApiKeyError(msg)
        check_reservable(billing, Msat(delta), now)
        msg = "Insufficient balance for this request"  # changed between the write and the re-read
        raise InsufficientBalanceError(msg, details={"required_msat": delta, "available_msat": billing.available.value})
    user = _key(conn, reservation.key_hash)
    if user is not None and tracks_limit(user):
        limited = conn.execute(
            update(keys_t)
            .where(
                KEYS.key_hash == user.key_hash,
                (KEYS.balance_limit_msat.is_(None)) | (KEYS.limit_used_msat + delta <= KEYS.balance_limit_msat),
                _not_expired_at(now),
            )
            .values(limit_used_msat=KEYS.limit_used_msat + delta)
        )
        if limited.rowcount != 1:
            check_not_expired(user, now)
            check_limit(user, Msat(delta))
            msg = "The key's balance limit is reached"  # changed between the read and the write
            raise BalanceLimitExceededError(msg)
    return dataclasses.replace(reservation, amount=amount)


def _settle(conn: Connection, request_id: str, charge: Msat, now: datetime) -> Settlement:
    """Fast path for an active hold whose key can pay the whole charge: CAS the reservation, debit the billing key
    (guarded: hold + free balance covers the charge), move the child's totals, journal. Otherwise the general path."""
    cas = conn.execute(_CHARGE_ACTIVE, {"b_request": request_id, "b_now": now, "b_charge": charge.value}).first()
    if cas is None:
        return _settle_general(conn, request_id, charge, now)
    key_hash, billing_hash, hold = cas
    params = {"b_key": billing_hash, "b_charge": charge.value, "b_hold": hold}
    own = key_hash == billing_hash
    balance_after = conn.execute(_DEBIT_OWN_KEY if own else _DEBIT_PARENT_KEY, params).scalar()
    if balance_after is None:
        raise _SlowSettle
    if not own:
        conn.execute(_CHILD_SPENT, {"b_key": key_hash, "b_charge": charge.value, "b_hold": hold})
    meta = {"requested_msat": charge.value, "shortfall_msat": 0, "balance_after_msat": balance_after}
    _journal(conn, billing_hash, "charge", -charge.value, f"charge:{request_id}", now, request_id, meta)
    return Settlement(
        request_id=request_id, requested=charge, collected=charge, shortfall=Msat(0), balance_after=Msat(balance_after)
    )


def _settle_general(conn: Connection, request_id: str, charge: Msat, now: datetime) -> Settlement:
    row = conn.execute(_SELECT_RESERVATION.with_for_update(), {"b_request": request_id}).mappings().first()
    if row is None:
        msg = f"no reservation {request_id}"
        raise ReservationNotFoundError(msg)
    reservation = reservation_from_row(row)
    if reservation.status is _S.CHARGED:
        prior = _prior_settlement(conn, request_id)
        if prior is None:
            msg = f"reservation {request_id} is charged but has no charge entry"
            raise ReservationStateError(msg)
        return prior
    if reservation.status is _S.RELEASED:
        msg = f"reservation {request_id} was released and cannot be charged"
        raise ReservationStateError(msg)
    billing_row = conn.execute(_SELECT_KEY.with_for_update(), {"b_key": reservation.billing_key_hash}).mappings().one()
    billing = key_from_row(billing_row)
    amounts = settlement_amounts(
        status=reservation.status,
        charge=charge,
        hold=reservation.amount,
        balance=billing.balance,
        reserved=billing.reserved,
    )
    cas = conn.execute(
        update(res_t)
        .where(RES.request_id == request_id, RES.status == reservation.status.value)
        .values(status=_S.CHARGED.value, settled_at=now, charged_msat=amounts.collected.value)
    )
    if cas.rowcount != 1:
        msg = f"reservation {request_id} changed state during settlement"
        raise ReservationStateError(msg)
    freed = reservation.amount.value if reservation.status is _S.ACTIVE else 0
    conn.execute(
        update(keys_t)
        .where(KEYS.key_hash == billing.key_hash)
        .values(
            balance_msat=KEYS.balance_msat - amounts.collected.value,
            reserved_msat=KEYS.reserved_msat - freed,
            total_spent_msat=KEYS.total_spent_msat + amounts.collected.value,
            total_requests=KEYS.total_requests + 1,
        )
    )
    user = billing if reservation.key_hash == billing.key_hash else _key(conn, reservation.key_hash)
    if user is not None and user.key_hash != billing.key_hash:
        conn.execute(
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
        conn.execute(update(keys_t).where(KEYS.key_hash == user.key_hash).values(limit_used_msat=used))
    meta = {
        "requested_msat": charge.value,
        "shortfall_msat": amounts.shortfall.value,
        "balance_after_msat": amounts.balance_after.value,
    }
    _journal(conn, billing.key_hash, "charge", -amounts.collected.value, f"charge:{request_id}", now, request_id, meta)
    if amounts.shortfall:
        _journal(
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


def _end_hold(
    conn: Connection, request_id: str, now: datetime, target: ReservationStatus, lease_before: datetime | None
) -> bool:
    """CAS `active -> target`; only when that succeeds give the hold back to the billing key and the limit."""
    row = conn.execute(_SELECT_RESERVATION.with_for_update(), {"b_request": request_id}).mappings().first()
    if row is None or row["status"] != _S.ACTIVE.value:
        return False
    conditions = [RES.request_id == request_id, RES.status == _S.ACTIVE.value]
    if lease_before is not None:
        conditions.append(RES.lease_expires_at <= lease_before)
    values: dict[str, object] = {"status": target.value}
    if target is _S.RELEASED:
        values["settled_at"] = now
    cas = conn.execute(update(res_t).where(*conditions).values(**values))
    if cas.rowcount != 1:
        return False
    hold = int(row["amount_msat"])
    conn.execute(
        update(keys_t).where(KEYS.key_hash == row["billing_key_hash"]).values(reserved_msat=KEYS.reserved_msat - hold)
    )
    conn.execute(
        update(keys_t)
        .where(KEYS.key_hash == row["key_hash"])
        .values(limit_used_msat=_floored_minus(KEYS.limit_used_msat, hold))
    )
    return True


def _renew_leases(conn: Connection, request_ids: list[str], lease_expires_at: datetime) -> int:
    result = conn.execute(
        update(res_t)
        .where(RES.request_id.in_(request_ids), RES.status == _S.ACTIVE.value)
        .values(lease_expires_at=lease_expires_at)
    )
    return int(result.rowcount)


def _due_reservations(conn: Connection, now: datetime) -> list[str]:
    rows = conn.execute(
        select(RES.request_id)
        .where(RES.status == _S.ACTIVE.value, RES.lease_expires_at <= now)
        .order_by(RES.lease_expires_at)
        .limit(SWEEP_BATCH)
    )
    return [r[0] for r in rows]


def _reset_due_limits(conn: Connection, now: datetime) -> int:
    reset = 0
    for period in LimitReset:  # one conditional UPDATE per period: each has its own next boundary
        result = conn.execute(
            update(keys_t)
            .where(KEYS.balance_limit_reset == period.value, KEYS.limit_reset_at <= now)
            .values(limit_used_msat=0, limit_reset_at=next_limit_reset(period, now))
        )
        reset += int(result.rowcount)
    return reset


def _entries_for_key(conn: Connection, key_hash: str) -> list[LedgerEntry]:
    rows = conn.execute(select(entries_t).where(ENTRIES.key_hash == key_hash).order_by(ENTRIES.id))
    return [entry_from_row(r) for r in rows.mappings()]


class SqlLedger:
    """Ledger on SQLite or PostgreSQL. Safe across instances sharing the database; no process-local lock is needed
    for correctness (SqlDatabase queues this process's SQLite writers on one, for speed only)."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def create_key(self, key: NewApiKey) -> ApiKey:
        try:
            return await self._db.run(_create_key, key)
        except IntegrityError:
            # Another instance created the same key hash concurrently: return theirs, never grant twice.
            stored = await self.get_key(key.key_hash)
            if stored is None:
                raise
            return stored

    async def get_key(self, key_hash: str) -> ApiKey | None:
        return await self._db.run_read(_key, key_hash)

    async def list_keys(self, *, limit: int = 100, offset: int = 0) -> Sequence[ApiKey]:
        return await self._db.run_read(_list_keys, limit, offset)

    async def create_child_keys(
        self, parent_key_hash: str, children: Sequence[NewChildKey], fee_per_key: Msat, now: datetime
    ) -> Sequence[ApiKey]:
        return await self._db.run(_create_child_keys, parent_key_hash, children, fee_per_key, now)

    async def reserve(self, request: ReservationRequest) -> Reservation:
        try:
            return await self._db.run(_reserve, request)
        except IntegrityError:
            # The same request id was reserved before or concurrently; our hold rolled back with this transaction.
            stored = await self.get_reservation(request.request_id)
            if stored is None:
                raise
            return stored

    async def resize(self, request_id: str, amount: Msat, now: datetime) -> Reservation:
        return await self._db.run(_resize, request_id, amount, now)

    async def settle(self, request_id: str, charge: Msat, now: datetime) -> Settlement:
        try:
            try:
                return await self._db.run(_settle, request_id, charge, now)
            except _SlowSettle:  # rolled back: the key cannot pay it all, so collect what it can the long way
                return await self._db.run(_settle_general, request_id, charge, now)
        except IntegrityError:
            # A concurrent settlement of the same request journaled first; ours rolled back entirely.
            settled = await self._db.run_read(_prior_settlement, request_id)
            if settled is None:
                raise
            return settled

    async def release(self, request_id: str, now: datetime) -> bool:
        return await self._db.run(_end_hold, request_id, now, _S.RELEASED, None)

    async def renew_leases(self, request_ids: Sequence[str], lease_expires_at: datetime) -> int:
        if not request_ids:
            return 0
        return await self._db.run(_renew_leases, list(request_ids), lease_expires_at)

    async def sweep_expired(self, now: datetime) -> int:
        due = await self._db.run_read(_due_reservations, now)
        swept = 0
        for request_id in due:  # one short transaction each: no multi-row lock ordering, no deadlocks
            swept += await self._db.run(_end_hold, request_id, now, _S.EXPIRED, now)
        return swept

    async def reset_due_limits(self, now: datetime) -> int:
        return await self._db.run(_reset_due_limits, now)

    async def get_reservation(self, request_id: str) -> Reservation | None:
        return await self._db.run_read(_reservation, request_id)

    async def entries_for_key(self, key_hash: str) -> Sequence[LedgerEntry]:
        return await self._db.run_read(_entries_for_key, key_hash)
