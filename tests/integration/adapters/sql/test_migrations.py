"""migrate(): upgrade to head under a lock; a failed upgrade raises and stamps nothing."""

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from app.adapters.sql import SqlDatabase, head_revision, migrate
from app.adapters.sql.models import metadata


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    url: str = request.getfixturevalue("empty_postgres_url")
    return url


async def _tables_and_version(url: str) -> tuple[set[str], list[str]]:
    database = SqlDatabase.create(url)
    try:
        async with database.read() as conn:
            tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
            versions = []
            if "alembic_version" in tables:
                versions = list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())
            return tables, versions
    finally:
        await database.dispose()


async def test_migrate_creates_every_table_at_head(empty_url: str) -> None:
    await migrate(empty_url)

    tables, versions = await _tables_and_version(empty_url)

    assert set(metadata.tables) <= tables
    assert versions == [head_revision()]


async def test_migrate_is_idempotent_when_run_concurrently(empty_url: str) -> None:
    await asyncio.gather(*(migrate(empty_url) for _ in range(3)))

    _, versions = await _tables_and_version(empty_url)

    assert versions == [head_revision()]


async def test_migrate_raises_and_stamps_nothing_when_upgrade_fails(empty_url: str) -> None:
    database = SqlDatabase.create(empty_url)
    async with database.begin() as conn:  # a conflicting table makes the initial revision fail midway
        await conn.execute(text("CREATE TABLE reservations (request_id VARCHAR(64) PRIMARY KEY)"))
    await database.dispose()

    with pytest.raises(SQLAlchemyError):
        await migrate(empty_url)

    tables, versions = await _tables_and_version(empty_url)
    assert versions == []
    assert "api_keys" not in tables  # created before the failure, rolled back with it
