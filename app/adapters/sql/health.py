"""SqlStorageHealth: the database answers and its schema is at the newest migration."""

import asyncio
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.adapters.sql.database import SqlDatabase
from app.adapters.sql.migrations import head_revision

CHECK_TIMEOUT_SECONDS: Final = 5.0


class SqlStorageHealth:
    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def check(self) -> str | None:
        """None when healthy; otherwise a short reason that never includes the database URL or credentials."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), self._db.read() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            return f"database unreachable ({type(exc).__name__})"
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), self._db.read() as conn:
                current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except (SQLAlchemyError, OSError, TimeoutError):
            return "database not migrated (run `routstr migrate`)"
        head = head_revision()
        if current != head:
            return f"database schema at {current or 'none'}, expected {head} (run `routstr migrate`)"
        return None
