"""An app wired with fakes, served through Litestar's test client."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from litestar.testing import AsyncTestClient

from app.domain.accounts import NewApiKey, hash_api_key
from app.domain.money import Msat
from app.infrastructure.app import create_app
from app.infrastructure.container import Adapters
from app.infrastructure.settings import Settings, load_settings
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.storage import FakeStorageHealth

KEY = "sk-" + "0123456789abcdef" * 4


@dataclass
class FakeNode:
    client: AsyncTestClient  # type: ignore[type-arg]  # the test client's app type parameter is irrelevant here
    ledger: InMemoryLedger
    storage: FakeStorageHealth
    clock: FixedClock


@pytest.fixture
def settings() -> Settings:
    return load_settings({"CASHU_MINTS": "http://127.0.0.1:3338", "NAME": "TestNode", "BTC_USD_PRICE": "100000"})


@pytest.fixture
async def node(settings: Settings) -> AsyncIterator[FakeNode]:
    clock = FixedClock()
    ledger = InMemoryLedger()
    storage = FakeStorageHealth()
    adapters = Adapters(clock=clock, ledger=ledger, audit=InMemoryLedgerAudit(ledger), storage_health=storage)
    await ledger.create_key(NewApiKey(key_hash=hash_api_key(KEY), grant=Msat(5_000_000), created_at=clock.now()))
    async with AsyncTestClient(app=create_app(settings, adapters)) as client:
        yield FakeNode(client=client, ledger=ledger, storage=storage, clock=clock)
