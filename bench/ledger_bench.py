"""Ledger micro-benchmark: what one billed request costs the database layer alone, without HTTP.

Run `.venv/bin/python -m bench.ledger_bench`. A billed request makes up to three ledger calls (`get_key` when the
key authenticates through the account service, `reserve`, `settle`; an `sk-` key skips `get_key`); this times
that sequence, and `reserve`+`settle` alone, through `SqlLedger` at concurrency 1 and 16 on SQLite (and on a fresh
PostgreSQL database when one is reachable), the cost of an empty transaction both ways (`SqlDatabase.read()` and
`SqlDatabase.run_read`), plus the SQL statements through the bare `sqlite3` module on the calling thread as a lower
bound: the 16 the ledger issued before the fast path, and the 9 of today's `reserve`+`settle`. Prints a table,
writes `bench/results/ledger.json`.
"""

import argparse
import asyncio
import json
import secrets
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from sqlalchemy import Connection, text

from app.adapters.sql import SqlDatabase, SqlLedger, migrate
from app.domain.accounts import NewApiKey, ReservationRequest, hash_api_key
from app.domain.money import Msat
from bench.proxy_bench import drop_postgres_database, pct, postgres_database

ROOT: Final = Path(__file__).resolve().parents[1]
RESULTS: Final = ROOT / "bench" / "results" / "ledger.json"
HOLD: Final = Msat(20_000)
CHARGE: Final = Msat(30)


@dataclass
class LedgerRow:
    backend: str
    operation: str
    concurrency: int
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_op: float  # this process, all threads (the aiosqlite worker threads included)


async def timed(
    backend: str, operation: str, step: Callable[[], Awaitable[None]], concurrency: int, seconds: float
) -> LedgerRow:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await step()
            latencies.append((time.perf_counter() - started) * 1000)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return LedgerRow(
        backend=backend,
        operation=operation,
        concurrency=concurrency,
        ops=len(latencies),
        ops_per_s=len(latencies) / wall,
        p50_ms=pct(latencies, 0.5),
        p99_ms=pct(latencies, 0.99),
        cpu_us_per_op=cpu / max(len(latencies), 1) * 1e6,
    )


