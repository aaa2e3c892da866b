"""SqlJobLeases: one `job_leases` row per leased job, taken by a conditional upsert."""

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.adapters.sql.database import SqlDatabase
from app.adapters.sql.models import metadata

leases_t = metadata.tables["job_leases"]
LEASES = leases_t.c


class SqlJobLeases:
    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def acquire(self, name: str, holder: str, now: datetime, expires_at: datetime) -> bool:
        insert = sqlite_insert if self._db.is_sqlite else pg_insert
        statement = insert(leases_t).values(name=name, holder=holder, expires_at=expires_at)
        statement = statement.on_conflict_do_update(
            index_elements=[LEASES.name],
            set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
            where=(LEASES.expires_at <= now) | (LEASES.holder == holder),
        )
        async with self._db.begin() as conn:
            result = await conn.execute(statement)
            return int(result.rowcount) == 1

    async def release(self, name: str, holder: str) -> bool:
        async with self._db.begin() as conn:
            result = await conn.execute(delete(leases_t).where(LEASES.name == name, LEASES.holder == holder))
            return int(result.rowcount) == 1
