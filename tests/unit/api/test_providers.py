"""GET /v1/providers on fakes: the SPEC §9 shape, the pubkey filter, 404 when disabled; npub in /v1/info."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from litestar.testing import AsyncTestClient

from app.domain.nostr import Event, Listing
from app.domain.nostr_bech32 import npub_encode
from app.infrastructure.app import create_app
from app.infrastructure.container import Adapters
from app.infrastructure.nostr_jobs import NostrJobs
from app.infrastructure.settings import Settings, load_settings
from tests.fakes.clock import FixedClock
from tests.fakes.ledger import InMemoryLedger, InMemoryLedgerAudit
from tests.fakes.nostr_keys import FakeEventSigner, FakeSignatureVerifier
from tests.fakes.relay import FakeRelay
from tests.fakes.storage import FakeStorageHealth

ALICE = FakeEventSigner("a1" * 32)
BOB = FakeEventSigner("b2" * 32)


@dataclass
class NostrNode:
    client: AsyncTestClient  # type: ignore[type-arg]  # the test client's app type parameter is irrelevant here
    relay: FakeRelay
    jobs: NostrJobs


def _settings(**env: str) -> Settings:
    base = {"CASHU_MINTS": "https://mint.example", "RELAYS": "wss://relay.example"}
    base.update(env)
    return load_settings(base)


def _announce(signer: FakeEventSigner, name: str, created_at: int, urls: tuple[str, ...]) -> Event:
    listing = Listing.create(
        provider_id=f"{name.lower()}-node",
        endpoints=urls,
        mints=("https://mint.a", "https://mint.b"),
        version="1.2.3",
        name=name,
        about=f"{name}'s node",
    )
    unsigned = listing.event(signer.public_key, created_at)
    return unsigned.signed(signer.sign(unsigned.id))


@asynccontextmanager
async def _node(settings: Settings, signer: FakeEventSigner | None = None) -> AsyncIterator[NostrNode]:
    ledger, relay = InMemoryLedger(), FakeRelay()
    adapters = Adapters(
        clock=FixedClock(),
        ledger=ledger,
        audit=InMemoryLedgerAudit(ledger),
        storage_health=FakeStorageHealth(),
        relays=(relay,),
        nostr_signer=signer,
        signature_verifier=FakeSignatureVerifier(),
    )
    app = create_app(settings, adapters)
    async with AsyncTestClient(app=app) as client:
        yield NostrNode(client=client, relay=relay, jobs=app.state["nostr_jobs"])


async def test_get_providers_returns_verified_announcements_in_spec_shape() -> None:
    async with _node(_settings()) as node:
        node.relay.store(_announce(ALICE, "Alice", 1_700_000_000, ("https://alice.example", "http://alice.onion")))
        await node.jobs.discovery.refresh()

        response = await node.client.get("/v1/providers")

    assert response.status_code == 200
    assert response.json() == {
        "providers": [
            {
                "id": "alice-node",
                "pubkey": ALICE.public_key,
                "npub": npub_encode(ALICE.public_key),
                "created_at": 1_700_000_000,
                "kind": 38421,
                "name": "Alice",
                "description": "Alice's node",
                "endpoint_url": "https://alice.example",
                "endpoint_urls": ["https://alice.example", "http://alice.onion"],
                "mint_urls": ["https://mint.a", "https://mint.b"],
                "version": "1.2.3",
                "content": '{"name":"Alice","about":"Alice\'s node"}',
            }
        ]
    }


async def test_get_providers_with_trailing_slash_filters_by_pubkey() -> None:
    async with _node(_settings()) as node:
        node.relay.store(_announce(ALICE, "Alice", 100, ("https://alice.example",)))
        node.relay.store(_announce(BOB, "Bob", 200, ("https://bob.example",)))
        await node.jobs.discovery.refresh()

        everyone = await node.client.get("/v1/providers/")
        only_bob = await node.client.get("/v1/providers/", params={"pubkey": npub_encode(BOB.public_key)})

    assert [p["name"] for p in everyone.json()["providers"]] == ["Bob", "Alice"]
    assert [p["name"] for p in only_bob.json()["providers"]] == ["Bob"]


async def test_get_providers_omits_forged_and_loopback_announcements() -> None:
    async with _node(_settings()) as node:
        genuine = _announce(ALICE, "Alice", 100, ("https://alice.example",))
        node.relay.stored.append(genuine)
        forged = replace(_announce(BOB, "Bob", 200, ("https://bob.example",)), sig="00" * 64)
        node.relay.stored.append(forged)
        node.relay.stored.append(_announce(FakeEventSigner("c3" * 32), "Local", 300, ("http://127.0.0.1:8000",)))
        await node.jobs.discovery.refresh()

        response = await node.client.get("/v1/providers")

    assert [p["name"] for p in response.json()["providers"]] == ["Alice"]


async def test_get_providers_returns_400_when_pubkey_is_malformed() -> None:
    async with _node(_settings()) as node:
        response = await node.client.get("/v1/providers", params={"pubkey": "npub1bad"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_get_providers_returns_404_when_discovery_is_disabled() -> None:
    async with _node(_settings(PROVIDERS_REFRESH_INTERVAL_SECONDS="0")) as node:
        response = await node.client.get("/v1/providers")
        with_slash = await node.client.get("/v1/providers/")

    assert response.status_code == 404
    assert with_slash.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_get_info_shows_npub_of_node_key() -> None:
    signer = FakeEventSigner("0f" * 32)

    async with _node(_settings(), signer) as node:
        response = await node.client.get("/v1/info")

    assert response.json()["npub"] == npub_encode(signer.public_key)


async def test_get_info_shows_null_npub_without_key() -> None:
    async with _node(_settings()) as node:
        response = await node.client.get("/v1/info")

    assert response.json()["npub"] is None
