"""SqlDatabase: `run`/`run_read` transactions, the per-file SQLite write queue, and PostgreSQL reconnects."""

import asyncio

import pytest
from sqlalchemy import Connection, text

from app.adapters.sql import SqlDatabase


class _BoomError(Exception):
    pass


def _insert_lease(conn: Connection, name: str) -> None:
    conn.execute(
        text("INSERT INTO job_leases (name, holder, expires_at) VALUES (:n, 'h', '2030-01-01 00:00:00')"), {"n": name}
    )


def _insert_lease_then_fail(conn: Connection, name: str) -> None:
    _insert_lease(conn, name)
    raise _BoomError


def _lease_names(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute(text("SELECT name FROM job_leases ORDER BY name"))]


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_database_url" if request.param == "sqlite" else "postgres_database_url"
    url: str = request.getfixturevalue(fixture)
    return url


async def test_run_commits_when_function_returns_and_rolls_back_when_it_raises(any_url: str) -> None:
    database = SqlDatabase.create(any_url)
    try:
        await database.run(_insert_lease, "kept")
        with pytest.raises(_BoomError):
            await database.run(_insert_lease_then_fail, "dropped")
        names = await database.run_read(_lease_names)
        await database.run(lambda conn: conn.execute(text("DELETE FROM job_leases WHERE name = 'kept'")))
    finally:
        await database.dispose()
    assert "kept" in names
    assert "dropped" not in names


async def test_run_waits_for_another_engines_open_write_on_the_same_sqlite_file(sqlite_database_url: str) -> None:
    first, second = SqlDatabase.create(sqlite_database_url), SqlDatabase.create(sqlite_database_url)
    try:
        async with first.begin() as conn:
            await conn.execute(
                text("INSERT INTO job_leases (name, holder, expires_at) VALUES ('a', 'h', '2030-01-01')")
            )
            queued = asyncio.create_task(second.run(_insert_lease, "b"))
            await asyncio.sleep(0.1)  # the loop keeps running: `second` queues in-process, not in the busy handler
            waited = not queued.done()
        await asyncio.wait_for(queued, timeout=5)
        names = await second.run_read(_lease_names)
        await second.run(lambda c: c.execute(text("DELETE FROM job_leases WHERE name IN ('a', 'b')")))
    finally:
        await first.dispose()
        await second.dispose()
    assert waited
    assert names == ["a", "b"]


async def test_run_reconnects_when_an_idle_postgres_connection_was_dropped(postgres_database_url: str) -> None:
    database = SqlDatabase.create(postgres_database_url, pool_size=1, max_overflow=0, ping_if_idle_seconds=0)
    admin = SqlDatabase.create(postgres_database_url, pool_size=1, max_overflow=0)
    try:
        pid = await database.run_read(lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        async with admin.begin() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await asyncio.sleep(0.2)

        again = await database.run_read(lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    finally:
        await database.dispose()
        await admin.dispose()
    assert again != pid


async def test_run_checkpoints_the_sqlite_wal_in_the_background(sqlite_database_url: str) -> None:
    database = SqlDatabase.create(sqlite_database_url)
    writes = 1_000
    try:
        await database.run(_insert_lease, "ticker")
        for i in range(writes):
            await database.run(
                lambda conn, n: conn.execute(text("UPDATE job_leases SET holder = :h WHERE name = 'ticker'"), {"h": n}),
                str(i),
            )
            if i % 50 == 0:
                await asyncio.sleep(0.005)  # the server's loop yields all the time; this one only here
        await database.run(lambda conn: conn.execute(text("DELETE FROM job_leases WHERE name = 'ticker'")))
        frames = await database.run_read(lambda conn: conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()[1])
    finally:
        await database.dispose()
    # Without checkpoints every write would still be in the WAL (at least one frame each).
    assert 0 <= frames < writes
