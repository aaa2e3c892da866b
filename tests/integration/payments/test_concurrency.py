"""Idempotent redemption under concurrency and lost replies (SPEC §18 scenario 7) on PostgreSQL and real mints."""

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from app.adapters.cashu.mint import HttpCashuMint
from app.domain.cashu import ProofStateKind
from app.domain.wallet import token_key_hash
from app.infrastructure.app import create_app
from app.infrastructure.container import build_adapters
from app.infrastructure.settings import Settings
from tests.integration.payments.conftest import TableCounts, new_token, payment_settings, proof_states
from tests.support.mint import RunningMint
from tests.support.nutshell import NutshellWallet


class DropFirstSwapReply(httpx.AsyncHTTPTransport):
    """Forwards to the real mint, but loses the reply of the first swap after the mint has applied it."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path.endswith("/v1/swap") and not self.dropped:
            self.dropped += 1
            await response.aread()
            await response.aclose()
            msg = "connection reset while reading the reply"
            raise httpx.ReadError(msg, request=request)
        return response


async def _instances(settings: Settings, count: int, stack: AsyncExitStack) -> list[AsyncTestClient[Any]]:
    clients = []
    for _ in range(count):
        client = AsyncTestClient(app=create_app(settings))
        clients.append(await stack.enter_async_context(client))
    return clients


@asynccontextmanager
async def _served(settings: Settings, transport: httpx.AsyncBaseTransport) -> AsyncIterator[AsyncTestClient[Any]]:
    adapters = build_adapters(settings)
    mint_client = httpx.AsyncClient(transport=transport, timeout=10)
    adapters.closers.append(mint_client.aclose)
    wired = dataclasses.replace(adapters, mint=HttpCashuMint(mint_client, timeout_seconds=10, retry_max_attempts=1))
    async with AsyncTestClient(app=create_app(settings, wired)) as client:
        yield client


async def test_ten_concurrent_first_uses_across_two_instances_credit_once(
    postgres_database_url: str, trusted_mint: RunningMint, wallet: NutshellWallet
) -> None:
    settings = payment_settings(postgres_database_url, [trusted_mint.url])
    token = await new_token(wallet, 50)
    headers = {"authorization": f"Bearer {token}"}

    async with AsyncExitStack() as stack:
        nodes = await _instances(settings, 2, stack)
        responses = await asyncio.gather(*(nodes[i % 2].get("/v1/balance/info", headers=headers) for i in range(10)))

    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    assert {r.json()["balance"] for r in responses} == {50_000}
    tables = TableCounts(postgres_database_url)  # the PostgreSQL database is shared by the run: count this key's rows
    key_hash = token_key_hash(token)
    assert await tables.count("ledger_entries", kind="deposit", key_hash=key_hash) == 1
    assert await tables.count("redemptions", state="credited", key_hash=key_hash) == 1


async def test_dropped_swap_reply_is_reconciled_and_a_retry_credits_once(
    sqlite_database_url: str, trusted_mint: RunningMint, wallet: NutshellWallet, tables: TableCounts
) -> None:
    settings = payment_settings(sqlite_database_url, [trusted_mint.url])
    token = await new_token(wallet, 30)
    transport = DropFirstSwapReply()

    async with _served(settings, transport) as node:
        first = await node.post("/v1/balance/create", json={"cashu_token": token})
        retry = await node.post("/v1/balance/create", json={"cashu_token": token})

    assert transport.dropped == 1
    assert first.status_code == 200, first.text
    assert first.json()["balance"] == 30_000
    assert retry.json() == first.json()
    assert await tables.count("ledger_entries", kind="deposit") == 1
    assert await tables.count("cashu_proofs", state="unspent") >= 1
    assert await proof_states(token) == {ProofStateKind.SPENT}
