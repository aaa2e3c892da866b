"""Schema migrations: `alembic upgrade head` under a database lock, and the head revision for health checks."""

from functools import cache
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from app.adapters.sql.database import SqlDatabase

# The repository's migrations/ directory (an editable install or a source checkout, as in the Docker image).
MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[3] / "migrations"
# pg_advisory_xact_lock key: "routstr" in ASCII, so every instance contends for the same lock.
MIGRATION_LOCK_KEY: Final = 0x726F7574737472


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str | None:
    """The newest revision in migrations/versions."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def migrate(database_url: str) -> None:
    """Upgrade the schema to head in ONE transaction holding the migration lock.

    PostgreSQL takes an advisory transaction lock; SQLite's BEGIN IMMEDIATE is the lock. DDL is transactional on
    both, so an error rolls everything back (the version is never stamped past a failure) and propagates.
    """
    database = SqlDatabase.create(database_url, pool_size=1, max_overflow=0)
    try:
        async with database.begin() as connection:
            if not database.is_sqlite:
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await connection.run_sync(_upgrade)
    finally:
        await database.dispose()
