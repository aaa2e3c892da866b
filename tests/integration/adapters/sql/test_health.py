"""SqlStorageHealth: reachable and at head, or a reason that never shows credentials."""

from pathlib import Path

from sqlalchemy import text

from app.adapters.sql import SqlDatabase, SqlStorageHealth
from tests.support.backends import free_port


async def test_check_returns_none_when_migrated(sqlite_url: str) -> None:
    database = SqlDatabase.create(sqlite_url)

    problem = await SqlStorageHealth(database).check()

    await database.dispose()
    assert problem is None


async def test_check_reports_not_migrated_when_schema_missing(tmp_path: Path) -> None:
    database = SqlDatabase.create(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")

    problem = await SqlStorageHealth(database).check()

    await database.dispose()
    assert problem is not None
    assert "not migrated" in problem


async def test_check_reports_revision_when_schema_is_behind(sqlite_url: str) -> None:
    database = SqlDatabase.create(sqlite_url)
    async with database.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))

    problem = await SqlStorageHealth(database).check()

    await database.dispose()
    assert problem is not None
    assert "older" in problem


async def test_check_reports_unreachable_without_credentials_when_server_is_down() -> None:
    database = SqlDatabase.create(f"postgresql+asyncpg://routstr:hunter2@127.0.0.1:{free_port()}/routstr")

    problem = await SqlStorageHealth(database).check()

    await database.dispose()
    assert problem is not None
    assert problem.startswith("database unreachable")
    assert "hunter2" not in problem
