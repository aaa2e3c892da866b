"""SqlLedgerAudit: each SPEC §5 invariant is reported when broken and silent when it holds."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text

from app.adapters.sql import SqlDatabase, SqlLedger, SqlLedgerAudit
from app.adapters.sql.models import metadata
from app.domain.accounts import NewApiKey
from app.domain.money import Msat

NOW = datetime(2026, 5, 4, tzinfo=UTC)
MINT = "http://127.0.0.1:3338"
KEY = "c" * 64
TOKEN = "d" * 64


@pytest.fixture
async def database(sqlite_url: str) -> AsyncIterator[SqlDatabase]:
    """Not registered with the autouse audit: these tests break invariants on purpose."""
    db = SqlDatabase.create(sqlite_url)
    yield db
    await db.dispose()


async def _insert(db: SqlDatabase, table: str, **values: object) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(metadata.tables[table]).values(**values))


async def _deposit_key(db: SqlDatabase, balance_msat: int) -> None:
    await _insert(
        db,
        "api_keys",
        key_hash=KEY,
        balance_msat=balance_msat,
        reserved_msat=0,
        total_spent_msat=0,
        total_requests=0,
        limit_used_msat=0,
        refund_mint_url=MINT,
        refund_unit="sat",
        created_at=NOW,
    )
    await _insert(
        db,
        "ledger_entries",
        key_hash=KEY,
        kind="deposit",
        amount_msat=balance_msat,
        idempotency_key=f"redeem:{TOKEN}",
        created_at=NOW,
    )


async def _proof(db: SqlDatabase, amount: int, state: str, secret: str, op_id: str | None = None) -> None:
    await _insert(
        db,
        "cashu_proofs",
        mint_url=MINT,
        unit="sat",
        keyset_id="00aa",
        amount=amount,
        secret=secret,
        blinded_message="02" + "0" * 64,
        blinding_factor="0" * 64,
        state=state,
        op_id=op_id,
        created_at=NOW,
        updated_at=NOW,
    )


async def _redemption(db: SqlDatabase, state: str, credited_msat: int) -> None:
    await _insert(
        db,
        "redemptions",
        token_hash=TOKEN,
        key_hash=KEY,
        mint_url=MINT,
        unit="sat",
        amount=credited_msat // 1000,
        fee=0,
        credited_msat=credited_msat,
        state=state,
        input_ys=[],
        attempt_started_at=NOW,
        created_at=NOW,
        updated_at=NOW,
    )


async def test_violations_empty_when_deposit_is_covered_by_proofs(database: SqlDatabase) -> None:
    await _deposit_key(database, 5_000)
    await _redemption(database, "credited", 5_000)
    await _proof(database, 4, "unspent", "s1")
    await _proof(database, 1, "reserved", "s2")
    await _proof(database, 64, "spent", "s3")

    assert await SqlLedgerAudit(database).violations() == []


async def test_violations_report_uncovered_liabilities(database: SqlDatabase) -> None:
    await _deposit_key(database, 5_000)
    await _redemption(database, "credited", 5_000)
    await _proof(database, 4, "unspent", "s1")
    await _proof(database, 100, "sent", "s2")

    found = await SqlLedgerAudit(database).violations()

    assert found == [f"invariant 3: mint {MINT} (sat) owes 5000 msat but holds 4000 msat of proofs"]


async def test_violations_exclude_operator_grants_from_mint_liabilities(database: SqlDatabase) -> None:
    await SqlLedger(database).create_key(NewApiKey(key_hash="e" * 64, grant=Msat(10**9), created_at=NOW))

    assert await SqlLedgerAudit(database).violations() == []


async def test_violations_report_credited_redemption_without_deposit(database: SqlDatabase) -> None:
    await _redemption(database, "credited", 5_000)

    found = await SqlLedgerAudit(database).violations()

    assert len(found) == 1
    assert found[0].startswith("invariant 5: redemption dddddddd is credited with 0 deposits")


async def test_violations_report_deposit_of_a_failed_redemption(database: SqlDatabase) -> None:
    await _deposit_key(database, 5_000)
    await _proof(database, 5, "unspent", "s1")
    await _redemption(database, "failed", 0)

    found = await SqlLedgerAudit(database).violations()

    assert len(found) == 1
    assert found[0].startswith("invariant 5: redemption dddddddd is failed with 1 deposits")


async def test_violations_report_credited_redemption_with_unfinished_outputs(database: SqlDatabase) -> None:
    await _deposit_key(database, 5_000)
    await _redemption(database, "credited", 5_000)
    await _proof(database, 5, "unspent", "s1")
    await _proof(database, 2, "issuing", "s2", op_id=f"redeem:{TOKEN}")

    found = await SqlLedgerAudit(database).violations()

    assert found == ["invariant 5: credited redemption dddddddd still has 1 issuing outputs"]


async def test_violations_report_double_charge_and_stray_hold(database: SqlDatabase) -> None:
    ledger = SqlLedger(database)
    await ledger.create_key(NewApiKey(key_hash=KEY, grant=Msat(10_000), created_at=NOW))
    async with database.begin() as conn:
        await conn.execute(text("UPDATE api_keys SET reserved_msat = 10"))
        await conn.execute(
            insert(metadata.tables["ledger_entries"]).values(
                key_hash=None, kind="charge", amount_msat=0, idempotency_key="x", request_id="ghost", created_at=NOW
            )
        )

    found = await SqlLedgerAudit(database).violations()

    assert found == [
        "invariant 2: key cccccccc reserved 10 msat (balance 10000 msat) but active holds sum to 0 msat",
        "invariant 4: 1 charge entries for unknown request ghost",
    ]
