"""SqlLedgerAudit: the SPEC §5 invariants as read-only queries over the money tables."""

from collections.abc import Sequence

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.sql.database import SqlDatabase
from app.adapters.sql.models import metadata
from app.domain.accounts import key_id
from app.domain.money import MSAT_PER_SAT

keys_t = metadata.tables["api_keys"]
KEYS = keys_t.c
res_t = metadata.tables["reservations"]
RES = res_t.c
entries_t = metadata.tables["ledger_entries"]
ENTRIES = entries_t.c
proofs_t = metadata.tables["cashu_proofs"]
PROOFS = proofs_t.c
redemptions_t = metadata.tables["redemptions"]
REDEMPTIONS = redemptions_t.c


class SqlLedgerAudit:
    """Every check is a query; an empty result means the invariant holds."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def violations(self) -> Sequence[str]:
        async with self._db.read() as conn:
            found: list[str] = []
            found += await _balances_match_journal(conn)
            found += await _reserved_matches_holds(conn)
            found += await _liabilities_covered(conn)
            found += await _one_terminal_transition(conn)
            found += await _redemptions_credited_once(conn)
            return found


async def _balances_match_journal(conn: AsyncConnection) -> list[str]:
    """Invariant 1: a key's balance is the sum of its ledger entries."""
    journal = (
        select(ENTRIES.key_hash, func.sum(ENTRIES.amount_msat).label("total"))
        .where(ENTRIES.key_hash.is_not(None))
        .group_by(ENTRIES.key_hash)
        .subquery()
    )
    total = func.coalesce(journal.c.total, 0)
    rows = await conn.execute(
        select(KEYS.key_hash, KEYS.balance_msat, total.label("total"))
        .select_from(keys_t.outerjoin(journal, journal.c.key_hash == KEYS.key_hash))
        .where(KEYS.balance_msat != total)
    )
    found = [f"invariant 1: key {key_id(h)} balance {b} msat != journal sum {t} msat" for h, b, t in rows]
    orphans = await conn.execute(
        select(journal.c.key_hash, journal.c.total)
        .select_from(journal.outerjoin(keys_t, journal.c.key_hash == KEYS.key_hash))
        .where(KEYS.key_hash.is_(None), journal.c.total != 0)
    )
    found += [f"invariant 1: journal of unknown key {key_id(h)} sums to {t} msat" for h, t in orphans]
    return found


async def _reserved_matches_holds(conn: AsyncConnection) -> list[str]:
    """Invariant 2: 0 <= reserved <= balance, and reserved is the sum of the key's active holds."""
    holds = (
        select(RES.billing_key_hash, func.sum(RES.amount_msat).label("held"))
        .where(RES.status == "active")
        .group_by(RES.billing_key_hash)
        .subquery()
    )
    held = func.coalesce(holds.c.held, 0)
    rows = await conn.execute(
        select(KEYS.key_hash, KEYS.balance_msat, KEYS.reserved_msat, held.label("held"))
        .select_from(keys_t.outerjoin(holds, holds.c.billing_key_hash == KEYS.key_hash))
        .where((KEYS.reserved_msat != held) | (KEYS.reserved_msat < 0) | (KEYS.reserved_msat > KEYS.balance_msat))
    )
    return [
        f"invariant 2: key {key_id(h)} reserved {r} msat (balance {b} msat) but active holds sum to {s} msat"
        for h, b, r, s in rows
    ]


async def _liabilities_covered(conn: AsyncConnection) -> list[str]:
    """Invariant 3: per mint and unit, key balances are covered by unspent + reserved proofs.

    Operator `grant` keys have no refund mint and so are no mint's liability.
    """
    liabilities = await conn.execute(
        select(KEYS.refund_mint_url, KEYS.refund_unit, func.sum(KEYS.balance_msat))
        .where(KEYS.refund_mint_url.is_not(None))
        .group_by(KEYS.refund_mint_url, KEYS.refund_unit)
    )
    msat_per_unit = case((PROOFS.unit == "sat", MSAT_PER_SAT), else_=1)
    assets = await conn.execute(
        select(PROOFS.mint_url, PROOFS.unit, func.sum(PROOFS.amount * msat_per_unit))
        .where(PROOFS.state.in_(("unspent", "reserved")))
        .group_by(PROOFS.mint_url, PROOFS.unit)
    )
    covered = {(m, u): int(v or 0) for m, u, v in assets}
    found = []
    for mint, unit, owed in liabilities:
        owed_msat = int(owed or 0)
        have = covered.get((mint, unit), 0)
        if owed_msat > have:
            found.append(f"invariant 3: mint {mint} ({unit}) owes {owed_msat} msat but holds {have} msat of proofs")
    return found


