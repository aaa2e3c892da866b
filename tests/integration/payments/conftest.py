"""Payments integration fixtures: real nutshell mints and wallets, the real app on a real database."""

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.adapters.cashu.codec import CashuTokenCodec
from app.adapters.cashu.mint import HttpCashuMint
from app.adapters.sql import SqlDatabase
from app.adapters.sql.models import metadata
from app.domain.cashu import ProofStateKind, Token
from app.infrastructure.app import create_app
from app.infrastructure.settings import Settings, load_settings
from tests.support.mint import RunningMint, trusted_mint, untrusted_mint
from tests.support.nutshell import NutshellWallet

__all__ = ["trusted_mint", "untrusted_mint"]

CODEC = CashuTokenCodec()


def payment_settings(database_url: str, mints: list[str], **extra: str) -> Settings:
    return load_settings(
        {
            "DATABASE_URL": database_url,
            "CASHU_MINTS": ",".join(mints),
            "BTC_USD_PRICE": "100000",
            "MODELS_REFRESH_INTERVAL_SECONDS": "0",
            "RELAYS": "ws://127.0.0.1:1",
            "MINT_OPERATION_TIMEOUT_SECONDS": "10",
            **extra,
        }
    )


@pytest.fixture
async def node(sqlite_database_url: str, trusted_mint: RunningMint) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app on a fresh SQLite database trusting only the fee-free mint."""
    async with AsyncTestClient(app=create_app(payment_settings(sqlite_database_url, [trusted_mint.url]))) as client:
        yield client


@pytest.fixture
def wallet(trusted_mint: RunningMint, tmp_path: Path) -> NutshellWallet:
    return NutshellWallet(trusted_mint.url, tmp_path / "wallet")


@pytest.fixture
def fee_wallet(untrusted_mint: RunningMint, tmp_path: Path) -> NutshellWallet:
    return NutshellWallet(untrusted_mint.url, tmp_path / "fee-wallet")


async def new_token(wallet: NutshellWallet, amount: int) -> str:
    """A nutshell-made token worth exactly `amount`."""
    await wallet.mint(amount)
    sent = await wallet.send(amount)
    assert sent.amount == amount
    return sent.token


async def proof_states(token: str, mint_url: str | None = None) -> set[ProofStateKind]:
    """NUT-07 states of the token's proofs, asked of the real mint (its own URL unless `mint_url`)."""
    decoded = CODEC.decode_token(token)
    async with httpx.AsyncClient(timeout=10) as client:
        mint = HttpCashuMint(client, retry_max_attempts=1)
        states = await mint.check_state(mint_url or decoded.mint, mint.proof_ys(decoded.proofs))
    return {s.state for s in states}


def with_mint(token: str, mint_url: str, unit: str | None = None) -> str:
    """The same proofs re-encoded as if issued by `mint_url` (and in `unit`)."""
    decoded = CODEC.decode_token(token)
    return CODEC.encode_token(Token(mint=mint_url, unit=unit or decoded.unit, proofs=decoded.proofs))


@dataclass
class TableCounts:
    database_url: str

    async def count(self, table: str, **where: str) -> int:
        database = SqlDatabase.create(self.database_url, pool_size=1, max_overflow=0)
        t = metadata.tables[table]
        try:
            async with database.read() as conn:
                statement = select(func.count()).select_from(t)
                for column, value in where.items():
                    statement = statement.where(t.c[column] == value)
                return int((await conn.execute(statement)).scalar_one())
        finally:
            await database.dispose()


@pytest.fixture
def tables(sqlite_database_url: str) -> TableCounts:
    return TableCounts(sqlite_database_url)


@dataclass
class RecordingServer:
    """A loopback HTTP server that answers 404 to everything and records every request path."""

    paths: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    record = RecordingServer()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            record.paths.append(self.path)
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()

        do_GET = do_POST = _answer  # noqa: N815 - http.server dispatches on these names

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
