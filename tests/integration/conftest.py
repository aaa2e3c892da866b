"""Integration fixtures: real SQLite and PostgreSQL databases, and the SPEC §5 audit after every test."""

import asyncio
import secrets
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from app.adapters.sql import SqlDatabase, SqlLedgerAudit, migrate
from tests.support.backends import backend_missing, port_open

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/postgres"

T = TypeVar("T")


def run_isolated(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on its own loop in a worker thread, never touching the test's event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(statement: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5})
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated database `routstr_test_<random>` on the local server for this test run; dropped after."""
    if not port_open(PG_HOST, PG_PORT):
        backend_missing("PostgreSQL", f"nothing listens on {PG_HOST}:{PG_PORT}")
    name = f"routstr_test_{secrets.token_hex(6)}"
    try:
        run_isolated(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, SQLAlchemyError) as exc:
        backend_missing("PostgreSQL", f"cannot create a test database ({type(exc).__name__}: {exc})")
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    try:
        run_isolated(migrate(url))
        yield url
    finally:
        run_isolated(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A fresh database with no schema at all, dropped after the test (for migration tests)."""
    if not port_open(PG_HOST, PG_PORT):
        backend_missing("PostgreSQL", f"nothing listens on {PG_HOST}:{PG_PORT}")
    name = f"routstr_test_{secrets.token_hex(6)}"
    run_isolated(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        run_isolated(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite file for this test."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'routstr.db'}"
    run_isolated(migrate(url))
    return url


@pytest.fixture
def audited_urls() -> list[str]:
    """Database URLs the autouse audit checks after the test; SQL fixtures append to it."""
    return []


@pytest.fixture
def sqlite_database_url(sqlite_url: str, audited_urls: list[str]) -> str:
    audited_urls.append(sqlite_url)
    return sqlite_url


@pytest.fixture
def postgres_database_url(postgres_url: str, audited_urls: list[str]) -> str:
    audited_urls.append(postgres_url)
    return postgres_url


async def _violations(url: str) -> list[str]:
    database = SqlDatabase.create(url, pool_size=1, max_overflow=0)
    try:
        return list(await SqlLedgerAudit(database).violations())
    finally:
        await database.dispose()


@pytest.fixture(autouse=True)
def _audit_databases(audited_urls: list[str]) -> Iterator[None]:
    """`routstr audit` after each integration test: any SPEC §5 violation on a database it used fails it."""
    yield
    found = [f"{v}" for url in dict.fromkeys(audited_urls) for v in run_isolated(_violations(url))]
    if found:
        pytest.fail("ledger audit failed:\n" + "\n".join(found))
