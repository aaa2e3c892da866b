"""Alembic environment: metadata from app.adapters.sql; async engines for SQLite and PostgreSQL."""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.adapters.sql.models import metadata

config = context.config


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transactional_ddl=True,  # SQLite and PostgreSQL both roll DDL back: a failed upgrade never stamps
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure_and_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    # `routstr migrate` hands over a connection that already holds the migration lock and owns the transaction.
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _configure_and_run(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        msg = "pass the database URL: alembic -x url=<DATABASE_URL> ..."
        raise SystemExit(msg)
    asyncio.run(_run_with_own_engine(url))


if context.is_offline_mode():
    msg = "offline (--sql) migrations are not supported"
    raise SystemExit(msg)
run_migrations_online()