async def _one_terminal_transition(conn: AsyncConnection) -> list[str]:
    """Invariant 4: a charged reservation has exactly one matching charge entry; no other reservation has one."""
    charges = (
        select(
            ENTRIES.request_id,
            func.count().label("n"),
            func.sum(ENTRIES.amount_msat).label("amount"),
        )
        .where(ENTRIES.kind == "charge")
        .group_by(ENTRIES.request_id)
        .subquery()
    )
    n = func.coalesce(charges.c.n, 0)
    rows = await conn.execute(
        select(RES.request_id, RES.status, RES.charged_msat, RES.settled_at, n.label("n"), charges.c.amount)
        .select_from(res_t.outerjoin(charges, charges.c.request_id == RES.request_id))
        .where(
            ((RES.status == "charged") & ((n != 1) | RES.settled_at.is_(None) | RES.charged_msat.is_(None)))
            | ((RES.status == "charged") & (charges.c.amount != -RES.charged_msat))
            | ((RES.status != "charged") & (n != 0))
        )
    )
    found = [
        f"invariant 4: reservation {rid} is {status} with {count} charge entries"
        f" (charged_msat={charged}, journaled={amount}, settled_at={'set' if settled else 'missing'})"
        for rid, status, charged, settled, count, amount in rows
    ]
    strays = await conn.execute(
        select(charges.c.request_id, charges.c.n)
        .select_from(charges.outerjoin(res_t, charges.c.request_id == RES.request_id))
        .where(RES.request_id.is_(None))
    )
    found += [f"invariant 4: {count} charge entries for unknown request {rid}" for rid, count in strays]
    return found


async def _redemptions_credited_once(conn: AsyncConnection) -> list[str]:
    """Invariant 5: a credited redemption has exactly one deposit of its credited amount and no unfinished outputs."""
    deposits = (
        select(
            ENTRIES.idempotency_key,
            func.count().label("n"),
            func.sum(ENTRIES.amount_msat).label("amount"),
        )
        .where(ENTRIES.kind == "deposit", ENTRIES.idempotency_key.like("redeem:%"))
        .group_by(ENTRIES.idempotency_key)
        .subquery()
    )
    op_key = literal("redeem:") + REDEMPTIONS.token_hash
    n = func.coalesce(deposits.c.n, 0)
    rows = await conn.execute(
        select(REDEMPTIONS.token_hash, REDEMPTIONS.state, REDEMPTIONS.credited_msat, n.label("n"), deposits.c.amount)
        .select_from(redemptions_t.outerjoin(deposits, deposits.c.idempotency_key == op_key))
        .where(
            ((REDEMPTIONS.state == "credited") & ((n != 1) | (deposits.c.amount != REDEMPTIONS.credited_msat)))
            | ((REDEMPTIONS.state != "credited") & (n != 0))
        )
    )
    found = [
        f"invariant 5: redemption {h[:8]} is {state} with {count} deposits (credited {credited}, journaled {amount})"
        for h, state, credited, count, amount in rows
    ]
    issuing = await conn.execute(
        select(REDEMPTIONS.token_hash, func.count())
        .select_from(redemptions_t.join(proofs_t, and_(PROOFS.op_id == op_key, PROOFS.state == "issuing")))
        .where(REDEMPTIONS.state == "credited")
        .group_by(REDEMPTIONS.token_hash)
    )
    found += [f"invariant 5: credited redemption {h[:8]} still has {count} issuing outputs" for h, count in issuing]
    strays = await conn.execute(
        select(deposits.c.idempotency_key)
        .select_from(deposits.outerjoin(redemptions_t, deposits.c.idempotency_key == op_key))
        .where(REDEMPTIONS.token_hash.is_(None))
    )
    found += [f"invariant 5: deposit {k[:15]} has no redemption" for (k,) in strays]
    return found
