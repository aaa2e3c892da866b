"""The database handle: an AsyncEngine for adapters, plus `run` for synchronous transaction functions (hot path)."""

import asyncio
import os
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# A pooled PostgreSQL connection idle longer than this is pinged before use (a restarted server dropped it).
# Connections in steady use skip the ping: it was a round trip per transaction, ~0.25 ms CPU each here.
PING_IF_IDLE_SECONDS: Final = 5.0
# The loop-thread SQLite connection never checkpoints the WAL itself (a checkpoint writes pages back and fsyncs:
# 5-10 ms with the whole event loop stopped). Every this many write transactions `run` starts a passive checkpoint
# on a worker thread instead; the aiosqlite connections keep SQLite's automatic checkpoint in their own threads.
CHECKPOINT_EVERY_WRITES: Final = 128
_IDLE_SINCE: Final = "routstr_idle_since"
_BEGIN_OPTION: Final = "routstr_sqlite_begin"

P = ParamSpec("P")
T = TypeVar("T")

# One write lock per (event loop, SQLite file): every SqlDatabase on that file in this process queues its write
# transactions here instead of in SQLite's busy handler. Correctness never depends on it (SQLite's own lock does
# that, also across processes); it only keeps waiters off the busy handler's sleeps and off a blocked loop thread.
_WRITE_LOCKS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]]" = (
    weakref.WeakKeyDictionary()
)


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


