"""The database handle: one AsyncEngine and its sessionmaker, tuned for SQLite (WAL, BEGIN IMMEDIATE) or PostgreSQL."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000
_BEGIN_OPTION = "routstr_sqlite_begin"


def _sqlite_on_connect(dbapi_connection: Any, _record: object) -> None:
    # Let SQLAlchemy's `begin` event emit BEGIN itself (pysqlite would otherwise defer it to the first write).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "PRAGMA foreign_keys=ON",
        "PRAGMA synchronous=NORMAL",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # Money transactions take the write lock up front: no read-then-upgrade deadlocks, waiters use busy_timeout.
    mode = connection.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


class SqlDatabase:
    """Holds the engine; adapters open transactions through `begin()` (writes) and `read()` (reads)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def create(cls, url: str, *, pool_size: int = 10, max_overflow: int = 20) -> "SqlDatabase":
        """Build the engine for `url` (sqlite+aiosqlite or postgresql+asyncpg). Opens no connection yet."""
        if url.startswith("sqlite"):
            in_memory = url.rstrip("/").endswith(("sqlite+aiosqlite:", ":memory:"))
            engine = create_async_engine(
                url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                # An in-memory database lives in one connection: share it, or every checkout sees an empty one.
                **({"poolclass": StaticPool} if in_memory else {}),
            )
            event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        else:
            engine = create_async_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)
        return cls(engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on exit and rolled back on error."""
        async with self.engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction; on SQLite a deferred one, so reads do not queue behind the write lock."""
        async with self.engine.connect() as raw:
            options = {_BEGIN_OPTION: "DEFERRED"} if self.is_sqlite else {}
            connection = await raw.execution_options(**options)
            async with connection.begin():
                yield connection

    def session(self) -> AsyncSession:
        """An ORM session for adapters that prefer it (write semantics as `begin`)."""
        return self.sessionmaker()

    async def dispose(self) -> None:
        await self.engine.dispose()