def _select_one(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


async def ledger_rows(backend: str, url: str, seconds: float) -> list[LedgerRow]:
    await migrate(url)
    database = SqlDatabase.create(url)
    ledger = SqlLedger(database)
    key_hash = hash_api_key("sk-" + secrets.token_hex(32))
    await ledger.create_key(NewApiKey(key_hash=key_hash, grant=Msat(10**12), created_at=datetime.now(UTC)))

    async def billed() -> None:
        now = datetime.now(UTC)
        request_id = str(uuid.uuid4())
        await ledger.get_key(key_hash)
        lease = now + timedelta(seconds=60)
        hold = ReservationRequest(
            request_id=request_id, key_hash=key_hash, amount=HOLD, now=now, lease_expires_at=lease
        )
        await ledger.reserve(hold)
        await ledger.settle(request_id, CHARGE, now)

    async def reserve_and_settle() -> None:
        now = datetime.now(UTC)
        request_id = str(uuid.uuid4())
        lease = now + timedelta(seconds=60)
        hold = ReservationRequest(
            request_id=request_id, key_hash=key_hash, amount=HOLD, now=now, lease_expires_at=lease
        )
        await ledger.reserve(hold)
        await ledger.settle(request_id, CHARGE, now)

    async def select_one() -> None:
        async with database.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def run_select_one() -> None:
        await database.run_read(_select_one)

    rows: list[LedgerRow] = []
    try:
        await timed(backend, "warm-up", billed, 4, min(seconds, 1.0))
        rows.append(await timed(backend, "get_key+reserve+settle", billed, 1, seconds))
        rows.append(await timed(backend, "get_key+reserve+settle", billed, 16, seconds))
        rows.append(await timed(backend, "reserve+settle", reserve_and_settle, 1, seconds))
        rows.append(await timed(backend, "reserve+settle", reserve_and_settle, 16, seconds))
        rows.append(await timed(backend, "read txn: SELECT 1", select_one, 1, seconds / 2))
        rows.append(await timed(backend, "run_read: SELECT 1", run_select_one, 1, seconds / 2))
    finally:
        await database.dispose()
    return rows


# What SqlLedger sent for get_key + reserve + settle before the fast path (tree at e678308).
_RESERVE_AND_SETTLE: Final = [
    "BEGIN DEFERRED",
    "SELECT * FROM api_keys WHERE key_hash = :k",
    "COMMIT",
    "BEGIN IMMEDIATE",
    "SELECT * FROM reservations WHERE request_id = :r",
    "SELECT * FROM api_keys WHERE key_hash = :k",
    (
        "UPDATE api_keys SET reserved_msat = reserved_msat + :hold WHERE key_hash = :k "
        "AND balance_msat - reserved_msat >= :hold AND (expires_at IS NULL OR expires_at > :now)"
    ),
    (
        "INSERT INTO reservations (request_id, key_hash, billing_key_hash, amount_msat, status, lease_expires_at, "
        "created_at) VALUES (:r, :k, :k, :hold, 'active', :now, :now)"
    ),
    "COMMIT",
    "BEGIN IMMEDIATE",
    "SELECT * FROM reservations WHERE request_id = :r",
    "SELECT * FROM api_keys WHERE key_hash = :k",
    (
        "UPDATE reservations SET status = 'charged', settled_at = :now, charged_msat = :charge "
        "WHERE request_id = :r AND status = 'active'"
    ),
    (
        "UPDATE api_keys SET balance_msat = balance_msat - :charge, reserved_msat = reserved_msat - :hold, "
        "total_spent_msat = total_spent_msat + :charge, total_requests = total_requests + 1 WHERE key_hash = :k"
    ),
    (
        "INSERT INTO ledger_entries (key_hash, kind, amount_msat, idempotency_key, request_id, meta, created_at) "
        "VALUES (:k, 'charge', -:charge, 'charge:' || :r, :r, '{}', :now)"
    ),
    "COMMIT",
]


# What SqlLedger's fast path sends today for reserve + settle of a plain key (SqlDatabase sends BEGIN itself).
_FAST_RESERVE_AND_SETTLE: Final = [
    "BEGIN IMMEDIATE",
    (
        "UPDATE api_keys SET reserved_msat = reserved_msat + :hold WHERE key_hash = :k AND parent_key_hash IS NULL "
        "AND balance_limit_msat IS NULL AND balance_limit_reset IS NULL AND balance_msat - reserved_msat >= :hold "
        "AND (expires_at IS NULL OR expires_at > :now)"
    ),
    (
        "INSERT INTO reservations (request_id, key_hash, billing_key_hash, amount_msat, status, lease_expires_at, "
        "model, provider_id, created_at) VALUES (:r, :k, :k, :hold, 'active', :now, NULL, NULL, :now)"
    ),
    "COMMIT",
    "BEGIN IMMEDIATE",
    (
        "UPDATE reservations SET status = 'charged', settled_at = :now, charged_msat = :charge "
        "WHERE request_id = :r AND status = 'active' RETURNING key_hash, billing_key_hash, amount_msat"
    ),
    (
        "UPDATE api_keys SET balance_msat = balance_msat - :charge, reserved_msat = reserved_msat - :hold, "
        "total_spent_msat = total_spent_msat + :charge, total_requests = total_requests + 1, "
        "limit_used_msat = CASE WHEN (parent_key_hash IS NOT NULL OR balance_limit_msat IS NOT NULL) THEN "
        "CASE WHEN (limit_used_msat + :charge > :hold) THEN limit_used_msat + :charge - :hold ELSE 0 END "
        "ELSE limit_used_msat END WHERE key_hash = :k AND balance_msat - reserved_msat + :hold >= :charge "
        "RETURNING balance_msat"
    ),
    (
        "INSERT INTO ledger_entries (key_hash, kind, amount_msat, idempotency_key, request_id, meta, created_at) "
        "VALUES (:k, 'charge', -:charge, 'charge:' || :r, :r, '{}', :now)"
    ),
    "COMMIT",
]


def raw_sqlite_row(path: str, seconds: float, statements: list[str], operation: str) -> LedgerRow:
    """`statements` (one billed request's SQL) through `sqlite3` on this thread, as a lower bound."""
    connection = sqlite3.connect(path, isolation_level=None)
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"):
        connection.execute(pragma)
    key_hash = connection.execute("SELECT key_hash FROM api_keys LIMIT 1").fetchone()[0]
    latencies: list[float] = []
    cpu, wall = time.process_time(), time.perf_counter()
    deadline = wall + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        params = {
            "k": key_hash,
            "r": str(uuid.uuid4()),
            "hold": HOLD.value,
            "charge": CHARGE.value,
            "now": datetime.now(UTC).isoformat(" "),
        }
        for statement in statements:
            connection.execute(statement, params).fetchall()
        latencies.append((time.perf_counter() - started) * 1000)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    connection.close()
    return LedgerRow(
        backend="sqlite3 (bare)",
        operation=operation,
        concurrency=1,
        ops=len(latencies),
        ops_per_s=len(latencies) / wall,
        p50_ms=pct(latencies, 0.5),
        p99_ms=pct(latencies, 0.99),
        cpu_us_per_op=cpu / max(len(latencies), 1) * 1e6,
    )


def table(rows: list[LedgerRow]) -> list[str]:
    header = (
        f"{'backend':<16} {'operation':<24} {'c':>3} {'ops':>6} {'ops/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu us/op':>9}"
    )
    lines = [header, "-" * len(header)]
    lines += [
        f"{r.backend:<16} {r.operation:<24} {r.concurrency:>3} {r.ops:>6} {r.ops_per_s:>7.0f} {r.p50_ms:>8.2f} "
        f"{r.p99_ms:>8.2f} {r.cpu_us_per_op:>9.0f}"
        for r in rows
    ]
    return lines


async def main_async(args: argparse.Namespace) -> int:
    rows: list[LedgerRow] = []
    with tempfile.TemporaryDirectory(prefix="routstr-ledger-bench-") as workdir:
        path = f"{workdir}/ledger.db"
        rows += await ledger_rows("sqlite", f"sqlite+aiosqlite:///{path}", args.seconds)
        rows.append(raw_sqlite_row(path, args.seconds / 2, _RESERVE_AND_SETTLE, "old 16 statements"))
        rows.append(raw_sqlite_row(path, args.seconds / 2, _FAST_RESERVE_AND_SETTLE, "reserve+settle, 9 stmts"))
    name = postgres_database() if args.postgres else None
    if name is not None:
        try:
            rows += await ledger_rows(
                "postgresql", f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", args.seconds
            )
        finally:
            drop_postgres_database(name)
    print("\n".join(table(rows)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="ledger cost of one billed request (get_key, reserve, settle)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured cell")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false", help="skip PostgreSQL")
    args = parser.parse_args()
    try:
        import uvloop  # noqa: PLC0415 - the node runs on uvloop too
    except ImportError:  # pragma: no cover
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