def _no_autocheckpoint(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


def _sqlite_on_begin(connection: Connection) -> None:
    # Money transactions take the write lock up front: no read-then-upgrade deadlocks, waiters use busy_timeout.
    mode = connection.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _ping_if_idle(engine: Engine, idle_seconds: float) -> Callable[[Any, Any, Any], None]:
    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # fresh from connect, or in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another one.
            raise DisconnectionError(str(type(exc).__name__)) from exc

    return on_checkout


class SqlDatabase:
    """Holds the engines. Adapters open transactions through `begin()`/`read()` (async connection) or hand a
    synchronous function of a `Connection` to `run()`/`run_read()`, which is what the ledger's hot path does.

    On a SQLite file, `run` executes the function on the event-loop thread over one pysqlite connection: the whole
    transaction is sub-millisecond and never yields, so nothing else in this process can interleave with it. Write
    transactions of this process (`run` and `begin`) queue on an asyncio lock per file; other processes (the
    `routstr` CLI) still meet SQLite's lock and its busy timeout. On PostgreSQL (and in-memory SQLite) `run` calls the
    same function on the async engine through `AsyncConnection.run_sync`.
    """

    def __init__(self, engine: AsyncEngine, sync_engine: Engine | None = None, lock_name: str | None = None) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        self._sync_engine = sync_engine
        self._sync_connection: Connection | None = None
        self._lock_name = lock_name
        self._writes_since_checkpoint = 0
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpoint_connection: sqlite3.Connection | None = None

    @classmethod
    def create(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 20,
        ping_if_idle_seconds: float = PING_IF_IDLE_SECONDS,
    ) -> "SqlDatabase":
        """Build the engines for `url` (sqlite+aiosqlite or postgresql+asyncpg). Opens no connection yet.

        A PostgreSQL connection that sat in the pool for `ping_if_idle_seconds` is pinged before it is handed out.
        """
        if not url.startswith("sqlite"):
            engine = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow)
            event.listen(engine.sync_engine, "checkin", _on_checkin)
            event.listen(engine.sync_engine, "checkout", _ping_if_idle(engine.sync_engine, ping_if_idle_seconds))
            return cls(engine)
        in_memory = url.rstrip("/").endswith(("sqlite+aiosqlite:", ":memory:"))
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            # An in-memory database lives in one connection: share it, or every checkout sees an empty one.
            **({"poolclass": StaticPool} if in_memory else {}),
        )
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        if in_memory:
            return cls(engine, lock_name=f"memory:{id(engine)}")
        parsed = make_url(url)
        sync_engine = create_engine(
            parsed.set(drivername="sqlite+pysqlite"),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            poolclass=StaticPool,
        )
        # No engine-level listener here (BEGIN is sent in `_run_here`): any would put SQLAlchemy's event dispatch on
        # every statement, about a third of its cost per statement.
        event.listen(sync_engine, "connect", _sqlite_on_connect)
        event.listen(sync_engine, "connect", _no_autocheckpoint)
        return cls(engine, sync_engine, lock_name=os.path.realpath(parsed.database or ""))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _write_lock(self) -> asyncio.Lock | None:
        if self._lock_name is None:
            return None
        locks = _WRITE_LOCKS.setdefault(asyncio.get_running_loop(), {})
        lock = locks.get(self._lock_name)
        if lock is None:
            lock = locks[self._lock_name] = asyncio.Lock()
        return lock

    def _connection(self) -> Connection:
        if self._sync_connection is None or self._sync_connection.closed:
            assert self._sync_engine is not None  # noqa: S101 - only called on the synchronous path
            self._sync_connection = self._sync_engine.connect()
        return self._sync_connection

    def _checkpoint_wal(self) -> None:
        """PRAGMA wal_checkpoint(PASSIVE) on a connection of its own (runs in a worker thread)."""
        if self._checkpoint_connection is None:
            assert self._lock_name is not None  # noqa: S101 - only called for a SQLite file
            self._checkpoint_connection = sqlite3.connect(
                self._lock_name, isolation_level=None, check_same_thread=False
            )
        self._checkpoint_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _count_write(self) -> None:
        self._writes_since_checkpoint += 1
        if self._writes_since_checkpoint < CHECKPOINT_EVERY_WRITES or self._checkpoint is not None:
            return
        self._writes_since_checkpoint = 0
        self._checkpoint = asyncio.get_running_loop().create_task(self._run_checkpoint())

    async def _run_checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self._checkpoint_wal)
        except sqlite3.Error:
            pass  # a busy or failed passive checkpoint is retried after the next batch of writes
        finally:
            self._checkpoint = None

    def _run_here(self, mode: str, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        connection = self._connection()
        with connection.begin():
            # pysqlite runs in autocommit mode here (isolation_level=None), so SQLAlchemy's begin sends nothing and
            # its commit/rollback end the transaction opened by this statement.
            driver = connection.connection.driver_connection
            if driver.in_transaction:  # type: ignore[union-attr] # a failed COMMIT left one open: start clean
                driver.rollback()  # type: ignore[union-attr]
            driver.execute(mode)  # type: ignore[union-attr]
            return fn(connection, *args, **kwargs)

    async def run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(connection, *args)` in one write transaction (BEGIN IMMEDIATE on SQLite): committed when it returns,
        rolled back when it raises. `fn` must only run SQL: on SQLite it blocks the event loop while it runs."""
        lock = self._write_lock()
        if lock is None:
            async with self.engine.begin() as connection:
                return await connection.run_sync(fn, *args, **kwargs)
        async with lock:
            if self._sync_engine is not None:
                result = self._run_here("BEGIN IMMEDIATE", fn, *args, **kwargs)
                self._count_write()
                return result
            async with self.engine.begin() as connection:
                return await connection.run_sync(fn, *args, **kwargs)

    async def run_read(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(connection, *args)` in a read transaction (deferred on SQLite, so it never waits for the write lock)."""
        if self._sync_engine is not None:
            return self._run_here("BEGIN DEFERRED", fn, *args, **kwargs)
        async with self.read() as connection:
            return await connection.run_sync(fn, *args, **kwargs)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on exit and rolled back on error.

        On SQLite it holds this process's write lock for the file until it ends: do not call `run` or `begin` on
        the same file inside it.
        """
        lock = self._write_lock()
        if lock is None:
            async with self.engine.begin() as connection:
                yield connection
            return
        async with lock, self.engine.begin() as connection:
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
        """An ORM session for adapters that prefer it (write semantics as `begin`, without the SQLite write lock)."""
        return self.sessionmaker()

    async def dispose(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        if self._checkpoint_connection is not None:
            self._checkpoint_connection.close()
            self._checkpoint_connection = None
        if self._sync_connection is not None:
            self._sync_connection.close()
            self._sync_connection = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        await self.engine.dispose()
